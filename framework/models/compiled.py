"""A fitted model version scored without scikit-learn's per-call overhead, to the bit.

Scoring one row with the shipped pipeline costs scikit-learn several
milliseconds, nearly all of it overhead, not arithmetic: the ColumnTransformer
validates and slices a pandas frame for each of its transformers, and
HistGradientBoosting walks its 300 trees in a Python loop, one OpenMP parallel
region per tree. A server scoring one or a few rows per call pays that on every
request. :func:`compile_model` turns the pipelines :func:`framework.models.estimator.build_pipeline`
builds (median / constant imputation with missing indicators, optional scaling,
one-hot encoding with infrequent categories, optionally calibrated) into a few
NumPy operations over arrays taken from the fitted objects, and finds the exit
leaf of every tree of a HistGradientBoosting model at once (or walks them all
at once, a level at a time, when a tree has more than 64 leaves).

The numbers are scikit-learn's own, not an approximation: the same float64
operations in the same order (the trees' leaf values are summed sequentially
from the baseline, as ``_raw_predict`` adds them; the links, the loss's
``predict_proba`` and the calibrators are scikit-learn's own methods called on
those values). :func:`compile_model` checks that on the rows it is given and
refuses (returns ``None``) when anything differs, so the caller keeps the
scikit-learn model. Anything the compiled form does not know — another
transformer, a multiclass model, categorical splits — is not compiled at all;
input scikit-learn would reject (infinite numbers, non-text categories,
categories an encoder refuses) is handed to scikit-learn, which raises its own
error. Large batches go to scikit-learn's tree walk, which is faster there.

It reads fitted attributes, some of them private (``_predictors``,
``_baseline_prediction``, ``_loss``, ``_n_features_outs``); a scikit-learn release
that changes them makes compiling fail or the check refuse, and scikit-learn
keeps scoring.

Written here because no library does this to the bit: treelite and ONNX
(skl2onnx) compile the trees, but add the baseline and leaves in their own
order or in float32, and leave the preprocessing to scikit-learn; serving must
give exactly the numbers training measured.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from framework.models.compiled_trees import TREE_WALK_MAX_ROWS, Trees
from framework.models.model_input import FeatureColumns, as_frame

_UNKNOWN = "\x00parity: a category no encoder has seen\x00"


class _Delegate(Exception):
    """This input is scikit-learn's to judge (it raises its own error for it)."""


class _Numerical:
    """``Pipeline([SimpleImputer(add_indicator=...), (StandardScaler)])`` on float columns."""

    def __init__(self, columns: list[str], steps: list[Any]) -> None:
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import StandardScaler

        imputer, *rest = steps
        if type(imputer) is not SimpleImputer or not _is_nan(imputer.missing_values):
            raise NotImplementedError("numerical columns need a SimpleImputer of NaN first")
        fill = np.asarray(imputer.statistics_, dtype=np.float64)
        if not imputer.keep_empty_features and np.isnan(fill).any():
            raise NotImplementedError("an imputer that drops empty features")
        self.columns = columns
        self.fill = fill
        self.indicator: np.ndarray | None = None
        if imputer.add_indicator:
            self.indicator = np.asarray(imputer.indicator_.features_, dtype=np.intp)
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        if len(rest) > 1:
            raise NotImplementedError("more than one step after the imputer")
        if rest:
            (scaler,) = rest
            if type(scaler) is not StandardScaler:
                raise NotImplementedError(f"numerical step {type(scaler).__name__}")
            self.mean = scaler.mean_ if scaler.with_mean else None
            self.scale = scaler.scale_ if scaler.with_std else None
        self.width = len(columns) + (0 if self.indicator is None else len(self.indicator))

    def transform(
        self, columns: dict[str, np.ndarray], n: int, shared: dict[Any, Any] | None = None
    ) -> np.ndarray:
        """The part's output; ``shared`` keeps the stacked input between the pipelines of
        one call (a calibrated model's folds read the same columns)."""
        key = (_Numerical, *self.columns)
        stacked = None if shared is None else shared.get(key)
        if stacked is None:
            raw = np.empty((n, len(self.columns)), dtype=np.float64)
            for j, name in enumerate(self.columns):
                raw[:, j] = columns[name]
            if np.isinf(raw).any():
                raise _Delegate()  # scikit-learn: "Input contains infinity"
            stacked = (raw, np.isnan(raw))
            if shared is not None:
                shared[key] = stacked
        raw, missing = stacked
        x = np.where(missing, self.fill, raw)  # a new array: ``raw`` stays as stacked
        if self.indicator is not None:
            x = np.hstack((x, missing[:, self.indicator]))
        if self.mean is not None:
            x -= self.mean
        if self.scale is not None:
            x /= self.scale
        return x


