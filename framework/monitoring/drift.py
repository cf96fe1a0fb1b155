"""Data drift: how far live values moved from a model version's reference statistics.

Every test here works on the *stored* reference of :mod:`framework.models.reference_stats`
(quantile bin edges with counts, category counts, null rates), never on new
edges drawn from live data, so the same version is always measured on the same
bins and no training data has to be kept around.

Per feature:

- **PSI** (population stability index) over the reference bins: for numerical
  features the quantile bins with open-ended end bins (``(-inf, e1]``, ...,
  ``(ek, +inf)``), so a live value outside the training range still lands in a
  bin; for categorical ones the reference categories, the reference's
  ``other`` bucket and one bin per new category, over non-null values. An
  empty bin's share is replaced by one fixed :data:`EPSILON` (never
  renormalised), so PSI stays finite and the same data always gives the same
  number.
- **Null rate**: a feature whose share of nulls moves by ``null_rate_change``
  or more drifts too (values going missing online is the commonest silent
  failure). Nulls are kept out of PSI: with the fixed epsilon, a few percent of
  nulls where training had none would alone push PSI past 0.25.
  ``PSI = sum((cur - ref) * ln(cur / ref))``; ``< 0.1`` stable, ``0.1-0.25``
  moderate shift (warn), ``>= 0.25`` drift (the usual rule of thumb).
- **KS** for numerical features: the two-sample Kolmogorov-Smirnov statistic
  between the reference and the live distribution of non-null values,
  evaluated at the reference edges (the reference CDF is known exactly there);
  the p-value is scipy's two-sample distribution (``scipy.stats.kstwo``) with
  the effective size ``n*m/(n+m)``. Evaluated only at the edges, the statistic
  is a lower bound of the full one, which errs towards fewer false alarms.
- **Chi-square** (``scipy.stats.chi2_contingency``, homogeneity of the 2 x k
  table of reference and live category counts) and the **Jensen-Shannon
  distance** (base 2, in [0, 1]) for categorical features, and **new
  categories**: values the reference never saw (only knowable when the
  reference kept every category, i.e. its ``other`` bucket is empty).

A feature *drifts* when PSI >= ``psi_drift``, or its test rejects at
``p_value`` *and* the effect is large enough (KS statistic >= ``ks_statistic``,
JS distance >= ``js_distance``; a p-value alone flags negligible shifts once
samples are large), or new categories take >= ``new_category_share`` of the
live values, or its null rate moved by >= ``null_rate_change``. It *warns*
on PSI >= ``psi_warn``, a rejecting test, or any new category. Below
``min_rows`` live (or reference) rows there is no verdict: the status is
``insufficient_data``; with enough rows but fewer than ``min_rows`` non-null
values, only the null rate is judged.

A signal that does not exist for a model (the confidence of a regression
model) is :data:`NOT_APPLICABLE` (:func:`not_applicable`): no number, no verdict.

The dataset verdict is the share of drifted features among those with enough
data: ``drift`` when it reaches ``dataset_drift_share`` (0.5 by default, the
convention Evidently also uses).

scipy does the statistics; the binning on stored edges is parity's own,
because no library computes PSI/KS against a stored binned reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
from scipy import stats  # type: ignore[import-untyped]
from scipy.spatial import distance  # type: ignore[import-untyped]

from framework.errors import ConfigError, DataError
from framework.models.reference_stats import bin_counts

#: The share that replaces an empty bin's share in PSI (one fixed value, never renormalised).
EPSILON = 1e-4

OK, WARN, DRIFT, INSUFFICIENT = "ok", "warn", "drift", "insufficient_data"
NOT_APPLICABLE = "not_applicable"
OTHER_BIN = "(other)"


@dataclass(frozen=True)
class DriftThresholds:
    """When a feature or the dataset counts as drifted (defaults documented in the module)."""

    psi_warn: float = 0.1
    psi_drift: float = 0.25
    p_value: float = 0.05
    ks_statistic: float = 0.1
    js_distance: float = 0.1
    new_category_share: float = 0.01
    null_rate_change: float = 0.1
    min_rows: int = 500
    dataset_drift_share: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"The threshold {f.name!r} must be a number. Got {value!r}.")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"The threshold {f.name!r} must be a finite non-negative number. Got {value!r}."
                )
        if self.psi_warn > self.psi_drift:
            raise ConfigError(
                f"The threshold 'psi_warn' must not exceed 'psi_drift'. Got {self.psi_warn} > "
                f"{self.psi_drift}."
            )
        for name in (
            "p_value",
            "js_distance",
            "ks_statistic",
            "dataset_drift_share",
            "null_rate_change",
        ):
            if getattr(self, name) > 1:
                raise ConfigError(
                    f"The threshold {name!r} must be at most 1. Got {getattr(self, name)}."
                )


# ------------------------------------------------------------------ statistics


def psi(
    reference_counts: Sequence[float] | np.ndarray,
    current_counts: Sequence[float] | np.ndarray,
    epsilon: float = EPSILON,
) -> float:
    """Population stability index of two count vectors over the same bins.

    Each side's counts become shares of its own total; an empty bin's share is
    replaced by ``epsilon``.

    >>> round(psi([50, 50], [25, 75]), 4)
    0.2747
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.shape != cur.shape:
        raise DataError(f"PSI needs the same bins on both sides: {ref.shape} vs {cur.shape}.")
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise DataError("PSI needs at least one counted value on each side.")
    p = np.where(ref > 0, ref / ref.sum(), epsilon)
    q = np.where(cur > 0, cur / cur.sum(), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


@dataclass(frozen=True)
class TestResult:
    statistic: float
    p_value: float


def ks_binned(
    reference_counts: Sequence[int] | np.ndarray, current_counts: Sequence[int] | np.ndarray
) -> TestResult:
    """Two-sample KS between counts over the same ordered bins (CDFs compared at the
    bin edges), with scipy's two-sample p-value for the effective sample size."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    n, m = ref.sum(), cur.sum()
    if n <= 0 or m <= 0:
        raise DataError("KS needs at least one value on each side.")
    d = float(np.max(np.abs(np.cumsum(ref) / n - np.cumsum(cur) / m)))
    effective = max(1, round(n * m / (n + m)))
    return TestResult(d, float(stats.kstwo.sf(d, effective)))


def ks_samples(reference: np.ndarray, current: np.ndarray) -> TestResult:
    """Two-sample KS between raw samples (``scipy.stats.ks_2samp``), NaN dropped."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    result = stats.ks_2samp(ref[~np.isnan(ref)], cur[~np.isnan(cur)])
    return TestResult(float(result.statistic), float(result.pvalue))


def chi_square(
    reference_counts: Sequence[int] | np.ndarray, current_counts: Sequence[int] | np.ndarray
) -> TestResult:
    """Chi-square test of homogeneity of the 2 x k table of counts (no continuity
    correction); bins empty on both sides are dropped. Fewer than two bins: no evidence."""
    table = np.vstack(
        [np.asarray(reference_counts, np.float64), np.asarray(current_counts, np.float64)]
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return TestResult(0.0, 1.0)
    result = stats.chi2_contingency(table, correction=False)
    return TestResult(float(result.statistic), float(result.pvalue))


def js_distance(
    reference_counts: Sequence[float] | np.ndarray, current_counts: Sequence[float] | np.ndarray
) -> float:
    """Jensen-Shannon distance (base 2: 0 identical, 1 disjoint) of two count vectors."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        raise DataError("The Jensen-Shannon distance needs values on each side.")
    return float(distance.jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2))


# ------------------------------------------------------------------ per feature


@dataclass
class FeatureDrift:
    """One feature's drift against its reference, with what a report needs to plot it."""

    feature: str
    kind: str  # numerical | categorical
    status: str  # ok | warn | drift | insufficient_data | not_applicable
    reference_rows: int
    current_rows: int
    reference_null_rate: float
    current_null_rate: float
    psi: float | None = None
    test: str | None = None  # ks | chi2
    statistic: float | None = None
    p_value: float | None = None
    js_distance: float | None = None
    new_categories: dict[str, int] = field(default_factory=dict)
    new_category_share: float = 0.0
    bins: list[str] = field(default_factory=list)
    reference_share: list[float] = field(default_factory=list)
    current_share: list[float] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return self.status == DRIFT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [float(c / total) if total else 0.0 for c in counts]


def _null_count(profile: Mapping[str, Any]) -> int:
    return int(round(float(profile.get("null_rate") or 0.0) * int(profile.get("count") or 0)))


def _edge_label(edges: list[float], i: int) -> str:
    def f(x: float) -> str:
        return f"{x:.4g}"

    if not edges:
        return "all"
    if i == 0:
        return f"<= {f(edges[0])}"
    if i == len(edges):
        return f"> {f(edges[-1])}"
    return f"({f(edges[i - 1])}, {f(edges[i])}]"


def numerical_drift(
    name: str,
    profile: Mapping[str, Any],
    current_counts: Sequence[int] | np.ndarray,
    current_nulls: int,
    thresholds: DriftThresholds = DriftThresholds(),
) -> FeatureDrift:
    """Drift of a numerical feature given its live counts on the reference's bins.

    ``current_counts`` has ``len(profile['edges']) + 1`` entries (see
    :func:`current_bin_counts`); nulls are counted separately.
    """
    edges = [float(e) for e in profile.get("edges") or []]
    # No edges only when the reference held no value at all: one empty bin.
    ref = np.asarray(profile.get("counts") or [0], np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if len(cur) != len(edges) + 1:
        raise DataError(
            f"{name}: expected {len(edges) + 1} bin counts for {len(edges)} edges, got {len(cur)}."
        )
    ref_nulls, cur_nulls = _null_count(profile), int(current_nulls)
    result = FeatureDrift(
        feature=name,
        kind="numerical",
        status=OK,
        reference_rows=int(ref.sum()) + ref_nulls,
        current_rows=int(cur.sum()) + cur_nulls,
        reference_null_rate=float(profile.get("null_rate") or 0.0),
        current_null_rate=cur_nulls / max(int(cur.sum()) + cur_nulls, 1),
        bins=[_edge_label(edges, i) for i in range(len(edges) + 1)],
        reference_share=_shares(ref),
        current_share=_shares(cur),
    )
    if _insufficient(result, thresholds):
        return result
    if _enough_values(result, ref, cur, thresholds):
        result.psi = psi(ref, cur)
        if edges:
            ks = ks_binned(ref, cur)
            result.test, result.statistic, result.p_value = "ks", ks.statistic, ks.p_value
    _decide(result, thresholds, effect=result.statistic, effect_min=thresholds.ks_statistic)
    return result


def not_applicable(name: str, reason: str) -> dict[str, Any]:
    """A signal the model does not have, shaped like :meth:`FeatureDrift.to_dict`: status
    ``not_applicable``, the reason, and no number at all (every count, rate and
    statistic ``None``)."""
    out: dict[str, Any] = {f.name: None for f in fields(FeatureDrift)}
    out.update(
        feature=name,
        kind="numerical",
        status=NOT_APPLICABLE,
        new_categories={},
        bins=[],
        reference_share=[],
        current_share=[],
        reasons=[reason],
    )
    return out


def categorical_drift(
    name: str,
    profile: Mapping[str, Any],
    current_counts: Mapping[str | None, int],
    thresholds: DriftThresholds = DriftThresholds(),
) -> FeatureDrift:
    """Drift of a categorical feature given live counts per category (``None``: nulls)."""
    categories: dict[str, int] = {str(k): int(v) for k, v in profile.get("categories", {}).items()}
    other = int(profile.get("other_count") or 0)
    current = {k: int(v) for k, v in current_counts.items() if k is not None and v}
    cur_nulls = int(current_counts.get(None, 0))
    unseen = {k: v for k, v in current.items() if k not in categories}
    new = {} if other else dict(sorted(unseen.items(), key=lambda kv: (-kv[1], kv[0])))
    labels = list(categories) + ([OTHER_BIN] if other else []) + list(new)
    ref = np.array(
        list(categories.values()) + ([other] if other else []) + [0] * len(new), np.float64
    )
    cur = np.array(
        [current.get(k, 0) for k in categories]
        + ([sum(unseen.values())] if other else [])
        + list(new.values()),
        np.float64,
    )
    ref_nulls = _null_count(profile)
    non_null = int(cur.sum())
    result = FeatureDrift(
        feature=name,
        kind="categorical",
        status=OK,
        reference_rows=int(ref.sum()) + ref_nulls,
        current_rows=non_null + cur_nulls,
        reference_null_rate=float(profile.get("null_rate") or 0.0),
        current_null_rate=cur_nulls / max(non_null + cur_nulls, 1),
        new_categories=new,
        new_category_share=sum(new.values()) / non_null if non_null else 0.0,
        bins=labels,
        reference_share=_shares(ref),
        current_share=_shares(cur),
    )
    if _insufficient(result, thresholds):
        return result
    if _enough_values(result, ref, cur, thresholds):
        result.psi = psi(ref, cur)
        chi = chi_square(ref, cur)
        result.test, result.statistic, result.p_value = "chi2", chi.statistic, chi.p_value
        result.js_distance = js_distance(ref, cur)
    _decide(result, thresholds, effect=result.js_distance, effect_min=thresholds.js_distance)
    return result


def _insufficient(result: FeatureDrift, t: DriftThresholds) -> bool:
    short = [
        f"{side} has {rows} rows (< min_rows {t.min_rows})"
        for side, rows in (("reference", result.reference_rows), ("current", result.current_rows))
        if rows < t.min_rows
    ]
    if short:
        result.status = INSUFFICIENT
        result.reasons = ["no verdict: " + "; ".join(short)]
    return bool(short)


def _enough_values(
    result: FeatureDrift, ref: np.ndarray, cur: np.ndarray, t: DriftThresholds
) -> bool:
    short = [
        f"{side} has {int(counts.sum())} non-null values"
        for side, counts in (("reference", ref), ("current", cur))
        if counts.sum() < t.min_rows
    ]
    if short:
        result.reasons.append(f"distribution not tested: {'; '.join(short)} (< min_rows)")
    return not short


def _decide(
    result: FeatureDrift, t: DriftThresholds, *, effect: float | None, effect_min: float
) -> None:
    drift, warn = [], []
    if result.psi is not None and result.psi >= t.psi_drift:
        drift.append(f"PSI {result.psi:.3f} >= {t.psi_drift}")
    elif result.psi is not None and result.psi >= t.psi_warn:
        warn.append(f"PSI {result.psi:.3f} >= {t.psi_warn}")
    moved = result.current_null_rate - result.reference_null_rate
    if abs(moved) >= t.null_rate_change:
        drift.append(
            f"null rate {result.reference_null_rate:.1%} -> {result.current_null_rate:.1%}"
        )
    if result.p_value is not None and result.p_value < t.p_value:
        what = f"{result.test} p={result.p_value:.2g} < {t.p_value}"
        if effect is not None and effect >= effect_min:
            name = "KS statistic" if result.test == "ks" else "JS distance"
            drift.append(f"{what} and {name} {effect:.3f} >= {effect_min}")
        else:
            warn.append(what)
    if result.new_categories:
        what = (
            f"new categories {', '.join(list(result.new_categories)[:5])} "
            f"({result.new_category_share:.1%} of values)"
        )
        (drift if result.new_category_share >= t.new_category_share else warn).append(what)
    result.status = DRIFT if drift else WARN if warn else OK
    result.reasons = drift + warn + result.reasons


def current_bin_counts(profile: Mapping[str, Any], values: np.ndarray) -> tuple[list[int], int]:
    """Live counts on the reference's bins and the number of nulls (NaN) among ``values``."""
    values = np.asarray(values, dtype=np.float64)
    nulls = int(np.isnan(values).sum())
    return bin_counts(values, profile.get("edges") or []), nulls


def feature_drift(
    name: str,
    profile: Mapping[str, Any],
    values: np.ndarray | Sequence[Any],
    thresholds: DriftThresholds = DriftThresholds(),
) -> FeatureDrift:
    """Drift of one feature from its raw live values (numbers with NaN/None, or strings)."""
    if profile.get("kind") == "categorical":
        counts: dict[str | None, int] = {}
        for v in values:
            key = None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
            counts[key] = counts.get(key, 0) + 1
        return categorical_drift(name, profile, counts, thresholds)
    if profile.get("kind") != "numerical":
        raise DataError(f"{name}: unknown reference profile kind {profile.get('kind')!r}.")
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    bins, nulls = current_bin_counts(profile, array)
    return numerical_drift(name, profile, bins, nulls, thresholds)


# ------------------------------------------------------------------ the dataset


@dataclass
class DatasetVerdict:
    status: str  # drift | no_drift | insufficient_data
    drifted_features: list[str]
    evaluated_features: int
    drift_share: float | None
    threshold: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_verdict(
    results: Sequence[FeatureDrift], thresholds: DriftThresholds = DriftThresholds()
) -> DatasetVerdict:
    """The share of drifted features among those with enough data, against the threshold."""
    evaluated = [r for r in results if r.status != INSUFFICIENT]
    drifted = [r.feature for r in evaluated if r.drifted]
    t = thresholds.dataset_drift_share
    if not evaluated:
        return DatasetVerdict(
            INSUFFICIENT, [], 0, None, t, f"no feature has {thresholds.min_rows} rows on each side"
        )
    share = len(drifted) / len(evaluated)
    status = "drift" if share >= t and drifted else "no_drift"
    return DatasetVerdict(
        status,
        drifted,
        len(evaluated),
        share,
        t,
        f"{len(drifted)} of {len(evaluated)} features drifted ({share:.0%}; threshold {t:.0%})",
    )
