"""Drift that matters: how much the model's output moved because of each feature.

A p-value says a feature's values moved; it does not say the model's answers
did. Here the answers are decomposed with the version's own SHAP explainer
(:mod:`framework.models.explain`: exact Tree or Linear SHAP, attributions in
units of the served score, ``base_value + sum(contributions) == score``) on a
sample of the monitored window's logged feature vectors and on the training
background stored with the version. For each feature ``f``:

- ``output_shift``: the Wasserstein-1 distance between ``f``'s contributions on
  the window and in training (score units; ``scipy.stats.wasserstein_distance``).
  It is zero when the feature moved where the model does not look, and counts a
  move that raises some scores and lowers others, which a mean would cancel;
- ``mean_shift``: the change of ``f``'s mean contribution. With one base value
  these add up to the change of the mean score exactly (SHAP's additivity), so
  the report can say "the mean score rose 0.04, 0.03 of it through amount";
- ``share``: ``output_shift`` over the sum of every feature's — the feature's
  share of how far the output moved — and ``attribution_share``, its share of
  the mean absolute attribution on the window (how much the model leans on it
  there).

Drifted features are ranked by ``output_shift``
(:attr:`framework.monitoring.log_drift.VersionDrift.drifted_by_impact`). A model
without an explainer, or a window without a drifted or warned feature, gets no
decomposition and says why (``reason``); the ranking then falls back to the
permutation importance recorded at training.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np

from framework.logs.reader import sql_name
from framework.models.manifest import Manifest
from framework.registry.model_registry import ModelRegistry

if TYPE_CHECKING:
    import pandas as pd

    from framework.models.explain import Explainer

#: Logged rows of the window explained (a uniform sample; SHAP's cost grows with it).
SAMPLE_ROWS = 2_000
_SEED = 20261205


@dataclass
class FeatureImpact:
    feature: str
    output_shift: float  # W1 between its contributions on the window and in training
    mean_shift: float  # change of its mean contribution (sums to the mean score change)
    share: float  # of the sum of every feature's output_shift
    attribution_share: float  # of the window's mean |attribution|


@dataclass
class DriftImpact:
    """The window's output movement per feature (``features``, largest first); ``method``
    None and ``reason`` when there is none."""

    method: str | None
    reason: str | None = None
    rows: int = 0
    reference_rows: int = 0
    mean_score_reference: float | None = None
    mean_score_window: float | None = None
    features: list[FeatureImpact] = field(default_factory=list)

    @property
    def by_feature(self) -> dict[str, FeatureImpact]:
        return {f.feature: f for f in self.features}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def not_available(reason: str) -> DriftImpact:
    return DriftImpact(method=None, reason=reason)


def decompose(explainer: Explainer, reference: pd.DataFrame, window: pd.DataFrame) -> DriftImpact:
    """The per-feature decomposition of the output's move from ``reference`` to ``window``
    (feature frames as :func:`framework.models.estimator.feature_frame` makes them)."""
    from scipy.stats import wasserstein_distance  # type: ignore[import-untyped]

    ref, _ = explainer.contributions(reference)
    cur, _ = explainer.contributions(window)
    names = list(explainer.names)
    shifts = np.array(
        [wasserstein_distance(ref[:, j], cur[:, j]) for j in range(len(names))], np.float64
    )
    means = cur.mean(axis=0) - ref.mean(axis=0)
    leaning = np.abs(cur).mean(axis=0)
    total_shift, total_leaning = shifts.sum(), leaning.sum()
    features = [
        FeatureImpact(
            feature=name,
            output_shift=float(shifts[j]),
            mean_shift=float(means[j]),
            share=float(shifts[j] / total_shift) if total_shift > 0 else 0.0,
            attribution_share=float(leaning[j] / total_leaning) if total_leaning > 0 else 0.0,
        )
        for j, name in enumerate(names)
    ]
    features.sort(key=lambda f: (-f.output_shift, f.feature))
    base = explainer.base_value
    return DriftImpact(
        method=explainer.method,
        rows=len(window),
        reference_rows=len(reference),
        mean_score_reference=float(base + ref.sum(axis=1).mean()),
        mean_score_window=float(base + cur.sum(axis=1).mean()),
        features=features,
    )


def version_impact(
    con: duckdb.DuckDBPyConnection,
    where: str,
    registry: ModelRegistry,
    manifest: Manifest,
    moved: Iterable[str],
    columns: set[str],
) -> DriftImpact:
    """The decomposition on (a sample of) the rows ``where`` selects from ``log``, when
    some feature in ``moved`` drifted or warned; else, or without an explainer, why not."""
    from framework.models.estimator import feature_frame
    from framework.models.explain import NotExplainable, load_explainer

    if not list(moved):
        return not_available("no feature drifted or warned")
    if not (manifest.explanation or {}).get("method"):
        # Before reading the log or loading the artifact: without an explainer, say why.
        why = (manifest.explanation or {}).get("reason") or "registered without an explainer"
        return not_available(f"{manifest.ref} cannot be explained: {why}")
    names = [f.name for f in manifest.fields]
    absent = [n for n in names if n not in columns]
    if absent:
        return not_available(
            f"the log does not hold the features {', '.join(absent)} (hashed or dropped by "
            "the server's log privacy settings, or logged by an older server)"
        )
    select = ", ".join(sql_name(n) for n in names)
    table = con.execute(
        f"SELECT {select} FROM (SELECT {select} FROM log WHERE {where} "
        "AND decision IS DISTINCT FROM 'FALLBACK') "
        f"USING SAMPLE reservoir({SAMPLE_ROWS} ROWS) REPEATABLE ({_SEED})"
    ).to_arrow_table()
    if table.num_rows == 0:
        return not_available("no prediction of the model's own in the window")
    model, _ = Manifest.load(registry, manifest.ref)
    try:
        explainer = load_explainer(registry, model, manifest)
    except NotExplainable as exc:
        return not_available(str(exc))
    return decompose(explainer, explainer.background_frame, feature_frame(table, manifest.fields))
