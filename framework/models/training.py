"""``parity train``: labels -> point-in-time training set -> fitted, calibrated,
evaluated pipeline -> a new registry version with full lineage.

The rows are split by event time into consecutive train, calibration and
holdout periods (never randomly): the pipeline is fitted on the first, its
probabilities are calibrated on the second (``CalibratedClassifierCV`` over the
frozen pipeline), and every reported metric comes from the third, which
neither step saw. A trivial model (the training base rate) is scored on the
same holdout for comparison.

The version's manifest (:mod:`framework.models.manifest`) pins the feature service,
the exact features and their types, the definitions digest, the dataset fingerprint,
the window, the code version, library versions, metrics, reference statistics (for a
regression model ``reference.confidence`` is ``null``: it has no confidence), the
probe rows the server reads at start-up (:mod:`framework.models.lineage`) and the
ages of the feature values in the training set (``freshness``:
:mod:`framework.features.feature_ages`).

Before any label is read, the spec is checked against the feature service's
contract: a feature the estimator cannot take
(:func:`framework.models.estimator.check_feature_types`) and a serving rule naming a
column the model does not have (:func:`framework.models.spec.check_rule_names`)
are refused by name. Before the join, a classification label that is not
binary (0/1, true/false) is refused, naming the values seen.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from framework.errors import DataError
from framework.features.fields import FeatureField
from framework.features.join_plan import FeatureContract, feature_contract
from framework.features.repository import data_dir
from framework.features.training_file import TrainingSetInfo, read_info
from framework.features.training_set import build_training_set
from framework.logs.layout import check_input_names
from framework.models import evaluation, explain, reference_stats
from framework.models.estimated import point_aucs
from framework.models.estimator import (
    Scores,
    build_pipeline,
    check_feature_types,
    feature_frame,
    score,
)
from framework.models.fallback import fit_fallback
from framework.models.label_query import check_labels, entity_frame, labels_array, load_labels
from framework.models.labels import time_split
from framework.models.lineage import code_version, library_versions, period, probe, sha256
from framework.models.manifest import (
    ArtifactRecord,
    FeatureAge,
    Freshness,
    Manifest,
    Metrics,
    PinnedFeature,
    Reference,
    SmokeRecord,
)
from framework.models.spec import ModelSpec, Task, check_rule_names
from framework.registry import artifact
from framework.registry.model_registry import (
    ARTIFACT,
    SMOKE,
    ModelRef,
    ModelRegistry,
    default_actor,
    now,
)
from framework.spark.session import uses_spark


@dataclass
class TrainResult:
    ref: ModelRef
    manifest: Manifest
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    #: The holdout rows (entity keys, event time, features, label): the latest period.
    holdout: pa.Table | None = field(default=None, repr=False)


def default_registry(repo: Path) -> ModelRegistry:
    return ModelRegistry(data_dir(repo) / "models")


def train_model(
    repo: Path,
    spec: ModelSpec,
    *,
    store: Any = None,
    registry: ModelRegistry | None = None,
    spec_path: Path | None = None,
    as_of: datetime | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    by: str | None = None,
    progress: Callable[[str, float], None] = lambda step, seconds: None,
) -> TrainResult:
    """Build the training set, fit, calibrate, evaluate and register a new version."""
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, t: float) -> None:
        timings[name] = round(time.perf_counter() - t, 3)
        progress(name, timings[name])

    registry = registry or default_registry(repo)
    source = store if store is not None else repo

    t = time.perf_counter()
    contract = feature_contract(source, spec.feature_service)
    _check_contract(spec, contract)
    table, window = _training_table(repo, source, spec, as_of=as_of, start=start, end=end)
    step("training-set", t)

    t = time.perf_counter()
    periods = _Periods.split(table, spec, contract.fields)
    pipeline = build_pipeline(spec.estimator, contract.fields, spec.random_state)
    pipeline.fit(periods.x_train, periods.y_train)
    step("fit", t)

    t = time.perf_counter()
    fitted = _calibrate_and_evaluate(spec, contract.fields, periods, pipeline)
    step("evaluate", t)

    t = time.perf_counter()
    fallback_files, fallback_record = fit_fallback(
        spec, contract.request_data, periods.train, periods.y_train, periods.holdout,
        periods.y_hold,
    )  # fmt: skip
    step("fallback", t)

    t = time.perf_counter()
    explanation, importance, background = _explanation(spec, contract.fields, periods, fitted)
    step("explain", t)

    t = time.perf_counter()
    blob = artifact.dump(fitted.model)
    smoke = _smoke(spec, contract.fields, periods, fitted)
    manifest = _manifest(
        spec, contract, table, window, periods, pipeline, fitted,
        artifact_record=ArtifactRecord(
            file=ARTIFACT, format=artifact.FORMAT, sha256=sha256(blob), bytes=len(blob)
        ),
        lineage={"code": code_version((spec_path or repo).resolve().parent),
                 "spec_path": str(spec_path) if spec_path else None, "by": by},
        extras={"smoke": SmokeRecord(file=SMOKE, rows=smoke.num_rows),
                "fallback": fallback_record, "explanation": explanation,
                "importance": importance},
    )  # fmt: skip
    files = {ARTIFACT: blob, SMOKE: _parquet(smoke), explain.BACKGROUND_FILE: background}
    ref = registry.register(spec.name, {**files, **fallback_files}, manifest.record())
    step("register", t)
    return TrainResult(
        ref=ref,
        manifest=Manifest.read(registry, ref),
        seconds=round(time.perf_counter() - started, 2),
        timings=timings,
        holdout=periods.holdout,
    )


def _manifest(
    spec: ModelSpec,
    contract: FeatureContract,
    table: pa.Table,
    window: dict[str, Any],
    periods: _Periods,
    pipeline: Any,
    fitted: _Fitted,
    *,
    artifact_record: ArtifactRecord,
    lineage: dict[str, Any],
    extras: dict[str, Any],
) -> Manifest:
    """The new version's manifest: what it was trained on, how, and how to serve it."""
    return Manifest(
        created_at=now(),
        created_by=lineage["by"] or default_actor(),
        task=spec.task,
        description=spec.description,
        feature_service=spec.feature_service,
        features=[PinnedFeature(name=f.name, dtype=f.dtype, view=f.view) for f in contract.fields],
        join_keys=contract.join_keys,
        join_key_types=contract.join_key_types,
        request_data=contract.request_data,
        definitions_digest=contract.definitions_digest,
        label=spec.labels.column,
        dataset=_dataset(read_info(table)),
        window=window,
        split=periods.record(),
        estimator={"class": spec.estimator.class_, "params": pipeline[-1].get_params()},
        calibration=fitted.calibration,
        serving=spec.serving,
        gate=spec.gate,
        metrics=fitted.metrics,
        reference=_reference(spec, contract.fields, periods, fitted),
        code=lineage["code"],
        libraries=library_versions(),
        spec=spec.to_dict(),
        spec_path=lineage["spec_path"],
        artifact=artifact_record,
        smoke=extras["smoke"],
        fallback=extras["fallback"],
        explanation=extras["explanation"],
        importance=extras["importance"],
        probe=probe(table, contract.join_keys, list(contract.request_data)),
        freshness=_freshness(read_info(table), contract),
    )


