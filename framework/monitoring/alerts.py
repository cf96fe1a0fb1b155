"""Alerts: each threshold a monitored window crosses, so ``parity monitor`` can exit 7.

Every rule is guarded by ``min_rows`` (and live quality by ``min_labels``): below
them the summary says ``insufficient_data`` rather than guessing. The failed-request
rates are the server's own failures and the clients' mistakes apart, each with its
threshold. (Live, the same counts are the server's ``parity_requests_total``
metric, alerted on by ``deploy/prometheus/alerts.yml``.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from framework.features.feature_ages import duration
from framework.logs import failed_requests as request_errors
from framework.monitoring import drift
from framework.monitoring.log_drift import VersionDrift
from framework.monitoring.results import Alert, MonitorSummary, VersionSummary
from framework.monitoring.skew import SkewReport
from framework.monitoring.thresholds import Thresholds


def alerts(summary: MonitorSummary, t: Thresholds) -> list[Alert]:
    """Every threshold the summary crosses (only where there are ``min_rows`` rows)."""
    out = error_alerts(summary.errors, t)
    for v in summary.versions:
        if v.operations.rows < t.min_rows:
            continue
        if v.drift:
            out += drift_alerts(v.version, v.drift, t)
        out += operations_alerts(v, t)
        out += quality_alerts(v, t)
        out += estimated_alerts(v, t)
        out += freshness_alerts(v, t)
    return out


def error_alerts(errors: Mapping[str, Any], t: Thresholds) -> list[Alert]:
    """The server's and the clients' failed-request rates, each against its threshold."""
    out: list[Alert] = []
    if errors.get("requests", 0) < t.min_rows:
        return out
    for kind, limit in (("server", t.server_error_rate), ("client", t.client_error_rate)):
        rate = errors[f"{kind}_error_rate"]
        if rate is not None and rate > limit:
            codes = ", ".join(
                f"{c} {n:,}" for c, n in errors["by_code"].items()
                if (c in request_errors.SERVER_CODES) == (kind == "server")
            )  # fmt: skip
            out.append(
                Alert(f"{kind}_error_rate", "all", "critical" if kind == "server" else
                      "warning", f"{rate:.2%} of {errors['requests']:,} requests failed "
                      f"({codes}) > {limit:.2%}", rate, limit)
            )  # fmt: skip
    return out


def drift_alerts(version: str, d: VersionDrift, t: Thresholds) -> list[Alert]:
    """Drifted features, the dataset verdict, score and confidence drift, confidence drop."""
    psi_drift = t.drift.psi_drift
    out = [
        Alert("feature_drift", version, "warning",
              f"{f.feature} drifted: {'; '.join(f.reasons)}", f.psi, psi_drift)
        for f in d.features if f.status == drift.DRIFT and not _ignored(f.feature, d, t)
    ]  # fmt: skip
    if d.dataset.status == "drift":
        out.append(
            Alert("dataset_drift", version, "critical", d.dataset.reason,
                  d.dataset.drift_share, t.drift.dataset_drift_share)
        )  # fmt: skip
    if d.score is not None and d.score.status == drift.DRIFT:
        out.append(
            Alert("prediction_drift", version, "warning",
                  "score distribution drifted: " + "; ".join(d.score.reasons),
                  d.score.psi, psi_drift)
        )  # fmt: skip
    conf = d.confidence.distribution if d.confidence is not None else None
    if conf is not None and conf.status == drift.DRIFT:
        out.append(
            Alert("confidence_drift", version, "warning",
                  "confidence distribution drifted: " + "; ".join(conf.reasons),
                  conf.psi, psi_drift)
        )  # fmt: skip
    drop = d.confidence.drop if d.confidence is not None else None
    if d.confidence is not None and drop is not None and drop >= t.confidence_drop:
        out.append(
            Alert("confidence_drop", version, "warning",
                  f"mean confidence {d.confidence.current_mean:.3f} is {drop:.3f} "
                  f"below the holdout's {d.confidence.reference_mean:.3f}",
                  drop, t.confidence_drop)
        )  # fmt: skip
    return out


def _ignored(feature: str, d: VersionDrift, t: Thresholds) -> bool:
    """Whether the model ignores ``feature``, so its drift cannot matter.

    On the window's decomposition (:mod:`framework.monitoring.impact`), when there is
    one: its mean absolute attribution there below ``ignored_importance_share`` of the
    largest feature's. Else its permutation importance at training, and only when clearly
    below that share of the largest (mean + 2 std under it): on a small holdout a feature
    the model leans on can come out at or below zero, and its drift must still alert.
    Unknown: not ignored.
    """
    found = d.impact.by_feature if d.impact is not None else {}
    if found:
        most = max(f.attribution_share for f in found.values())
        own = found.get(feature)
        return (
            own is not None
            and most > 0
            and own.attribution_share < (t.ignored_importance_share * most)
        )
    largest = max(d.importance.values(), default=0.0)
    mine = d.importance.get(feature)
    spread = d.importance_std.get(feature, math.inf)
    return (
        mine is not None and largest > 0
        and mine + 2 * spread < t.ignored_importance_share * largest
    )  # fmt: skip


def operations_alerts(v: VersionSummary, t: Thresholds) -> list[Alert]:
    """FALLBACK and REVIEW rates, p99 latency, features missing or stale online."""
    out: list[Alert] = []
    ops = v.operations
    for name, key, limit in (
        ("fallback_rate", "FALLBACK", t.fallback_rate),
        ("review_rate", "REVIEW", t.review_rate),
    ):
        rate = ops.decisions[key].rate
        if rate is not None and rate > limit:
            out.append(
                Alert(name, v.version, "warning", f"{key} rate {rate:.1%} > {limit:.1%}",
                      rate, limit)
            )  # fmt: skip
    lat = ops.latency_seconds
    if lat and lat.p99 is not None and lat.p99 > t.latency_p99_seconds:
        out.append(
            Alert("latency_p99", v.version, "warning",
                  f"p99 latency {lat.p99 * 1000:.1f} ms > "
                  f"{t.latency_p99_seconds * 1000:.0f} ms", lat.p99, t.latency_p99_seconds)
        )  # fmt: skip
    for feature, r in ops.feature_status.items():
        lost = r.missing_rate + r.stale_rate
        base = r.reference_null_rate or 0.0
        if lost - base > t.missing_rate_increase:
            out.append(
                Alert("missing_features", v.version, "warning",
                      f"{feature}: {lost:.1%} missing or stale online vs {base:.1%} null "
                      "in training", lost - base, t.missing_rate_increase)
            )  # fmt: skip
    return out


def freshness_alerts(v: VersionSummary, t: Thresholds) -> list[Alert]:
    """Features served older than the version's training p99 far more often than the 1 %
    training had (:mod:`framework.monitoring.freshness`)."""
    return [
        Alert("stale_features", v.version, "warning",
              f"{f.feature}: {f.older_share:.1%} of {f.served['rows']:,} served values older "
              f"than training's p99 ({duration(f.training['p99'])}; 1% in training), served "
              f"p50 {duration(f.served['p50'])} vs {duration(f.training['p50'])}",
              f.older_share, t.older_than_training_share)
        for f in v.freshness or []
        if f.status == "stale" and f.older_share is not None
    ]  # fmt: skip


def quality_alerts(v: VersionSummary, t: Thresholds) -> list[Alert]:
    """Live ROC-AUC below the holdout's, on at least ``min_labels`` outcomes."""
    q = v.quality
    if q is None or q.labelled < t.min_labels:
        return []
    live = (q.live or {}).get("roc_auc")
    hold = (q.holdout or {}).get("roc_auc")
    if live is None or hold is None or hold - live <= t.quality_drop:
        return []
    return [
        Alert("quality_drop", v.version, "critical",
              f"live ROC-AUC {live:.3f} on {q.labelled} outcomes vs holdout {hold:.3f}",
              hold - live, t.quality_drop)
    ]  # fmt: skip


