"""Model artifacts: skops files, checked by SHA-256 before anything is loaded.

A model version's fitted pipeline is stored with ``skops.io``, which rebuilds
objects from an explicit description instead of unpickling arbitrary code.
Loading does two checks first:

1. the file's SHA-256 must equal the checksum recorded in the manifest — a
   changed byte means the artifact is refused, never loaded;
2. every type skops does not trust by default must be on parity's allowlist
   (scikit-learn's own classes and numpy dtypes); anything else — a custom
   function, an arbitrary module — is refused by name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from framework.errors import ParityError

FORMAT = "skops"
#: Exact names of the non-scikit-learn types a parity pipeline may contain.
_ALLOWED_EXACT = {"numpy.dtype"}


class ArtifactError(ParityError):
    """A model artifact is missing, tampered with, or needs a type parity does not trust."""

    exit_code = 5


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dump(model: Any) -> bytes:
    import skops.io as sio

    return bytes(sio.dumps(model))


def _trusted(name: str) -> bool:
    return name in _ALLOWED_EXACT or name.startswith("sklearn.")


def load(path: Path, expected_sha256: str) -> Any:
    """Verify the checksum, then the types, then load."""
    import skops.io as sio

    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(f"The model artifact {path} is missing.") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise ArtifactError(
            f"The model artifact {path} does not match its manifest checksum "
            f"(expected sha256 {expected_sha256[:16]}..., found {actual[:16]}...); "
            "refusing to load it."
        )
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:
        raise ArtifactError(f"The model artifact {path} is not a skops file: {exc}") from exc
    refused = [t for t in untrusted if not _trusted(t)]
    if refused:
        raise ArtifactError(
            f"The model artifact {path} contains types parity does not trust: "
            f"{', '.join(refused)}; refusing to load it."
        )
    try:
        return sio.loads(data, trusted=untrusted)
    except Exception as exc:  # a damaged file whose checksum was rewritten to match
        raise ArtifactError(f"The model artifact {path} could not be loaded: {exc}") from exc
