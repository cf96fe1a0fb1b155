"""The scikit-learn pipeline a model version is, and how it scores.

Preprocessing lives inside the artifact, so the server cannot skew from
training: numerical features are imputed by their training median with a
missing-indicator column (and standard-scaled unless the estimator is a tree
ensemble); categorical (string) features are imputed with a marker value and
one-hot encoded, with rare and never-seen categories mapped to one
"infrequent" column instead of failing.

Which Feast types it takes is one table, in :mod:`framework.features.fields`:
integers, floats and Bool (as 0/1) are numbers, String is a category. Every
other type (lists, Map, Json, Struct, UnixTimestamp, Bytes, ...) has no encoding
that is sound without knowing what it means,
so :func:`check_feature_types` refuses it by name before any work
(``parity train`` calls it first); an on-demand feature view can derive a
number or a string from it, on both paths.

:func:`feature_frame` is the one conversion from Arrow (training set, online
feature vectors) to what the pipeline takes; :func:`score` turns the
pipeline's output into score, label and confidence the same way for training,
batch scoring and the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from framework.errors import ConfigError, DataError
from framework.features.fields import CATEGORICAL_DTYPES, NUMERICAL_DTYPES, FeatureField
from framework.models.spec import EstimatorSpec, Task

MISSING_CATEGORY = "__missing__"


def check_feature_types(fields: list[FeatureField], service: str | None) -> None:
    """Refuse, in one line naming each one and its Feast type, the features the pipeline
    cannot take soundly (see the module docstring)."""
    refused = [f for f in fields if not f.accepted]
    if not refused:
        return
    where = f"The feature service {service!r}" if service else "The features"
    names = ", ".join(f"{f.name!r} ({f.dtype}, view {f.view!r})" for f in refused)
    takes = ", ".join(sorted(NUMERICAL_DTYPES | CATEGORICAL_DTYPES))
    raise ConfigError(
        f"{where} has features parity's estimator cannot take: {names} (it takes {takes}; "
        "Bool as 0/1, String as a category). Derive a number or string from each in an "
        "on-demand feature view, or leave it out of the feature service."
    )


def feature_frame(table: pa.Table, fields: list[FeatureField]) -> pd.DataFrame:
    """The model's input frame: columns in ``fields`` order, numbers (Bool as 0/1) as
    float64, strings as objects, every missing value NaN."""
    missing = [f.name for f in fields if f.name not in table.column_names]
    if missing:
        raise DataError(f"The features {', '.join(missing)} are missing from the input.")
    columns: dict[str, Any] = {}
    for f in fields:
        column = table.column(f.name)
        if f.categorical:
            values = np.array(column.cast(pa.string()).to_pylist(), dtype=object)
            values[pd.isna(values)] = np.nan
            columns[f.name] = values
        else:
            columns[f.name] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return pd.DataFrame(columns)


def build_pipeline(spec: EstimatorSpec, fields: list[FeatureField], random_state: int) -> Any:
    """An unfitted ``Pipeline([("preprocess", ColumnTransformer), ("model", estimator)])``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numerical = [f.name for f in fields if not f.categorical]
    categorical = [f.name for f in fields if f.categorical]
    scale = spec.scale == "yes" or (spec.scale == "auto" and not spec.is_tree_ensemble)
    num_steps: list[tuple[str, Any]] = [
        ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True))
    ]
    if scale:
        num_steps.append(("scale", StandardScaler()))
    transformers: list[tuple[str, Any, list[str]]] = []
    if numerical:
        transformers.append(("numerical", Pipeline(num_steps), numerical))
    if categorical:
        cat = Pipeline(
            [
                ("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY)),
                (
                    "encode",
                    OneHotEncoder(
                        handle_unknown="infrequent_if_exist",
                        min_frequency=spec.min_category_frequency,
                        sparse_output=False,
                    ),
                ),
            ]
        )
        transformers.append(("categorical", cat, categorical))
    estimator_cls = spec.resolve()
    params = dict(spec.params)
    if "random_state" in estimator_cls().get_params() and "random_state" not in params:
        params["random_state"] = random_state
    try:
        estimator = estimator_cls(**params)
    except TypeError as exc:
        raise ConfigError(f"estimator.params: {exc}.") from exc
    return Pipeline(
        [("preprocess", ColumnTransformer(transformers, remainder="drop")), ("model", estimator)]
    )


@dataclass
class Scores:
    """Per-row score (probability of the positive class, or the regression value),
    predicted label and confidence (probability of the predicted label; NaN for regression)."""

    score: np.ndarray
    label: np.ndarray
    confidence: np.ndarray


def score(model: Any, frame: Any, task: Task, threshold: float) -> Scores:
    """Score ``frame`` with a fitted pipeline (or calibrated wrapper of one): a pandas
    frame, or the server's ``FeatureColumns`` for a model that takes them."""
    if task is Task.CLASSIFICATION:
        p = np.asarray(model.predict_proba(frame))[:, 1].astype(np.float64)
        label = (p >= threshold).astype(np.int64)
        confidence = np.where(label == 1, p, 1.0 - p)
        return Scores(score=p, label=label, confidence=confidence)
    value = np.asarray(model.predict(frame), dtype=np.float64)
    return Scores(score=value, label=value, confidence=np.full(len(value), np.nan))
