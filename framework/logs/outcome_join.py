"""Outcomes joined to the predictions they judge.

Each outcome (kept by :class:`framework.logs.outcomes.OutcomeStore`) names its
prediction by request id (optionally ``row_index`` and entity keys to pick one
row of a multi-row request), or by entity keys + time: the model's prediction
for those keys nearest in time, within ``within`` (default 10 minutes) either side.

:func:`match` joins them to the prediction log (a DuckDB view ``log``, see
:func:`framework.logs.reader.open_log`; shadow scores are not predictions anyone
acted on and are never matched) and counts what it cannot use rather than
dropping it silently:

* ``unknown`` — no logged prediction matches (yet: the log may still be being
  written; the outcome stays stored and a later join can match it);
* ``ambiguous`` — a request id names several rows and nothing says which;
* ``duplicates`` — several outcomes for one prediction: the latest received
  wins (a correction), the others are counted;
* ``late`` — received more than ``late_after`` (default 30 days) after the
  prediction: joined, and counted, because a metric over them describes an
  older model than the one serving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import duckdb
import pyarrow as pa

from framework.logs import privacy as log_privacy
from framework.logs.outcomes import OutcomeStore
from framework.logs.reader import log_columns, sql_name

DEFAULT_WITHIN = timedelta(minutes=10)
DEFAULT_LATE_AFTER = timedelta(days=30)


class MatchCounts(TypedDict):
    """What :func:`match` did with the outcomes (a JSON object as printed)."""

    outcomes: int
    joined: int
    by_request_id: int
    by_entity_keys: int
    duplicates: int
    ambiguous: int
    unknown: int
    late: int


def typed_keys(keys: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """Entity keys with their Feast value type names (a plain list: INT64 keys)."""
    return dict(keys) if isinstance(keys, Mapping) else {k: "INT64" for k in keys}


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
    for k, kind in typed_keys(keys).items():
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


def hashed_keys(
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
) -> tuple[pa.Table, MatchCounts]:
    """Join ``outcomes`` to the view ``log``; the joined rows and the counts.

    One joined row per labelled prediction: every ``log`` column, plus ``outcome``,
    ``matched_by`` (``request_id`` or ``entity_keys``), ``observed_at`` and ``late``.
    """
    columns = log_columns(con)
    outcomes, keys = hashed_keys(outcomes, keys, columns)
    primary = "role IS DISTINCT FROM 'shadow'" if "role" in columns else "TRUE"
    con.register("outcome_rows", outcomes)
    narrow = "".join(
        f" AND (o.{sql_name('key_' + k)} IS NULL OR l.{sql_name(k)} = o.{sql_name('key_' + k)})"
        for k in keys
    )
    same_keys = " AND ".join(f"l.{sql_name(k)} = o.{sql_name('key_' + k)}" for k in keys) or "FALSE"
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
    counts: MatchCounts = {
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
