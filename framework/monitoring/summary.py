"""Monitoring: what the prediction log says about a model in production.

:func:`monitor_summary` reads the prediction log
(``<log>/model=NAME/date=*/part-*.parquet``, see ``serving.log.writer``)
with DuckDB, without pulling it into pandas, and compares it, per model
version, with the reference statistics in that version's manifest:

- data drift per feature and the dataset verdict (:mod:`framework.monitoring.drift`);
- prediction drift (score) and confidence-distribution drift, with the drop in
  mean confidence: the early warning before accuracy visibly drops. A
  regression version has no confidence (its manifest's ``task`` says so,
  whatever the log holds: 0.0 from older servers, null now): its confidence is
  ``not_applicable`` (:func:`framework.monitoring.drift.not_applicable`), with no mean, no
  drop, no timeline value and no alert;
- the decision mix (ACCEPT / VALIDATE / REVIEW / FALLBACK rates), missing and
  stale feature rates (from each feature's logged ``__status``), latency
  p50/p95/p99 per request;
- cost: CPU seconds per prediction (the ``cpu_seconds`` the server logs) at a
  price per CPU-hour, as the cost of 1,000 predictions;
- live quality where ground truth was reported, joined by :mod:`framework.loop.feedback`
  (by request id, or by entity keys + time), per version and decision;
- a timeline (confidence, decision mix, latency per time bucket) for the report;
- alerts: each threshold crossed, so ``parity monitor`` can exit non-zero.

Each query reads only the columns it needs straight from Parquet: per version
one aggregate (:func:`_version_stats`), one streamed scan of the numerical
features (:func:`numeric_counts`) and one of the categorical ones
(:func:`categorical_counts`); then the timeline. (Reading the log once into
Arrow and counting everything from there was measured too: no faster on the
benchmark, and holding the columns the quantiles need cost about 200 MiB more
per million rows.)

Failed requests produce no prediction: the server logs them beside the
predictions (:mod:`framework.logs.failed_requests`), and the summary's ``errors``
gives their count by status code and their rates among all requests of the
window — the server's own failures and the clients' mistakes apart, each with
its alert threshold. (Live, the same counts are the server's
``parity_requests_total`` metric, alerted on by ``deploy/prometheus/alerts.yml``.)

Every rate and test is guarded by ``min_rows``: below it the summary says
``insufficient_data`` rather than guessing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow.compute as pc

from framework.duck import connect
from framework.errors import ConfigError, DataError
from framework.logs import failed_requests as request_errors
from framework.logs.outcomes import OutcomeStore
from framework.loop import feedback
from framework.monitoring import drift
from framework.registry.model_registry import ModelRef, ModelRegistry, NotFoundError

DECISIONS = ("ACCEPT", "VALIDATE", "REVIEW", "FALLBACK")
MISSING_STATUSES = ("NOT_FOUND", "NULL_VALUE")
STALE_STATUS = "OUTSIDE_MAX_AGE"
#: Default price of one CPU-hour (a cloud vCPU-hour on demand, order of magnitude).
DEFAULT_CPU_PRICE_PER_HOUR = 0.04
_BATCH_ROWS = 262_144
#: ``time_bucket``'s default origin for TIMESTAMPTZ, 2000-01-03 00:00 UTC, in microseconds.
_BUCKET_ORIGIN_US = 946_857_600_000_000
_BUCKETS = (
    timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1),
    timedelta(hours=6), timedelta(days=1), timedelta(days=7),
)  # fmt: skip


@dataclass(frozen=True)
class Thresholds:
    """Alert thresholds of ``parity monitor``; the drift ones are :class:`DriftThresholds`.

    Defaults: confidence drop 0.05 (mean confidence below the holdout's),
    p99 latency 0.25 s, FALLBACK rate 5 %, REVIEW rate 30 %, failed requests
    1 % by the server's fault (``INTERNAL``, ``UNAVAILABLE``, ...) and 5 % by the
    clients' (``INVALID_ARGUMENT``, ``NOT_FOUND``, ...), a feature's
    missing-or-stale rate 10 points above its training null rate, live
    ROC-AUC 0.05 below the holdout's (with at least ``min_labels`` outcomes
    of both classes), any skew mismatch.
    """

    drift: drift.DriftThresholds = field(default_factory=drift.DriftThresholds)
    confidence_drop: float = 0.05
    latency_p99_seconds: float = 0.25
    fallback_rate: float = 0.05
    review_rate: float = 0.30
    server_error_rate: float = 0.01
    client_error_rate: float = 0.05
    missing_rate_increase: float = 0.10
    quality_drop: float = 0.05
    min_labels: int = 200
    skew_mismatch_rate: float = 0.0

    @property
    def min_rows(self) -> int:
        return self.drift.min_rows

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("drift"))
        return out


def parse_thresholds(items: Sequence[str], base: Thresholds | None = None) -> Thresholds:
    """``NAME=VALUE`` settings (drift or alert thresholds) applied to ``base``."""
    base = base or Thresholds()
    drift_names = {f.name for f in fields(drift.DriftThresholds)}
    own = {f.name for f in fields(Thresholds)} - {"drift"}
    drift_changes: dict[str, Any] = {}
    changes: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep:
            raise ConfigError(f"--threshold: expected NAME=VALUE, got {item!r}.")
        if name not in drift_names | own:
            known = ", ".join(sorted(drift_names | own))
            raise ConfigError(f"--threshold: unknown threshold {name!r} (known: {known}).")
        try:
            value: float = float(text)
        except ValueError:
            raise ConfigError(f"--threshold {name}: must be a number, got {text!r}.") from None
        if name in ("min_rows", "min_labels"):
            if value != int(value):
                raise ConfigError(f"--threshold {name}: must be a whole number, got {text!r}.")
            value = int(value)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"--threshold {name}: must be a non-negative number, got {text!r}.")
        (drift_changes if name in drift_names else changes)[name] = value
    return replace(base, drift=replace(base.drift, **drift_changes), **changes)


# ------------------------------------------------------------------ reading the log


def sql_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def log_models(log_root: Path) -> list[str]:
    """Models that have rows in the prediction log."""
    return sorted(
        p.name.removeprefix("model=")
        for p in Path(log_root).glob("model=*")
        if any(p.glob("date=*/part-*.parquet"))
    )


def pick_model(log_root: Path, model: str | None) -> str:
    if model:
        return model
    models = log_models(log_root)
    if not models:
        raise DataError(f"The prediction log {log_root} has no rows.")
    if len(models) > 1:
        raise ConfigError(f"--model: the log holds several models ({', '.join(models)}); pick one.")
    return models[0]


def open_log(
    log_root: Path,
    model: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    request_id_prefix: str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view ``log``: the model's logged rows in
    ``[since, until)`` by request time (``__timestamp``)."""
    pattern = Path(log_root) / f"model={model}" / "date=*" / "part-*.parquet"
    if not any(Path(log_root).glob(f"model={model}/date=*/part-*.parquet")):
        raise DataError(f"The prediction log {log_root} has no rows for model {model!r}.")
    con = con or connect()
    where = ["TRUE"]
    if since is not None:
        where.append(f"__timestamp >= {sql_literal(_utc(since).isoformat())}::TIMESTAMPTZ")
        # Rows are logged after they are requested: no row of the window is in an earlier
        # date partition, so DuckDB skips those files.
        where.append(f"date >= {sql_literal(_utc(since).date().isoformat())}::DATE")
    if until is not None:
        where.append(f"__timestamp < {sql_literal(_utc(until).isoformat())}::TIMESTAMPTZ")
    if request_id_prefix:
        where.append(f"starts_with(__request_id, {sql_literal(request_id_prefix)})")
    con.execute(
        f"""CREATE OR REPLACE TEMP VIEW log AS
            SELECT * FROM read_parquet({sql_literal(str(pattern))}, hive_partitioning = true,
                union_by_name = true, hive_types = {{'model': VARCHAR, 'date': DATE}})
            WHERE {" AND ".join(where)}"""
    )
    return con


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _columns(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {row[0] for row in con.execute("DESCRIBE log").fetchall()}


# ------------------------------------------------------------------ drift from the log


def numeric_counts(
    con: duckdb.DuckDBPyConnection, profiles: Mapping[str, Mapping[str, Any]], where: str
) -> dict[str, tuple[list[int], int]]:
    """Live counts on each numerical profile's bins and its nulls (null or NaN), in one
    scan of ``log`` streamed in record batches (memory bounded by the batch size).

    The binning is numpy's ``searchsorted`` on the stored edges, the same call that
    counted the reference (:func:`framework.models.reference_stats.bin_counts`).
    """
    if not profiles:
        return {}
    names = list(profiles)
    edges = {n: np.asarray(profiles[n].get("edges") or [], np.float64) for n in names}
    counts = {n: np.zeros(len(edges[n]) + 1, np.int64) for n in names}
    nulls = dict.fromkeys(names, 0)
    select = ", ".join(f"CAST({sql_name(n)} AS DOUBLE) AS {sql_name(n)}" for n in names)
    reader = con.execute(f"SELECT {select} FROM log WHERE {where}").to_arrow_reader(_BATCH_ROWS)
    for batch in reader:
        for i, n in enumerate(names):
            values = batch.column(i).to_numpy(zero_copy_only=False)
            # Nulls arrive as NaN, which sorts after every edge into the last bin: counted
            # there and taken out again (cheaper than copying the other values out).
            missing = int(np.count_nonzero(np.isnan(values)))
            which = np.searchsorted(edges[n], values, side="left")
            binned = np.bincount(which, minlength=len(edges[n]) + 1)
            binned[-1] -= missing
            counts[n] += binned
            nulls[n] += missing
    return {n: ([int(c) for c in counts[n]], nulls[n]) for n in names}


def categorical_counts(
    con: duckdb.DuckDBPyConnection, columns: Sequence[str], where: str
) -> dict[str, dict[str | None, int]]:
    """Counts per value (``None``: nulls) of each column, in one scan of ``log`` (one
    grouping set per column; ``GROUPING`` tells a column's own null from "not grouped")."""
    if not columns:
        return {}
    values = [f"CAST({sql_name(c)} AS VARCHAR) AS _v{i}" for i, c in enumerate(columns)]
    flags = [f"GROUPING(_v{i})" for i in range(len(columns))]
    sets = ", ".join(f"(_v{i})" for i in range(len(columns)))
    rows = con.execute(
        f"""SELECT {", ".join(flags)}, {", ".join(values)}, count(*) FROM log WHERE {where}
            GROUP BY GROUPING SETS ({sets})"""
    ).fetchall()
    out: dict[str, dict[str | None, int]] = {c: {} for c in columns}
    n = len(columns)
    for row in rows:
        i = list(row[:n]).index(0)  # the one column this row is grouped by
        out[columns[i]][row[n + i]] = int(row[-1])
    return out


def _version_drift(
    con: duckdb.DuckDBPyConnection,
    reference: Mapping[str, Any],
    where: str,
    columns: set[str],
    thresholds: drift.DriftThresholds,
    confidence_mean: float | None,
    *,
    has_confidence: bool = True,
) -> dict[str, Any]:
    # Request data (e.g. a raw amount the model only sees through on-demand ratios) is
    # checked too when the manifest profiles it under ``reference.request_data``.
    every = {**reference.get("request_data", {}), **reference.get("features", {})}
    profiles = {k: v for k, v in every.items() if k in columns}
    numerical = {k: v for k, v in profiles.items() if v.get("kind") == "numerical"}
    signals = ("score", "confidence") if has_confidence else ("score",)
    outputs = {k: reference[k] for k in signals if reference.get(k) and k in columns}
    counts = numeric_counts(con, {**numerical, **{f"{k}": v for k, v in outputs.items()}}, where)
    categories = categorical_counts(
        con, [k for k, v in profiles.items() if v.get("kind") == "categorical"], where
    )
    results: list[drift.FeatureDrift] = []
    for name, profile in profiles.items():
        if profile.get("kind") == "categorical":
            results.append(drift.categorical_drift(name, profile, categories[name], thresholds))
        else:
            bins, nulls = counts[name]
            results.append(drift.numerical_drift(name, profile, bins, nulls, thresholds))
    verdict = drift.dataset_verdict(results, thresholds)
    results.sort(key=lambda r: (-(r.psi if r.psi is not None else -1.0), r.feature))
    out: dict[str, Any] = {
        "dataset": verdict.to_dict(),
        "features": [r.to_dict() for r in results],
    }
    for name, profile in outputs.items():
        bins, nulls = counts[name]
        out[name] = drift.numerical_drift(name, profile, bins, nulls, thresholds).to_dict()
    if "confidence" in outputs:
        ref_mean = outputs["confidence"].get("mean")
        cur_mean = confidence_mean
        out["confidence"]["reference_mean"] = ref_mean
        out["confidence"]["current_mean"] = cur_mean
        out["confidence"]["drop"] = (
            ref_mean - cur_mean if ref_mean is not None and cur_mean is not None else None
        )
    if not has_confidence:
        out["confidence"] = {
            **drift.not_applicable("confidence", "a regression model has no confidence"),
            "reference_mean": None,
            "current_mean": None,
            "drop": None,
        }
    return out


def _has_confidence(manifest: Mapping[str, Any]) -> bool:
    """Whether the version's predictions carry a confidence (by its task, not the log)."""
    return manifest.get("task") != "regression"


# ------------------------------------------------------------------ operations


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _window(con: duckdb.DuckDBPyConnection, columns: set[str]) -> dict[str, Any]:
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
    return {
        "rows": int(row[0]),
        "requests": int(row[1]),
        "first": row[2].isoformat() if row[2] else None,
        "last": row[3].isoformat() if row[3] else None,
    }


@dataclass
class _VersionStats:
    """One version's aggregates from one scan of ``log`` (see :func:`_version_stats`)."""

    operations: dict[str, Any]
    cpu_seconds: tuple[float, int] | None  # sum and count of the logged CPU seconds
    confidence_mean: float | None


def _version_stats(
    con: duckdb.DuckDBPyConnection, where: str, features: Sequence[str], columns: set[str]
) -> _VersionStats:
    """Operations (rows, requests, time span, decision mix, latency per request, missing
    and stale rates per feature), CPU seconds and mean confidence of the rows ``where``
    selects, in one aggregate query (one scan of the columns it names)."""
    status = [f for f in features if f"{f}__status" in columns]
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
    cpu = "cpu_seconds" in columns
    if cpu:
        parts += ["sum(cpu_seconds)", "count(cpu_seconds)"]
    confidence = "confidence" in columns
    if confidence:
        parts.append("avg(confidence)")
    row = con.execute(f"SELECT {', '.join(parts)} FROM log WHERE {where}").fetchone()
    assert row is not None
    rows, requests, first, last = int(row[0]), int(row[1]), row[2], row[3]
    decisions = {
        d: {"count": int(c), "rate": _rate(int(c), rows)}
        for d, c in zip(DECISIONS, row[4 : 4 + len(DECISIONS)], strict=True)
    }
    i = 4 + len(DECISIONS)
    quantiles, mean = row[i], row[i + 1]
    latency = (
        {"p50": quantiles[0], "p95": quantiles[1], "p99": quantiles[2], "mean": mean,
         "requests": requests}
        if quantiles
        else None
    )  # fmt: skip
    i += 2
    feature_rates: dict[str, Any] = {}
    if rows:
        for j, f in enumerate(status):
            feature_rates[f] = {
                "missing_rate": row[i + 2 * j] / rows,
                "stale_rate": row[i + 2 * j + 1] / rows,
            }
    i += 2 * len(status)
    cpu_seconds = None
    if cpu:
        cpu_seconds = (row[i], int(row[i + 1]))
        i += 2
    return _VersionStats(
        operations={
            "rows": rows,
            "requests": requests,
            "first": first.isoformat() if first else None,
            "last": last.isoformat() if last else None,
            "decisions": decisions,
            "latency_seconds": latency,
            "feature_status": feature_rates,
        },
        cpu_seconds=cpu_seconds,
        confidence_mean=row[i] if confidence else None,
    )


def _cost(cpu_seconds: tuple[float, int] | None, price: float) -> dict[str, Any] | None:
    if cpu_seconds is None or not cpu_seconds[1]:
        return None
    total, measured = float(cpu_seconds[0]), cpu_seconds[1]
    per_prediction = total / measured
    return {
        "predictions_measured": measured,
        "cpu_seconds_total": total,
        "cpu_seconds_per_prediction": per_prediction,
        "price_per_cpu_hour": price,
        "cost_per_1k_predictions": per_prediction * 1000 * price / 3600,
    }


def _bucket(first: datetime, last: datetime, buckets: int) -> timedelta:
    span = last - first
    for width in _BUCKETS:
        if span / width <= buckets:
            return width
    return _BUCKETS[-1]


def _timeline(
    con: duckdb.DuckDBPyConnection,
    where: str,
    width: timedelta,
    without_confidence: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Rows, confidence, decision mix and latency per bucket and version; versions in
    ``without_confidence`` (regression) get no confidence (null)."""
    micros = int(width.total_seconds()) * 1_000_000
    # DuckDB's ``time_bucket(width, ts)`` (origin 2000-01-03 00:00 UTC) in integer
    # microseconds: on TIMESTAMPTZ it goes through ICU's calendar, four times slower.
    offset = f"(epoch_us(__timestamp) - {_BUCKET_ORIGIN_US})"
    floor = f"{offset} - ({offset} % {micros} + {micros}) % {micros}"
    bucket = f"make_timestamptz({floor} + {_BUCKET_ORIGIN_US})"
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
    names = ["bucket", "version", "rows", "mean_confidence", "p10_confidence"] + [
        f"{d.lower()}_rate" for d in DECISIONS
    ]
    out = []
    for r in rows:
        item = dict(zip(names, r[:-1], strict=True))
        item["bucket"] = item["bucket"].isoformat()
        lat = r[-1] or [None, None, None]
        item.update(latency_p50=lat[0], latency_p95=lat[1], latency_p99=lat[2])
        out.append(item)
    return out


# ------------------------------------------------------------------ the summary


def monitor_summary(
    log_root: Path,
    registry: ModelRegistry,
    model: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    request_id_prefix: str | None = None,
    outcomes_root: Path | None = None,
    thresholds: Thresholds | None = None,
    cpu_price_per_hour: float = DEFAULT_CPU_PRICE_PER_HOUR,
    buckets: int = 48,
    memory_limit: str | None = None,
) -> dict[str, Any]:
    """Monitor one model's logged predictions against its versions' reference statistics.

    Parameters
    ----------
    log_root
        The prediction log (``data/predictions``).
    registry
        Where each logged version's manifest (its reference statistics) is read.
    model
        The model; may be omitted when the log holds one model only.
    since, until
        The window ``[since, until)`` of request times (``__timestamp``); naive is UTC.
    request_id_prefix
        Only requests whose id starts with it (e.g. one traffic source or demo phase).
    outcomes_root
        Ground truth reported to the server (``data/outcomes``); absent: no live quality.
    thresholds
        Alert and drift thresholds (:class:`Thresholds` documents the defaults).
    cpu_price_per_hour
        Price of one CPU-hour, for the cost of 1,000 predictions.

    Returns a JSON-ready dict: ``model``, ``window``, ``errors`` (failed requests,
    :func:`framework.logs.failed_requests.error_summary`), ``versions`` (per version:
    operations, drift, cost, quality), ``timeline``, ``alerts`` and ``status``
    (``alert``, ``ok`` or ``insufficient_data``).

    Examples
    --------
    >>> summary = monitor_summary(Path("data/predictions"), ModelRegistry(Path("data/models")),
    ...                           "fraud_model")  # doctest: +SKIP
    >>> summary["status"], [a["name"] for a in summary["alerts"]]  # doctest: +SKIP
    ('alert', ['feature_drift', ...])
    """
    thresholds = thresholds or Thresholds()
    if cpu_price_per_hour < 0 or not math.isfinite(cpu_price_per_hour):
        raise ConfigError(
            f"cpu_price_per_hour must be a non-negative number. Got {cpu_price_per_hour!r}."
        )
    model = pick_model(log_root, model)
    con = connect(memory_limit=memory_limit)
    try:
        try:
            open_log(
                log_root, model, since=since, until=until,
                request_id_prefix=request_id_prefix, con=con,
            )  # fmt: skip
        except DataError:
            errors = request_errors.error_summary(
                con, log_root, model, 0, since=since, until=until,
                request_id_prefix=request_id_prefix,
            )  # fmt: skip
            if not errors["failed"]:
                raise
            # No prediction at all, but failed requests: exactly what must be reported.
            con.execute("CREATE OR REPLACE TEMP VIEW log AS SELECT NULL::VARCHAR AS "
                        "model_version, NULL::TIMESTAMPTZ AS __timestamp, NULL::VARCHAR AS "
                        "__request_id, NULL::INT AS __row_index WHERE FALSE")  # fmt: skip
        columns = _columns(con)
        versions = [
            str(v[0])
            for v in con.execute(
                "SELECT DISTINCT model_version FROM log ORDER BY try_cast(model_version AS INT)"
            ).fetchall()
        ]
        overall = _window(con, columns)
        summary: dict[str, Any] = {
            "model": model,
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "window": {
                "since": _utc(since).isoformat() if since else None,
                "until": _utc(until).isoformat() if until else None,
                "request_id_prefix": request_id_prefix,
                "first": overall["first"],
                "last": overall["last"],
                "rows": overall["rows"],
                "requests": overall["requests"],
            },
            "thresholds": thresholds.to_dict(),
            "errors": request_errors.error_summary(
                con,
                log_root,
                model,
                overall["requests"],
                since=since,
                until=until,
                request_id_prefix=request_id_prefix,
            ),  # fmt: skip
            "versions": [],
            "timeline": [],
        }
        joined = None
        if outcomes_root is not None and Path(outcomes_root).is_dir():
            keys: list[str] = []
            for v in versions:
                keys += _manifest(registry, model, v).get("join_keys", [])
            outcomes = feedback.outcomes_table(OutcomeStore(outcomes_root), sorted(set(keys)))
            if outcomes.num_rows:
                joined, summary["feedback"] = feedback.match(con, outcomes, sorted(set(keys)))
        no_confidence: list[str] = []
        for version in versions:
            where = f"model_version = {sql_literal(version)}"
            manifest = _manifest(registry, model, version)
            features = [f["name"] for f in manifest.get("features", [])]
            entry: dict[str, Any] = {"version": version, "known": bool(manifest)}
            stats = _version_stats(con, where, features, columns)
            entry.update(stats.operations)
            reference = manifest.get("reference") or {}
            for name, rates in entry["feature_status"].items():
                profile = reference.get("features", {}).get(name, {})
                rates["reference_null_rate"] = profile.get("null_rate")
            has_confidence = _has_confidence(manifest)
            if not has_confidence:
                no_confidence.append(version)
            entry["drift"] = (
                _version_drift(
                    con,
                    reference,
                    where,
                    columns,
                    thresholds.drift,
                    stats.confidence_mean if has_confidence else None,
                    has_confidence=has_confidence,
                )
                if reference
                else None
            )
            if entry["drift"]:
                _rank_by_importance(entry["drift"], manifest.get("importance") or {})
            entry["cost"] = _cost(stats.cpu_seconds, cpu_price_per_hour)
            entry["quality"] = (
                feedback.live_quality(
                    joined.filter(pc.equal(joined.column("model_version"), version)), manifest
                )
                if joined is not None
                else None
            )
            summary["versions"].append(entry)
        if overall["first"] and overall["last"]:
            first = datetime.fromisoformat(overall["first"])
            last = datetime.fromisoformat(overall["last"])
            width = _bucket(first, last, buckets)
            summary["window"]["bucket_seconds"] = int(width.total_seconds())
            summary["timeline"] = _timeline(con, "TRUE", width, no_confidence)
    finally:
        con.close()
    summary["alerts"] = alerts(summary, thresholds)
    summary["status"] = (
        "alert"
        if summary["alerts"]
        else "insufficient_data"
        if summary["window"]["rows"] < thresholds.min_rows
        else "ok"
    )
    return summary


def _rank_by_importance(d: dict[str, Any], importance: Mapping[str, Any]) -> None:
    """Give each feature the version's permutation importance (recorded at training) and
    list the drifted ones by it: drift in a feature the model leans on matters most."""
    weight = {f["feature"]: f["mean"] for f in importance.get("features", [])}
    for f in d["features"]:
        f["importance"] = weight.get(f["feature"])
    drifted = [f for f in d["features"] if f["status"] == drift.DRIFT]
    drifted.sort(key=lambda f: -(f["importance"] if f["importance"] is not None else -math.inf))
    d["drifted_by_importance"] = [
        {"feature": f["feature"], "importance": f["importance"], "psi": f["psi"]} for f in drifted
    ]


def _manifest(registry: ModelRegistry, model: str, version: str) -> dict[str, Any]:
    try:
        return registry.manifest(ModelRef(model, int(version)))
    except (NotFoundError, ValueError):
        return {}  # a version the registry does not hold: operations only, no reference


# ------------------------------------------------------------------ alerts


def _alert(
    name: str, version: str, severity: str, message: str, value: Any, threshold: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "severity": severity,
        "message": message,
        "value": value,
        "threshold": threshold,
    }


def alerts(summary: Mapping[str, Any], t: Thresholds) -> list[dict[str, Any]]:
    """Every threshold the summary crosses (only where there are ``min_rows`` rows)."""
    out: list[dict[str, Any]] = []
    errors = summary.get("errors") or {}
    if errors.get("requests", 0) >= t.min_rows:
        for kind, limit in (("server", t.server_error_rate), ("client", t.client_error_rate)):
            rate = errors[f"{kind}_error_rate"]
            if rate is not None and rate > limit:
                codes = ", ".join(
                    f"{c} {n:,}" for c, n in errors["by_code"].items()
                    if (c in request_errors.SERVER_CODES) == (kind == "server")
                )  # fmt: skip
                out.append(
                    _alert(f"{kind}_error_rate", "all", "critical" if kind == "server" else
                           "warning", f"{rate:.2%} of {errors['requests']:,} requests failed "
                           f"({codes}) > {limit:.2%}", rate, limit)
                )  # fmt: skip
    for v in summary["versions"]:
        version = v["version"]
        if v["rows"] < t.min_rows:
            continue
        d = v.get("drift")
        if d:
            for f in d["features"]:
                if f["status"] == drift.DRIFT:
                    out.append(
                        _alert("feature_drift", version, "warning",
                               f"{f['feature']} drifted: {'; '.join(f['reasons'])}",
                               f["psi"], t.drift.psi_drift)
                    )  # fmt: skip
            if d["dataset"]["status"] == "drift":
                out.append(
                    _alert("dataset_drift", version, "critical", d["dataset"]["reason"],
                           d["dataset"]["drift_share"], t.drift.dataset_drift_share)
                )  # fmt: skip
            if (d.get("score") or {}).get("status") == drift.DRIFT:
                out.append(
                    _alert("prediction_drift", version, "warning",
                           "score distribution drifted: " + "; ".join(d["score"]["reasons"]),
                           d["score"]["psi"], t.drift.psi_drift)
                )  # fmt: skip
            conf = d.get("confidence") or {}
            if conf.get("status") == drift.DRIFT:
                out.append(
                    _alert("confidence_drift", version, "warning",
                           "confidence distribution drifted: " + "; ".join(conf["reasons"]),
                           conf["psi"], t.drift.psi_drift)
                )  # fmt: skip
            if conf.get("drop") is not None and conf["drop"] >= t.confidence_drop:
                out.append(
                    _alert("confidence_drop", version, "warning",
                           f"mean confidence {conf['current_mean']:.3f} is {conf['drop']:.3f} "
                           f"below the holdout's {conf['reference_mean']:.3f}",
                           conf["drop"], t.confidence_drop)
                )  # fmt: skip
        rates = v["decisions"]
        for name, key, limit in (
            ("fallback_rate", "FALLBACK", t.fallback_rate),
            ("review_rate", "REVIEW", t.review_rate),
        ):
            rate = rates[key]["rate"]
            if rate is not None and rate > limit:
                out.append(
                    _alert(name, version, "warning",
                           f"{key} rate {rate:.1%} > {limit:.1%}", rate, limit)
                )  # fmt: skip
        lat = v.get("latency_seconds")
        if lat and lat["p99"] is not None and lat["p99"] > t.latency_p99_seconds:
            out.append(
                _alert("latency_p99", version, "warning",
                       f"p99 latency {lat['p99'] * 1000:.1f} ms > "
                       f"{t.latency_p99_seconds * 1000:.0f} ms", lat["p99"], t.latency_p99_seconds)
            )  # fmt: skip
        for feature, r in v["feature_status"].items():
            lost = r["missing_rate"] + r["stale_rate"]
            base = r.get("reference_null_rate") or 0.0
            if lost - base > t.missing_rate_increase:
                out.append(
                    _alert("missing_features", version, "warning",
                           f"{feature}: {lost:.1%} missing or stale online vs {base:.1%} null "
                           "in training", lost - base, t.missing_rate_increase)
                )  # fmt: skip
        q = v.get("quality") or {}
        live, hold = q.get("live") or {}, q.get("holdout") or {}
        labelled = q.get("labelled", 0)
        if (
            labelled >= t.min_labels
            and live.get("roc_auc") is not None
            and hold.get("roc_auc") is not None
            and hold["roc_auc"] - live["roc_auc"] > t.quality_drop
        ):
            out.append(
                _alert("quality_drop", version, "critical",
                       f"live ROC-AUC {live['roc_auc']:.3f} on {labelled} outcomes vs holdout "
                       f"{hold['roc_auc']:.3f}", hold["roc_auc"] - live["roc_auc"],
                       t.quality_drop)
            )  # fmt: skip
    return out


# ------------------------------------------------------------------ outputs


def to_json(summary: Mapping[str, Any]) -> str:
    return json.dumps(summary, indent=2, default=str, allow_nan=False)


def prometheus_text(summary: Mapping[str, Any], skew: Mapping[str, Any] | None = None) -> str:
    """Drift, confidence, cost and alert gauges in Prometheus' text format (for a
    node_exporter textfile collector or a Pushgateway)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    r = CollectorRegistry()
    mv = ["model", "version"]
    psi = Gauge("parity_drift_psi", "PSI of a feature against its reference.",
                [*mv, "feature"], registry=r)  # fmt: skip
    detected = Gauge("parity_drift_detected", "1 if the feature drifted, else 0.",
                     [*mv, "feature"], registry=r)  # fmt: skip
    pvalue = Gauge("parity_drift_p_value", "p-value of the feature's KS or chi-square test.",
                   [*mv, "feature"], registry=r)  # fmt: skip
    share = Gauge("parity_dataset_drift_share", "Share of drifted features.", mv, registry=r)
    output = Gauge("parity_prediction_drift_psi", "PSI of the score or confidence distribution.",
                   [*mv, "output"], registry=r)  # fmt: skip
    conf = Gauge("parity_confidence_mean", "Mean confidence: reference (holdout) or current.",
                 [*mv, "window"], registry=r)  # fmt: skip
    cost = Gauge("parity_cost_per_1k_predictions", "CPU cost of 1,000 predictions.", mv,
                 registry=r)  # fmt: skip
    cpu = Gauge("parity_cpu_seconds_per_prediction", "CPU seconds per prediction.", mv,
                registry=r)  # fmt: skip
    rows = Gauge("parity_monitor_rows", "Logged predictions in the monitored window.", mv,
                 registry=r)  # fmt: skip
    alert_count = Gauge("parity_monitor_alerts", "Alerts raised by parity monitor.", ["model"],
                        registry=r)  # fmt: skip
    model = str(summary["model"])
    for v in summary["versions"]:
        labels = (model, v["version"])
        rows.labels(*labels).set(v["rows"])
        d = v.get("drift")
        if d:
            for f in d["features"]:
                if f["psi"] is not None:
                    psi.labels(*labels, f["feature"]).set(f["psi"])
                    detected.labels(*labels, f["feature"]).set(float(f["status"] == drift.DRIFT))
                if f["p_value"] is not None:
                    pvalue.labels(*labels, f["feature"]).set(f["p_value"])
            if d["dataset"]["drift_share"] is not None:
                share.labels(*labels).set(d["dataset"]["drift_share"])
            for name in ("score", "confidence"):
                if (d.get(name) or {}).get("psi") is not None:
                    output.labels(*labels, name).set(d[name]["psi"])
            c = d.get("confidence") or {}
            for window in ("reference", "current"):
                if c.get(f"{window}_mean") is not None:
                    conf.labels(*labels, window).set(c[f"{window}_mean"])
        if v.get("cost"):
            cost.labels(*labels).set(v["cost"]["cost_per_1k_predictions"])
            cpu.labels(*labels).set(v["cost"]["cpu_seconds_per_prediction"])
    errors = summary.get("errors") or {}
    if errors.get("requests"):
        failed = Gauge("parity_monitor_failed_requests", "Failed requests in the monitored "
                       "window by status code.", ["model", "code"], registry=r)  # fmt: skip
        for code, n in errors["by_code"].items():
            failed.labels(model, code).set(n)
        rate = Gauge("parity_monitor_error_rate", "Share of the window's requests that "
                     "failed, by whose fault (server or client).", ["model", "kind"],
                     registry=r)  # fmt: skip
        for kind in ("server", "client"):
            rate.labels(model, kind).set(errors[f"{kind}_error_rate"])
    alert_count.labels(model).set(len(summary["alerts"]))
    if skew:
        mismatch = Gauge("parity_skew_mismatch_rate",
                         "Share of sampled predictions whose feature differs offline.",
                         ["model", "feature"], registry=r)  # fmt: skip
        for f in skew["features"]:
            mismatch.labels(model, f["feature"]).set(f["mismatch_rate"])
    return generate_latest(r).decode()
