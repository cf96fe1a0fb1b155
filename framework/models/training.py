"""``parity train``: labels -> point-in-time training set -> fitted, calibrated,
evaluated pipeline -> a new registry version with full lineage.

The rows are split by event time into consecutive train, calibration and
holdout periods (never randomly): the pipeline is fitted on the first, its
probabilities are calibrated on the second (``CalibratedClassifierCV`` over the
frozen pipeline), and every reported metric comes from the third, which
neither step saw. A trivial model (the training base rate) is scored on the
same holdout for comparison.

The version's manifest pins the feature service, the exact features and their
types, the definitions digest, the dataset fingerprint, the window, the code
version, library versions, metrics and reference statistics (for a regression
model ``reference.confidence`` is ``null``: it has no confidence). Its
``probe`` holds up to :data:`PROBE_ROWS` rows for the server's start-up read
of the features: ``{"entity_rows": [{join key: value}, ...], "request_data":
[{field: value}, ...]}``, the two lists row for row, from the training set's
latest rows with distinct keys (keys that really exist in the sources), oldest
first; values are JSON numbers, strings and booleans, ``null``, timestamps as
ISO 8601 text and bytes as ``{"base64": "..."}``.

Before any label is read, the spec is checked against the feature service's
contract: a feature the estimator cannot take
(:func:`framework.models.estimator.check_feature_types`) and a serving rule naming a
column the model does not have (:func:`framework.models.spec.check_rule_names`)
are refused by name. Before the join, a classification label that is not
binary (0/1, true/false) is refused, naming the values seen.
"""

from __future__ import annotations

