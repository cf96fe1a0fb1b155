"""Operations from the prediction log: volume, decisions, features lost, latency, cost.

Per version one aggregate query (:func:`version_stats`, one scan of the columns it
names) gives the decision mix (ACCEPT / VALIDATE / REVIEW / FALLBACK rates),
missing and stale feature rates (from each feature's logged ``__status``),
latency p50/p95/p99 per request, the CPU seconds the server logged (priced as
the cost of 1,000 predictions, :func:`cost`) and the mean confidence; then a
:func:`timeline` per time bucket for the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np

from framework.logs.reader import sql_literal, sql_name

DECISIONS = ("ACCEPT", "VALIDATE", "REVIEW", "FALLBACK")
MISSING_STATUSES = ("NOT_FOUND", "NULL_VALUE")
STALE_STATUS = "OUTSIDE_MAX_AGE"
#: Default price of one CPU-hour (a cloud vCPU-hour on demand, order of magnitude).
DEFAULT_CPU_PRICE_PER_HOUR = 0.04
#: ``time_bucket``'s default origin for TIMESTAMPTZ, 2000-01-03 00:00 UTC, in microseconds.
_BUCKET_ORIGIN_US = 946_857_600_000_000
_BUCKETS = (
    timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1),
    timedelta(hours=6), timedelta(days=1), timedelta(days=7),
)  # fmt: skip


@dataclass
class Span:
    """Rows, requests and the first and last request time (ISO 8601) of some rows."""

    rows: int
    requests: int
    first: str | None
    last: str | None


@dataclass
class DecisionCount:
    count: int
    rate: float | None


@dataclass
class Latency:
    """Seconds per request (its first row carries it)."""

    p50: float | None
    p95: float | None
    p99: float | None
    mean: float | None
    requests: int


@dataclass
class FeatureStatus:
    """A feature's missing and stale rates online, and its null rate in training."""

    missing_rate: float
    stale_rate: float
    reference_null_rate: float | None = None


@dataclass
class Operations(Span):
    decisions: dict[str, DecisionCount]
    latency_seconds: Latency | None
    feature_status: dict[str, FeatureStatus]


@dataclass
class VersionStats:
    """One version's aggregates from one scan of ``log`` (see :func:`version_stats`)."""

    operations: Operations
    cpu_seconds: tuple[float, int] | None  # sum and count of the logged CPU seconds
    confidence_mean: float | None


@dataclass
class Cost:
    predictions_measured: int
    cpu_seconds_total: float
    cpu_seconds_per_prediction: float
    price_per_cpu_hour: float
    cost_per_1k_predictions: float


@dataclass
class TimelinePoint:
    """One version's rows in one time bucket."""

    bucket: str
    version: str
    rows: int
    mean_confidence: float | None
    p10_confidence: float | None
    accept_rate: float | None
    validate_rate: float | None
    review_rate: float | None
    fallback_rate: float | None
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    #: A classifier's label-free estimates in the bucket (with their intervals), and the
    #: realized values where outcomes were joined (``labelled`` of them).
    estimated_roc_auc: Any = None
    estimated_pr_auc: Any = None
    labelled: int = 0
    realized_roc_auc: float | None = None
    realized_pr_auc: float | None = None


def rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def window_span(con: duckdb.DuckDBPyConnection, columns: set[str]) -> Span:
    """Rows, requests and the first and last request time of the whole ``log``.

    Requests are the clients' calls: a shadow version's copy of a call is not another one.
    """
    answered = "__row_index = 0" + (
        " AND role IS DISTINCT FROM 'shadow'" if "role" in columns else ""
    )
    row = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {answered}), min(__timestamp), "
        "max(__timestamp) FROM log"
    ).fetchone()
    assert row is not None
    return Span(int(row[0]), int(row[1]), _iso(row[2]), _iso(row[3]))


def _stats_sql(status: Sequence[str], cpu: bool, confidence: bool) -> list[str]:
    missing = ", ".join(sql_literal(m) for m in MISSING_STATUSES)
    parts = [
        "count(*)",
        "count(*) FILTER (WHERE __row_index = 0)",
        "min(__timestamp)",
        "max(__timestamp)",
        *(f"count(*) FILTER (WHERE decision = {sql_literal(d)})" for d in DECISIONS),
        # Latency is per request: its first row carries it.
        "quantile_cont(latency_seconds, [0.5, 0.95, 0.99]) FILTER (WHERE __row_index = 0)",
        "avg(latency_seconds) FILTER (WHERE __row_index = 0)",
    ]
    for f in status:
        s = sql_name(f"{f}__status")
        parts += [
            f"count(*) FILTER (WHERE {s} IN ({missing}))",
            f"count(*) FILTER (WHERE {s} = {sql_literal(STALE_STATUS)})",
        ]
    if cpu:
        parts += ["sum(cpu_seconds)", "count(cpu_seconds)"]
    if confidence:
        parts.append("avg(confidence)")
    return parts


