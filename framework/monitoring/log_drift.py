"""Drift from the prediction log: live counts on each version's reference bins.

Each query reads only the columns it needs straight from Parquet: one streamed
scan of the numerical features and outputs (:func:`numeric_counts`) and one of
the categorical ones (:func:`categorical_counts`) per version; the tests on those
counts are :mod:`framework.monitoring.drift`'s. :func:`version_drift` gives a
version's :class:`VersionDrift`: per feature (with the model's reliance on it),
the dataset verdict, and the score and confidence distributions with the drop
in mean confidence, the early warning before accuracy visibly drops.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import numpy as np

from framework.logs.reader import sql_name
from framework.monitoring import drift
from framework.monitoring.impact import DriftImpact

#: Rows per record batch of the numerical scan (memory bounded by it).
BATCH_ROWS = 262_144
NO_CONFIDENCE = "a regression model has no confidence"


@dataclass
class ConfidenceDrift:
    """The confidence distribution's drift against the holdout's and the drop in its mean;
    ``distribution`` None: the model has no confidence (a regression)."""

    distribution: drift.FeatureDrift | None
    reference_mean: float | None = None
    current_mean: float | None = None

    @property
    def drop(self) -> float | None:
        if self.reference_mean is None or self.current_mean is None:
            return None
        return self.reference_mean - self.current_mean

    def to_dict(self) -> dict[str, Any]:
        shape = (
            self.distribution.to_dict()
            if self.distribution is not None
            else drift.not_applicable("confidence", NO_CONFIDENCE)
        )
        return {
            **shape,
            "reference_mean": self.reference_mean,
            "current_mean": self.current_mean,
            "drop": self.drop,
        }


@dataclass
class RankedFeature:
    feature: str
    importance: float | None
    psi: float | None


@dataclass
class RankedImpact:
    feature: str
    output_shift: float | None  # score units (None: no decomposition)
    share: float | None  # of the output's whole movement
    mean_shift: float | None
    importance: float | None
    psi: float | None


@dataclass
class VersionDrift:
    """One version's drift: per feature (largest PSI first), the dataset verdict, the
    score and confidence, and each feature's permutation importance at training."""

    dataset: drift.DatasetVerdict
    features: list[drift.FeatureDrift]
    importance: Mapping[str, float]
    score: drift.FeatureDrift | None = None
    confidence: ConfidenceDrift | None = None
    impact: DriftImpact | None = None
    importance_std: Mapping[str, float] = field(default_factory=dict)

    @property
    def moved(self) -> list[str]:
        """The features that drifted or warned."""
        return [f.feature for f in self.features if f.status in (drift.DRIFT, drift.WARN)]

    @property
    def drifted_by_impact(self) -> list[RankedImpact]:
        """The drifted features, the one that moved the model's output most first (by
        :mod:`framework.monitoring.impact`; without it, by importance at training)."""
        found = self.impact.by_feature if self.impact is not None else {}
        ranked = [
            RankedImpact(
                r.feature,
                found[r.feature].output_shift if r.feature in found else None,
                found[r.feature].share if r.feature in found else None,
                found[r.feature].mean_shift if r.feature in found else None,
                r.importance,
                r.psi,
            )
            for r in self.drifted_by_importance
        ]
        if found:
            ranked.sort(key=lambda r: -(r.output_shift if r.output_shift is not None else -1.0))
        return ranked

    @property
    def drifted_by_importance(self) -> list[RankedFeature]:
        """The drifted features, those the model leans on most first: drift there matters
        most."""
        ranked = [
            RankedFeature(f.feature, self.importance.get(f.feature), f.psi)
            for f in self.features
            if f.status == drift.DRIFT
        ]
        ranked.sort(key=lambda r: -(r.importance if r.importance is not None else -math.inf))
        return ranked

    def to_dict(self) -> dict[str, Any]:
        impacts = self.impact.by_feature if self.impact is not None else {}
        out: dict[str, Any] = {
            "dataset": self.dataset.to_dict(),
            "features": [
                {
                    **f.to_dict(),
                    "importance": self.importance.get(f.feature),
                    "impact": asdict(impacts[f.feature]) if f.feature in impacts else None,
                }
                for f in self.features
            ],
        }
        if self.score is not None:
            out["score"] = self.score.to_dict()
        if self.confidence is not None:
            out["confidence"] = self.confidence.to_dict()
        out["drifted_by_importance"] = [asdict(r) for r in self.drifted_by_importance]
        out["drifted_by_impact"] = [asdict(r) for r in self.drifted_by_impact]
        out["impact"] = self.impact.to_dict() if self.impact is not None else None
        return out


