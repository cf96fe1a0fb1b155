"""What the predictor answers a row with when it cannot score it, and why a row scored.

Rows whose features the store could not give (an outage, too many missing
values) are answered by the version's fallback (:func:`fallback_scores`); the
reasons attached to every answer say which features had no value.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from framework.features.online import COMPUTED, PRESENT, OnlineVectors, to_arrow
from framework.models.estimator import feature_frame, score
from framework.models.spec import Task
from serving.dataplane.errors import StoreUnavailable
from serving.dataplane.messages import PredictInput
from serving.dataplane.versions import LoadedModel

NO_VALUE = ("NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE", "UNAVAILABLE")


def label_of(task: Task, value: float, threshold: float) -> str:
    return str(int(value >= threshold)) if task is Task.CLASSIFICATION else ""


def empty_vectors(loaded: LoadedModel, request: PredictInput, state: str) -> OnlineVectors:
    """Feature vectors with no feature values (the store could not be read)."""
    n = len(request.rows)
    columns: dict[str, Any] = {}
    for key in loaded.key_types:
        columns[key] = to_arrow(
            key, [r.entity_keys.get(key) for r in request.rows], loaded.online.types.get(key)
        )
    for name in loaded.request_types:
        columns[name] = pa.array([r.request_data.get(name) for r in request.rows])
    for f in loaded.fields:
        columns[f.name] = pa.nulls(n, pa.string() if f.categorical else pa.float64())
    names = [f.name for f in loaded.fields]
    return OnlineVectors(
        table=pa.table(columns),
        features=names,
        status={f: [state] * n for f in names},
        event_time_us={},
    )


def feature_reasons(vectors: OnlineVectors, names: list[str], i: int) -> list[str]:
    missing = [n for n in names if vectors.status.get(n, [PRESENT])[i] not in (PRESENT, COMPUTED)]
    if not missing:
        return []
    return [
        "features without a value: " + ", ".join(f"{n} ({vectors.status[n][i]})" for n in missing)
    ]


def fallback_rows(
    loaded: LoadedModel, vectors: OnlineVectors, names: list[str], n: int
) -> dict[int, str]:
    """The rows with too many features without a value to score (row -> cause)."""
    out = {}
    for i in range(n):
        missing = sum(vectors.status.get(f, ["PRESENT"] * n)[i] in NO_VALUE for f in names)
        if missing > loaded.router.serving["max_missing_share"] * len(names):
            out[i] = f"{missing} of {len(names)} features without a value"
    return out


def fallback_scores(
    loaded: LoadedModel, request: PredictInput, rows: dict[int, str]
) -> dict[int, tuple[float, float, list[str]]]:
    """Scores of the version's fallback for ``rows`` (row -> cause)."""
    index = sorted(rows)
    threshold = loaded.serving["threshold"]
    try:
        if loaded.fallback is not None:
            table = pa.table(
                {
                    f.name: pa.array(
                        [
                            v if v is None or f.categorical else float(v)  # INT64 > 2**53
                            for v in (request.rows[i].request_data.get(f.name) for i in index)
                        ],
                        pa.string() if f.categorical else pa.float64(),
                    )
                    for f in loaded.fallback_fields
                }
            )
            out = score(
                loaded.fallback, feature_frame(table, loaded.fallback_fields), loaded.task,
                threshold,
            )  # fmt: skip
            what = f"fallback model on {', '.join(f.name for f in loaded.fallback_fields)}"
            values = [(float(v), float(c)) for v, c in zip(out.score, out.confidence, strict=True)]
        elif loaded.fallback_prior is not None:
            p = loaded.fallback_prior
            values = [(p, max(p, 1 - p))] * len(index)
            what = "fallback: the training base rate"
        else:
            raise StoreUnavailable("this version has no fallback")
    except Exception as exc:
        causes = "; ".join(sorted(set(rows.values())))
        raise StoreUnavailable(
            f"Cannot answer: {causes}, and the fallback could not answer either ({exc})."
        ) from exc
    return {
        i: (v, c, [f"fallback because {rows[i]}", what])
        for i, (v, c) in zip(index, values, strict=True)
    }
