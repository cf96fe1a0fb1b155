"""Monitoring: what the prediction log says about a model in production.

:func:`monitor_summary` reads the prediction log (:mod:`framework.logs.reader`)
with DuckDB, without pulling it into pandas, and compares it, per model
version, with the reference statistics in that version's manifest:

- data drift per feature and the dataset verdict, prediction (score) drift and
  confidence drift with the drop in mean confidence
  (:mod:`framework.monitoring.log_drift`). A regression version has no
  confidence (its manifest's ``task`` says so, whatever the log holds: 0.0 from
  older servers, null now): its confidence is ``not_applicable``
  (:func:`framework.monitoring.drift.not_applicable`), with no mean, no drop, no
  timeline value and no alert;
- operations: the decision mix, missing and stale feature rates, latency and
  cost (:mod:`framework.monitoring.operations`);
- freshness: the served ages of each feature next to its ages in training, and the
  share older than the training p99 (:mod:`framework.monitoring.freshness`);
- performance estimated from a classifier's scores alone, no labels needed
  (:mod:`framework.models.estimated`), and on the labelled rows beside the
  realized metrics, where a realized value outside its interval means the scores
  are no longer calibrated;
- live quality where ground truth was reported, joined by
  :func:`framework.logs.outcome_join.match` (by request id, or by entity keys +
  time), per version and decision (:mod:`framework.monitoring.live_quality`);
- a timeline (confidence, decision mix, latency per time bucket) for the report;
- failed requests: the server logs them beside the predictions
  (:mod:`framework.logs.failed_requests`), and the summary's ``errors`` gives
  their count by status code and their rates among all requests of the window;
- alerts: each threshold crossed (:mod:`framework.monitoring.alerts`), so
  ``parity monitor`` can exit non-zero.

The result is a :class:`framework.monitoring.results.MonitorSummary`. (Reading
the log once into Arrow and counting everything from there was measured too:
no faster on the benchmark, and holding the columns the quantiles need cost
about 200 MiB more per million rows.)

Every rate and test is guarded by ``min_rows``: below it the summary says
``insufficient_data`` rather than guessing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from framework.duck import connect
from framework.errors import ConfigError, DataError
from framework.logs import failed_requests as request_errors
from framework.logs import layout
from framework.logs.outcome_join import MatchCounts, match, outcomes_table
from framework.logs.outcomes import OutcomeStore
from framework.logs.reader import (
    log_columns,
    log_versions,
    open_log,
    pick_model,
    sql_literal,
    utc,
)
from framework.models.estimated import (
    REGRESSION_NOT_AVAILABLE,
    EstimatedPerformance,
    aucs,
    estimate_for,
)
from framework.models.manifest import Manifest
from framework.monitoring import operations as ops
from framework.monitoring import version_manifest as vm
from framework.monitoring.alerts import alerts
from framework.monitoring.freshness import version_freshness
from framework.monitoring.impact import version_impact
from framework.monitoring.live_quality import live_quality
from framework.monitoring.log_drift import version_drift
from framework.monitoring.operations import DEFAULT_CPU_PRICE_PER_HOUR
from framework.monitoring.results import MonitorSummary, VersionSummary, Window
from framework.monitoring.thresholds import Thresholds
from framework.progress import Progress
from framework.registry.model_registry import ModelRegistry

__all__ = ["DEFAULT_CPU_PRICE_PER_HOUR", "MonitorSummary", "monitor_summary", "to_json"]

#: The task :func:`monitor_summary` reports its steps under.
TASK = "monitor"


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
    progress: Progress | None = None,
) -> MonitorSummary:
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
    progress
        Hears of each step done (task ``monitor``), each a pass over the window: the
        window and failed requests, the outcome join (with outcomes), each logged
        version (operations, drift, live quality), the timeline.

    Returns a :class:`MonitorSummary` (``to_dict()``: the JSON ``parity monitor`` prints).

    Examples
    --------
    >>> summary = monitor_summary(Path("data/predictions"), ModelRegistry(Path("data/models")),
    ...                           "fraud_model")  # doctest: +SKIP
    >>> summary.status, [a.name for a in summary.alerts]  # doctest: +SKIP
    ('alert', ['feature_drift', ...])
    """
    thresholds = thresholds or Thresholds()
    if cpu_price_per_hour < 0 or not math.isfinite(cpu_price_per_hour):
        raise ConfigError(
            f"cpu_price_per_hour must be a non-negative number. Got {cpu_price_per_hour!r}."
        )
    model = pick_model(log_root, model)
    asked = _Asked(since, until, request_id_prefix)
    progress = progress or Progress()
    con = connect(memory_limit=memory_limit)
    try:
        _open(con, log_root, model, asked)
        columns = log_columns(con)
        manifests = {v: vm.version_manifest(registry, model, v) for v in log_versions(con)}
        outcomes = Path(outcomes_root) if outcomes_root is not None else None
        if outcomes is not None and not outcomes.is_dir():
            outcomes = None
        progress.start(TASK, len(manifests) + 2 + (outcomes is not None), "steps", "running")
        summary = _start(con, log_root, model, asked, columns, thresholds)
        progress.advance(TASK, 1, f"window: {summary.window.rows:,} predictions")
        joined = None
        if outcomes is not None:
            joined, summary.feedback = _join_outcomes(con, outcomes, manifests)
            progress.advance(TASK, 1, "outcomes joined")
        for version, manifest in manifests.items():
            summary.versions.append(
                _version(con, version, manifest, columns, thresholds, cpu_price_per_hour,
                         _labelled(joined, version), registry)
            )  # fmt: skip
            progress.advance(TASK, 1, f"version {version}")
        _add_timeline(con, summary, manifests, buckets, joined)
        progress.advance(TASK, 1, "timeline")
        progress.finish(TASK)
    finally:
        con.close()
    summary.alerts = alerts(summary, thresholds)
    summary.status = (
        "alert"
        if summary.alerts
        else "insufficient_data"
        if summary.window.rows < thresholds.min_rows
        else "ok"
    )
    return summary


