"""The model registry: immutable versions, aliases, and an append-only history.

Layout under the registry root (``data/models`` by default)::

    <name>/
      versions/<n>/          one immutable version: manifest.json, model.skops,
                             smoke.parquet (files read-only once written)
      history.jsonl          every alias move (and refused promotion), one JSON
                             object per line, appended and fsynced, never rewritten
      .lock                  fcntl lock: version numbering and alias moves
      .staging/<pid>-<id>/   versions being written

Crash safety: a version is written into ``.staging`` and becomes visible only
by one atomic ``rename`` into ``versions/`` once every file is written and
fsynced, so a killed ``parity train`` leaves either a whole version or none
(stale staging folders of dead processes are removed by the next write).
Aliases are not stored separately: they are replayed from the history, so a
history line is the single commit point of an alias move; a line cut short by
a crash is ignored when read and truncated by the next writer. Moves hold the
lock, so concurrent promotions serialise instead of interleaving.

Addresses: ``name:3`` is version 3, ``name@champion`` the version the alias
points to, plain ``name`` the champion if there is one, else the latest version.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from framework.errors import ConfigError, DataError
from framework.registry import artifact

MANIFEST = "manifest.json"
ARTIFACT = "model.skops"
SMOKE = "smoke.parquet"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_VERSION = re.compile(r"[0-9]{1,9}")


class NotFoundError(ConfigError):
    """A model, version or alias that the registry does not have."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def default_actor() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class ModelRegistry:
    """A folder of model versions. Safe for concurrent use by several processes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------- reading

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "versions").is_dir())

    def versions(self, name: str) -> list[int]:
        folder = self._model(name) / "versions"
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if _VERSION.fullmatch(p.name))

    def version_dir(self, ref: ModelRef) -> Path:
        return self._model(ref.name) / "versions" / str(ref.version)

    def manifest(self, ref: ModelRef) -> dict[str, Any]:
        path = self.version_dir(ref) / MANIFEST
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except FileNotFoundError as exc:
            raise NotFoundError(f"No model version {ref} in {self.root}.") from exc
        except json.JSONDecodeError as exc:
            raise DataError(f"The manifest of {ref} is not valid JSON: {exc}.") from exc

    def verify(self, ref: ModelRef) -> dict[str, Any]:
        """The manifest, after checking the artifact's checksum (without loading it)."""
        manifest = self.manifest(ref)
        path = self.version_dir(ref) / manifest["artifact"]["file"]
        if not path.exists():
            raise artifact.ArtifactError(f"The model artifact of {ref} ({path}) is missing.")
        actual = artifact.sha256_file(path)
        if actual != manifest["artifact"]["sha256"]:
            raise artifact.ArtifactError(
                f"The model artifact of {ref} does not match its manifest checksum "
                f"(expected sha256 {manifest['artifact']['sha256'][:16]}..., "
                f"found {actual[:16]}...)."
            )
        return manifest

    def load(self, ref: ModelRef) -> tuple[Any, dict[str, Any]]:
        """The fitted model and its manifest; the checksum is verified before loading."""
        manifest = self.manifest(ref)
        path = self.version_dir(ref) / manifest["artifact"]["file"]
        return artifact.load(path, manifest["artifact"]["sha256"]), manifest

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every recorded event, oldest first (a line cut short by a crash is ignored)."""
        path = self._model(name) / "history.jsonl"
        try:
            text = path.read_text()
        except FileNotFoundError:
            return []
        lines = text.split("\n")
        complete = lines[:-1]  # the last element is "" or an unterminated line
        events = []
        for number, line in enumerate(complete, 1):
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number} is not valid JSON: {exc}.") from exc
        return events

    def alias_stacks(self, name: str) -> dict[str, list[int]]:
        """Per alias, the versions it has pointed to that a rollback can return to."""
        stacks: dict[str, list[int]] = {}
        for event in self.history(name):
            alias = str(event.get("alias"))
            if event.get("action") == "promote":
                stacks.setdefault(alias, []).append(int(event["to"]))
            elif event.get("action") == "rollback":
                stack = stacks.setdefault(alias, [])
                if stack:
                    stack.pop()
        return stacks

    def aliases(self, name: str) -> dict[str, int]:
        return {a: s[-1] for a, s in self.alias_stacks(name).items() if s}

    def resolve(self, address: str) -> ModelRef:
        """``name``, ``name:VERSION`` or ``name@ALIAS`` to a version that exists."""
        if "@" in address:
            name, alias = address.split("@", 1)
            self._check_name(name)
            aliases = self.aliases(name)
            if alias not in aliases:
                known = ", ".join(f"@{a}" for a in sorted(aliases)) or "none"
                raise NotFoundError(
                    f"Model {name!r} has no alias {alias!r} (aliases: {known})."
                    if self.versions(name)
                    else f"No model {name!r} in {self.root}."
                )
            ref = ModelRef(name, aliases[alias])
        elif ":" in address:
            name, text = address.split(":", 1)
            self._check_name(name)
            if not _VERSION.fullmatch(text):
                raise ConfigError(f"A model version is a number: {address!r}.")
            ref = ModelRef(name, int(text))
        else:
            self._check_name(address)
            aliases = self.aliases(address)
            versions = self.versions(address)
            if "champion" in aliases:
                ref = ModelRef(address, aliases["champion"])
            elif versions:
                ref = ModelRef(address, versions[-1])
            else:
                raise NotFoundError(f"No model {address!r} in {self.root}.")
        if ref.version not in self.versions(ref.name):
            known = ", ".join(map(str, self.versions(ref.name))) or "none"
            raise NotFoundError(f"Model {ref.name!r} has no version {ref.version} (has: {known}).")
        return ref

    # ------------------------------------------------------------- writing

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Exclusive across processes for ``name`` (version numbering, alias moves)."""
        folder = self._model(name)
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / ".lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def register(self, name: str, files: dict[str, bytes], manifest: dict[str, Any]) -> ModelRef:
        """Write a new version atomically; its number is assigned here (``manifest['version']``)."""
        self._check_name(name)
        folder = self._model(name)
        staging_root = folder / ".staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_staging(staging_root)
        staging = staging_root / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        try:
            for filename, data in files.items():
                _write_file(staging / filename, data)
            with self.lock(name):
                version = max(self.versions(name), default=0) + 1
                manifest = {**manifest, "name": name, "version": version}
                _write_file(
                    staging / MANIFEST,
                    (json.dumps(manifest, indent=2, default=str) + "\n").encode(),
                )
                for p in staging.iterdir():
                    p.chmod(0o444)
                _fsync_dir(staging)
                (folder / "versions").mkdir(exist_ok=True)
                os.rename(staging, folder / "versions" / str(version))
                _fsync_dir(folder / "versions")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return ModelRef(name, version)

    def append_event(self, name: str, event: dict[str, Any]) -> dict[str, Any]:
        """Append one event to the history; the caller holds :meth:`lock`."""
        path = self._model(name) / "history.jsonl"
        event = {"at": now(), **event}
        line = (json.dumps(event, sort_keys=True, default=str) + "\n").encode()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                # Drop a line a crash cut short, so the history stays one JSON per line:
                # search backwards for the last complete line's end.
                end = size
                keep = 0
                while end > 0:
                    start = max(0, end - (1 << 16))
                    chunk = os.pread(fd, end - start, start)
                    if b"\n" in chunk:
                        keep = start + chunk.rfind(b"\n") + 1
                        break
                    end = start
                os.ftruncate(fd, keep)
                size = keep
            os.pwrite(fd, line, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        return event

    # ------------------------------------------------------------- helpers

    def _model(self, name: str) -> Path:
        return self.root / name

    @staticmethod
    def _check_name(name: str) -> None:
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"Model names start with a letter and hold letters, digits, '_', '.', '-'. "
                f"Got {name!r}."
            )

    @staticmethod
    def check_alias(alias: str) -> None:
        if not _ALIAS.fullmatch(alias):
            raise ConfigError(
                f"Aliases are lower-case words such as 'champion' or 'challenger'. Got {alias!r}."
            )

    @staticmethod
    def _remove_stale_staging(staging_root: Path) -> None:
        for p in staging_root.iterdir():
            pid_text = p.name.split("-", 1)[0]
            if pid_text.isdigit() and not _alive(int(pid_text)):
                shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
