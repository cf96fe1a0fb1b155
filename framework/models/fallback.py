"""The model a version falls back to when its online features are unavailable.

A simple, well-regularised linear model on the request data alone (what a request
always carries), fitted on the same training period as the version and evaluated on
the same holdout; with no usable request data, the training base rate ("prior").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from framework.features.fields import FeatureField
from framework.models import evaluation
from framework.models.estimator import build_pipeline, feature_frame, score
from framework.models.lineage import sha256
from framework.models.spec import EstimatorSpec, ModelSpec, Task
from framework.registry import artifact

#: Feast value type of a request field -> the Feast type name the pipeline uses; request
#: fields of other types (lists, timestamps, bytes...) are left out of the fallback model.
_REQUEST_DTYPES = {"DOUBLE": "Float64", "FLOAT": "Float32", "INT64": "Int64", "INT32": "Int32",
                   "STRING": "String", "BOOL": "Bool"}  # fmt: skip
FALLBACK_ARTIFACT = "fallback.skops"


def fit_fallback(
    spec: ModelSpec,
    request_data: dict[str, str],
    train_t: pa.Table,
    y_train: np.ndarray,
    holdout_t: pa.Table,
    y_hold: np.ndarray,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The model the server falls back to when online features are unavailable.

    A simple, well-regularised linear model on the request data alone (what a
    request always carries), fitted on the same training period; with no request
    data, the training base rate ("prior"). Evaluated on the same holdout.
    """
    fields = [
        FeatureField(name=n, dtype=_REQUEST_DTYPES[t], view="request")
        for n, t in request_data.items()
        if n in train_t.column_names and t in _REQUEST_DTYPES
    ]
    if not fields:
        return {}, {"kind": "prior", "score": float(np.mean(y_train)), "features": []}
    linear = (
        "sklearn.linear_model.LogisticRegression"
        if spec.task is Task.CLASSIFICATION
        else "sklearn.linear_model.Ridge"
    )
    est = EstimatorSpec.model_validate({"class": linear, "params": {}, "scale": "yes"})
    pipeline = build_pipeline(est, fields, spec.random_state)
    pipeline.fit(feature_frame(train_t, fields), y_train)
    scores = score(pipeline, feature_frame(holdout_t, fields), spec.task, spec.serving.threshold)
    metrics = evaluation.metrics(spec.task, y_hold, scores, spec.serving, spec.calibration.bins)
    blob = artifact.dump(pipeline)
    return {FALLBACK_ARTIFACT: blob}, {
        "kind": "model",
        "class": linear,
        "features": [{"name": f.name, "dtype": f.dtype, "view": f.view} for f in fields],
        "file": FALLBACK_ARTIFACT,
        "sha256": sha256(blob),
        "metrics": {k: v for k, v in metrics.items() if k not in ("at_thresholds", "decisions")},
    }