@dataclass(frozen=True)
class _Asked:
    """The window asked for: request times ``[since, until)`` and a request id prefix."""

    since: datetime | None
    until: datetime | None
    request_id_prefix: str | None


def _start(
    con: duckdb.DuckDBPyConnection,
    log_root: Path,
    model: str,
    asked: _Asked,
    columns: set[str],
    thresholds: Thresholds,
) -> MonitorSummary:
    """The summary's window and failed requests, before any version."""
    span = ops.window_span(con, columns)
    return MonitorSummary(
        model=model,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        window=Window(
            utc(asked.since).isoformat() if asked.since else None,
            utc(asked.until).isoformat() if asked.until else None,
            asked.request_id_prefix,
            span.first,
            span.last,
            span.rows,
            span.requests,
        ),  # fmt: skip
        thresholds=thresholds,
        errors=_errors(con, log_root, model, span.requests, asked),
    )


def _errors(
    con: duckdb.DuckDBPyConnection, log_root: Path, model: str, requests: int, asked: _Asked
) -> dict[str, Any]:
    return request_errors.error_summary(
        con, log_root, model, requests, since=asked.since, until=asked.until,
        request_id_prefix=asked.request_id_prefix,
    )  # fmt: skip


def _add_timeline(
    con: duckdb.DuckDBPyConnection,
    summary: MonitorSummary,
    manifests: Mapping[str, Manifest | None],
    buckets: int,
    joined: pa.Table | None = None,
) -> None:
    """The timeline, in buckets of a width that makes about ``buckets`` of the window, with
    each classifier's label-free estimates per bucket and, where outcomes were joined, the
    realized values beside them."""
    first, last = summary.window.first, summary.window.last
    if not (first and last):
        return
    width = ops.bucket_width(datetime.fromisoformat(first), datetime.fromisoformat(last), buckets)
    summary.window.bucket_seconds = int(width.total_seconds())
    no_confidence = [v for v, m in manifests.items() if not vm.has_confidence(m)]
    summary.timeline = ops.timeline(con, "TRUE", width, no_confidence)
    classifiers = [v for v, m in manifests.items() if m is not None and vm.has_confidence(m)]
    scores = ops.scores_by_bucket(con, "log", width, classifiers)
    labelled: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    if joined is not None and joined.num_rows:
        con.register("labelled_rows", joined)
        labelled = ops.scores_by_bucket(con, "labelled_rows", width, classifiers, "outcome")
        con.unregister("labelled_rows")
    for i, point in enumerate(summary.timeline):
        key = (point.bucket, point.version)
        if key in scores:
            point.estimated_roc_auc, point.estimated_pr_auc = aucs(
                np.asarray(scores[key]["score"]), seed=i
            )
        if key in labelled:
            _realized(point, labelled[key])


