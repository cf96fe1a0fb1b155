"""``parity monitor`` estimates a classifier's performance from its logged scores, before
any label: the estimate on calibrated traffic holds the holdout's ROC-AUC and raises
nothing; traffic the model can no longer tell apart alerts with no outcome reported;
and once outcomes arrive, realized metrics outside what the same rows' scores predicted
raise a calibration gap (concept drift), while calibrated outcomes do not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from framework.monitoring import summary as monitor
from framework.registry.model_registry import ARTIFACT, ModelRef, ModelRegistry
from tests.support.prediction_logs import MODEL, record_outcomes, toy_manifest, toy_rows, write_log


@pytest.fixture
def toy(tmp_path: Path) -> tuple[Path, ModelRegistry]:
    registry = ModelRegistry(tmp_path / "models")
    registry.register(MODEL, {ARTIFACT: b"not a model"}, toy_manifest(np.random.default_rng(0)))
    return tmp_path, registry


def _version(summary: dict[str, object]) -> dict[str, object]:
    versions = summary["versions"]
    assert isinstance(versions, list)
    return versions[0]  # type: ignore[no-any-return]


def test_calibrated_traffic_is_estimated_near_its_holdout_and_raises_nothing(
    toy: tuple[Path, ModelRegistry],
) -> None:
    root, registry = toy
    log = write_log(root, toy_rows(np.random.default_rng(3), 3_000))
    summary = monitor.monitor_summary(log, registry).to_dict()
    estimated = _version(summary)["estimated"]
    assert isinstance(estimated, dict)
    holdout = registry.manifest(ModelRef(MODEL, 1))["metrics"]["holdout"]
    assert estimated["holdout"]["roc_auc"] == holdout["roc_auc"]
    auc = estimated["roc_auc"]
    assert auc["low"] <= auc["value"] <= auc["high"]
    assert abs(auc["value"] - holdout["roc_auc"]) < 0.05
    assert estimated["rows"] == 3_000
    assert summary["status"] == "ok", summary["alerts"]


def test_traffic_the_model_cannot_tell_apart_alerts_before_any_label(
    toy: tuple[Path, ModelRegistry],
) -> None:
    root, registry = toy
    rng = np.random.default_rng(4)
    rows = toy_rows(rng, 3_000)
    # Every score near the base rate: the model no longer separates the classes.
    flat = np.clip(rng.normal(0.075, 0.01, 3_000), 0.01, 0.2)
    rows = rows.set_column(rows.schema.get_field_index("score"), "score", pa.array(flat))
    log = write_log(root, rows)
    summary = monitor.monitor_summary(log, registry, outcomes_root=root / "outcomes")
    assert summary.feedback is None  # no label anywhere
    names = [a.name for a in summary.alerts]
    assert "estimated_quality_drop" in names, summary.alerts
    alert = summary.alerts[names.index("estimated_quality_drop")]
    assert "unlabelled predictions" in alert.message and alert.severity == "critical"


@pytest.mark.parametrize("calibrated", [True, False])
def test_outcomes_outside_what_the_scores_predicted_raise_a_calibration_gap(
    toy: tuple[Path, ModelRegistry], calibrated: bool
) -> None:
    root, registry = toy
    rng = np.random.default_rng(5)
    rows = toy_rows(rng, 4_000)
    log = write_log(root, rows)
    scores = rows["score"].to_numpy()
    # Concept drift: the same inputs and scores, but positives three times as common.
    truth = rng.random(4_000) < (scores if calibrated else np.clip(scores * 3, 0, 1))
    record_outcomes(root, rows, truth)
    summary = monitor.monitor_summary(log, registry, outcomes_root=root / "outcomes")
    gaps = [a for a in summary.alerts if a.name == "calibration_gap"]
    quality = summary.versions[0].quality
    assert quality is not None and quality.estimated is not None and quality.live is not None
    assert quality.labelled == 4_000
    if calibrated:
        assert gaps == []
        assert quality.estimated.pr_auc is not None
        assert quality.estimated.pr_auc.holds(quality.live["pr_auc"])
    else:
        assert "pr_auc" in {a.message.split(" ")[1] for a in gaps}, summary.alerts
        assert all("no longer calibrated" in a.message for a in gaps)


def test_parity_monitor_prints_estimated_next_to_realized(
    toy: tuple[Path, ModelRegistry], capsys: pytest.CaptureFixture[str]
) -> None:
    from framework.cli import main as cli

    root, registry = toy
    rng = np.random.default_rng(6)
    rows = toy_rows(rng, 2_000)
    log = write_log(root, rows)
    truth = rng.random(2_000) < rows["score"].to_numpy()
    record_outcomes(root, rows, truth, every=2)
    argv = ["monitor", "--log", str(log), "--registry", str(registry.root), "--model", MODEL,
            "--outcomes", str(root / "outcomes"), "--no-fail"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    summary = monitor.monitor_summary(log, registry, outcomes_root=root / "outcomes")
    v = summary.versions[0]
    assert v.estimated is not None and v.estimated.roc_auc is not None
    e = v.estimated.roc_auc
    assert (
        f"estimated (no labels, 2,000 predictions): ROC-AUC {e.value:.3f} [{e.low:.3f}, "
        f"{e.high:.3f}]" in out
    ), out
    assert v.quality is not None and v.quality.live is not None
    assert f"realized on 1,000 outcomes: ROC-AUC {v.quality.live['roc_auc']:.3f}" in out, out


def test_the_estimate_is_a_prometheus_gauge_with_its_interval(
    toy: tuple[Path, ModelRegistry],
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from framework.monitoring.prometheus import prometheus_text

    root, registry = toy
    log = write_log(root, toy_rows(np.random.default_rng(8), 1_500))
    result = monitor.monitor_summary(log, registry)
    summary = result.to_dict()
    families = {f.name: f for f in text_string_to_metric_families(prometheus_text(result))}
    samples = {
        (s.labels["metric"], s.labels["bound"]): s.value
        for s in families["parity_estimated_quality"].samples
    }
    auc = _version(summary)["estimated"]["roc_auc"]  # type: ignore[index]
    assert samples[("roc_auc", "estimate")] == pytest.approx(auc["value"])
    assert (
        samples[("roc_auc", "low")]
        < samples[("roc_auc", "estimate")]
        < samples[("roc_auc", "high")]
    )
    assert ("pr_auc", "estimate") in samples


@pytest.mark.parametrize("ignored", [True, False])
def test_drift_in_a_feature_the_model_ignores_is_reported_without_an_alert(
    tmp_path: Path, ignored: bool
) -> None:
    """Only ``amount`` drifts. With a training importance of ~0 for it (and a spread that
    says so), the drift is in the report (status, reasons) but raises nothing; when the
    model leans on it, it alerts. (The toy has no explainer: training importance decides.)"""
    registry = ModelRegistry(tmp_path / "models")
    manifest = toy_manifest(np.random.default_rng(0))
    weights = {"amount": 0.0002 if ignored else 0.05, "category": 0.04, "count": 0.03}
    manifest["importance"] = {
        "features": [{"feature": k, "mean": v, "std": 0.00005} for k, v in weights.items()]
    }
    registry.register(MODEL, {ARTIFACT: b"not a model"}, manifest)
    log = write_log(tmp_path, toy_rows(np.random.default_rng(9), 2_000, inflate=1.8))
    summary = monitor.monitor_summary(log, registry).to_dict()
    features = {f["feature"]: f for f in _version(summary)["drift"]["features"]}  # type: ignore[index]
    assert features["amount"]["status"] == "drift"  # reported either way
    assert features["amount"]["importance"] == weights["amount"]
    alerted = [a["message"].split()[0] for a in summary["alerts"] if a["name"] == "feature_drift"]
    assert alerted == ([] if ignored else ["amount"]), summary["alerts"]


def test_a_noisy_importance_at_or_below_zero_does_not_mute_a_drift(tmp_path: Path) -> None:
    """Permutation importance on a small holdout can come out negative for a feature the
    model uses (the sample's model: amount_std_7d at -0.012 +- 0.01): that is no evidence
    the model ignores it, so its drift alerts."""
    registry = ModelRegistry(tmp_path / "models")
    manifest = toy_manifest(np.random.default_rng(0))
    manifest["importance"] = {
        "features": [
            {"feature": "amount", "mean": -0.012, "std": 0.01},
            {"feature": "category", "mean": 0.09, "std": 0.01},
        ]
    }
    registry.register(MODEL, {ARTIFACT: b"not a model"}, manifest)
    log = write_log(tmp_path, toy_rows(np.random.default_rng(9), 2_000, inflate=1.8))
    summary = monitor.monitor_summary(log, registry).to_dict()
    alerted = [a["message"].split()[0] for a in summary["alerts"] if a["name"] == "feature_drift"]
    assert alerted == ["amount"], summary["alerts"]


def test_estimates_per_time_bucket_fall_with_the_realized_metrics_and_are_plotted(
    toy: tuple[Path, ModelRegistry], tmp_path: Path
) -> None:
    """The first 2 h the model separates the classes; the next 2 h its scores flatten (a
    drifted input it cannot read) while staying calibrated. Per bucket, the label-free
    estimate and the realized PR-AUC (labels drawn from the scores) fall together, and the
    report plots both."""
    from datetime import timedelta

    from framework.monitoring.report import write_report
    from tests.support.prediction_logs import T0

    root, registry = toy
    rng = np.random.default_rng(10)
    good = toy_rows(rng, 3_000, prefix="good")
    later = toy_rows(rng, 3_000, prefix="flat", start=T0 + timedelta(hours=2))
    flat = np.clip(rng.normal(0.075, 0.015, 3_000), 0.01, 0.3)
    later = later.set_column(later.schema.get_field_index("score"), "score", pa.array(flat))
    log = write_log(root, good, later)
    for rows in (good, later):
        scores = rows["score"].to_numpy()
        record_outcomes(root, rows, rng.random(len(scores)) < scores)
    summary = monitor.monitor_summary(log, registry, outcomes_root=root / "outcomes", buckets=4)
    points = [t for t in summary.timeline if t.estimated_pr_auc is not None]
    assert len(points) >= 4
    half = T0 + timedelta(hours=2)
    early = [t for t in points if t.bucket < half.isoformat()]
    late = [t for t in points if t.bucket >= half.isoformat()]
    assert early and late
    for group in (early, late):
        for t in group:
            assert t.labelled == t.rows and t.realized_pr_auc is not None
            # The realized value within (or just by) its bucket's interval.
            e = t.estimated_pr_auc
            assert e.low - 0.05 <= t.realized_pr_auc <= e.high + 0.05, t
    assert max(t.estimated_pr_auc.value for t in late) < min(
        t.estimated_pr_auc.value for t in early
    )
    assert max(t.realized_pr_auc or 0 for t in late) < min(t.realized_pr_auc or 1 for t in early)
    html = write_report(tmp_path / "report.html", summary).read_text()
    assert "PR-AUC over time: estimated without labels, and realized" in html
    assert "ROC-AUC over time: estimated without labels, and realized" in html
