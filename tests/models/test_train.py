"""``parity train``: specs, the time-based holdout, metrics, calibration, the pipeline."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from framework.errors import ConfigError, DataError
from framework.features.fields import FeatureField
from framework.models.estimator import feature_frame, score
from framework.models.evaluation import expected_calibration_error
from framework.models.spec import Task, load_spec, spec_from_dict
from framework.models.training import train_model
from framework.registry.model_registry import ModelRef, ModelRegistry
from tests.support.specs import SPEC, spec_dict
from tests.support.workspaces import Trained


def test_the_shipped_spec_loads() -> None:
    spec = load_spec(SPEC)
    assert spec.name == "fraud_model"
    assert spec.feature_service == "fraud_model_v1"
    assert spec.task is Task.CLASSIFICATION


def test_model_beats_the_trivial_baseline_on_the_holdout(trained: Trained) -> None:
    metrics = trained.manifest["metrics"]
    hold, base = metrics["holdout"], metrics["baseline"]
    assert hold["rows"] > 2_000
    assert base["roc_auc"] == pytest.approx(0.5)
    assert hold["roc_auc"] >= 0.75
    assert hold["pr_auc"] >= 5 * base["pr_auc"]
    assert hold["log_loss"] < 0.9 * base["log_loss"]
    assert hold["brier"] < base["brier"]


def test_holdout_is_later_than_training_and_calibration(trained: Trained) -> None:
    split = trained.manifest["split"]
    train, cal, hold = split["train"], split["calibration"], split["holdout"]
    assert train["end"] < cal["start"] <= cal["end"] < hold["start"]
    rows = train["rows"] + cal["rows"] + hold["rows"]
    assert rows == trained.manifest["dataset"]["entity_rows"]
    assert hold["rows"] / rows == pytest.approx(0.2, abs=0.02)


def test_no_label_used_before_it_arrived(trained: Trained) -> None:
    """Training uses only labels known by ``as_of``; every event precedes it."""
    window = trained.manifest["window"]
    assert window["last_event"] <= window["as_of"]


def test_calibration_error_is_reported_before_and_after(trained: Trained) -> None:
    cal = trained.manifest["calibration"]
    assert cal["method"] == "sigmoid"
    assert 0 <= cal["ece_before"] < 0.1
    assert cal["ece_after"] == trained.manifest["metrics"]["holdout"]["ece"]
    assert trained.manifest["metrics"]["uncalibrated"]["ece"] == cal["ece_before"]


def test_precision_and_recall_at_the_serving_thresholds(trained: Trained) -> None:
    hold = trained.manifest["metrics"]["holdout"]
    thresholds = [t["threshold"] for t in hold["at_thresholds"]]
    assert thresholds == [0.1, 0.3, 0.5]
    recalls = [t["recall"] for t in hold["at_thresholds"]]
    assert recalls == sorted(recalls, reverse=True)  # a higher bar flags fewer frauds
    assert sum(v["share"] for v in hold["decisions"].values()) == pytest.approx(1.0)


def test_reference_statistics_cover_features_score_and_confidence(trained: Trained) -> None:
    ref = trained.manifest["reference"]
    names = [f["name"] for f in trained.manifest["features"]]
    assert list(ref["features"]) == names
    rows = trained.manifest["split"]["train"]["rows"]
    for name, profile in ref["features"].items():
        assert profile["count"] == rows, name
        present = round(rows * (1 - profile["null_rate"]))
        if profile["kind"] == "numerical":
            assert sum(profile["counts"]) == present, name
            assert profile["edges"] == sorted(profile["edges"])
        else:
            assert sum(profile["categories"].values()) + profile["other_count"] == present
    assert ref["features"]["category"]["kind"] == "categorical"
    assert ref["score"]["count"] == trained.manifest["split"]["holdout"]["rows"]
    assert 0.5 <= ref["confidence"]["min"] <= ref["confidence"]["max"] <= 1.0


def test_the_pipeline_handles_unseen_categories_and_missing_values(trained: Trained) -> None:
    registry = ModelRegistry(trained.registry_root)
    model, manifest = registry.load(ModelRef("fraud_model", trained.version))
    fields = [FeatureField(**f) for f in manifest["features"]]
    row: dict[str, Any] = {f.name: None for f in fields}
    row.update(category="never_seen_category", home_country="ZZ", amount_mean_7d=40.0)
    table = pa.Table.from_pylist(
        [row],
        schema=pa.schema(
            [(f.name, pa.string() if f.categorical else pa.float64()) for f in fields]
        ),
    )
    out = score(model, feature_frame(table, fields), Task.CLASSIFICATION, 0.5)
    assert 0.0 <= out.score[0] <= 1.0
    assert out.confidence[0] == pytest.approx(max(out.score[0], 1 - out.score[0]))


def test_expected_calibration_error_of_a_calibrated_and_a_biased_model() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(size=50_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert expected_calibration_error(y, p, 10) < 0.01
    assert expected_calibration_error(y, np.clip(p + 0.2, 0, 1), 10) > 0.15


def test_training_is_deterministic(trained: Trained, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    again = train_model(
        trained.workspace.repo, load_spec(SPEC), registry=registry, spec_path=SPEC
    ).manifest.as_dict()
    for key in ("roc_auc", "pr_auc", "log_loss"):
        assert again["metrics"]["holdout"][key] == trained.manifest["metrics"]["holdout"][key]
    assert again["dataset"]["fingerprint"] == trained.manifest["dataset"]["fingerprint"]
    assert again["definitions_digest"] == trained.manifest["definitions_digest"]


def test_a_window_narrows_the_training_set(trained: Trained, tmp_path: Path) -> None:
    spec = spec_from_dict(spec_dict(window={"lookback_days": 30}))
    result = train_model(
        trained.workspace.repo,
        spec,
        registry=ModelRegistry(tmp_path / "models"),
        end=datetime.fromisoformat("2026-03-20T00:00:00+00:00"),
    )
    window = result.manifest.as_dict()["window"]
    assert window["start"].startswith("2026-02-18")
    assert window["first_event"] >= window["start"]
    assert window["last_event"] < "2026-03-20"
    assert (
        result.manifest.as_dict()["dataset"]["entity_rows"]
        < trained.manifest["dataset"]["entity_rows"]
    )


def test_a_regression_spec_reports_regression_metrics(trained: Trained, tmp_path: Path) -> None:
    raw = spec_dict(
        name="amount_model",
        task="regression",
        labels={
            "query": "SELECT user_id, merchant_id, transaction_timestamp, amount AS target, "
            "amount, hour(transaction_timestamp)::BIGINT AS hour_of_day "
            "FROM read_parquet('raw/transactions.parquet')",
            "column": "target",
            "label_timestamp": None,
        },
        split={"train": 0.8, "calibration": 0.0, "holdout": 0.2},
        estimator={"class": "sklearn.linear_model.Ridge", "params": {"alpha": 1.0}},
        calibration={"method": "none"},
        gate={"metric": "mae"},
    )
    del raw["labels"]["label_timestamp"]
    result = train_model(
        trained.workspace.repo, spec_from_dict(raw), registry=ModelRegistry(tmp_path / "models")
    )
    hold, base = (
        result.manifest.as_dict()["metrics"]["holdout"],
        result.manifest.as_dict()["metrics"]["baseline"],
    )
    assert set(hold) == {"rows", "mae", "rmse", "r2"}
    # The amount itself is in the features (amount_to_mean_7d * amount_mean_7d): easy.
    assert hold["mae"] < base["mae"]
    # A regression model has no confidence: none in the reference (not a fake number).
    assert result.manifest.as_dict()["reference"]["confidence"] is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"estimator": {"class": "os.system"}}, "estimator.class"),
        ({"estimator": {"class": "sklearn.linear_model.NoSuchModel"}}, "NoSuchModel"),
        ({"split": {"train": 0.5}}, "must be 1"),
        ({"gate": {"metric": "mae"}}, "gate.metric"),
        ({"serving": {"accept": 0.5, "review_below": 0.7}}, "review_below"),
        ({"name": "9 bad name"}, "name"),
        ({"labels": {"keys": []}}, "labels.keys"),
        ({"unknown_section": {}}, "unknown_section"),
    ],
)
def test_a_wrong_spec_names_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec_from_dict(spec_dict(**changes))


def test_a_spec_file_that_is_not_toml(tmp_path: Path) -> None:
    bad = tmp_path / "m.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_spec(bad)
    with pytest.raises(ConfigError, match="No model spec"):
        load_spec(tmp_path / "missing.toml")


def test_bad_label_queries_fail_clearly(trained: Trained, tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    repo = trained.workspace.repo
    broken = spec_from_dict(spec_dict(labels={"query": "SELECT * FROM read_parquet('nope.pq')"}))
    with pytest.raises(DataError, match="labels.query failed"):
        train_model(repo, broken, registry=registry)
    no_label = spec_from_dict(spec_dict(labels={"column": "not_a_column"}))
    with pytest.raises(DataError, match="not_a_column"):
        train_model(repo, no_label, registry=registry)
    unknown_service = spec_from_dict(spec_dict(feature_service="no_such_service"))
    with pytest.raises(ConfigError, match="no_such_service"):
        train_model(repo, unknown_service, registry=registry)
    empty = spec_from_dict(spec_dict(window={"start": "2030-01-01T00:00:00Z"}))
    with pytest.raises(DataError, match="No labelled events"):
        train_model(repo, empty, registry=registry)
    assert registry.names() == []  # nothing half-registered


def test_the_manifest_records_the_ages_of_feature_values_in_training(trained: Trained) -> None:
    """Every feature read from a view has its training ages (seconds, ordered percentiles,
    at most the training rows); on-demand features and request data have none."""
    from framework.models.manifest import Manifest

    manifest = Manifest.of(trained.manifest)
    freshness = manifest.freshness
    assert freshness is not None and freshness.unit == "seconds"
    views = {f.name: f.view for f in manifest.features}
    assert set(freshness.features) | set(freshness.without_age) == set(views)
    assert not set(freshness.features) & set(freshness.without_age)
    assert set(freshness.without_age) >= set(manifest.request_data) & set(views)
    entity_rows = manifest.dataset["entity_rows"]
    for name, age in freshness.features.items():
        assert age.view == views[name]
        assert 0 < age.rows <= entity_rows, name
        assert age.p50 is not None and age.p90 is not None and age.p99 is not None
        assert age.max is not None
        assert 0 <= age.p50 <= age.p90 <= age.p99 <= age.max, name
