"""Drift that matters: the decomposition of the output's move per feature
(:mod:`framework.monitoring.impact`) on real fitted pipelines and SHAP explainers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from framework.features.fields import FeatureField
from framework.models.estimator import build_pipeline
from framework.models.explain import Explainer
from framework.models.spec import EstimatorSpec, Task
from framework.monitoring.impact import decompose

FIELDS = [
    FeatureField(name="amount", dtype="Float64", view="v"),
    FeatureField(name="count", dtype="Float64", view="v"),
    FeatureField(name="constant", dtype="Float64", view="v"),
]


def _frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "amount": rng.normal(50, 10, n),
            "count": rng.poisson(4, n).astype(float),
            "constant": np.full(n, 1.0),  # never varies in training: no tree splits on it
        }
    )


def _fitted(task: Task, estimator: str, seed: int = 0) -> tuple[Explainer, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    x = _frame(rng, 3_000)
    margin = 0.08 * (x["amount"] - 50) + 0.3 * (x["count"] - 4)
    if task is Task.CLASSIFICATION:
        y = (rng.random(len(x)) < 1 / (1 + np.exp(-(margin - 2)))).astype(int)
    else:
        y = margin + rng.normal(0, 0.1, len(x))
    params = {"random_state": 0} if "Gradient" in estimator else {}
    spec = EstimatorSpec.model_validate({"class": estimator, "params": params})
    pipeline = build_pipeline(spec, FIELDS, 0)
    pipeline.fit(x, y)
    background = x.sample(200, random_state=1).reset_index(drop=True)
    return Explainer(pipeline, FIELDS, task, background), background


@pytest.fixture(scope="module")
def linear() -> tuple[Explainer, pd.DataFrame]:
    return _fitted(Task.REGRESSION, "sklearn.linear_model.LinearRegression")


@pytest.fixture(scope="module")
def trees() -> tuple[Explainer, pd.DataFrame]:
    return _fitted(Task.CLASSIFICATION, "sklearn.ensemble.GradientBoostingClassifier")


def _model_scores(explainer: Explainer, frame: pd.DataFrame) -> np.ndarray:
    return explainer.contributions(frame)[1]


@given(shift=st.floats(-30, 30), spread=st.floats(0.5, 2.0))
def test_a_linear_models_move_is_exactly_the_shifted_features(
    linear: tuple[Explainer, pd.DataFrame], shift: float, spread: float
) -> None:
    explainer, reference = linear
    window = reference.copy()
    window["amount"] = 50 + (window["amount"] - 50) * spread + shift
    out = decompose(explainer, reference, window)
    by = out.by_feature
    # Only amount moved: nothing else's contributions changed at all.
    assert by["count"].output_shift == pytest.approx(0, abs=1e-9)
    assert by["constant"].output_shift == pytest.approx(0, abs=1e-9)
    moved = _model_scores(explainer, window).mean() - _model_scores(explainer, reference).mean()
    assert by["amount"].mean_shift == pytest.approx(moved, abs=1e-7)
    if abs(moved) > 1e-6 or spread != 1.0:
        assert out.features[0].feature == "amount" and by["amount"].share == pytest.approx(1)


@given(seed=st.integers(0, 2**16), inflate=st.floats(1.0, 3.0))
def test_mean_shifts_add_up_to_the_mean_score_change(
    trees: tuple[Explainer, pd.DataFrame], seed: int, inflate: float
) -> None:
    explainer, reference = trees
    window = _frame(np.random.default_rng(seed), 500)
    window["amount"] *= inflate
    out = decompose(explainer, reference, window)
    moved = _model_scores(explainer, window).mean() - _model_scores(explainer, reference).mean()
    assert sum(f.mean_shift for f in out.features) == pytest.approx(moved, abs=1e-6)
    assert out.mean_score_window - out.mean_score_reference == pytest.approx(moved, abs=1e-6)
    assert sum(f.share for f in out.features) == pytest.approx(1)
    assert [f.output_shift for f in out.features] == sorted(
        (f.output_shift for f in out.features), reverse=True
    )


def test_a_feature_the_model_ignores_moves_nothing(trees: tuple[Explainer, pd.DataFrame]) -> None:
    """Drift in a feature no tree splits on: the output did not move because of it, however
    far it drifted; drift in one the model uses is the whole of the move."""
    explainer, reference = trees
    window = _frame(np.random.default_rng(7), 2_000)
    window["constant"] = 40.0  # a huge shift of a feature the model never looked at
    ignored = decompose(explainer, reference, window).by_feature["constant"]
    assert ignored.output_shift == 0 and ignored.share == 0 and ignored.attribution_share == 0

    window["amount"] += 25
    out = decompose(explainer, reference, window)
    assert out.features[0].feature == "amount" and out.features[0].share > 0.6
    assert out.by_feature["constant"].output_shift == 0


def test_contributions_are_the_served_explanations(trees: tuple[Explainer, pd.DataFrame]) -> None:
    """The monitor's per-row contributions are exactly what the server explains with."""
    explainer, reference = trees
    phi, scores = explainer.contributions(reference.head(20))
    explained: list[Any] = explainer.explain(reference.head(20), scores)
    for i, e in enumerate(explained):
        by = {a.feature: a.contribution for a in e.attributions}
        assert [by[n] for n in explainer.names] == pytest.approx(phi[i].tolist(), abs=1e-12)
        assert e.base_value + sum(by.values()) == pytest.approx(scores[i], abs=1e-6)
