"""Explanations of served scores: computed on request, and as JSON-ready data."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from framework.models.explain import Explainer, Explanation, NotExplainable


def explanation_dict(e: Explanation, top: int = 0) -> dict[str, Any]:
    """An explanation as JSON-ready data (``top`` > 0: only the largest contributions)."""
    return {
        "base_value": e.base_value,
        "score": e.score,
        "attributions": [
            {"feature": a.feature, "contribution": a.contribution, "value": a.value}
            for a in e.top(top)
        ],
    }


def explain_rows(
    explainer: Callable[[], Explainer],
    observe: Callable[[str, float], None],
    frame: Any,
    rows: list[int],
    scores: Any,
    *,
    required: bool,
) -> dict[int, Explanation]:
    """Explanations of ``rows`` (their served scores); none, if not ``required`` and
    the version cannot be explained."""
    if not rows:
        return {}
    try:
        found = explainer()
    except NotExplainable:
        if required:
            raise
        return {}
    t = time.perf_counter()
    out = found.explain(frame.iloc[rows], np.asarray(scores)[rows])
    observe("explain", time.perf_counter() - t)
    return dict(zip(rows, out, strict=True))