def estimated_alerts(v: VersionSummary, t: Thresholds) -> list[Alert]:
    """Before any label: the estimated ROC-AUC, even at its interval's top, more than
    ``quality_drop`` below the holdout's — the same estimate on the holdout's scores where
    training recorded it (like with like), else the realized holdout ROC-AUC. With labels
    (``min_labels``): the realized ROC-AUC or PR-AUC outside what the same rows' scores
    predicted (calibration no longer holds)."""
    out = []
    e = v.estimated
    like = ((e.holdout_estimated if e else None) or {}).get("roc_auc")
    hold = like if like is not None else ((e.holdout if e else None) or {}).get("roc_auc")
    if e is not None and e.roc_auc is not None and hold is not None:
        if hold - e.roc_auc.high > t.quality_drop:
            against = "the holdout's estimated" if like is not None else "holdout"
            out.append(
                Alert("estimated_quality_drop", v.version, "critical",
                      f"estimated ROC-AUC {e.roc_auc.value:.3f} [{e.roc_auc.low:.3f}, "
                      f"{e.roc_auc.high:.3f}] on {e.rows} unlabelled predictions vs "
                      f"{against} {hold:.3f}", hold - e.roc_auc.value, t.quality_drop)
            )  # fmt: skip
    q = v.quality
    if q is None or q.estimated is None or q.labelled < t.min_labels or not q.live:
        return out
    for metric in ("roc_auc", "pr_auc"):
        expected, realized = getattr(q.estimated, metric), q.live.get(metric)
        if expected is not None and realized is not None and not expected.holds(realized):
            out.append(
                Alert("calibration_gap", v.version, "warning",
                      f"realized {metric} {realized:.3f} on {q.labelled} outcomes is outside "
                      f"the [{expected.low:.3f}, {expected.high:.3f}] the same rows' scores "
                      "predicted: the scores are no longer calibrated (concept drift)",
                      realized - expected.value, 0.0)
            )  # fmt: skip
    return out


def skew_alerts(report: SkewReport, t: Thresholds) -> list[Alert]:
    """A feature whose sampled values differ offline more often than allowed."""
    return [
        Alert("skew", ",".join(report.versions), "critical",
              f"{f.feature}: {f.mismatches} of {f.compared} sampled values differ from the "
              "offline recomputation", f.mismatch_rate, t.skew_mismatch_rate)
        for f in report.features if f.mismatch_rate > t.skew_mismatch_rate
    ]  # fmt: skip


def add_skew(summary: MonitorSummary, report: SkewReport, t: Thresholds) -> None:
    """Put a skew check's report and alerts into the summary (its status follows)."""
    summary.skew = report
    summary.alerts += skew_alerts(report, t)
    if summary.alerts:
        summary.status = "alert"
