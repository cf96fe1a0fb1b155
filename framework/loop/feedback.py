"""Ground truth: outcomes joined to the predictions they judge.

Outcomes arrive through ``parity feedback PATH`` (CSV, Parquet or JSON lines)
or the ``ReportOutcome`` RPC and are kept by :class:`framework.logs.outcomes.OutcomeStore`.
Each names its prediction in one of two ways:

* **by request id** (``request_id``, optionally ``row_index`` and entity keys to
  pick one row of a multi-row request);
* **by entity keys + time** (every join key of the model and ``event_time``):
  the model's prediction for those keys nearest in time, within ``within``
  (default 10 minutes) either side.

:func:`framework.logs.outcome_join.match` joins them to the prediction log and
counts what it cannot use (unknown, ambiguous, duplicate and late outcomes).

:func:`feedback_report` adds live quality per model version and per decision
bucket (:mod:`framework.monitoring.live_quality`), and writes the joined outcomes
as a label source (:func:`framework.logs.outcomes.label_source`): a model spec with
``labels.feedback = true`` trains on them too.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from framework.duck import connect
from framework.errors import ConfigError, DataError
from framework.logs import layout
from framework.logs.outcome_join import (
    DEFAULT_LATE_AFTER,
    DEFAULT_WITHIN,
    MatchCounts,
    match,
    outcomes_table,
    typed_keys,
)
from framework.logs.outcomes import OutcomeStore, label_source
from framework.logs.reader import log_versions, open_log
from framework.monitoring import version_manifest as vm
from framework.monitoring.live_quality import LiveQuality, live_quality
from framework.registry.model_registry import ModelRegistry

__all__ = [
    "COLUMNS",
    "FeedbackReport",
    "feedback_report",
    "ingest",
    "read_outcome_file",
    "write_label_source",
]

#: Columns an outcome file may have besides the entity keys.
COLUMNS = ("request_id", "row_index", "event_time", "label", "observed_at")


# ------------------------------------------------------------------ reading outcome files


def read_outcome_file(path: Path, keys: Sequence[str] | Mapping[str, str]) -> list[dict[str, Any]]:
    """Every outcome in ``path`` (.csv, .parquet, .jsonl/.ndjson), validated. ``keys``:
    the entity keys with their Feast value types (a list: INT64 keys), so a STRING key
    read from a CSV file keeps its text ("007").

    Raises :class:`DataError` naming the first bad row and field; nothing is
    returned (so nothing is stored) unless every row is valid.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"No outcome file at {path}.")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open(path, newline="") as f:
            rows: list[dict[str, Any]] = [dict(r) for r in csv.DictReader(f)]
    elif suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    elif suffix in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path.name}: line {n}: not JSON ({exc.msg}).") from None
    else:
        raise ConfigError(f"{path.name}: use .csv, .parquet or .jsonl (got {suffix or 'none'}).")
    if not rows:
        raise DataError(f"{path.name}: no outcomes.")
    unknown = sorted(set().union(*rows) - set(COLUMNS) - set(keys))
    if unknown:
        raise DataError(
            f"{path.name}: unknown column {unknown[0]!r} (expected {', '.join(COLUMNS)} and the "
            f"entity keys {', '.join(keys)})."
        )
    typed = typed_keys(keys)
    return [_outcome(row, typed, f"{path.name}: row {i}") for i, row in enumerate(rows, 1)]


def _outcome(row: Mapping[str, Any], keys: Mapping[str, str], where: str) -> dict[str, Any]:
    def blank(v: Any) -> bool:
        return v is None or v == "" or (isinstance(v, float) and math.isnan(v))

    label = row.get("label")
    if blank(label):
        raise DataError(f"{where}: label: required.")
    try:
        value = float(label)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{where}: label: must be a number, got {label!r}.") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: label: must be finite, got {label!r}.")
    request_id = "" if blank(row.get("request_id")) else str(row["request_id"])
    out: dict[str, Any] = {"request_id": request_id, "label": value, "entity_keys": {}}
    for k, kind in keys.items():
        if not blank(row.get(k)):
            out["entity_keys"][k] = _key(row[k], kind, f"{where}: {k}")
    if not blank(row.get("row_index")):
        out["row_index"] = _int(row["row_index"], f"{where}: row_index")
        if out["row_index"] < 0:
            raise DataError(f"{where}: row_index: must be >= 0, got {row['row_index']!r}.")
    for name in ("event_time", "observed_at"):
        if not blank(row.get(name)):
            out[name] = _time(row[name], f"{where}: {name}")
    if not request_id and (len(out["entity_keys"]) < len(keys) or "event_time" not in out):
        raise DataError(
            f"{where}: give request_id, or every entity key ({', '.join(keys)}) and event_time."
        )
    return out


