"""Holdout metrics: how good a model version is, on data after its training period.

Classification: ROC-AUC, PR-AUC (average precision), log loss, Brier score,
expected calibration error, and precision / recall / share flagged at each
serving threshold, plus the decision mix the serving confidence thresholds
would produce. Regression: MAE, RMSE, R². Every metric comes from
scikit-learn except the expected calibration error, which scikit-learn does
not offer (it has ``calibration_curve``, not the weighted gap).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.models.estimator import Scores
from framework.models.spec import ServingSpec, Task


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    """Mean |observed rate - mean predicted probability| over equal-width probability bins,
    weighted by the bins' share of rows."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(float(y[mask].mean()) - float(p[mask].mean()))
    return float(total)


def classification_metrics(
    y: np.ndarray, scores: Scores, serving: ServingSpec, bins: int
) -> dict[str, Any]:
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        log_loss,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    p = scores.score
    both = len(np.unique(y)) == 2
    out: dict[str, Any] = {
        "rows": len(y),
        "positive_rate": float(np.mean(y)) if len(y) else float("nan"),
        "roc_auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "brier": float(brier_score_loss(y, p, pos_label=1)),
        "ece": expected_calibration_error(y, p, bins),
    }
    at = []
    for t in sorted({serving.threshold, *serving.report_thresholds}):
        flagged = (p >= t).astype(int)
        at.append(
            {
                "threshold": t,
                "precision": float(precision_score(y, flagged, zero_division=0)),
                "recall": float(recall_score(y, flagged, zero_division=0)),
                "flagged_share": float(flagged.mean()) if len(y) else 0.0,
            }
        )
    out["at_thresholds"] = at
    out["decisions"] = decision_mix(y, scores, serving)
    return out


def decision_mix(y: np.ndarray, scores: Scores, serving: ServingSpec) -> dict[str, Any]:
    """Share of rows and accuracy in each confidence bucket (ACCEPT, VALIDATE, REVIEW)."""
    c = scores.confidence
    buckets = {
        "accept": c >= serving.accept,
        "validate": (c >= serving.review_below) & (c < serving.accept),
        "review": c < serving.review_below,
    }
    out: dict[str, Any] = {}
    for name, mask in buckets.items():
        n = int(mask.sum())
        out[name] = {
            "share": n / len(c) if len(c) else 0.0,
            "accuracy": float((scores.label[mask] == y[mask]).mean()) if n else None,
        }
    return out


def regression_metrics(y: np.ndarray, scores: Scores) -> dict[str, Any]:
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

    return {
        "rows": len(y),
        "mae": float(mean_absolute_error(y, scores.score)),
        "rmse": float(root_mean_squared_error(y, scores.score)),
        "r2": float(r2_score(y, scores.score)) if len(y) > 1 else None,
    }


def metrics(
    task: Task, y: np.ndarray, scores: Scores, serving: ServingSpec, bins: int
) -> dict[str, Any]:
    if task is Task.CLASSIFICATION:
        return classification_metrics(y, scores, serving, bins)
    return regression_metrics(y, scores)


def baseline_scores(task: Task, y_train: np.ndarray, n: int, threshold: float) -> Scores:
    """The trivial model: the training base rate (or mean) for every row."""
    value = float(np.mean(y_train))
    s = np.full(n, value)
    if task is Task.CLASSIFICATION:
        label = (s >= threshold).astype(np.int64)
        return Scores(score=s, label=label, confidence=np.where(label == 1, s, 1 - s))
    return Scores(score=s, label=s, confidence=np.full(n, np.nan))
