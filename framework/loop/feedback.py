"""Ground truth: outcomes joined to the predictions they judge.

Outcomes arrive through ``parity feedback PATH`` (CSV, Parquet or JSON lines)
or the ``ReportOutcome`` RPC and are kept by :class:`framework.logs.outcomes.OutcomeStore`.
Each names its prediction in one of two ways:

* **by request id** (``request_id``, optionally ``row_index`` and entity keys to
  pick one row of a multi-row request);
* **by entity keys + time** (every join key of the model and ``event_time``):
  the model's prediction for those keys nearest in time, within ``within``
  (default 10 minutes) either side.

:func:`match` joins them to the prediction log (a DuckDB view ``log``; shadow
scores are not predictions anyone acted on and are never matched) and counts
what it cannot use rather than dropping it silently:

* ``unknown`` — no logged prediction matches (yet: the log may still be being
  written; the outcome stays stored and a later join can match it);
* ``ambiguous`` — a request id names several rows and nothing says which;
* ``duplicates`` — several outcomes for one prediction: the latest received
  wins (a correction), the others are counted;
* ``late`` — received more than ``late_after`` (default 30 days) after the
  prediction: joined, and counted, because a metric over them describes an
  older model than the one serving.

:func:`feedback_report` adds live quality per model version and per decision
bucket (what share of ACCEPTed predictions were right...), and writes the joined
outcomes as a label source (:func:`framework.logs.outcomes.label_source`): a model spec with
``labels.feedback = true`` trains on them too.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from framework.errors import ConfigError, DataError
from framework.logs import privacy as log_privacy
from framework.logs.outcomes import OutcomeStore, label_source

DEFAULT_WITHIN = timedelta(minutes=10)
DEFAULT_LATE_AFTER = timedelta(days=30)
#: Columns an outcome file may have besides the entity keys.
COLUMNS = ("request_id", "row_index", "event_time", "label", "observed_at")
DECISIONS = ("ACCEPT", "VALIDATE", "REVIEW", "FALLBACK")


# ------------------------------------------------------------------ reading outcome files


def key_types_of(manifest: Mapping[str, Any]) -> dict[str, str]:
    """A model version's join keys with their Feast value type names (versions trained
    before keys were typed had INT64 keys only)."""
    typed = manifest.get("join_key_types") or {}
    return {k: str(typed.get(k, "INT64")) for k in manifest["join_keys"]}


def _typed(keys: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    return dict(keys) if isinstance(keys, Mapping) else {k: "INT64" for k in keys}


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
    typed = _typed(keys)
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


# ------------------------------------------------------------------ joining


def outcomes_table(store: OutcomeStore, keys: Sequence[str] | Mapping[str, str]) -> pa.Table:
    """The stored outcomes with a label, in arrival order (``oid``), keys as columns."""
    records = [r for r in store.read() if r.get("label") is not None]
    ts = pa.timestamp("us", tz="UTC")

    def stamp(text: Any) -> datetime | None:
        return datetime.fromisoformat(text).astimezone(UTC) if text else None

    cols: dict[str, pa.Array] = {
        "oid": pa.array(range(len(records)), pa.int64()),
        "request_id": pa.array([r.get("request_id") or None for r in records], pa.string()),
        "row_index": pa.array([r.get("row_index") for r in records], pa.int64()),
        "event_time": pa.array([stamp(r.get("event_time")) for r in records], ts),
        "label": pa.array([float(r["label"]) for r in records], pa.float64()),
        "received_at": pa.array(
            [stamp(r.get("observed_at") or r.get("received_at")) for r in records], ts
        ),
    }
    for k, kind in _typed(keys).items():
        values = [(r.get("entity_keys") or {}).get(k) for r in records]
        python, arrow = _KEY_COLUMNS.get(kind, (str, pa.string()))
        cols[f"key_{k}"] = pa.array(
            [v if isinstance(v, python) and not isinstance(v, bool) else None for v in values],
            arrow,
        )
    return pa.table(cols)


#: Per Feast key type: the Python type an outcome's key must have to match, and its column.
_KEY_COLUMNS: dict[str, tuple[type, pa.DataType]] = {
    "INT64": (int, pa.int64()),
    "INT32": (int, pa.int64()),
    "BYTES": (bytes, pa.binary()),
    "STRING": (str, pa.string()),
}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _hashed_keys(
    outcomes: pa.Table, keys: Sequence[str], columns: set[str]
) -> tuple[pa.Table, list[str]]:
    """The keys to match on: those the log holds as values, and those it holds hashed
    (``KEY__hmac``, see :mod:`framework.logs.privacy`) when the hash key is at hand, in
    which case the outcomes' keys are hashed the same way."""
    usable = [k for k in keys if k in columns]
    hashed = [k for k in keys if k not in columns and k + log_privacy.SUFFIX in columns]
    secret = log_privacy.hash_key_from_env()
    if secret is not None:
        for k in hashed:
            values = log_privacy.pseudonyms(outcomes.column(f"key_{k}").to_pylist(), secret)
            outcomes = outcomes.append_column(
                f"key_{k}{log_privacy.SUFFIX}", pa.array(values, pa.string())
            )
            usable.append(k + log_privacy.SUFFIX)
    return outcomes, usable


