"""Estimated performance without labels: what a calibrated classifier's scores say about
its quality before any outcome arrives (confidence-based estimation).

If the scores are calibrated, row *i*'s label is 1 with probability ``p_i``. Every
metric training reports (:func:`framework.models.evaluation.classification_metrics`)
then has an expected value given the scores alone: each row counts as a positive with
weight ``p_i`` and as a negative with weight ``1 - p_i``. So the expected ROC-AUC and
PR-AUC are those of the scores on that weighted, doubled set (equal to scikit-learn's
``roc_auc_score`` / ``average_precision_score`` with ``sample_weight``; the tests
check it), precision and recall at a threshold come from the expected confusion
matrix, and a decision bucket's expected accuracy is its rows' mean probability of
the label they were given.

The interval is where the *realized* metric would fall, were the labels drawn from the
scores (a parametric bootstrap: labels ~ Bernoulli(p), ``samples`` times). Beyond
``BOOTSTRAP_ROWS`` rows the bootstrap runs on a random subsample of that many and the
interval's width is scaled by sqrt(m / n), the way a metric's standard error shrinks
with the rows (NannyML scales its sampling error the same way). The point estimate
always uses every row.

Written here rather than with scikit-learn's metrics: one sort of the scores serves
every metric and every bootstrap sample (scikit-learn sorts again per call, and would
sort twice as many rows); the tests hold these numbers equal to scikit-learn's.

When the scores are not calibrated (concept drift), the estimate is wrong, and the gap
between estimated and realized metrics, where labels exist, says so: that is what
:mod:`framework.monitoring.summary` compares.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: Beyond this many rows the bootstrap runs on a subsample (see the module docstring): the
#: interval's width is all it gives, and 2,000 rows give it within a few per cent (the
#: coverage tests hold it at 60,000 rows) for a fortieth of the work at 100,000.
BOOTSTRAP_ROWS = 2_000


@dataclass(frozen=True)
class Estimate:
    """An expected metric and the interval its realized value would fall in."""

    value: float
    low: float
    high: float

    def holds(self, realized: float) -> bool:
        return self.low <= realized <= self.high


#: Why a regression version has no label-free estimate (``parity monitor`` says so).
REGRESSION_NOT_AVAILABLE = (
    "not available for a regression model: confidence-based estimation needs calibrated "
    "class probabilities, and a regression's error cannot be read off its predictions alone "
    "(a direct-loss estimator, as NannyML's DLE, needs labelled reference rows at monitoring "
    "time, which a version does not keep); live quality is reported once outcomes arrive"
)


@dataclass
class EstimatedPerformance:
    """Expected classification metrics of one window of scores (``None``: undefined, e.g.
    every score 0 or 1 on one side)."""

    rows: int
    positive_rate: Estimate
    roc_auc: Estimate | None
    pr_auc: Estimate | None
    at_thresholds: list[dict[str, Any]] = field(default_factory=list)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The version's holdout metrics, to read the estimate against (set by the summary).
    holdout: dict[str, Any] | None = None
    #: The same estimate on the holdout's scores, where training recorded it: a window's
    #: estimate is compared with this (like with like: a model whose scores are slightly
    #: under- or over-confident is so on both sides).
    holdout_estimated: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Sorted:
    """Scores sorted once, descending, with their tie groups' ends."""

    def __init__(self, p: np.ndarray) -> None:
        order = np.argsort(-p)  # ties are grouped below: their order does not matter
        self.p = p[order]
        # The last index of each run of equal scores: curves step once per distinct score.
        self.ends = np.flatnonzero(np.diff(self.p) != 0)
        self.ends = np.append(self.ends, len(self.p) - 1)

    def curves(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative positive and negative weight at each distinct score (descending);
        ``pos`` is each sorted row's positive weight (probabilities, or drawn 0/1 labels:
        one row of them per bootstrap sample)."""
        tp = np.cumsum(pos, axis=-1)[..., self.ends]
        fp = np.cumsum(1.0 - pos, axis=-1)[..., self.ends]
        return tp, fp

    def roc_auc(self, pos: np.ndarray) -> Any:
        """ROC-AUC of ``pos`` (NaN where one class has no weight)."""
        tp, fp = self.curves(pos)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpr = tp / tp[..., -1:]
            fpr = fp / fp[..., -1:]
        zero = np.zeros((*tp.shape[:-1], 1))
        return np.trapezoid(np.concatenate((zero, tpr), -1), np.concatenate((zero, fpr), -1))

    def pr_auc(self, pos: np.ndarray) -> Any:
        """Average precision: sum over distinct scores of (recall step) x precision."""
        tp, fp = self.curves(pos)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = tp / tp[..., -1:]
            precision = tp / (tp + fp)
        steps = np.diff(recall, axis=-1, prepend=0.0)
        return np.sum(steps * precision, axis=-1)


def _scalar(value: Any) -> float | None:
    """A metric of one set of weights, ``None`` where it is undefined."""
    value = float(value)
    return None if np.isnan(value) else value


class _Bootstrap:
    """Labels drawn from the scores, ``samples`` times (a row each), on a sorted subsample
    of at most ``rows`` scores: every metric's interval comes from the same draws."""

    def __init__(self, p: np.ndarray, samples: int, seed: int, rows: int) -> None:
        rng = np.random.default_rng(seed)
        sub = p if len(p) <= rows else rng.choice(p, rows, replace=False)
        self.ranked = _Sorted(sub)
        self.scale = float(np.sqrt(len(sub) / len(p)))
        self.drawn = (rng.random((samples, len(sub))) < self.ranked.p).astype(np.float64)

    def interval(self, metric: Any, point: float | None, level: float) -> Estimate | None:
        """``point`` with the interval of ``metric`` (of the sorted subsample and the drawn
        labels, a value per sample) over the draws."""
        if point is None:
            return None
        spread = np.asarray(metric(self.ranked, self.drawn), dtype=np.float64)
        spread = spread[~np.isnan(spread)]
        if not len(spread):
            return Estimate(point, point, point)
        centre = float(np.mean(spread))
        tail = (1 - level) / 2
        low, high = np.quantile(spread, [tail, 1 - tail])
        # Widths around the draws' centre, scaled, placed around the exact expectation.
        return Estimate(
            point,
            float(max(point - (centre - float(low)) * self.scale, 0.0)),
            float(min(point + (float(high) - centre) * self.scale, 1.0)),
        )


