"""What a version records about where it came from: its periods, the code and library
versions, and the probe rows the server reads at start-up.

The probe holds up to :data:`PROBE_ROWS` rows: ``{"entity_rows": [{join key: value},
...], "request_data": [{field: value}, ...]}``, the two lists row for row, from the
training set's latest rows with distinct keys (keys that really exist in the
sources), oldest first; values are JSON numbers, strings and booleans, ``null``,
timestamps as ISO 8601 text and bytes as ``{"base64": "..."}``.
"""

from __future__ import annotations

import base64
import hashlib
import math
import platform
import subprocess
from datetime import date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from framework.models.manifest import Probe

_LIBRARIES = (
    "parity",
    "feast",
    "scikit-learn",
    "skops",
    "shap",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "duckdb",
)


def period(table: pa.Table) -> dict[str, Any]:
    ts = table["event_timestamp"]
    return {
        "rows": table.num_rows,
        "start": str(pc.min(ts).as_py()) if table.num_rows else None,
        "end": str(pc.max(ts).as_py()) if table.num_rows else None,
    }


def code_version(where: Path) -> dict[str, Any]:
    """The git commit of the repository holding the spec, and whether it had changes."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "dirty": None}
    return {"git_commit": commit, "dirty": bool(dirty)}


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


#: Rows in a version's start-up probe .
PROBE_ROWS = 16


def probe(table: pa.Table, join_keys: list[str], request_data: list[str]) -> Probe:
    """Up to :data:`PROBE_ROWS` rows of ``table`` with distinct join-key values, the
    latest by event time (on equal times, the later row), oldest first: their join keys
    and request data, JSON-safe ."""
    picked: list[tuple[dict[str, Any], dict[str, Any]]] = []
    if not join_keys or table.num_rows == 0:
        return Probe(entity_rows=[], request_data=[])
    fields = [c for c in request_data if c in table.column_names]
    index = pa.array(np.arange(table.num_rows))
    order = pc.sort_indices(
        pa.table({"t": table.column("event_timestamp"), "i": index}),
        [("t", "descending"), ("i", "descending")],
    )
    seen: set[str] = set()
    for i in order.to_pylist():
        row = {k: _json_safe(table.column(k)[i].as_py()) for k in join_keys}
        identity = repr(sorted(row.items()))
        if identity in seen or any(v is None for v in row.values()):
            continue
        seen.add(identity)
        request = {k: _json_safe(table.column(k)[i].as_py()) for k in fields}
        picked.append((row, request))
        if len(picked) == PROBE_ROWS:
            break
    picked.reverse()
    return Probe(entity_rows=[r for r, _ in picked], request_data=[d for _, d in picked])


def _json_safe(value: Any) -> Any:
    """A manifest-ready value: bytes as ``{"base64": ...}``, times as ISO text, NaN null."""
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