def _check_contract(spec: ModelSpec, contract: FeatureContract) -> None:
    """What the spec asks of the feature service, refused by name before any label is read."""
    check_feature_types(contract.fields, spec.feature_service)
    check_input_names(
        [
            *((f.name, "feature") for f in contract.fields),
            *((k, "join key") for k in contract.join_keys),
            *((r, "request field") for r in contract.request_data),
        ],
        spec.feature_service,
    )
    known = [*(f.name for f in contract.fields), *contract.join_keys, *contract.request_data]
    check_rule_names(spec.serving.rules, known)


def _training_table(
    repo: Path,
    source: Any,
    spec: ModelSpec,
    *,
    as_of: datetime | None,
    start: datetime | None,
    end: datetime | None,
) -> tuple[pa.Table, dict[str, Any]]:
    """The labelled events of the window joined point-in-time to the features, and the window."""
    labels = load_labels(spec, data_dir(repo), repo)
    entities, window = entity_frame(spec, labels, as_of=as_of, start=start, end=end)
    if entities.num_rows == 0:
        raise DataError(f"No labelled events in the training window {window}.")
    check_labels(entities, spec.labels.column, spec.task)
    if not isinstance(source, str | os.PathLike) and uses_spark(source):
        # The spark profile: joined on Spark into the state folder, read back part by part.
        from framework.spark import training_set as spark_training_set

        table = spark_training_set.build_training_set(
            source, spec.feature_service, entities, data_dir(repo)
        )
        return table, window
    return build_training_set(source, spec.feature_service, entities), window