def version_stats(
    con: duckdb.DuckDBPyConnection, where: str, features: Sequence[str], columns: set[str]
) -> VersionStats:
    """Operations (rows, requests, time span, decision mix, latency per request, missing
    and stale rates per feature), CPU seconds and mean confidence of the rows ``where``
    selects, in one aggregate query (one scan of the columns it names)."""
    status = [f for f in features if f"{f}__status" in columns]
    cpu, confidence = "cpu_seconds" in columns, "confidence" in columns
    sql = ", ".join(_stats_sql(status, cpu, confidence))
    row = con.execute(f"SELECT {sql} FROM log WHERE {where}").fetchone()
    assert row is not None
    rows, requests, first, last = int(row[0]), int(row[1]), row[2], row[3]
    decisions = {
        d: DecisionCount(int(c), rate(int(c), rows))
        for d, c in zip(DECISIONS, row[4 : 4 + len(DECISIONS)], strict=True)
    }
    i = 4 + len(DECISIONS)
    quantiles, mean = row[i], row[i + 1]
    latency = (
        Latency(quantiles[0], quantiles[1], quantiles[2], mean, requests) if quantiles else None
    )
    i += 2
    feature_rates: dict[str, FeatureStatus] = {}
    if rows:
        for j, f in enumerate(status):
            feature_rates[f] = FeatureStatus(row[i + 2 * j] / rows, row[i + 2 * j + 1] / rows)
    i += 2 * len(status)
    cpu_seconds = None
    if cpu:
        cpu_seconds = (row[i], int(row[i + 1]))
        i += 2
    return VersionStats(
        operations=Operations(
            rows, requests, _iso(first), _iso(last), decisions, latency, feature_rates
        ),
        cpu_seconds=cpu_seconds,
        confidence_mean=row[i] if confidence else None,
    )


def cost(cpu_seconds: tuple[float, int] | None, price: float) -> Cost | None:
    """CPU seconds per prediction at ``price`` per CPU-hour; None when nothing was measured."""
    if cpu_seconds is None or not cpu_seconds[1]:
        return None
    total, measured = float(cpu_seconds[0]), cpu_seconds[1]
    per_prediction = total / measured
    return Cost(measured, total, per_prediction, price, per_prediction * 1000 * price / 3600)


def bucket_width(first: datetime, last: datetime, buckets: int) -> timedelta:
    span = last - first
    for width in _BUCKETS:
        if span / width <= buckets:
            return width
    return _BUCKETS[-1]


def _bucket_sql(width: timedelta) -> str:
    """The start of ``__timestamp``'s bucket of ``width``, as SQL."""
    micros = int(width.total_seconds()) * 1_000_000
    # DuckDB's ``time_bucket(width, ts)`` (origin 2000-01-03 00:00 UTC) in integer
    # microseconds: on TIMESTAMPTZ it goes through ICU's calendar, four times slower.
    offset = f"(epoch_us(__timestamp) - {_BUCKET_ORIGIN_US})"
    floor = f"{offset} - ({offset} % {micros} + {micros}) % {micros}"
    return f"make_timestamptz({floor} + {_BUCKET_ORIGIN_US})"


def scores_by_bucket(
    con: duckdb.DuckDBPyConnection,
    relation: str,
    width: timedelta,
    versions: Sequence[str],
    extra: str = "",
) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    """The model's own scores (no FALLBACK) of ``versions`` in ``relation`` per (bucket,
    version) of the timeline's buckets, and ``extra`` (a column) beside them, row for row.

    Fetched as numpy columns and split here: a DuckDB ``list()`` per bucket would turn
    every score into a Python float (a third of the monitor's time on 1M rows)."""
    if not versions:
        return {}
    more = f", {extra}" if extra else ""
    micros = int(width.total_seconds()) * 1_000_000
    offset = f"(epoch_us(__timestamp) - {_BUCKET_ORIGIN_US})"
    out: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for version in versions:
        found = con.execute(
            f"""SELECT {offset} - ({offset} % {micros} + {micros}) % {micros} AS bucket,
                       score{more}
                FROM {relation}
                WHERE model_version = {sql_literal(version)} AND score IS NOT NULL
                  AND decision IS DISTINCT FROM 'FALLBACK'
                ORDER BY bucket"""
        ).fetchnumpy()
        starts = np.asarray(found["bucket"], dtype=np.int64)
        columns = {"score": np.asarray(found["score"], np.float64)}
        if extra:
            columns[extra] = np.asarray(found[extra])
        edges = [0, *(np.flatnonzero(np.diff(starts)) + 1).tolist(), len(starts)]
        for a, b in zip(edges[:-1], edges[1:], strict=True):
            if b > a:
                start = datetime.fromtimestamp((int(starts[a]) + _BUCKET_ORIGIN_US) / 1e6, UTC)
                out[(start.isoformat(), version)] = {k: c[a:b] for k, c in columns.items()}
    return out


def timeline(
    con: duckdb.DuckDBPyConnection,
    where: str,
    width: timedelta,
    without_confidence: Sequence[str] = (),
) -> list[TimelinePoint]:
    """Rows, confidence, decision mix and latency per bucket and version; versions in
    ``without_confidence`` (regression) get no confidence (null)."""
    bucket = _bucket_sql(width)
    decision_sql = ", ".join(
        f"avg((decision = {sql_literal(d)})::INTEGER) AS {d.lower()}_rate" for d in DECISIONS
    )
    confidence = "confidence"
    if without_confidence:
        versions = ", ".join(sql_literal(v) for v in without_confidence)
        confidence = f"CASE WHEN model_version IN ({versions}) THEN NULL ELSE confidence END"
    rows = con.execute(
        f"""SELECT {bucket} AS bucket, model_version,
                   count(*) AS rows, avg({confidence}) AS mean_confidence,
                   quantile_cont({confidence}, 0.1) AS p10_confidence, {decision_sql},
                   quantile_cont(latency_seconds, [0.5, 0.95, 0.99])
                       FILTER (WHERE __row_index = 0) AS latency
            FROM log WHERE {where} GROUP BY ALL ORDER BY bucket, model_version"""
    ).fetchall()
    out = []
    for bucket_start, version, n, mean, p10, *rates, latency in rows:
        lat = latency or [None, None, None]
        out.append(TimelinePoint(bucket_start.isoformat(), version, n, mean, p10, *rates, *lat))
    return out