class _Categorical:
    """``Pipeline([SimpleImputer(strategy="constant"), OneHotEncoder(dense)])`` on text.

    Each column's categories map to the output column they set; the map is read off the
    fitted encoder itself (its ``transform`` of each known category, and of one no one
    has seen), so infrequent and unknown categories land where scikit-learn puts them.
    """

    def __init__(self, columns: list[str], steps: list[Any]) -> None:
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import OneHotEncoder

        if len(steps) != 2:
            raise NotImplementedError("categorical columns need an imputer and an encoder")
        imputer, encoder = steps
        if (
            type(imputer) is not SimpleImputer
            or imputer.strategy != "constant"
            or not _is_nan(imputer.missing_values)
            or imputer.add_indicator
        ):
            raise NotImplementedError("categorical columns need a constant SimpleImputer")
        if type(encoder) is not OneHotEncoder or encoder.drop is not None:
            raise NotImplementedError("categorical columns need a OneHotEncoder without drop")
        if getattr(encoder, "sparse_output", True):
            raise NotImplementedError("a sparse one-hot encoding")
        fills = {str(v) for v in imputer.statistics_}
        if len(imputer.statistics_) != len(columns) or len(fills) != 1:
            raise NotImplementedError("an imputer with other fill values or columns")
        self.columns = columns
        self.fill = fills.pop()
        first = [cats[0] for cats in encoder.categories_]
        widths = encoder._n_features_outs  # the one-hot columns of each input column
        self.width = int(sum(widths))
        self.maps: list[dict[str, int]] = []
        self.unknown: list[int | None] = []  # None: the encoder refuses unknown categories

        def column_of(j: int, value: str) -> int:
            """The output column ``value`` of input column ``j`` sets (-1: none)."""
            row = np.array([[*first[:j], value, *first[j + 1 :]]], dtype=object)
            out = encoder.transform(row)[0]
            start = int(sum(widths[:j]))
            block = out[start : start + int(widths[j])]
            hot = np.flatnonzero(block == 1.0)
            if len(hot) > 1 or not np.all((block == 0.0) | (block == 1.0)):
                raise NotImplementedError("an encoding that is not one-hot")
            return start + int(hot[0]) if len(hot) else -1

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Found unknown categories" (handle_unknown)
            for j, cats in enumerate(encoder.categories_):
                self.maps.append({str(c): column_of(j, str(c)) for c in cats})
                try:
                    self.unknown.append(column_of(j, _UNKNOWN))
                except ValueError:
                    self.unknown.append(None)

    def transform(
        self, columns: dict[str, np.ndarray], n: int, shared: dict[Any, Any] | None = None
    ) -> np.ndarray:
        out = np.zeros((n, self.width), dtype=np.float64)
        for j, name in enumerate(self.columns):
            mapping, unknown = self.maps[j], self.unknown[j]
            for i, value in enumerate(columns[name]):
                if isinstance(value, str):
                    k = mapping.get(value, unknown)
                elif isinstance(value, float) and math.isnan(value):
                    k = mapping.get(self.fill, unknown)
                else:
                    raise _Delegate()
                if k is None:
                    raise _Delegate()  # handle_unknown="error": scikit-learn says which
                if k >= 0:
                    out[i, k] = 1.0
        return out


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


class _Preprocess:
    """A fitted ``ColumnTransformer`` of :class:`_Numerical` / :class:`_Categorical` parts."""

    def __init__(self, transformer: Any) -> None:
        from sklearn.compose import ColumnTransformer
        from sklearn.pipeline import Pipeline

        if type(transformer) is not ColumnTransformer or transformer.sparse_output_:
            raise NotImplementedError("preprocessing other than a dense ColumnTransformer")
        kinds: dict[str, type[_Numerical | _Categorical]] = {
            "numerical": _Numerical,  # the parts framework.models.estimator.build_pipeline names
            "categorical": _Categorical,
        }
        self.parts: list[_Numerical | _Categorical] = []
        for name, part, columns in transformer.transformers_:
            if name == "remainder" and part == "drop":
                continue
            if name not in kinds or type(part) is not Pipeline or not isinstance(columns, list):
                raise NotImplementedError(f"column transformer part {name!r}")
            self.parts.append(kinds[name](list(columns), [step for _, step in part.steps]))
        self.columns = [c for p in self.parts for c in p.columns]

    def transform(
        self, columns: dict[str, np.ndarray], n: int, shared: dict[Any, Any] | None = None
    ) -> np.ndarray:
        blocks = [part.transform(columns, n, shared) for part in self.parts]
        return blocks[0] if len(blocks) == 1 else np.hstack(blocks)