def _realized(point: ops.TimelinePoint, rows: Mapping[str, np.ndarray]) -> None:
    """The bucket's realized ROC-AUC and PR-AUC, where its outcomes hold both classes."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(rows["outcome"], dtype=np.float64)
    point.labelled = len(y)
    if len(np.unique(y)) == 2:
        p = np.asarray(rows["score"], dtype=np.float64)
        point.realized_roc_auc = float(roc_auc_score(y, p))
        point.realized_pr_auc = float(average_precision_score(y, p))


def _open(con: duckdb.DuckDBPyConnection, log_root: Path, model: str, asked: _Asked) -> None:
    """The view ``log`` of the window; an empty one when the window has no prediction but
    failed requests (exactly what must be reported then)."""
    try:
        open_log(log_root, model, since=asked.since, until=asked.until,
                 request_id_prefix=asked.request_id_prefix, con=con)  # fmt: skip
    except DataError:
        if not _errors(con, log_root, model, 0, asked)["failed"]:
            raise
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW log AS SELECT NULL::VARCHAR AS {layout.MODEL_VERSION}, "
            f"NULL::TIMESTAMPTZ AS {layout.TIMESTAMP}, NULL::VARCHAR AS {layout.REQUEST_ID}, "
            f"NULL::INT AS {layout.ROW_INDEX} WHERE FALSE"
        )


def _join_outcomes(
    con: duckdb.DuckDBPyConnection, outcomes_root: Path, manifests: Mapping[str, Manifest | None]
) -> tuple[pa.Table | None, MatchCounts | None]:
    """The logged predictions with reported outcomes, and the join's counts (None, None:
    no outcome has a label)."""
    keys = sorted({k for m in manifests.values() for k in vm.key_types_of(m)})
    outcomes = outcomes_table(OutcomeStore(outcomes_root), keys)
    if not outcomes.num_rows:
        return None, None
    return match(con, outcomes, keys)


def _labelled(joined: pa.Table | None, version: str) -> pa.Table | None:
    if joined is None:
        return None
    return joined.filter(pc.equal(joined.column(layout.MODEL_VERSION), version))


def _version(
    con: duckdb.DuckDBPyConnection,
    version: str,
    manifest: Manifest | None,
    columns: set[str],
    thresholds: Thresholds,
    cpu_price_per_hour: float,
    labelled: pa.Table | None,
    registry: ModelRegistry,
) -> VersionSummary:
    """One version's operations, drift against its reference (with what moved the model's
    output), cost and live quality."""
    where = f"{layout.MODEL_VERSION} = {sql_literal(version)}"
    stats = ops.version_stats(con, where, vm.feature_names(manifest), columns)
    reference = vm.reference(manifest)
    for name, rates in stats.operations.feature_status.items():
        rates.reference_null_rate = reference.get("features", {}).get(name, {}).get("null_rate")
    has_confidence = vm.has_confidence(manifest)
    drifted = (
        version_drift(
            con,
            reference,
            where,
            columns,
            thresholds.drift,
            confidence_mean=stats.confidence_mean if has_confidence else None,
            has_confidence=has_confidence,
            importance=vm.importance(manifest),
        )
        if reference
        else None
    )
    if drifted is not None:
        drifted.importance_std = vm.importance_std(manifest)
    if drifted is not None and manifest is not None:
        drifted.impact = version_impact(con, where, registry, manifest, drifted.moved, columns)
    return VersionSummary(
        version=version,
        known=manifest is not None,
        operations=stats.operations,
        drift=drifted,
        cost=ops.cost(stats.cpu_seconds, cpu_price_per_hour),
        quality=live_quality(labelled, manifest)
        if labelled is not None and manifest is not None
        else None,
        estimated=_estimated(con, where, manifest) if has_confidence else None,
        estimated_reason=None if has_confidence or manifest is None else REGRESSION_NOT_AVAILABLE,
        freshness=version_freshness(con, where, manifest, columns, thresholds),
    )


def _estimated(
    con: duckdb.DuckDBPyConnection, where: str, manifest: Manifest | None
) -> EstimatedPerformance | None:
    """What the version's scores say of its quality, labels or not: the model's own answers
    only (a FALLBACK's score is not the model's)."""
    if manifest is None:
        return None
    scores = con.execute(
        f"SELECT score FROM log WHERE {where} AND score IS NOT NULL "
        "AND decision IS DISTINCT FROM 'FALLBACK'"
    ).fetchnumpy()["score"]
    if len(scores) == 0:
        return None
    out = estimate_for(np.asarray(scores, dtype=np.float64), manifest.serving)
    holdout = vm.holdout_metrics(manifest)
    out.holdout = {k: holdout.get(k) for k in ("roc_auc", "pr_auc", "positive_rate")}
    out.holdout_estimated = manifest.metrics.holdout_estimated
    return out


def to_json(summary: Mapping[str, Any]) -> str:
    """The JSON ``parity monitor --json`` prints of ``summary.to_dict()``."""
    return json.dumps(summary, indent=2, default=str, allow_nan=False)
