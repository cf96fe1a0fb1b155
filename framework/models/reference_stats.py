"""Reference statistics: the distributions a model version was trained on.

Stored in every version's manifest, they are what drift monitoring and input
validation compare live traffic against:

- numerical features: quantile bin edges from the training period and the
  count in each bin, where the first and last bins are open-ended
  (``(-inf, e1]``, ``(e1, e2]``, ..., ``(ek, +inf)``), so a live value outside
  the training range still lands in a bin; min, max, mean, std; null rate;
- categorical features: category counts (the most frequent ones, the rest
  summed as ``other_count``) and null rate;
- the model's score and confidence on the holdout, profiled the same way.

numpy does the counting; the layout is parity's own, made for PSI on fixed
edges (monitoring recomputes counts on these edges, never new ones).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from framework.features.fields import FeatureField

QUANTILE_BINS = 10
MAX_CATEGORIES = 100


def numeric_profile(values: np.ndarray, bins: int = QUANTILE_BINS) -> dict[str, Any]:
    """Quantile edges, per-bin counts (open-ended end bins), range, moments, null rate."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    present = values[~np.isnan(values)]
    profile: dict[str, Any] = {
        "kind": "numerical",
        "count": n,
        "null_rate": float(1 - len(present) / n) if n else 0.0,
    }
    if len(present) == 0:
        profile.update(edges=[], counts=[], min=None, max=None, mean=None, std=None)
        return profile
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    edges = np.unique(np.quantile(present, qs))
    profile.update(
        edges=[float(e) for e in edges],
        counts=bin_counts(present, edges),
        min=float(present.min()),
        max=float(present.max()),
        mean=float(present.mean()),
        std=float(present.std()),
    )
    return profile


def bin_counts(values: np.ndarray, edges: np.ndarray | list[float]) -> list[int]:
    """Counts in ``(-inf, e1], (e1, e2], ..., (ek, +inf)``; NaN values are not counted."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    which = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")
    return [int(c) for c in np.bincount(which, minlength=len(edges) + 1)]


def categorical_profile(values: np.ndarray) -> dict[str, Any]:
    series = pd.Series(values, dtype=object)
    n = len(series)
    nulls = int(series.isna().sum())
    counts = series.dropna().value_counts()
    top = counts.iloc[:MAX_CATEGORIES]
    return {
        "kind": "categorical",
        "count": n,
        "null_rate": nulls / n if n else 0.0,
        "categories": {str(k): int(v) for k, v in top.items()},
        "other_count": int(counts.iloc[MAX_CATEGORIES:].sum()),
    }


def feature_profiles(frame: pd.DataFrame, fields: list[FeatureField]) -> dict[str, Any]:
    """A profile per feature of ``frame`` (the training period's model inputs)."""
    return {
        f.name: categorical_profile(frame[f.name].to_numpy())
        if f.categorical
        else numeric_profile(frame[f.name].to_numpy())
        for f in fields
    }