def numeric_counts(
    con: duckdb.DuckDBPyConnection, profiles: Mapping[str, Mapping[str, Any]], where: str
) -> dict[str, tuple[list[int], int]]:
    """Live counts on each numerical profile's bins and its nulls (null or NaN), in one
    scan of ``log`` streamed in record batches (memory bounded by the batch size).

    The binning is numpy's ``searchsorted`` on the stored edges, the same call that
    counted the reference (:func:`framework.models.reference_stats.bin_counts`).
    """
    if not profiles:
        return {}
    names = list(profiles)
    edges = {n: np.asarray(profiles[n].get("edges") or [], np.float64) for n in names}
    counts = {n: np.zeros(len(edges[n]) + 1, np.int64) for n in names}
    nulls = dict.fromkeys(names, 0)
    select = ", ".join(f"CAST({sql_name(n)} AS DOUBLE) AS {sql_name(n)}" for n in names)
    reader = con.execute(f"SELECT {select} FROM log WHERE {where}").to_arrow_reader(BATCH_ROWS)
    for batch in reader:
        for i, n in enumerate(names):
            values = batch.column(i).to_numpy(zero_copy_only=False)
            # Nulls arrive as NaN, which sorts after every edge into the last bin: counted
            # there and taken out again (cheaper than copying the other values out).
            missing = int(np.count_nonzero(np.isnan(values)))
            which = np.searchsorted(edges[n], values, side="left")
            binned = np.bincount(which, minlength=len(edges[n]) + 1)
            binned[-1] -= missing
            counts[n] += binned
            nulls[n] += missing
    return {n: ([int(c) for c in counts[n]], nulls[n]) for n in names}


def categorical_counts(
    con: duckdb.DuckDBPyConnection, columns: Sequence[str], where: str
) -> dict[str, dict[str | None, int]]:
    """Counts per value (``None``: nulls) of each column, in one scan of ``log`` (one
    grouping set per column; ``GROUPING`` tells a column's own null from "not grouped")."""
    if not columns:
        return {}
    values = [f"CAST({sql_name(c)} AS VARCHAR) AS _v{i}" for i, c in enumerate(columns)]
    flags = [f"GROUPING(_v{i})" for i in range(len(columns))]
    sets = ", ".join(f"(_v{i})" for i in range(len(columns)))
    rows = con.execute(
        f"""SELECT {", ".join(flags)}, {", ".join(values)}, count(*) FROM log WHERE {where}
            GROUP BY GROUPING SETS ({sets})"""
    ).fetchall()
    out: dict[str, dict[str | None, int]] = {c: {} for c in columns}
    n = len(columns)
    for row in rows:
        i = list(row[:n]).index(0)  # the one column this row is grouped by
        out[columns[i]][row[n + i]] = int(row[-1])
    return out


def version_drift(
    con: duckdb.DuckDBPyConnection,
    reference: Mapping[str, Any],
    where: str,
    columns: set[str],
    thresholds: drift.DriftThresholds,
    *,
    confidence_mean: float | None,
    has_confidence: bool,
    importance: Mapping[str, float],
) -> VersionDrift:
    """Drift of the rows ``where`` selects against a version's ``reference`` statistics."""
    # Request data (e.g. a raw amount the model only sees through on-demand ratios) is
    # checked too when the manifest profiles it under ``reference.request_data``.
    every = {**reference.get("request_data", {}), **reference.get("features", {})}
    profiles = {k: v for k, v in every.items() if k in columns}
    numerical = {k: v for k, v in profiles.items() if v.get("kind") == "numerical"}
    signals = ("score", "confidence") if has_confidence else ("score",)
    outputs = {k: reference[k] for k in signals if reference.get(k) and k in columns}
    counts = numeric_counts(con, {**numerical, **outputs}, where)
    categories = categorical_counts(
        con, [k for k, v in profiles.items() if v.get("kind") == "categorical"], where
    )
    results: list[drift.FeatureDrift] = []
    for name, profile in profiles.items():
        if profile.get("kind") == "categorical":
            results.append(drift.categorical_drift(name, profile, categories[name], thresholds))
        else:
            results.append(drift.numerical_drift(name, profile, *counts[name], thresholds))
    verdict = drift.dataset_verdict(results, thresholds)
    results.sort(key=lambda r: (-(r.psi if r.psi is not None else -1.0), r.feature))
    out = VersionDrift(verdict, results, importance)
    if "score" in outputs:
        out.score = drift.numerical_drift("score", outputs["score"], *counts["score"], thresholds)
    if "confidence" in outputs:
        distribution = drift.numerical_drift(
            "confidence", outputs["confidence"], *counts["confidence"], thresholds
        )
        out.confidence = ConfidenceDrift(
            distribution, outputs["confidence"].get("mean"), confidence_mean
        )
    if not has_confidence:
        out.confidence = ConfidenceDrift(None)
    return out
