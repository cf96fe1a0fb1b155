"""Explanations: SHAP attributions in the score's units that add up to the served score,
on the exact vector served; an ignored feature gets nothing, a decisive one ranks first;
global permutation importance; unsupported models refused with FAILED_PRECONDITION; the
server's Predict, ModelInfer and review queue carry them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.features.fields import FeatureField
from framework.models import explain
from framework.models.estimator import build_pipeline, feature_frame, score
from framework.models.spec import EstimatorSpec, Task
from tests.support.workspaces import Served

FIELDS = [
    FeatureField(name="signal", dtype="Float64", view="v"),
    FeatureField(name="noise", dtype="Float64", view="v"),
    FeatureField(name="constant", dtype="Float64", view="v"),
    FeatureField(name="colour", dtype="String", view="v"),
]
COLOURS = ["red", "green", "blue"]


def _data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The label depends on ``signal`` only; ``constant`` never varies."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(0, 1, n)
    signal[rng.random(n) < 0.05] = np.nan  # missing values: an indicator column
    table = pa.table(
        {
            "signal": signal,
            "noise": rng.normal(0, 1, n),
            "constant": np.full(n, 3.0),
            "colour": pa.array(rng.choice(COLOURS, n).tolist(), pa.string()),
        }
    )
    y = (np.nan_to_num(signal, nan=0.0) + rng.normal(0, 0.3, n) > 0.8).astype(int)
    return feature_frame(table, FIELDS), y


def _fit(estimator: str, params: dict[str, Any], calibration: str | None) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    x, y = _data(3_000, 0)
    spec = EstimatorSpec.model_validate({"class": estimator, "params": params})
    pipeline = build_pipeline(spec, FIELDS, 0)
    pipeline.fit(x[:2_000], y[:2_000])
    if calibration is None:
        return pipeline
    model = CalibratedClassifierCV(FrozenEstimator(pipeline), method=calibration)
    return model.fit(x[2_000:], y[2_000:])


MODELS = {
    "hgb-sigmoid": ("sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 60},
                    "sigmoid"),
    "hgb-isotonic": ("sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 60},
                     "isotonic"),
    "forest": ("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 30, "max_depth": 6},
               None),
    "logistic-sigmoid": ("sklearn.linear_model.LogisticRegression", {}, "sigmoid"),
    "logistic": ("sklearn.linear_model.LogisticRegression", {}, None),
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request: pytest.FixtureRequest) -> tuple[str, Any, explain.Explainer]:
    estimator, params, calibration = MODELS[request.param]
    model = _fit(estimator, params, calibration)
    background = explain.background_sample(_data(3_000, 0)[0][:2_000], 0)
    return request.param, model, explain.Explainer(model, FIELDS, Task.CLASSIFICATION, background)


def test_attributions_add_up_to_the_served_score(fitted: Any) -> None:
    name, model, explainer = fitted
    x, _ = _data(300, 1)
    served = score(model, x, Task.CLASSIFICATION, 0.5).score
    out = explainer.explain(x, served)
    for e, s in zip(out, served, strict=True):
        total = e.base_value + sum(a.contribution for a in e.attributions)
        assert abs(total - s) <= explain.ADDITIVITY_TOLERANCE, name
        assert e.score == s and {a.feature for a in e.attributions} == {f.name for f in FIELDS}
    # SHAP's own additivity on the estimator's response, and the link to the score:
    # the independent checks behind the rescaling.
    errors = explainer.check(x, served)
    assert errors["margin_additivity_error"] < 1e-6 and errors["score_link_error"] < 1e-6


def test_an_ignored_feature_gets_nothing_and_the_decisive_one_ranks_first(fitted: Any) -> None:
    name, model, explainer = fitted
    x, _ = _data(400, 2)
    served = score(model, x, Task.CLASSIFICATION, 0.5).score
    out = explainer.explain(x, served)
    mean_abs = {
        f.name: np.mean([abs(_by(e)[f.name]) for e in out]) for f in FIELDS
    }  # fmt: skip
    assert max(abs(_by(e)["constant"]) for e in out) < 1e-9, name  # never varies: ignored
    assert max(mean_abs, key=lambda k: mean_abs[k]) == "signal", (name, mean_abs)
    # Attributions are listed largest first, with the value the model was fed.
    first = out[0].attributions
    assert [abs(a.contribution) for a in first] == sorted((abs(a.contribution) for a in first),
                                                          reverse=True)  # fmt: skip
    assert _values(out[0])["colour"] == x["colour"].iloc[0]


def _by(e: explain.Explanation) -> dict[str, float]:
    return {a.feature: a.contribution for a in e.attributions}


def _values(e: explain.Explanation) -> dict[str, Any]:
    return {a.feature: a.value for a in e.attributions}


toy_rows = st.lists(
    st.fixed_dictionaries(
        {
            "signal": st.one_of(st.none(), st.floats(-50, 50)),
            "noise": st.one_of(st.none(), st.floats(-1e6, 1e6)),
            "constant": st.one_of(st.none(), st.floats(-10, 10)),
            "colour": st.one_of(st.none(), st.sampled_from([*COLOURS, "never-seen"])),
        }
    ),
    min_size=1,
    max_size=20,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=toy_rows)
def test_additivity_holds_for_any_row(fitted: Any, rows: list[dict[str, Any]]) -> None:
    """Missing values, unseen categories and values far outside training included."""
    name, model, explainer = fitted
    table = pa.table(
        {
            f.name: pa.array([r[f.name] for r in rows], pa.string() if f.categorical
                             else pa.float64())
            for f in FIELDS
        }
    )  # fmt: skip
    x = feature_frame(table, FIELDS)
    served = score(model, x, Task.CLASSIFICATION, 0.5).score
    for e, s in zip(explainer.explain(x, served), served, strict=True):
        total = e.base_value + sum(a.contribution for a in e.attributions)
        assert abs(total - s) <= explain.ADDITIVITY_TOLERANCE, name
    explainer.check(x, served)


def test_a_model_without_an_exact_explainer_is_refused() -> None:
    model = _fit("sklearn.neighbors.KNeighborsClassifier", {"n_neighbors": 5}, None)
    x, _ = _data(50, 3)
    with pytest.raises(explain.NotExplainable, match="KNeighborsClassifier has no exact SHAP"):
        explain.Explainer(model, FIELDS, Task.CLASSIFICATION, x)
    served = score(model, x, Task.CLASSIFICATION, 0.5).score
    described = explain.describe(model, FIELDS, Task.CLASSIFICATION, x, x, served)
    assert described["method"] is None and "KNeighborsClassifier" in described["reason"]


def test_global_importance_ranks_the_decisive_feature_first() -> None:
    model = _fit("sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 60}, "sigmoid")
    x, y = _data(2_000, 4)
    imp = explain.global_importance(model, x, y, Task.CLASSIFICATION, seed=0, repeats=3)
    assert imp["method"] == "sklearn.inspection.permutation_importance"
    assert imp["metric"] == "roc_auc" and imp["rows"] == 2_000
    ranked = [f["feature"] for f in imp["features"]]
    assert ranked[0] == "signal" and imp["features"][0]["mean"] > 0.2
    by = {f["feature"]: f["mean"] for f in imp["features"]}
    assert by["constant"] == 0.0  # shuffling a constant changes nothing


# ------------------------------------------------------------------ the registry and the server


def test_training_records_the_explainer_and_global_importance(trained: Any) -> None:
    m = trained.manifest
    e = m["explanation"]
    assert e["method"] == explain.TREE and e["units"] == "score"
    assert e["explained_output"] == "decision_function"
    assert e["score_link"] == "sigmoid calibration"  # the shipped spec calibrates by sigmoid
    assert e["margin_additivity_error"] < 1e-6 and e["checked_rows"] > 0
    assert e["background"]["rows"] == explain.BACKGROUND_ROWS and e["background"]["sha256"]
    imp = m["importance"]
    assert imp["period"] == "holdout" and {f["feature"] for f in imp["features"]} == {
        f["name"] for f in m["features"]
    }


def _variant(served: Served, change: Any) -> str:
    """Register a copy of the served version with its manifest changed; its number."""
    folder = served.registry.version_dir(served.registry.resolve("fraud_model@champion"))
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name != "manifest.json"}
    return str(served.registry.register("fraud_model", files, manifest).version)


@pytest.mark.integration
def test_predict_explains_the_vector_it_served(served: Served) -> None:
    from serving.grpc.client import PredictionClient
    from tests.support.fraud_requests import recent_rows

    rows = recent_rows(served, 8)
    with PredictionClient(served.target) as client:
        full = client.predict("fraud_model", rows, explain=True, return_features=True)
        top = client.predict("fraud_model", rows[:2], explain=True, explain_top_k=3)
        plain = client.predict("fraud_model", rows[:2])
    features = {f["name"] for f in served.registry.manifest(
        served.registry.resolve("fraud_model@champion"))["features"]}  # fmt: skip
    for p in full:
        assert p["decision"] != "FALLBACK"
        attributions = p["attributions"]
        assert {a["feature"] for a in attributions} == features
        total = p["base_value"] + sum(a["contribution"] for a in attributions)
        assert abs(total - p["score"]) <= explain.ADDITIVITY_TOLERANCE
        for a in attributions:  # the values explained are the values scored
            fed = p["features"][a["feature"]]
            assert a["value"] == pytest.approx(fed) if isinstance(fed, float) else a["value"] == fed
    assert [len(p["attributions"]) for p in top] == [3, 3]
    assert [p["attributions"] for p in plain] == [[], []]  # off the default path


@pytest.mark.integration
def test_model_infer_explains_with_a_parameter(served: Served) -> None:
    from serving.stubs.inference import grpc_predict_v2_pb2 as v2
    from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc
    from tests.support.fraud_requests import recent_rows

    rows = recent_rows(served, 3)
    request = v2.ModelInferRequest(model_name="fraud_model", id="explain-v2")
    request.parameters["explain"].bool_param = True
    for name, datatype, values in (
        ("user_id", "INT64", [r["entity_keys"]["user_id"] for r in rows]),
        ("merchant_id", "INT64", [r["entity_keys"]["merchant_id"] for r in rows]),
        ("amount", "FP64", [r["request_data"]["amount"] for r in rows]),
        ("hour_of_day", "INT64", [r["request_data"]["hour_of_day"] for r in rows]),
    ):
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(rows)])
        field = "int64_contents" if datatype == "INT64" else "fp64_contents"
        getattr(tensor.contents, field).extend(values)
    with grpc.insecure_channel(served.target) as channel:
        response = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    out = {o.name: o for o in response.outputs}
    names = [b.decode() for b in out["attribution_features"].contents.bytes_contents]
    assert list(out["attributions"].shape) == [3, len(names)]
    matrix = np.array(out["attributions"].contents.fp64_contents).reshape(3, len(names))
    base = np.array(out["base_value"].contents.fp64_contents)
    scores = np.array(out["score"].contents.fp64_contents)
    np.testing.assert_allclose(base + matrix.sum(axis=1), scores, atol=explain.ADDITIVITY_TOLERANCE)
    # A malformed parameter is the client's mistake, named.
    request.parameters["explain"].int64_param = 1
    with grpc.insecure_channel(served.target) as channel:
        with pytest.raises(grpc.RpcError) as failed:
            v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    err: Any = failed.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "parameters['explain']: must be a boolean" in err.details()


@pytest.mark.integration
def test_a_version_that_cannot_be_explained_fails_with_failed_precondition(
    served: Served,
) -> None:
    from serving.grpc.client import PredictionClient
    from tests.support.fraud_requests import recent_rows

    rows = recent_rows(served, 1)
    unexplainable = _variant(served, lambda m: m.update(
        explanation={"method": None, "reason": "KNeighborsClassifier has no exact SHAP "
                                               "explainer here"}))  # fmt: skip
    older = _variant(served, lambda m: m.pop("explanation"))
    with PredictionClient(served.target) as client:
        for version, match in ((unexplainable, "KNeighborsClassifier"),
                               (older, "registered without an explainer")):  # fmt: skip
            with pytest.raises(grpc.RpcError) as failed:
                client.predict("fraud_model", rows, version=version, explain=True)
            err: Any = failed.value
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert match in err.details()
            # Without explain, the same version answers as usual.
            assert client.predict("fraud_model", rows, version=version)[0]["score"] > 0


@pytest.mark.integration
def test_review_items_carry_their_attributions(served: Served) -> None:
    from framework.logs.review_queue import ReviewQueue
    from serving.grpc.client import PredictionClient
    from tests.support.fraud_requests import recent_rows

    # A copy whose thresholds send every row to review.
    version = _variant(served, lambda m: m["serving"].update(accept=1.0, review_below=1.0))
    rows = recent_rows(served, 4)
    with PredictionClient(served.target) as client:
        out = client.predict("fraud_model", rows, version=version, request_id="explain-review")
    assert {p["decision"] for p in out} == {"REVIEW"}
    assert all(p["attributions"] == [] for p in out)  # not asked for: not in the response
    queue = ReviewQueue(Path(served.workspace.data) / "review" / "queue.db")
    try:
        items = [i for i in queue.list(limit=1_000) if i.request_id == "explain-review"]
    finally:
        queue.close()
    assert len(items) == 4
    for item, p in zip(sorted(items, key=lambda i: i.row_index), out, strict=True):
        e = item.explanation
        assert e is not None and e["score"] == pytest.approx(p["score"])
        total = e["base_value"] + sum(a["contribution"] for a in e["attributions"])
        assert abs(total - p["score"]) <= explain.ADDITIVITY_TOLERANCE


def test_monitoring_ranks_drifted_features_by_model_reliance(tmp_path: Path) -> None:
    from framework.monitoring import summary as monitor
    from framework.registry.model_registry import ARTIFACT, ModelRegistry
    from tests.support.prediction_logs import MODEL, toy_manifest, toy_rows, write_log

    registry = ModelRegistry(tmp_path / "models")
    manifest = toy_manifest(np.random.default_rng(0))
    weights = {"category": 0.09, "amount": 0.02, "count": 0.0}
    manifest["importance"] = {
        "method": "sklearn.inspection.permutation_importance",
        "features": [{"feature": k, "mean": v, "std": 0.01} for k, v in weights.items()],
    }
    registry.register(MODEL, {ARTIFACT: b"not a model"}, manifest)
    # Both amount and category drift; the model leans on category more.
    log = write_log(tmp_path, toy_rows(np.random.default_rng(5), 2_000, inflate=2.0, new=0.3))
    summary = monitor.monitor_summary(log, registry, MODEL)
    version = summary.version("1")
    assert version is not None and version.drift is not None
    d = version.drift
    assert [f.feature for f in d.drifted_by_importance] == ["category", "amount"]
    assert "count" in {f.feature for f in d.features} and d.importance["count"] == 0.0
    from framework.monitoring.report import render_html

    html = render_html(summary)
    assert "by how much the model relies on them" in html
    assert html.index("<b>category</b>") < html.index("<b>amount</b>")