def aucs(
    scores: np.ndarray, *, samples: int = 50, bootstrap_rows: int = BOOTSTRAP_ROWS, seed: int = 0
) -> tuple[Estimate | None, Estimate | None]:
    """The expected ROC-AUC and PR-AUC alone, with a lighter bootstrap by default: for
    each bucket of the monitor's timeline."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    if len(p) < 2:
        return None, None
    ranked = _Sorted(p)
    draws = _Bootstrap(p, samples, seed, bootstrap_rows)
    return (
        draws.interval(_Sorted.roc_auc, _scalar(ranked.roc_auc(ranked.p)), 0.95),
        draws.interval(_Sorted.pr_auc, _scalar(ranked.pr_auc(ranked.p)), 0.95),
    )


def point_aucs(scores: np.ndarray) -> dict[str, float]:
    """The expected ROC-AUC and PR-AUC of ``scores`` (no interval; undefined ones left out):
    what training records of the holdout for the monitor to compare windows with."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    if len(p) < 2:
        return {}
    ranked = _Sorted(p)
    found = {
        "roc_auc": _scalar(ranked.roc_auc(ranked.p)),
        "pr_auc": _scalar(ranked.pr_auc(ranked.p)),
    }
    return {k: float(v) for k, v in found.items() if v is not None}


def estimate_for(scores: np.ndarray, serving: Any, samples: int = 100) -> EstimatedPerformance:
    """:func:`estimate` at a version's serving thresholds (its manifest's ``serving``)."""
    return estimate(
        scores,
        threshold=serving.threshold,
        report_thresholds=tuple(serving.report_thresholds),
        accept=serving.accept,
        review_below=serving.review_below,
        samples=samples,
    )


def estimate(
    scores: np.ndarray,
    *,
    threshold: float = 0.5,
    report_thresholds: tuple[float, ...] = (),
    accept: float = 0.85,
    review_below: float = 0.6,
    samples: int = 100,
    level: float = 0.95,
    seed: int = 0,
) -> EstimatedPerformance:
    """Expected metrics of a window of calibrated positive-class probabilities."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    n = len(p)
    if n == 0:
        nothing = Estimate(float("nan"), float("nan"), float("nan"))
        return EstimatedPerformance(rows=0, positive_rate=nothing, roc_auc=None, pr_auc=None)
    ranked = _Sorted(p)
    draws = _Bootstrap(p, samples, seed, BOOTSTRAP_ROWS)

    def bootstrap(metric: Any, point: float | None) -> Estimate | None:
        return draws.interval(metric, point, level)

    rate = float(p.mean())
    out = EstimatedPerformance(
        rows=n,
        positive_rate=bootstrap(lambda r, y: y.mean(axis=-1), rate) or Estimate(rate, rate, rate),
        roc_auc=bootstrap(_Sorted.roc_auc, _scalar(ranked.roc_auc(ranked.p))),
        pr_auc=bootstrap(_Sorted.pr_auc, _scalar(ranked.pr_auc(ranked.p))),
    )
    for t in sorted({threshold, *report_thresholds}):
        flagged = p >= t
        expected_tp = float(p[flagged].sum())
        precision = expected_tp / flagged.sum() if flagged.any() else None
        recall = expected_tp / p.sum() if p.sum() > 0 else None

        def drawn_precision(r: _Sorted, y: np.ndarray, t: float = t) -> Any:
            hit = r.p >= t
            return y[:, hit].mean(axis=-1) if hit.any() else np.full(len(y), np.nan)

        def drawn_recall(r: _Sorted, y: np.ndarray, t: float = t) -> Any:
            with np.errstate(invalid="ignore", divide="ignore"):
                return y[:, r.p >= t].sum(axis=-1) / y.sum(axis=-1)

        out.at_thresholds.append(
            {
                "threshold": t,
                "precision": bootstrap(drawn_precision, precision),
                "recall": bootstrap(drawn_recall, recall),
                "flagged_share": float(flagged.mean()),
            }
        )
    label = p >= threshold
    # The probability each row's label is right: p for a 1, 1 - p for a 0.
    right = np.where(label, p, 1.0 - p)  # also parity's confidence in the label
    buckets = {
        "accept": right >= accept,
        "validate": (right >= review_below) & (right < accept),
        "review": right < review_below,
    }
    for name, mask in buckets.items():
        k = int(mask.sum())
        out.decisions[name] = {
            "share": k / n,
            "accuracy": float(right[mask].mean()) if k else None,
        }
    return out
