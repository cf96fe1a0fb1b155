"""Estimated performance without labels: the expected metrics equal scikit-learn's on the
weighted, doubled set (every row a positive with weight p and a negative with 1 - p), and
the intervals hold the realized metric as often as they say when the labels are drawn
from the scores (calibration) — and fail to when they are not."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import (
    average_precision_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from framework.models.estimated import BOOTSTRAP_ROWS, estimate

assert BOOTSTRAP_ROWS < 60_000  # the large case below subsamples

# Scores with ties (a few distinct values) as well as continuous ones.
SCORES = st.one_of(
    arrays(np.float64, st.integers(2, 300), elements=st.floats(0.001, 0.999)),
    arrays(np.float64, st.integers(2, 300), elements=st.sampled_from([0.1, 0.25, 0.5, 0.9])),
)


def doubled(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(p)
    return np.r_[np.ones(n), np.zeros(n)], np.r_[p, p], np.r_[p, 1 - p]


@settings(max_examples=200, deadline=None)
@given(p=SCORES)
def test_expected_metrics_equal_scikit_learns_on_the_weighted_doubled_set(p: np.ndarray) -> None:
    y, s, w = doubled(p)
    got = estimate(p, threshold=0.5, report_thresholds=(0.3,), samples=5)
    assert got.roc_auc is not None and got.pr_auc is not None
    assert got.roc_auc.value == pytest.approx(roc_auc_score(y, s, sample_weight=w), abs=1e-9)
    assert got.pr_auc.value == pytest.approx(
        average_precision_score(y, s, sample_weight=w), abs=1e-9
    )
    assert got.positive_rate.value == pytest.approx(p.mean())
    for at in got.at_thresholds:
        flagged = (s >= at["threshold"]).astype(int)
        if flagged.any():
            assert at["precision"].value == pytest.approx(
                precision_score(y, flagged, sample_weight=w), abs=1e-9
            )
        assert at["recall"].value == pytest.approx(
            recall_score(y, flagged, sample_weight=w), abs=1e-9
        )


def test_decision_buckets_expect_the_labels_probability_of_being_right() -> None:
    p = np.array([0.95, 0.05, 0.7, 0.3, 0.55])
    got = estimate(p, accept=0.85, review_below=0.6, samples=5)
    assert got.decisions["accept"] == {"share": 0.4, "accuracy": pytest.approx(0.95)}
    assert got.decisions["validate"] == {"share": 0.4, "accuracy": pytest.approx(0.7)}
    assert got.decisions["review"] == {"share": 0.2, "accuracy": pytest.approx(0.55)}


def _windows(calibrated: bool, n: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(count):
        p = rng.beta(0.6, 4.0, n)
        truth = p if calibrated else np.clip(p * 0.4, 0, 1)  # the world moved: fewer positives
        out.append((p, (rng.random(n) < truth).astype(int)))
    return out


@pytest.mark.parametrize("n", [2_000, pytest.param(60_000, marks=pytest.mark.slow)])
def test_intervals_hold_the_realized_metric_when_the_scores_are_calibrated(n: int) -> None:
    """Over 30 windows of labels drawn from the scores, the 95 % intervals hold the realized
    ROC-AUC, PR-AUC and precision in 25 to 30 of them (also when the bootstrap subsamples)."""
    held = {"roc_auc": 0, "pr_auc": 0, "precision": 0}
    windows = _windows(True, n, 30)
    for i, (p, y) in enumerate(windows):
        got = estimate(p, threshold=0.5, samples=100, seed=i)
        assert got.roc_auc is not None and got.pr_auc is not None
        held["roc_auc"] += got.roc_auc.holds(roc_auc_score(y, p))
        held["pr_auc"] += got.pr_auc.holds(average_precision_score(y, p))
        held["precision"] += got.at_thresholds[0]["precision"].holds(
            precision_score(y, (p >= 0.5).astype(int), zero_division=0)
        )
    assert all(25 <= count <= 30 for count in held.values()), held


def test_intervals_miss_when_calibration_no_longer_holds() -> None:
    """Concept drift: the same scores, but positives are rarer than they say. The estimate
    no longer holds the realized PR-AUC: the gap is the signal."""
    windows = _windows(False, 5_000, 20)
    missed = 0
    for i, (p, y) in enumerate(windows):
        got = estimate(p, samples=200, seed=i)
        assert got.pr_auc is not None
        realized = average_precision_score(y, p)
        missed += not got.pr_auc.holds(realized)
        assert realized < got.pr_auc.low
    assert missed == 20


def test_undefined_metrics_are_none_and_no_rows_is_nan() -> None:
    assert estimate(np.zeros(10), samples=5).roc_auc is None
    empty = estimate(np.array([]))
    assert empty.rows == 0 and empty.roc_auc is None and np.isnan(empty.positive_rate.value)