import base64
import io
import math
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from framework.duck import connect
from framework.errors import DataError
from framework.features.repository import data_dir
from framework.features.training_set import build_training_set, feature_contract, read_info
from framework.logs.layout import check_input_names
from framework.models import evaluation, explain, reference_stats
from framework.models.estimator import build_pipeline, check_feature_types, feature_frame, score
from framework.models.labels import entity_frame_from_labels, time_split
from framework.models.manifest import (
    ArtifactRecord,
    Manifest,
    Metrics,
    PinnedFeature,
    Probe,
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

_LIBRARIES = (
    "parity",
    "feast",
    "scikit-learn",
    "skops",
    "shap",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "duckdb",
)


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


def load_labels(spec: ModelSpec, data: Path, repo: Path | None = None) -> pa.Table:
    """Run the spec's label query in DuckDB. Its relative file paths resolve against
    ``repo``, else (not found there) ``data``: never the working directory
    (:mod:`framework.features.sql_paths`)."""
    from framework.features.sql_paths import resolve_sql_paths

    bases = [p for p in (repo, data) if p is not None]
    query = resolve_sql_paths(spec.labels.query, bases)
    con = connect()
    try:
        con.execute("SET file_search_path = ?", [",".join(str(p.resolve()) for p in bases)])
        try:
            table = con.execute(query).to_arrow_table()
        except Exception as exc:
            raise DataError(f"labels.query failed: {' '.join(str(exc).split())}") from exc
    finally:
        con.close()
    if spec.labels.feedback:
        table = _with_feedback(spec, data, table)
    if table.num_rows == 0:
        raise DataError("labels.query returned no rows.")
    return table


def _with_feedback(spec: ModelSpec, data: Path, table: pa.Table) -> pa.Table:
    """``table`` plus the joined outcomes of :mod:`framework.loop.feedback` it has no row for
    (same keys and event time), in its column names and types."""
    from framework.logs.outcomes import label_source

    path = label_source(data, spec.name)
    if not path.is_file():
        return table
    lab = spec.labels
    names = {"label": lab.column, "event_timestamp": lab.event_timestamp}
    if lab.label_timestamp:
        names["label_timestamp"] = lab.label_timestamp
    fed = pq.read_table(path)
    fed = fed.rename_columns([names.get(c, c) for c in fed.column_names])
    missing = [c for c in table.column_names if c not in fed.column_names]
    if missing:
        raise DataError(
            f"labels.feedback: {path} has no column {missing[0]!r} that labels.query returns."
        )
    fed = fed.select(table.column_names).cast(table.schema)
    con = connect()
    try:
        con.register("q", table)
        con.register("f", fed)
        on = " AND ".join(f'f."{c}" = q."{c}"' for c in [*lab.keys, lab.event_timestamp])
        extra = (
            con.execute(f"SELECT f.* FROM f ANTI JOIN q ON {on}")
            .to_arrow_table()
            .cast(table.schema)
        )
    finally:
        con.close()
    return pa.concat_tables([table, extra])


def _utc(value: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def entity_frame(
    spec: ModelSpec,
    labels: pa.Table,
    *,
    as_of: datetime | None,
    start: datetime | None,
    end: datetime | None,
) -> tuple[pa.Table, dict[str, Any]]:
    """Labels known by ``as_of`` with events in the window, as an entity frame."""
    lab = spec.labels
    used = {*lab.keys, lab.column, lab.event_timestamp, lab.label_timestamp}
    extra = [c for c in labels.column_names if c not in used]
    if as_of is None:
        column = lab.label_timestamp or lab.event_timestamp
        if column not in labels.column_names:
            raise DataError(f"labels.query returned no column {column!r}.")
        as_of = pc.max(labels.column(column)).as_py()
    frame = entity_frame_from_labels(
        labels,
        keys=lab.keys,
        label=lab.column,
        event_timestamp=lab.event_timestamp,
        label_timestamp=lab.label_timestamp,
        as_of=as_of if lab.label_timestamp else None,
        offset=timedelta(microseconds=lab.offset_microseconds),
        extra=extra,
    )
    if not lab.label_timestamp:
        frame = frame.filter(pc.less_equal(frame["event_timestamp"], pa.scalar(_utc(as_of))))
    end = end or spec.window.end
    start = start or spec.window.start
    if start is None and spec.window.lookback_days and frame.num_rows:
        last = _utc(end) if end else pd.Timestamp(pc.max(frame["event_timestamp"]).as_py())
        start = (last - pd.Timedelta(days=spec.window.lookback_days)).to_pydatetime()
    ts = frame["event_timestamp"]
    if start is not None:
        frame = frame.filter(pc.greater_equal(ts, pa.scalar(_utc(start))))
        ts = frame["event_timestamp"]
    if end is not None:
        frame = frame.filter(pc.less(ts, pa.scalar(_utc(end))))
    window = {
        "as_of": str(_utc(as_of)),
        "start": str(_utc(start)) if start else None,
        "end": str(_utc(end)) if end else None,
    }
    if frame.num_rows:
        window["first_event"] = str(pc.min(frame["event_timestamp"]).as_py())
        window["last_event"] = str(pc.max(frame["event_timestamp"]).as_py())
    return frame, window


def check_labels(table: pa.Table, column: str, task: Task) -> None:
    """Refuse, before the join, a label the task cannot learn: nulls; for classification
    anything but two classes 0/1 or true/false; for regression anything but numbers."""
    col = table.column(column)
    if col.null_count:
        raise DataError(f"The label column {column!r} has {col.null_count} null values.")
    kind = col.type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
    if task is Task.REGRESSION:
        if not numeric:
            raise DataError(
                f"A regression label must be a number; {column!r} has type {kind}. Cast it "
                "in labels.query."
            )
        return
    values = pc.unique(col).to_pylist()
    if numeric and all(v in (0, 1) for v in values):
        return
    shown = ", ".join(repr(v) for v in sorted(values)[:5])
    more = f" and {len(values) - 5} more" if len(values) > 5 else ""
    raise DataError(
        f"The label column {column!r} has the values {shown}{more}: parity's classification "
        'is binary (0/1 or true/false); use task = "regression" for a numeric target, or '
        "a binary label (one class against the rest) in labels.query."
    )


def _labels_array(table: pa.Table, column: str, task: Task) -> np.ndarray:
    col = table.column(column)
    if col.null_count:
        raise DataError(f"The label column {column!r} has {col.null_count} null values.")
    y = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if task is Task.CLASSIFICATION:
        values = set(np.unique(y).tolist())
        if not values <= {0.0, 1.0}:
            raise DataError(
                f"A classification label must be 0/1 or boolean; {column!r} has "
                f"{sorted(values)[:5]}."
            )
        return np.asarray(y, dtype=np.int64)
    return np.asarray(y, dtype=np.float64)


def _period(table: pa.Table) -> dict[str, Any]:
    ts = table["event_timestamp"]
    return {
        "rows": table.num_rows,
        "start": str(pc.min(ts).as_py()) if table.num_rows else None,
        "end": str(pc.max(ts).as_py()) if table.num_rows else None,
    }


def code_version(where: Path) -> dict[str, Any]:
    """The git commit of the repository holding the spec, and whether it had changes."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "dirty": None}
    return {"git_commit": commit, "dirty": bool(dirty)}


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


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
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    started = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, t: float) -> None:
        timings[name] = round(time.perf_counter() - t, 3)
        progress(name, timings[name])

    registry = registry or default_registry(repo)
    source = store if store is not None else repo

    t = time.perf_counter()
    contract = feature_contract(source, spec.feature_service)
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
    labels = load_labels(spec, data_dir(repo), repo)
    entities, window = entity_frame(spec, labels, as_of=as_of, start=start, end=end)
    if entities.num_rows == 0:
        raise DataError(f"No labelled events in the training window {window}.")
    check_labels(entities, spec.labels.column, spec.task)
    table = build_training_set(source, spec.feature_service, entities)
    info = read_info(table)
    step("training-set", t)

    t = time.perf_counter()
    s = spec.split
    fractions = [s.train, s.calibration, s.holdout] if s.calibration else [s.train, s.holdout]
    parts = time_split(table, fractions=fractions)
    train_t, holdout_t = parts[0], parts[-1]
    calib_t = parts[1] if s.calibration else None
    for name, part in (("train", train_t), ("holdout", holdout_t), ("calibration", calib_t)):
        if part is not None and part.num_rows == 0:
            raise DataError(
                f"The {name} period is empty ({table.num_rows} rows in the window); "
                "widen the window or change the split."
            )
    fields = contract.fields
    x_train = feature_frame(train_t, fields)
    y_train = _labels_array(train_t, spec.labels.column, spec.task)
    x_hold = feature_frame(holdout_t, fields)
    y_hold = _labels_array(holdout_t, spec.labels.column, spec.task)
    if spec.task is Task.CLASSIFICATION and len(np.unique(y_train)) < 2:
        raise DataError("The training period has only one label value; nothing to learn.")
    pipeline = build_pipeline(spec.estimator, fields, spec.random_state)
    pipeline.fit(x_train, y_train)
    step("fit", t)

    t = time.perf_counter()
    threshold = spec.serving.threshold
    bins = spec.calibration.bins
    raw_scores = score(pipeline, x_hold, spec.task, threshold)
    model: Any = pipeline
    calibration: dict[str, Any] = {"method": "none"}
    if spec.task is Task.CLASSIFICATION:
        calibration["ece_before"] = evaluation.expected_calibration_error(
            y_hold, raw_scores.score, bins
        )
        if calib_t is not None and spec.calibration.method != "none":
            y_cal = _labels_array(calib_t, spec.labels.column, spec.task)
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
    final = score(model, x_hold, spec.task, threshold)
    metrics = evaluation.metrics(spec.task, y_hold, final, spec.serving, bins)
    uncalibrated = evaluation.metrics(spec.task, y_hold, raw_scores, spec.serving, bins)
    baseline = evaluation.metrics(
        spec.task,
        y_hold,
        evaluation.baseline_scores(spec.task, y_train, len(y_hold), threshold),
        spec.serving,
        bins,
    )
    if spec.task is Task.CLASSIFICATION:
        calibration["ece_after"] = metrics["ece"]
    step("evaluate", t)

    t = time.perf_counter()
    fallback_files, fallback_manifest = _fallback(
        spec, contract.request_data, train_t, y_train, holdout_t, y_hold
    )
    step("fallback", t)

    t = time.perf_counter()
    background = explain.background_sample(x_train, spec.random_state)
    check_rows = x_hold.head(_EXPLAIN_CHECK_ROWS)
    explanation = explain.describe(
        model, fields, spec.task, background, check_rows, final.score[: len(check_rows)]
    )
    importance = explain.global_importance(model, x_hold, y_hold, spec.task, spec.random_state)
    bg_sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(background, preserve_index=False), bg_sink)
    explanation["background"] = {**explanation.get("background", {}), "sha256": _sha256(
        bg_sink.getvalue())}  # fmt: skip
    step("explain", t)

    t = time.perf_counter()
    blob = artifact.dump(model)
    smoke_t = holdout_t.slice(0, spec.gate.smoke_rows)
    smoke_x = feature_frame(smoke_t, fields)
    smoke = pa.Table.from_pandas(smoke_x, preserve_index=False).append_column(
        "expected_score", pa.array(score(model, smoke_x, spec.task, threshold).score)
    )
    sink = io.BytesIO()
    pq.write_table(smoke, sink)
    manifest = Manifest(
        created_at=now(),
        created_by=by or default_actor(),
        task=spec.task,
        description=spec.description,
        feature_service=spec.feature_service,
        features=[PinnedFeature(name=f.name, dtype=f.dtype, view=f.view) for f in fields],
        join_keys=contract.join_keys,
        join_key_types=contract.join_key_types,
        request_data=contract.request_data,
        definitions_digest=contract.definitions_digest,
        label=spec.labels.column,
        dataset={
            "fingerprint": info.fingerprint,
            "engine": info.engine,
            "entity_rows": info.entity_rows,
            "entity_digest": info.entity_digest,
            "sources": info.sources,
        },
        window=window,
        split={
            "train": _period(train_t),
            "calibration": _period(calib_t) if calib_t is not None else None,
            "holdout": _period(holdout_t),
        },
        estimator={"class": spec.estimator.class_, "params": pipeline[-1].get_params()},
        calibration=calibration,
        serving=spec.serving,
        gate=spec.gate,
        metrics=Metrics(holdout=metrics, uncalibrated=uncalibrated, baseline=baseline),
        reference=Reference(
            features=reference_stats.feature_profiles(x_train, fields),
            score=reference_stats.numeric_profile(final.score),
            confidence=reference_stats.numeric_profile(final.confidence)
            if spec.task is Task.CLASSIFICATION
            else None,
            label_rate=float(np.mean(y_train)),
        ),
        code=code_version((spec_path or repo).resolve().parent),
        libraries=library_versions(),
        spec=spec.to_dict(),
        spec_path=str(spec_path) if spec_path else None,
        artifact=ArtifactRecord(
            file=ARTIFACT, format=artifact.FORMAT, sha256=_sha256(blob), bytes=len(blob)
        ),
        smoke=SmokeRecord(file=SMOKE, rows=smoke.num_rows),
        fallback=fallback_manifest,
        explanation=explanation,
        importance=importance,
        probe=probe(table, contract.join_keys, list(contract.request_data)),
    )
    files = {ARTIFACT: blob, SMOKE: sink.getvalue(), explain.BACKGROUND_FILE: bg_sink.getvalue()}
    ref = registry.register(spec.name, {**files, **fallback_files}, manifest.record())
    step("register", t)
    return TrainResult(
        ref=ref,
        manifest=Manifest.read(registry, ref),
        seconds=round(time.perf_counter() - started, 2),
        timings=timings,
        holdout=holdout_t,
    )


#: Feast value type of a request field -> the Feast type name the pipeline uses; request
#: fields of other types (lists, timestamps, bytes...) are left out of the fallback model.
_REQUEST_DTYPES = {"DOUBLE": "Float64", "FLOAT": "Float32", "INT64": "Int64", "INT32": "Int32",
                   "STRING": "String", "BOOL": "Bool"}  # fmt: skip
#: Rows in a version's start-up probe (see the module docstring).
PROBE_ROWS = 16


def probe(table: pa.Table, join_keys: list[str], request_data: list[str]) -> Probe:
    """Up to :data:`PROBE_ROWS` rows of ``table`` with distinct join-key values, the
    latest by event time (on equal times, the later row), oldest first: their join keys
    and request data, JSON-safe (see the module docstring)."""
    picked: list[tuple[dict[str, Any], dict[str, Any]]] = []
    if not join_keys or table.num_rows == 0:
        return Probe(entity_rows=[], request_data=[])
    fields = [c for c in request_data if c in table.column_names]
    index = pa.array(np.arange(table.num_rows))
    order = pc.sort_indices(
        pa.table({"t": table.column("event_timestamp"), "i": index}),
        [("t", "descending"), ("i", "descending")],
    )
    seen: set[str] = set()
    for i in order.to_pylist():
        row = {k: _json_safe(table.column(k)[i].as_py()) for k in join_keys}
        identity = repr(sorted(row.items()))
        if identity in seen or any(v is None for v in row.values()):
            continue
        seen.add(identity)
        request = {k: _json_safe(table.column(k)[i].as_py()) for k in fields}
        picked.append((row, request))
        if len(picked) == PROBE_ROWS:
            break
    picked.reverse()
    return Probe(entity_rows=[r for r, _ in picked], request_data=[d for _, d in picked])


def _json_safe(value: Any) -> Any:
    """A manifest-ready value: bytes as ``{"base64": ...}``, times as ISO text, NaN null."""
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


FALLBACK_ARTIFACT = "fallback.skops"
#: Holdout rows on which the explainer is checked against the model at registration.
_EXPLAIN_CHECK_ROWS = 500


def _fallback(
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
    from framework.features.fields import FeatureField
    from framework.models.spec import EstimatorSpec

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
        "sha256": _sha256(blob),
        "metrics": {k: v for k, v in metrics.items() if k not in ("at_thresholds", "decisions")},
    }


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
