"""Live quality: how a version's labelled predictions fared against its holdout.

The labelled predictions are the prediction log joined to reported outcomes
(:func:`framework.logs.outcome_join.match`); the metrics are the ones training
reported (:func:`framework.models.evaluation.metrics`), so live and holdout
numbers compare like for like, overall and per decision bucket (what share of
ACCEPTed predictions were right...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from framework.models.estimated import EstimatedPerformance, estimate_for
from framework.models.manifest import Manifest
from framework.monitoring import version_manifest as vm

DECISIONS = ("ACCEPT", "VALIDATE", "REVIEW", "FALLBACK")
_HOLDOUT_METRICS = ("roc_auc", "pr_auc", "brier", "log_loss", "mae", "rmse", "r2")


@dataclass
class DecisionQuality:
    labelled: int
    accuracy: float
    positive_rate: float
    mean_score: float


@dataclass
class LiveQuality:
    """Live metrics of one version; ``holdout`` and ``live`` are absent without labels,
    ``by_decision`` for a classifier only."""

    labelled: int
    holdout: dict[str, Any] | None = None
    live: dict[str, Any] | None = None
    by_decision: dict[str, DecisionQuality] | None = None
    #: What the labelled rows' scores alone predicted (a classifier's): where ``live``
    #: falls outside its intervals, the scores are no longer calibrated (concept drift).
    estimated: EstimatedPerformance | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def live_quality(joined: pa.Table, manifest: Manifest) -> LiveQuality:
    """Metrics of the version's labelled predictions against its holdout, and per decision."""
    from framework.models import evaluation
    from framework.models.estimator import Scores
    from framework.models.spec import ServingSpec, Task

    if joined.num_rows == 0:
        return LiveQuality(labelled=0)
    task = manifest.task
    score = np.asarray(joined.column("score").to_pylist(), dtype=np.float64)
    y = np.asarray(joined.column("outcome").to_pylist(), dtype=np.float64)
    holdout = vm.holdout_metrics(manifest)
    out = LiveQuality(
        labelled=joined.num_rows,
        holdout={k: holdout.get(k) for k in _HOLDOUT_METRICS if k in holdout},
    )
    if task is not Task.CLASSIFICATION:
        out.live = evaluation.metrics(
            task, y, Scores(score, score, np.full(len(y), np.nan)), ServingSpec(), 10
        )
        return out
    predicted = joined.column("label").to_pylist()
    label = np.array([int(v) if v not in (None, "") else 0 for v in predicted])
    confidence = np.asarray(joined.column("confidence").to_pylist(), np.float64)
    scores = Scores(score=score, label=label, confidence=confidence)
    bins = vm.calibration_bins(manifest)
    out.live = evaluation.metrics(task, y.astype(np.int64), scores, manifest.serving, bins)
    out.live["accuracy"] = float(np.mean(label == y))
    out.estimated = estimate_for(score, manifest.serving)
    decisions = joined.column("decision").to_pylist()
    out.by_decision = {}
    for d in DECISIONS:
        mask = np.array([x == d for x in decisions])
        if mask.any():
            out.by_decision[d] = DecisionQuality(
                labelled=int(mask.sum()),
                accuracy=float(np.mean(label[mask] == y[mask])),
                positive_rate=float(np.mean(y[mask])),
                mean_score=float(np.mean(score[mask])),
            )
    return out