@dataclass
class _Periods:
    """The training set split by event time, with each period's features and labels."""

    train: pa.Table
    calibration: pa.Table | None
    holdout: pa.Table
    x_train: pd.DataFrame
    y_train: np.ndarray
    x_hold: pd.DataFrame
    y_hold: np.ndarray

    @classmethod
    def split(cls, table: pa.Table, spec: ModelSpec, fields: list[FeatureField]) -> _Periods:
        s = spec.split
        fractions = [s.train, s.calibration, s.holdout] if s.calibration else [s.train, s.holdout]
        parts = time_split(table, fractions=fractions)
        train, holdout = parts[0], parts[-1]
        calibration = parts[1] if s.calibration else None
        for name, part in (("train", train), ("holdout", holdout), ("calibration", calibration)):
            if part is not None and part.num_rows == 0:
                raise DataError(
                    f"The {name} period is empty ({table.num_rows} rows in the window); "
                    "widen the window or change the split."
                )
        y_train = labels_array(train, spec.labels.column, spec.task)
        if spec.task is Task.CLASSIFICATION and len(np.unique(y_train)) < 2:
            raise DataError("The training period has only one label value; nothing to learn.")
        return cls(
            train=train,
            calibration=calibration,
            holdout=holdout,
            x_train=feature_frame(train, fields),
            y_train=y_train,
            x_hold=feature_frame(holdout, fields),
            y_hold=labels_array(holdout, spec.labels.column, spec.task),
        )

    def record(self) -> dict[str, Any]:
        return {
            "train": period(self.train),
            "calibration": period(self.calibration) if self.calibration is not None else None,
            "holdout": period(self.holdout),
        }


@dataclass
class _Fitted:
    """The model to register (calibrated when asked), its holdout scores and metrics."""

    model: Any
    calibration: dict[str, Any]
    final: Scores
    metrics: Metrics