def match(
    con: duckdb.DuckDBPyConnection,
    outcomes: pa.Table,
    keys: Sequence[str],
    *,
    within: timedelta = DEFAULT_WITHIN,
    late_after: timedelta = DEFAULT_LATE_AFTER,
) -> tuple[pa.Table, dict[str, int]]:
    """Join ``outcomes`` to the view ``log``; the joined rows and the counts.

    One joined row per labelled prediction: every ``log`` column, plus ``outcome``,
    ``matched_by`` (``request_id`` or ``entity_keys``), ``observed_at`` and ``late``.
    """
    columns = {r[0] for r in con.execute("DESCRIBE log").fetchall()}
    outcomes, keys = _hashed_keys(outcomes, keys, columns)
    primary = "role IS DISTINCT FROM 'shadow'" if "role" in columns else "TRUE"
    con.register("outcome_rows", outcomes)
    narrow = "".join(
        f" AND (o.{_q('key_' + k)} IS NULL OR l.{_q(k)} = o.{_q('key_' + k)})" for k in keys
    )
    same_keys = " AND ".join(f"l.{_q(k)} = o.{_q('key_' + k)}" for k in keys) or "FALSE"
    within_us = int(within.total_seconds() * 1e6)
    try:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE candidates AS
            SELECT o.oid, o.label AS outcome, o.received_at AS observed_at,
                   'request_id' AS matched_by, 0 AS gap, l.*,
                   count(*) OVER (PARTITION BY o.oid) AS n
            FROM outcome_rows o JOIN (SELECT * FROM log WHERE {primary}) l
              ON l.__request_id = o.request_id
             AND (o.row_index IS NULL OR l.__row_index = o.row_index){narrow}
            WHERE o.request_id IS NOT NULL
            UNION ALL BY NAME
            SELECT o.oid, o.label AS outcome, o.received_at AS observed_at,
                   'entity_keys' AS matched_by,
                   abs(epoch_us(l.__timestamp) - epoch_us(o.event_time)) AS gap, l.*, 1 AS n
            FROM outcome_rows o JOIN (SELECT * FROM log WHERE {primary}) l
              ON {same_keys}
             AND abs(epoch_us(l.__timestamp) - epoch_us(o.event_time)) <= {within_us}
            WHERE o.request_id IS NULL
            QUALIFY row_number() OVER (PARTITION BY o.oid ORDER BY gap, l.__timestamp DESC) = 1"""
        )
        # One outcome per prediction: the latest received (then the latest sent) wins.
        joined = con.execute(
            f"""SELECT * EXCLUDE (n, gap, oid),
                   observed_at - __timestamp > INTERVAL '{int(late_after.total_seconds())} seconds'
                       AS late
            FROM candidates WHERE n = 1
            QUALIFY row_number() OVER (PARTITION BY __request_id, __row_index
                                       ORDER BY observed_at DESC, oid DESC) = 1"""
        ).to_arrow_table()
        (matched_ids, ambiguous) = con.execute(
            "SELECT count(DISTINCT oid) FILTER (WHERE n = 1), "
            "count(DISTINCT oid) FILTER (WHERE n > 1) FROM candidates"
        ).fetchone() or (0, 0)
    finally:
        con.unregister("outcome_rows")
    by = joined.column("matched_by").to_pylist() if joined.num_rows else []
    counts = {
        "outcomes": outcomes.num_rows,
        "joined": joined.num_rows,
        "by_request_id": by.count("request_id"),
        "by_entity_keys": by.count("entity_keys"),
        "duplicates": int(matched_ids) - joined.num_rows,
        "ambiguous": int(ambiguous),
        "unknown": outcomes.num_rows - int(matched_ids) - int(ambiguous),
        "late": int(sum(bool(v) for v in joined.column("late").to_pylist()))
        if joined.num_rows
        else 0,
    }
    return joined, counts


# ------------------------------------------------------------------ live quality


def live_quality(joined: pa.Table, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Metrics of the version's labelled predictions against its holdout, and per decision."""
    from framework.models import evaluation
    from framework.models.estimator import Scores
    from framework.models.spec import ServingSpec, Task

    if joined.num_rows == 0:
        return {"labelled": 0}
    task = Task(manifest.get("task", "classification"))
    score = np.asarray(joined.column("score").to_pylist(), dtype=np.float64)
    y = np.asarray(joined.column("outcome").to_pylist(), dtype=np.float64)
    holdout = (manifest.get("metrics") or {}).get("holdout") or {}
    out: dict[str, Any] = {
        "labelled": joined.num_rows,
        "holdout": {
            k: holdout.get(k)
            for k in ("roc_auc", "pr_auc", "brier", "log_loss", "mae", "rmse", "r2")
            if k in holdout
        },
    }
    if task is not Task.CLASSIFICATION:
        out["live"] = evaluation.metrics(
            task, y, Scores(score, score, np.full(len(y), np.nan)), ServingSpec(), 10
        )
        return out
    predicted = joined.column("label").to_pylist()
    label = np.array([int(v) if v not in (None, "") else 0 for v in predicted])
    confidence = np.asarray(joined.column("confidence").to_pylist(), np.float64)
    scores = Scores(score=score, label=label, confidence=confidence)
    bins = int((manifest.get("spec") or {}).get("calibration", {}).get("bins", 10))
    serving = ServingSpec.model_validate(manifest["serving"])
    live = evaluation.metrics(task, y.astype(np.int64), scores, serving, bins)
    live["accuracy"] = float(np.mean(label == y))
    out["live"] = live
    decisions = joined.column("decision").to_pylist()
    out["by_decision"] = {}
    for d in DECISIONS:
        mask = np.array([x == d for x in decisions])
        if mask.any():
            out["by_decision"][d] = {
                "labelled": int(mask.sum()),
                "accuracy": float(np.mean(label[mask] == y[mask])),
                "positive_rate": float(np.mean(y[mask])),
                "mean_score": float(np.mean(score[mask])),
            }
    return out


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
            "event_timestamp": rows.column("__timestamp"),
            "label_timestamp": rows.column("observed_at"),
            **{f: rows.column(f) for f in request_fields if f in rows.column_names},
            "request_id": rows.column("__request_id"),
            "model_version": rows.column("model_version"),
        }
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return int(table.num_rows)