class _Estimator:
    """The pipeline's final estimator: its responses on a preprocessed matrix."""

    def __init__(self, estimator: Any) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        self.estimator = estimator
        self.trees: Trees | None = None
        if type(estimator) in (HistGradientBoostingClassifier, HistGradientBoostingRegressor):
            self.trees = Trees(estimator)
        self.classes = getattr(estimator, "classes_", None)

    def decision(self, x: np.ndarray) -> np.ndarray:
        """What CalibratedClassifierCV calibrates: ``decision_function``, else the positive
        class's ``predict_proba`` (binary models only)."""
        if self.trees is not None:
            return self.trees.raw(x).ravel()
        if hasattr(self.estimator, "decision_function"):
            return np.asarray(self.estimator.decision_function(x))
        return np.asarray(self.estimator.predict_proba(x))[:, 1]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.trees is not None:
            return np.asarray(self.estimator._loss.predict_proba(self.trees.raw(x)))
        return np.asarray(self.estimator.predict_proba(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.trees is not None and self.classes is None:  # regressor
            return np.asarray(self.estimator._loss.link.inverse(self.trees.raw(x).ravel()))
        return np.asarray(self.estimator.predict(x))


class CompiledModel:
    """A fitted parity model's ``predict_proba`` / ``predict`` on a feature frame, equal to
    the scikit-learn model's to the bit (see the module docstring)."""

    def __init__(self, model: Any) -> None:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.pipeline import Pipeline

        self.model = model
        self.calibrated: list[tuple[_Preprocess, _Estimator, Callable[[np.ndarray], Any]]] = []
        self.plain: tuple[_Preprocess, _Estimator] | None = None
        pipelines: list[Any]
        if type(model) is CalibratedClassifierCV:
            if len(model.classes_) != 2:
                raise NotImplementedError("a multiclass calibration")
            pipelines = []
            for calibrated in model.calibrated_classifiers_:
                if calibrated.method not in ("sigmoid", "isotonic"):
                    raise NotImplementedError(f"calibration method {calibrated.method!r}")
                if len(calibrated.calibrators) != 1:
                    raise NotImplementedError("one calibrator per class")
                inner = getattr(calibrated.estimator, "estimator", calibrated.estimator)
                pipelines.append((inner, calibrated.calibrators[0]))
            self.calibrated = [(*_pipeline(p), _calibration(cal)) for p, cal in pipelines]
            self.preprocess = self.calibrated[0][0]
        elif type(model) is Pipeline:
            self.plain = _pipeline(model)
            self.preprocess = self.plain[0]
        else:
            raise NotImplementedError(f"a {type(model).__name__}")

    def probe_frame(self) -> pd.DataFrame:
        """Rows that reach every corner of the preprocessing: each known category of
        every text column, one never seen, missing values, zero, extreme numbers."""
        first = self.preprocess
        numbers = [math.nan, 0.0, -1e12, 1e12, 1.0, -1.0, 0.5, 3.0]
        texts: dict[str, list[Any]] = {}
        for part in first.parts:
            if isinstance(part, _Categorical):
                for name, mapping in zip(part.columns, part.maps, strict=True):
                    texts[name] = [*mapping, _UNKNOWN, math.nan]
        n = max([len(numbers), *(len(v) for v in texts.values())])
        columns: dict[str, Any] = {}
        for part in first.parts:
            for name in part.columns:
                values = texts.get(name, numbers)
                cycle = [values[(i * 7 + len(columns)) % len(values)] for i in range(n)]
                columns[name] = np.array(cycle, dtype=object if name in texts else np.float64)
        return pd.DataFrame(columns)

    def _matrix(
        self,
        frame: pd.DataFrame | FeatureColumns,
        pre: _Preprocess,
        shared: dict[Any, Any] | None = None,
    ) -> np.ndarray:
        if isinstance(frame, FeatureColumns):
            columns = {name: frame.column(name) for name in pre.columns}
        else:
            columns = {name: frame[name].to_numpy() for name in pre.columns}
        return pre.transform(columns, len(frame), shared)

    def predict_proba(self, frame: pd.DataFrame | FeatureColumns) -> np.ndarray:
        try:
            if self.plain is not None:
                pre, est = self.plain
                return est.predict_proba(self._matrix(frame, pre))
            # CalibratedClassifierCV.predict_proba of binary sigmoid/isotonic calibration
            mean = np.zeros((len(frame), 2))
            shared: dict[Any, Any] = {}
            for pre, est, calibrator in self.calibrated:
                proba = np.zeros((len(frame), 2))
                proba[:, 1] = calibrator(est.decision(self._matrix(frame, pre, shared)))
                proba[:, 0] = 1.0 - proba[:, 1]
                proba[(1.0 < proba) & (proba <= 1.0 + 1e-5)] = 1.0
                mean += proba
            mean /= len(self.calibrated)
            return mean
        except _Delegate:
            return np.asarray(self.model.predict_proba(as_frame(frame)))

    def predict(self, frame: pd.DataFrame | FeatureColumns) -> np.ndarray:
        if self.plain is None:  # calibrated: classification only
            return np.asarray(self.model.predict(as_frame(frame)))
        try:
            pre, est = self.plain
            return est.predict(self._matrix(frame, pre))
        except _Delegate:
            return np.asarray(self.model.predict(as_frame(frame)))


def _calibration(calibrator: Any) -> Callable[[np.ndarray], Any]:
    """``calibrator.predict`` on a float64 vector, without scikit-learn's input checks
    (a third of a one-row score): the same arithmetic as its ``predict`` for a sigmoid
    (``_SigmoidCalibration``) and an isotonic calibration, its own ``predict`` for any
    other kind. What the checks would refuse (NaN, infinities) cannot come out of the
    compiled trees' decision values, and :func:`compile_model` compares the results."""
    from scipy.special import expit  # type: ignore[import-untyped]
    from sklearn.calibration import _SigmoidCalibration
    from sklearn.isotonic import IsotonicRegression

    if type(calibrator) is _SigmoidCalibration:
        a, b = calibrator.a_, calibrator.b_
        return lambda t: expit(-(a * t + b))
    if (
        type(calibrator) is IsotonicRegression
        and calibrator.X_thresholds_.dtype == np.float64
        and calibrator.out_of_bounds in ("clip", "nan")
    ):
        lo, hi, clip, interpolate = (
            calibrator.X_min_, calibrator.X_max_, calibrator.out_of_bounds == "clip",
            calibrator.f_,
        )  # fmt: skip
        return lambda t: np.asarray(interpolate(np.clip(t, lo, hi) if clip else t), np.float64)
    predict: Callable[[np.ndarray], Any] = calibrator.predict
    return predict


def _pipeline(pipeline: Any) -> tuple[_Preprocess, _Estimator]:
    from sklearn.pipeline import Pipeline

    if type(pipeline) is not Pipeline or len(pipeline.steps) != 2:
        raise NotImplementedError("a pipeline other than preprocess + model")
    return _Preprocess(pipeline.steps[0][1]), _Estimator(pipeline.steps[1][1])


def compile_model(
    model: Any, frames: Sequence[pd.DataFrame], *, on_refusal: Callable[[str], None] | None = None
) -> CompiledModel | None:
    """The compiled form of a fitted parity model, or ``None`` when it has none.

    The frames given (e.g. a version's smoke sample) and rows of the compiled model's
    own making (every known category, unseen ones, missing values, extreme numbers) are
    scored both ways — whole, a few rows alone, and in chunks of the sizes the trees are
    walked in — and the compiled model is returned only if every number is identical to
    the scikit-learn model's; otherwise ``on_refusal`` hears why and ``None`` is returned.
    """
    try:
        compiled = CompiledModel(model)
    except (NotImplementedError, AttributeError, TypeError, ValueError) as exc:
        if on_refusal is not None:
            on_refusal(f"not compiled ({exc})")
        return None
    method = "predict_proba" if hasattr(model, "predict_proba") else "predict"
    step = TREE_WALK_MAX_ROWS
    for frame in [*frames, compiled.probe_frame()]:
        parts = [frame, *(frame.iloc[i : i + 1] for i in range(min(len(frame), 4)))]
        parts += [frame.iloc[i : i + step] for i in range(0, len(frame), step)]
        for part in parts:
            why = _differs(getattr(model, method), getattr(compiled, method), part)
            if why:
                if on_refusal is not None:
                    on_refusal(f"not compiled: its {method} differs from scikit-learn's ({why})")
                return None
    return compiled


def _differs(want_fn: Callable[[Any], Any], got_fn: Callable[[Any], Any], part: Any) -> str:
    """How the compiled answer to ``part`` differs from scikit-learn's ('' if it does not;
    refusing the same input with the same error is agreeing)."""
    want: Any = None
    got: Any = None
    try:
        want = np.asarray(want_fn(part))
    except Exception as exc:
        want = exc
    try:
        got = np.asarray(got_fn(part))
    except Exception as exc:
        got = exc
    if isinstance(want, Exception) or isinstance(got, Exception):
        if type(want) is type(got) and str(want) == str(got):
            return ""
        return f"{got!r} where scikit-learn gave {want!r}"[:300]
    if want.shape != got.shape:
        return f"shape {got.shape} for {want.shape}"
    if not np.array_equal(want, got, equal_nan=True):
        return f"by up to {np.nanmax(np.abs(want - got)):.3g}"
    return ""