def _calibrate_and_evaluate(
    spec: ModelSpec, fields: list[FeatureField], periods: _Periods, pipeline: Any
) -> _Fitted:
    """Calibrate a classifier's probabilities on the calibration period (over the frozen
    pipeline), then score the holdout: the version, it uncalibrated, and the baseline."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    threshold, bins = spec.serving.threshold, spec.calibration.bins
    y_hold = periods.y_hold
    raw_scores = score(pipeline, periods.x_hold, spec.task, threshold)
    model: Any = pipeline
    calibration: dict[str, Any] = {"method": "none"}
    if spec.task is Task.CLASSIFICATION:
        calibration["ece_before"] = evaluation.expected_calibration_error(
            y_hold, raw_scores.score, bins
        )
        calib_t = periods.calibration
        if calib_t is not None and spec.calibration.method != "none":
            y_cal = labels_array(calib_t, spec.labels.column, spec.task)
            if len(np.unique(y_cal)) < 2:
                raise DataError(
                    "The calibration period has only one label value; cannot calibrate "
                    "(set calibration.method = 'none' or widen the window)."
                )
            model = CalibratedClassifierCV(
                FrozenEstimator(pipeline), method=spec.calibration.method
            )
            model.fit(feature_frame(calib_t, fields), y_cal)
            calibration["method"] = spec.calibration.method
            calibration["rows"] = calib_t.num_rows
    final = score(model, periods.x_hold, spec.task, threshold)
    baseline = evaluation.baseline_scores(spec.task, periods.y_train, len(y_hold), threshold)
    metrics = Metrics(
        holdout=evaluation.metrics(spec.task, y_hold, final, spec.serving, bins),
        uncalibrated=evaluation.metrics(spec.task, y_hold, raw_scores, spec.serving, bins),
        baseline=evaluation.metrics(spec.task, y_hold, baseline, spec.serving, bins),
        holdout_estimated=point_aucs(final.score) if spec.task is Task.CLASSIFICATION else None,
    )
    if spec.task is Task.CLASSIFICATION:
        calibration["ece_after"] = metrics.holdout["ece"]
    return _Fitted(model=model, calibration=calibration, final=final, metrics=metrics)


def _explanation(
    spec: ModelSpec, fields: list[FeatureField], periods: _Periods, fitted: _Fitted
) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """The explainer's settings (checked against the model on holdout rows), global
    importance, and the background sample's Parquet bytes."""
    background = explain.background_sample(periods.x_train, spec.random_state)
    check_rows = periods.x_hold.head(_EXPLAIN_CHECK_ROWS)
    explanation = explain.describe(
        fitted.model, fields, spec.task, background, check_rows,
        fitted.final.score[: len(check_rows)],
    )  # fmt: skip
    importance = explain.global_importance(
        fitted.model, periods.x_hold, periods.y_hold, spec.task, spec.random_state
    )
    data = _parquet(pa.Table.from_pandas(background, preserve_index=False))
    explanation["background"] = {**explanation.get("background", {}), "sha256": sha256(data)}
    return explanation, importance, data


def _smoke(
    spec: ModelSpec, fields: list[FeatureField], periods: _Periods, fitted: _Fitted
) -> pa.Table:
    """The first holdout rows with the scores the model gives them now (the promotion
    gate's smoke test checks that a loaded artifact reproduces them)."""
    smoke_x = feature_frame(periods.holdout.slice(0, spec.gate.smoke_rows), fields)
    expected = score(fitted.model, smoke_x, spec.task, spec.serving.threshold).score
    return pa.Table.from_pandas(smoke_x, preserve_index=False).append_column(
        "expected_score", pa.array(expected)
    )


def _reference(
    spec: ModelSpec, fields: list[FeatureField], periods: _Periods, fitted: _Fitted
) -> Reference:
    classification = spec.task is Task.CLASSIFICATION
    return Reference(
        features=reference_stats.feature_profiles(periods.x_train, fields),
        score=reference_stats.numeric_profile(fitted.final.score),
        confidence=reference_stats.numeric_profile(fitted.final.confidence)
        if classification
        else None,
        label_rate=float(np.mean(periods.y_train)),
    )


def _freshness(info: TrainingSetInfo, contract: FeatureContract) -> Freshness | None:
    """The ages of the model's features in its training set (None when the set was built
    without measuring them: by Feast)."""
    if info.ages is None:
        return None
    return Freshness(
        features={f.name: FeatureAge(**info.ages[f.name]) for f in contract.fields
                  if f.name in info.ages},
        without_age=[f.name for f in contract.fields if f.name not in info.ages],
    )  # fmt: skip


def _dataset(info: TrainingSetInfo) -> dict[str, Any]:
    return {
        "fingerprint": info.fingerprint,
        "engine": info.engine,
        "entity_rows": info.entity_rows,
        "entity_digest": info.entity_digest,
        "sources": info.sources,
    }


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


#: Holdout rows on which the explainer is checked against the model at registration.
_EXPLAIN_CHECK_ROWS = 500
