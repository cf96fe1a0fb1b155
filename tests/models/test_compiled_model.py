"""Compiled models: scikit-learn's numbers to the bit, or no compiled form at all."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.features.fields import FeatureField
from framework.models import compiled_trees
from framework.models.compiled import CompiledModel, compile_model
from framework.models.estimator import build_pipeline, feature_frame
from framework.models.model_input import FeatureColumns
from framework.models.spec import EstimatorSpec
from framework.registry.model_registry import ModelRef, ModelRegistry
from tests.support.workspaces import Trained

FIELDS = [
    FeatureField("amount", "Float64", "v"),
    FeatureField("count", "Int64", "v"),
    FeatureField("ratio", "Float64", "v"),
    FeatureField("country", "String", "v"),
    FeatureField("card", "String", "v"),
]
COUNTRIES = ["US", "GB", "FR", "DE", "rare1", "rare2"]
CARDS = ["debit", "credit", "prepaid"]


def _training_frame(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3, 1, n)
    count = rng.integers(0, 20, n).astype(np.float64)
    ratio = rng.normal(0, 1, n)
    amount[rng.random(n) < 0.1] = np.nan  # missing in training: a missing-indicator column
    weights = [0.4, 0.3, 0.15, 0.14, 0.005, 0.005]  # rare1/rare2: infrequent
    country = rng.choice(COUNTRIES, n, p=weights).astype(object)
    country[rng.random(n) < 0.05] = np.nan
    card = rng.choice(CARDS, n).astype(object)
    logit = 0.02 * np.nan_to_num(amount, nan=20) - 0.1 * count + ratio + (card == "prepaid")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(
        {"amount": amount, "count": count, "ratio": ratio, "country": country, "card": card}
    )
    return frame, y


def _fit(estimator: str, params: dict[str, Any], calibration: str = "none") -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    frame, y = _training_frame()
    spec = EstimatorSpec.model_validate({"class": estimator, "params": params})
    pipeline = build_pipeline(spec, FIELDS, random_state=0)
    pipeline.fit(frame.iloc[:400], y[:400])
    if calibration == "none":
        return pipeline
    model = CalibratedClassifierCV(FrozenEstimator(pipeline), method=calibration)
    return model.fit(frame.iloc[400:], y[400:])


HGB = "sklearn.ensemble.HistGradientBoostingClassifier"
HGB_PARAMS = {"max_iter": 40, "max_leaf_nodes": 15, "early_stopping": False}
MODELS = {
    "hgb+sigmoid": lambda: _fit(HGB, HGB_PARAMS, "sigmoid"),
    "hgb+isotonic": lambda: _fit(HGB, HGB_PARAMS, "isotonic"),
    "hgb": lambda: _fit(HGB, HGB_PARAMS),
    # over 64 leaves in a tree: walked a level at a time, not by exit leaves
    "hgb (deep trees)": lambda: _fit(
        HGB,
        {
            "max_iter": 15,
            "max_leaf_nodes": 90,
            "min_samples_leaf": 2,
            "early_stopping": False,
        },
    ),
    "logistic (scaled)+sigmoid": lambda: _fit(
        "sklearn.linear_model.LogisticRegression", {"max_iter": 500}, "sigmoid"
    ),
    "random forest+isotonic": lambda: _fit(
        "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 10}, "isotonic"
    ),
}
_FITTED: dict[str, Any] = {}


def _model(name: str) -> Any:
    if name not in _FITTED:
        _FITTED[name] = MODELS[name]()
    return _FITTED[name]


numbers = st.one_of(
    st.just(math.nan),
    # far beyond the training range (near float64's limit a linear model's own matmul
    # overflows, with a RuntimeWarning from scikit-learn: not a case to compare)
    st.floats(-1e15, 1e15),
    st.floats(-50, 200),
    st.integers(-3, 25).map(float),
)
countries = st.one_of(st.sampled_from([*COUNTRIES, "never-seen", ""]), st.just(math.nan))
cards = st.one_of(st.sampled_from([*CARDS, "__missing__", "other"]), st.just(math.nan))
rows = st.fixed_dictionaries(
    {"amount": numbers, "count": numbers, "ratio": numbers, "country": countries, "card": cards}
)


def _frame(items: list[dict[str, Any]]) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for f in FIELDS:
        values = [r[f.name] for r in items]
        columns[f.name] = np.array(values, dtype=object if f.categorical else np.float64)
    return pd.DataFrame(columns)


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=25, deadline=None)
@given(items=st.lists(rows, min_size=1, max_size=40))
def test_compiled_scores_are_scikit_learns_to_the_bit(
    name: str, items: list[dict[str, Any]]
) -> None:
    """Missing values, extreme numbers, unseen and infrequent categories, any batch size
    (either side of the tree-walk limit): identical arrays, not merely close ones."""
    model = _model(name)
    compiled = CompiledModel(model)
    frame = _frame(items)
    want = model.predict_proba(frame)
    got = compiled.predict_proba(frame)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    # The server's input: the same columns as NumPy arrays, no pandas frame.
    columns = FeatureColumns({c: frame[c].to_numpy() for c in frame.columns}, len(frame))
    np.testing.assert_array_equal(compiled.predict_proba(columns), want)
    first = frame.iloc[:1]  # alone: BLAS may sum a linear model's row differently in a batch
    np.testing.assert_array_equal(compiled.predict_proba(first), model.predict_proba(first))


def test_trees_over_64_leaves_are_walked_the_others_exit_at_once() -> None:
    """Both tree paths are in the property above: say which model takes which."""

    def trees(name: str) -> Any:
        compiled = CompiledModel(_model(name))
        estimator = compiled.plain[1] if compiled.plain else compiled.calibrated[0][1]
        return estimator.trees

    deep = trees("hgb (deep trees)")
    assert max(len(p[0].nodes) for p in deep.hgb._predictors) > 2 * 64
    assert deep.exits is None
    assert trees("hgb").exits is not None and trees("hgb+isotonic").exits is not None


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_supported_pipeline_compiles(name: str) -> None:
    frame, _ = _training_frame(seed=1)
    refusals: list[str] = []
    assert compile_model(_model(name), [frame], on_refusal=refusals.append) is not None
    assert refusals == []


def test_a_regressor_compiles_to_its_predict() -> None:
    frame, y = _training_frame()
    spec = EstimatorSpec.model_validate(
        {"class": "sklearn.ensemble.HistGradientBoostingRegressor", "params": {"max_iter": 30}}
    )
    model = build_pipeline(spec, FIELDS, random_state=0).fit(frame, y * 10.0 + frame["ratio"])
    compiled = compile_model(model, [frame])
    assert compiled is not None
    np.testing.assert_array_equal(compiled.predict(frame), model.predict(frame))


def test_the_shipped_model_compiles_and_matches_on_its_smoke_sample(trained: Trained) -> None:
    import pyarrow.parquet as pq

    registry = ModelRegistry(trained.registry_root)
    ref = ModelRef("fraud_model", trained.version)
    model, manifest = registry.load(ref)
    fields = [FeatureField(**f) for f in manifest["features"]]
    smoke = pq.read_table(registry.version_dir(ref) / manifest["smoke"]["file"])
    frame = feature_frame(smoke, fields)
    compiled = compile_model(model, [frame])
    assert compiled is not None
    np.testing.assert_array_equal(compiled.predict_proba(frame), model.predict_proba(frame))
    for i in range(len(frame)):
        row = frame.iloc[i : i + 1]
        np.testing.assert_array_equal(compiled.predict_proba(row), model.predict_proba(row))


def test_a_compiled_form_that_differs_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check at compile time can fail: one tree walk off by one ulp is refused."""
    model = _model("hgb+sigmoid")
    frame, _ = _training_frame(seed=2)
    walk = compiled_trees.Trees.raw

    def off_by_an_ulp(self: Any, x: np.ndarray) -> np.ndarray:
        out = walk(self, x)
        out[0] = np.nextafter(out[0], np.inf)
        return out

    monkeypatch.setattr(compiled_trees.Trees, "raw", off_by_an_ulp)
    refusals: list[str] = []
    assert compile_model(model, [frame], on_refusal=refusals.append) is None
    assert len(refusals) == 1 and "differs from scikit-learn's" in refusals[0]


def test_pipelines_it_does_not_know_are_not_compiled() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    frame, y = _training_frame()
    numeric = frame[["amount", "count", "ratio"]]
    bare = HistGradientBoostingClassifier(max_iter=5).fit(numeric, y)
    other = Pipeline(
        [("preprocess", FunctionTransformer()), ("model", HistGradientBoostingClassifier())]
    ).fit(numeric, y)
    for model, why in [(bare, "HistGradientBoostingClassifier"), (other, "ColumnTransformer")]:
        refusals: list[str] = []
        assert compile_model(model, [numeric], on_refusal=refusals.append) is None
        assert refusals and why in refusals[0]


def test_input_scikit_learn_refuses_gets_scikit_learns_error() -> None:
    model = _model("hgb+sigmoid")
    compiled = CompiledModel(model)
    frame = _frame(
        [{"amount": math.inf, "count": 1.0, "ratio": 0.0, "country": "US", "card": "debit"}]
    )
    with pytest.raises(ValueError, match="infinity") as want:
        model.predict_proba(frame)
    with pytest.raises(ValueError, match="infinity") as got:
        compiled.predict_proba(frame)
    assert str(got.value) == str(want.value)