def _key(value: Any, kind: str, where: str) -> Any:
    """An entity key value as its Feast type takes it (text for STRING keys, as read)."""
    if kind in ("INT64", "INT32"):
        return _int(value, where)
    if kind == "BYTES":
        return value if isinstance(value, bytes) else str(value).encode()
    if isinstance(value, bytes | bool | int | float) and kind in ("STRING", "UUID", "TIME_UUID"):
        raise DataError(f"{where}: must be text ({kind}), got {value!r}.")
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise DataError(f"{where}: must be an integer, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: must be an integer, got {value!r}.") from None
    if not number.is_integer():
        raise DataError(f"{where}: must be an integer, got {value!r}.")
    return int(number)


def _time(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        stamp = value
    else:
        try:
            stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise DataError(f"{where}: not an ISO 8601 time: {value!r}.") from None
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def ingest(path: Path, store: OutcomeStore, keys: Sequence[str] | Mapping[str, str]) -> int:
    """Validate every outcome in ``path``, then store them all (one fsync); their number."""
    return store.record_many(read_outcome_file(path, keys))


# ------------------------------------------------------------------ the label source


def write_label_source(path: Path, joined: pa.Table, keys: Sequence[str],
                       request_fields: Sequence[str]) -> int:  # fmt: skip
    """Rows with entity keys (predictions the server enriched itself) as a label table:
    keys, ``label``, ``event_timestamp`` (the prediction's time), ``label_timestamp`` (when
    the outcome was known) and the request data. Written whole, then renamed."""
    if joined.num_rows == 0 or not all(k in joined.column_names for k in keys):
        rows = joined.slice(0, 0)
    else:
        has_keys = pc.and_kleene(*(pc.is_valid(joined.column(k)) for k in keys)) if len(
            keys) > 1 else pc.is_valid(joined.column(keys[0]))  # fmt: skip
        rows = joined.filter(has_keys)
    table = pa.table(
        {
            **{k: rows.column(k) if k in rows.column_names else pa.nulls(rows.num_rows, pa.int64())
               for k in keys},
            "label": rows.column("outcome"),
            "event_timestamp": rows.column(layout.TIMESTAMP),
            "label_timestamp": rows.column("observed_at"),
            **{f: rows.column(f) for f in request_fields if f in rows.column_names},
            "request_id": rows.column(layout.REQUEST_ID),
            "model_version": rows.column(layout.MODEL_VERSION),
        }
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return int(table.num_rows)


@dataclass
class VersionQuality:
    version: str
    quality: LiveQuality

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, **self.quality.to_dict()}


@dataclass
class LabelSource:
    path: str
    rows: int


@dataclass
class FeedbackReport:
    """What ``parity feedback`` reports: the join's counts, live quality per version and
    the label source written (with ``data``); ``stored``: outcomes the command stored."""

    model: str
    counts: MatchCounts
    versions: list[VersionQuality]
    label_source: LabelSource | None = None
    stored: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "counts": dict(self.counts),
            "versions": [v.to_dict() for v in self.versions],
        }
        if self.label_source is not None:
            out["label_source"] = {"path": self.label_source.path, "rows": self.label_source.rows}
        if self.stored is not None:
            out["stored"] = self.stored
        return out


def feedback_report(
    log_root: Path,
    outcomes_root: Path,
    registry: ModelRegistry,
    model: str,
    *,
    data: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    request_id_prefix: str | None = None,
    within: timedelta = DEFAULT_WITHIN,
    late_after: timedelta = DEFAULT_LATE_AFTER,
) -> FeedbackReport:
    """Join every stored outcome of ``model`` to its log; counts, live quality per version
    and decision, and (with ``data``) the label source rewritten."""
    con = connect()
    try:
        open_log(log_root, model, since=since, until=until,
                 request_id_prefix=request_id_prefix, con=con)  # fmt: skip
        versions = log_versions(con)
        manifests = {v: vm.version_manifest(registry, model, v) for v in versions}
        keys = {k: t for m in manifests.values() for k, t in sorted(vm.key_types_of(m).items())}
        fields = sorted({f for m in manifests.values() for f in vm.request_fields(m)})
        outcomes = outcomes_table(OutcomeStore(outcomes_root), keys)
        joined, counts = match(con, outcomes, list(keys), within=within, late_after=late_after)
    finally:
        con.close()
    report = FeedbackReport(model=model, counts=counts, versions=[])
    for v in versions:
        part = joined.filter(pc.equal(joined.column(layout.MODEL_VERSION), v)) if (
            joined.num_rows) else joined  # fmt: skip
        manifest = manifests[v]
        quality = live_quality(part, manifest) if manifest is not None else None
        report.versions.append(
            VersionQuality(v, quality or LiveQuality(labelled=part.num_rows))
        )  # a version the registry no longer holds: counted, not judged
    if data is not None:
        path = label_source(data, model)
        rows = write_label_source(path, joined, list(keys), fields)
        report.label_source = LabelSource(str(path), rows)
    return report