def feedback_report(
    log_root: Path,
    outcomes_root: Path,
    registry: Any,
    model: str,
    *,
    data: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    request_id_prefix: str | None = None,
    within: timedelta = DEFAULT_WITHIN,
    late_after: timedelta = DEFAULT_LATE_AFTER,
) -> dict[str, Any]:
    """Join every stored outcome of ``model`` to its log; counts, live quality per version
    and decision, and (with ``data``) the label source rewritten."""
    from framework.duck import connect
    from framework.monitoring.summary import _manifest, open_log

    con = connect()
    try:
        open_log(log_root, model, since=since, until=until,
                 request_id_prefix=request_id_prefix, con=con)  # fmt: skip
        versions = [str(v[0]) for v in con.execute(
            "SELECT DISTINCT model_version FROM log ORDER BY try_cast(model_version AS INT)"
        ).fetchall()]  # fmt: skip
        manifests = {v: _manifest(registry, model, v) for v in versions}
        keys = {k: t for m in manifests.values() for k, t in sorted(key_types_of(m).items())}
        fields = sorted({f for m in manifests.values() for f in m.get("request_data", {})})
        outcomes = outcomes_table(OutcomeStore(outcomes_root), keys)
        joined, counts = match(con, outcomes, list(keys), within=within, late_after=late_after)
    finally:
        con.close()
    report: dict[str, Any] = {"model": model, "counts": counts, "versions": []}
    for v in versions:
        part = joined.filter(pc.equal(joined.column("model_version"), v)) if (
            joined.num_rows) else joined  # fmt: skip
        report["versions"].append({"version": v, **live_quality(part, manifests[v])})
    if data is not None:
        path = label_source(data, model)
        report["label_source"] = {
            "path": str(path), "rows": write_label_source(path, joined, list(keys), fields)
        }  # fmt: skip
    return report
