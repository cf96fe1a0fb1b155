"""``parity monitor`` ranks drift by how far it moved the trained sample model's output."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framework.models.manifest import Manifest
from framework.registry.model_registry import ModelRef, ModelRegistry
from tests.support.prediction_logs import T0, scored_rows, write_log

pytestmark = pytest.mark.integration


def _recent_features(trained: Any, n: int) -> Any:
    """The trained model's feature vectors of the sample's last ``n`` transactions, as the
    server would have read them (the point-in-time join just before each)."""
    import duckdb

    from framework.features.training_set import build_training_set
    from framework.models.estimator import feature_frame

    ws = trained.workspace
    entities = duckdb.sql(
        f"""SELECT user_id, merchant_id, amount,
                   hour(transaction_timestamp AT TIME ZONE 'UTC')::BIGINT AS hour_of_day,
                   transaction_timestamp - INTERVAL 1 MICROSECOND AS event_timestamp
            FROM '{ws.data / "raw" / "transactions.parquet"}'
            ORDER BY transaction_timestamp DESC LIMIT {n}"""
    ).to_arrow_table()
    manifest = Manifest.of(trained.manifest)
    return feature_frame(build_training_set(ws.repo, manifest.feature_service, entities),
                         manifest.fields)  # fmt: skip


def test_drift_is_ranked_by_how_far_it_moved_the_output(trained: Any, tmp_path: Path) -> None:
    from framework.cli.monitor import summary_text
    from framework.models.estimator import score
    from framework.monitoring.report import render_html
    from framework.monitoring.summary import monitor_summary

    registry = ModelRegistry(trained.registry_root)
    model, manifest = Manifest.load(registry, ModelRef("fraud_model", trained.version))
    clean = _recent_features(trained, 3_000)
    drifted = clean.copy()
    # The 7-day amount statistics inflate (the sample's amount_inflation, 3x).
    drifted["amount_mean_7d"] *= 3.0
    drifted["amount_std_7d"] *= 3.0

    def rows(frame: Any, start: Any, prefix: str) -> Any:
        scores = score(model, frame, manifest.task, manifest.serving.threshold).score
        return scored_rows(frame, scores, model="fraud_model", version=str(trained.version),
                           start=start, prefix=prefix)  # fmt: skip

    log = write_log(
        tmp_path, rows(clean, T0, "clean"), rows(drifted, T0 + timedelta(days=1), "drifted"),
        model="fraud_model",
    )  # fmt: skip
    calm = monitor_summary(log, registry, "fraud_model", request_id_prefix="clean").to_dict()
    result = monitor_summary(log, registry, "fraud_model", request_id_prefix="drifted")
    moved = result.to_dict()

    # The clean window: nothing drifted or warned, so nothing to attribute (and no model
    # loaded for it); or, if a feature warned by chance, a decomposition all the same.
    calm_impact = calm["versions"][0]["drift"]["impact"]
    assert calm_impact["reason"] == "no feature drifted or warned" or calm_impact["method"]
    d = moved["versions"][0]["drift"]
    impact = d["impact"]
    assert impact["method"] == manifest.explanation["method"], impact
    assert impact["rows"] == 2_000 and impact["reference_rows"] > 0
    ranked = d["drifted_by_impact"]
    drifted_names = {f["feature"] for f in d["features"] if f["status"] == "drift"}
    assert {"amount_mean_7d", "amount_std_7d"} <= drifted_names
    assert {f["feature"] for f in ranked} == drifted_names
    shifts = [f["output_shift"] for f in ranked]
    assert shifts == sorted(shifts, reverse=True) and shifts[0] > 0
    by_feature = {f["feature"]: f for f in impact["features"]}
    assert impact["features"][0]["feature"] == "amount_mean_7d" == ranked[0]["feature"]
    # Against the same training rows, the clean window's own decomposition: the inflated
    # features moved the output several times further than they do on clean traffic, and
    # raised it (larger amount statistics, more fraud-like).
    from framework.models.explain import load_explainer
    from framework.monitoring.impact import decompose

    explainer = load_explainer(registry, model, manifest)
    baseline = decompose(explainer, explainer.background_frame, clean.sample(2_000, random_state=0))
    for name in ("amount_mean_7d", "amount_std_7d"):
        assert by_feature[name]["output_shift"] > 2 * baseline.by_feature[name].output_shift
        assert by_feature[name]["mean_shift"] > baseline.by_feature[name].mean_shift
    assert sum(f["mean_shift"] for f in impact["features"]) == pytest.approx(
        impact["mean_score_window"] - impact["mean_score_reference"], abs=1e-6
    )
    text = summary_text(moved, None)
    assert "drifted, by how far each moved the score: " + ranked[0]["feature"] in text
    report = render_html(result)
    assert "How far each feature moved the output" in report
    assert f"{impact['rows']:,} logged rows" in report


def _toy_model_registry(root: Path) -> tuple[ModelRegistry, Any]:
    """The toy model as a real registered version: a gradient-boosted pipeline that never
    saw ``count`` vary (so no tree splits on it), its SHAP explainer's background, and a
    reference drawn from its own clean traffic."""
    import hashlib
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from framework.models.estimator import build_pipeline, score
    from framework.models.explain import BACKGROUND_FILE, TREE
    from framework.models.reference_stats import numeric_profile
    from framework.models.spec import EstimatorSpec
    from framework.registry import artifact
    from framework.registry.model_registry import ARTIFACT
    from tests.support.prediction_logs import MODEL, calibrated_holdout, toy_manifest

    rng = np.random.default_rng(3)
    raw = toy_manifest(rng)
    manifest = Manifest.of(raw)
    frame = _toy_frame(rng, 6_000, count=4.0)
    logit = 0.04 * (frame["amount"] - 40) + 1.5 * (frame["category"] == "travel") - 3
    y = (rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype(int)
    spec = EstimatorSpec.model_validate(
        {"class": "sklearn.ensemble.GradientBoostingClassifier", "params": {"random_state": 0}}
    )
    pipeline = build_pipeline(spec, manifest.fields, 0)
    pipeline.fit(frame, y)
    scores = score(pipeline, frame, manifest.task, 0.5).score
    blob = artifact.dump(pipeline)
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame.head(200), preserve_index=False), sink)
    background = sink.getvalue()
    holdout = calibrated_holdout(scores)
    raw |= {
        "artifact": {"file": ARTIFACT, "format": artifact.FORMAT,
                     "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)},
        "explanation": {"method": TREE, "background": {
            "file": BACKGROUND_FILE, "sha256": hashlib.sha256(background).hexdigest()}},
        "metrics": {"holdout": holdout, "uncalibrated": holdout, "baseline": holdout},
    }  # fmt: skip
    raw["reference"]["score"] = numeric_profile(scores)
    raw["reference"]["confidence"] = numeric_profile(np.maximum(scores, 1 - scores))
    registry = ModelRegistry(root / "models")
    registry.register(MODEL, {ARTIFACT: blob, BACKGROUND_FILE: background}, raw)
    return registry, pipeline


def _toy_frame(rng: np.random.Generator, n: int, *, count: float | None = None,
               count_mean: float = 4.0, inflate: float = 1.0) -> Any:  # fmt: skip
    import pandas as pd

    from tests.support.prediction_logs import toy_features

    amount, category, _ = toy_features(rng, n, inflate=inflate)
    counts = np.full(n, count) if count is not None else rng.poisson(count_mean, n).astype(float)
    return pd.DataFrame({"amount": amount, "category": category, "count": counts})


@pytest.mark.parametrize("drifting", ["count", "amount"])
def test_drift_in_a_feature_the_model_ignores_raises_no_alert(
    tmp_path: Path, drifting: str
) -> None:
    """Only ``count`` drifts (its mean tripled), a feature no tree of the
    model splits on: reported as drift, it moved the output by exactly nothing, and no
    alert fires. The same size of drift in ``amount``, which the model uses, alerts."""
    from framework.models.estimator import score
    from framework.monitoring.summary import monitor_summary
    from tests.support.prediction_logs import MODEL

    registry, pipeline = _toy_model_registry(tmp_path)
    rng = np.random.default_rng(5)
    frame = (
        _toy_frame(rng, 3_000, count_mean=12.0)
        if drifting == "count"
        else _toy_frame(rng, 3_000, inflate=1.8)
    )
    scores = score(pipeline, frame, Manifest.of(registry.manifest(ModelRef(MODEL, 1))).task,
                   0.5).score  # fmt: skip
    log = write_log(tmp_path, scored_rows(frame, scores, model=MODEL))
    summary = monitor_summary(log, registry, MODEL).to_dict()
    d = summary["versions"][0]["drift"]
    status = {f["feature"]: f["status"] for f in d["features"]}
    assert status[drifting] == "drift"
    impact = {f["feature"]: f for f in d["impact"]["features"]}
    alerted = [a["message"].split()[0] for a in summary["alerts"] if a["name"] == "feature_drift"]
    if drifting == "count":
        assert impact["count"]["output_shift"] == 0 and impact["count"]["attribution_share"] == 0
        assert summary["alerts"] == [], summary["alerts"]
    else:
        assert impact["amount"]["share"] > 0.5
        assert alerted == ["amount"], summary["alerts"]


def test_the_report_plots_drift_by_impact_in_a_browser(tmp_path: Path) -> None:
    """The report, opened in headless Chromium: the impact ranking is a plot, its bars in
    the order of the JSON, the drifted feature first."""
    from framework.models.estimator import score
    from framework.monitoring.report import write_report
    from framework.monitoring.summary import monitor_summary
    from tests.support.browser import dump_dom
    from tests.support.prediction_logs import MODEL

    registry, pipeline = _toy_model_registry(tmp_path)
    frame = _toy_frame(np.random.default_rng(5), 3_000, inflate=1.8)
    scores = score(pipeline, frame, Manifest.of(registry.manifest(ModelRef(MODEL, 1))).task,
                   0.5).score  # fmt: skip
    log = write_log(tmp_path, scored_rows(frame, scores, model=MODEL))
    summary = monitor_summary(log, registry, MODEL)
    dom, _ = dump_dom(write_report(tmp_path / "report.html", summary), tmp_path / "profile")
    label = 'aria-label="How far each feature moved the output"'
    assert dom.count(label) == 1
    plot = dom[dom.index(label) :].split("</svg>")[0]
    ranked = [f.feature for f in summary.versions[0].drift.impact.features if f.output_shift > 0]
    drawn = [t.split(":")[0] for t in plot.split("<title>")[2:]]  # [0] is the plot's own title
    assert drawn == ranked and drawn[0] == "amount"
    # The drift table and the distributions follow the same order, with what each moved.
    table = dom[dom.index("<th>moved the output</th>") :].split("</table>")[0]
    assert table.index(">amount<") < table.index(">category<") < table.index(">count<")
