"""Explanations: why a model version gave a row its score.

**Per prediction** (:class:`Explainer`): SHAP values from SHAP's own exact
algorithms where they fit the estimator — ``shap.TreeExplainer`` (path-dependent
Tree SHAP: no background data, the trees' own training cover) for tree
ensembles, ``shap.LinearExplainer`` (interventional, against a background
sample of the training period) for linear models. Other estimators are not
explained (:class:`NotExplainable`); nothing is approximated by guesswork.

The explainer runs on the fitted pipeline's own preprocessing output, so it
sees exactly the feature vector that was scored; the columns one feature turns
into (its one-hot columns, its missing-value indicator) are summed back into
that feature. SHAP explains the estimator's response — the log-odds margin
(``decision_function``) of gradient boosting and linear classifiers, the
probability of a random forest, the value of a regressor — and the served
score is a monotone function ``g`` of it: the calibration map (sigmoid or
isotonic) of a calibrated model, else the logistic link or the identity. To
give attributions in the units of the score, each row's margin attributions
are scaled by the secant slope of ``g`` between the base margin and the row's
margin (the "rescale rule" of DeepLIFT for a monotone output): signs and
proportions stay SHAP's, and

    base_value + sum(contributions) == score          (|error| <= ADDITIVITY_TOLERANCE)

where ``base_value = g(expected margin)``. :func:`describe` checks both steps
on training rows when a version is registered — SHAP's margin additivity
against the estimator's own response, and ``g(margin)`` against the served
score — and records the method, the SHAP version and the background in the
manifest; a model failing either check is recorded as not explainable.

**Global importance** (:func:`global_importance`): scikit-learn's permutation
importance of the served (calibrated) model on the time-based holdout — the drop
in ROC-AUC (R² for regression) when one feature's values are shuffled.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from framework.errors import ParityError
from framework.features.fields import FeatureField
from framework.models.spec import Task

if TYPE_CHECKING:
    from framework.models.manifest import Manifest
    from framework.registry.model_registry import ModelRegistry

TREE = "shap.TreeExplainer"
LINEAR = "shap.LinearExplainer"
#: The background sample stored with a version (training-period rows, features only).
BACKGROUND_FILE = "explain_background.parquet"
BACKGROUND_ROWS = 200
#: How far base_value + sum(contributions) may be from the score (float64 arithmetic).
ADDITIVITY_TOLERANCE = 1e-6
_CHECK_TOLERANCE = 1e-6
_CALIBRATORS = {"_SigmoidCalibration": "sigmoid calibration",
                "IsotonicRegression": "isotonic calibration"}  # fmt: skip


class NotExplainable(ParityError):
    """The model version has no explainer (its estimator or its registration)."""


@dataclass(frozen=True)
class Attribution:
    feature: str
    contribution: float  # in units of the score
    value: Any  # the value the model was fed (None: missing)


@dataclass(frozen=True)
class Explanation:
    base_value: float
    score: float
    attributions: list[Attribution]  # every feature, by decreasing |contribution|

    def top(self, k: int) -> list[Attribution]:
        return self.attributions[:k] if k > 0 else self.attributions


@dataclass(frozen=True)
class _Parts:
    pipeline: Any  # Pipeline([("preprocess", ColumnTransformer), ("model", estimator)])
    calibrator: Any | None  # maps the response to the score (a calibrated model)
    response: str  # "decision_function" | "predict_proba" | "predict"


def _parts(model: Any, task: Task) -> _Parts:
    """The pipeline inside a (possibly calibrated) model, and how its score is formed."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline

    calibrator = None
    if isinstance(model, CalibratedClassifierCV):
        if len(model.calibrated_classifiers_) != 1:
            raise NotExplainable("a cross-validated calibration ensemble is not explained")
        inner = model.calibrated_classifiers_[0]
        calibrator = inner.calibrators[0]
        model = getattr(inner.estimator, "estimator", inner.estimator)  # FrozenEstimator
    if not isinstance(model, Pipeline) or "preprocess" not in model.named_steps:
        raise NotExplainable(f"not a parity pipeline: {type(model).__name__}")
    if task is Task.REGRESSION:
        response = "predict"
    elif hasattr(model, "decision_function"):
        response = "decision_function"  # what CalibratedClassifierCV calibrates, if present
    else:
        response = "predict_proba"
    return _Parts(model, calibrator, response)


def _response(parts: _Parts, xt: np.ndarray) -> np.ndarray:
    est = parts.pipeline[-1]
    out = np.asarray(getattr(est, parts.response)(xt), dtype=np.float64)
    return out[:, 1] if out.ndim == 2 else out


def _link(parts: _Parts, margin: np.ndarray) -> np.ndarray:
    """The score as a function of the explained response (``g`` in the module docstring)."""
    margin = np.asarray(margin, dtype=np.float64)
    if parts.calibrator is not None:
        return np.asarray(parts.calibrator.predict(margin), dtype=np.float64)
    if parts.response == "decision_function":
        return np.asarray(0.5 * (1.0 + np.tanh(0.5 * margin)), dtype=np.float64)  # logistic
    return margin


def column_owners(preprocess: Any, fields: list[FeatureField]) -> list[str]:
    """The original feature of each column the fitted ``ColumnTransformer`` outputs.

    The numerical block outputs its features in order, then one missing-value
    indicator per feature the imputer saw missing; the categorical block outputs
    each feature's one-hot columns (frequent categories, then an infrequent column).
    """
    owners: list[str] = []
    for name, transformer, columns in preprocess.transformers_:
        if name == "remainder" or transformer == "drop":
            continue
        steps = dict(transformer.steps)
        if name == "numerical":
            owners += list(columns)
            indicator = getattr(steps["impute"], "indicator_", None)
            if indicator is not None:
                owners += [columns[i] for i in indicator.features_]
        elif name == "categorical":
            encoder = steps["encode"]
            infrequent = getattr(encoder, "infrequent_categories_", [None] * len(columns))
            for column, cats, rare in zip(columns, encoder.categories_, infrequent, strict=True):
                size = len(cats) if rare is None else len(cats) - len(rare) + 1
                owners += [column] * size
        else:
            raise NotExplainable(f"unknown preprocessing block {name!r}")
    known = {f.name for f in fields}
    if not set(owners) <= known:
        raise NotExplainable(f"preprocessing outputs unknown features {set(owners) - known}")
    return owners


class Explainer:
    """Attributions for one model version (build once, call from any thread)."""

    def __init__(
        self, model: Any, fields: list[FeatureField], task: Task, background: pd.DataFrame
    ) -> None:
        import shap

        self.fields = fields
        self.background_frame = background
        self.parts = _parts(model, task)
        preprocess = self.parts.pipeline.named_steps["preprocess"]
        self.preprocess = preprocess
        owners = column_owners(preprocess, fields)
        names = [f.name for f in fields]
        # (columns x features) 0/1 matrix: sums a row's column attributions per feature.
        self._fold = np.zeros((len(owners), len(names)))
        for j, owner in enumerate(owners):
            self._fold[j, names.index(owner)] = 1.0
        self.names = names
        est = self.parts.pipeline[-1]
        try:
            self._shap: Any = shap.TreeExplainer(est)
            self.method = TREE
            self.background = "none: path-dependent Tree SHAP uses the trees' training cover"
        except Exception as tree_error:
            if not (hasattr(est, "coef_") and hasattr(est, "intercept_")):
                raise NotExplainable(
                    f"{type(est).__name__} has no exact SHAP explainer here (tree ensembles "
                    f"and linear models do): {str(tree_error).splitlines()[0][:200]}"
                ) from None
            xb = np.asarray(preprocess.transform(background), dtype=np.float64)
            self._shap = shap.LinearExplainer(est, xb)
            self.method = LINEAR
            self.background = f"{len(background)} training-period rows (interventional)"
        if len(owners) != self._transform(background.head(1)).shape[1]:
            raise NotExplainable("preprocessing output does not match its column map")
        expected = np.ravel(self._shap.expected_value)
        self._output = 1 if expected.size == 2 else 0  # per-class outputs: the positive class
        self.base_margin = float(expected[self._output])
        self.base_value = float(_link(self.parts, np.array([self.base_margin]))[0])
        self._lock = threading.Lock()

    def _transform(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.preprocess.transform(frame), dtype=np.float64)

    def margins(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Per row and feature, SHAP values of the response; and the transformed rows."""
        xt = self._transform(frame)
        with self._lock:
            values = self._shap.shap_values(xt)
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 3:  # (rows, columns, outputs)
            values = values[:, :, self._output]
        return values @ self._fold, xt

    def contributions(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Per row and feature, attributions in units of the score; and the rows' scores
        (the model's own, through the link :meth:`check` verified at registration)."""
        phi, xt = self.margins(frame)
        scores = _link(self.parts, _response(self.parts, xt))
        return _rescaled(phi, scores - self.base_value), scores

    def explain(self, frame: pd.DataFrame, scores: np.ndarray) -> list[Explanation]:
        """One explanation per row of ``frame`` (the features as fed), for its served score."""
        phi, _ = self.margins(frame)
        scores = np.asarray(scores, dtype=np.float64)
        scaled_rows = _rescaled(phi, scores - self.base_value)
        out = []
        for i in range(len(frame)):
            scaled = scaled_rows[i]
            order = np.argsort(-np.abs(scaled), kind="stable")
            row = frame.iloc[i]
            out.append(
                Explanation(
                    base_value=self.base_value,
                    score=float(scores[i]),
                    attributions=[
                        Attribution(self.names[j], float(scaled[j]), _plain(row[self.names[j]]))
                        for j in order
                    ],
                )
            )
        return out

    def check(self, frame: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
        """Largest errors on ``frame``: SHAP's margin additivity against the estimator's
        response, and the link against the served ``scores``; raises if either is off."""
        phi, xt = self.margins(frame)
        margin = _response(self.parts, xt)
        additivity = float(np.max(np.abs(self.base_margin + phi.sum(axis=1) - margin)))
        link = float(np.max(np.abs(_link(self.parts, margin) - np.asarray(scores))))
        if not (additivity <= _CHECK_TOLERANCE and link <= _CHECK_TOLERANCE):
            raise NotExplainable(
                f"the explainer does not reproduce the model (margin additivity error "
                f"{additivity:.2e}, score link error {link:.2e})"
            )
        return {"margin_additivity_error": additivity, "score_link_error": link}


def _rescaled(phi: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Margin attributions scaled so that each row's sum is its score's distance from the
    base value (the rescale rule); a row at the base margin has nothing to attribute."""
    total = phi.sum(axis=1)
    scale = np.divide(delta, total, out=np.zeros_like(total), where=np.abs(total) > 1e-12)
    return np.asarray(phi * scale[:, None], dtype=np.float64)


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return None if value is pd.NA else value


def describe(
    model: Any, fields: list[FeatureField], task: Task, background: pd.DataFrame,
    check_rows: pd.DataFrame, check_scores: np.ndarray,
) -> dict[str, Any]:  # fmt: skip
    """The manifest's ``explanation`` section: the method, or why there is none."""
    import shap

    try:
        explainer = Explainer(model, fields, task, background)
        errors = explainer.check(check_rows, check_scores)
    except NotExplainable as exc:
        return {"method": None, "reason": str(exc)}
    parts = explainer.parts
    return {
        "method": explainer.method,
        "shap_version": shap.__version__,
        "explained_output": parts.response,
        "score_link": (
            _CALIBRATORS.get(type(parts.calibrator).__name__, type(parts.calibrator).__name__)
            if parts.calibrator is not None
            else "logistic"
            if parts.response == "decision_function"
            else "identity"
        ),  # fmt: skip
        "units": "score",
        "base_value": explainer.base_value,
        "background": {
            "file": BACKGROUND_FILE,
            "rows": len(background),
            "period": "train",
            "used": explainer.background,
        },
        "additivity_tolerance": ADDITIVITY_TOLERANCE,
        "checked_rows": len(check_rows),
        **errors,
    }


def load_explainer(registry: ModelRegistry, model: Any, manifest: Manifest) -> Explainer:
    """The explainer of a registered version: its manifest's method and its stored
    training-period background (checksum verified); :class:`NotExplainable` says why not."""
    import hashlib
    import io

    import pyarrow.parquet as pq

    from framework.models.estimator import feature_frame

    spec = manifest.explanation
    if not spec:
        raise NotExplainable(
            f"{manifest.ref} was registered without an explainer (before explanations "
            "existed); retrain it to explain its predictions."
        )
    if not spec.get("method"):
        raise NotExplainable(f"{manifest.ref} cannot be explained: {spec.get('reason')}.")
    data = (registry.version_dir(manifest.ref) / BACKGROUND_FILE).read_bytes()
    if hashlib.sha256(data).hexdigest() != spec["background"]["sha256"]:
        raise NotExplainable(f"{manifest.ref}: {BACKGROUND_FILE} does not match its checksum.")
    background = feature_frame(pq.read_table(io.BytesIO(data)), manifest.fields)
    return Explainer(model, manifest.fields, manifest.task, background)


def background_sample(frame: pd.DataFrame, seed: int, rows: int = BACKGROUND_ROWS) -> pd.DataFrame:
    """A fixed-size random sample of training rows (all of them if fewer)."""
    if len(frame) <= rows:
        return frame.reset_index(drop=True)
    return frame.sample(n=rows, random_state=seed).reset_index(drop=True)


def global_importance(
    model: Any, frame: pd.DataFrame, y: np.ndarray, task: Task, seed: int,
    repeats: int = 5, max_rows: int = 5_000,
) -> dict[str, Any]:  # fmt: skip
    """Permutation importance of every feature on (up to ``max_rows`` of) the holdout."""
    from sklearn.inspection import permutation_importance

    if len(frame) > max_rows:
        idx = np.random.default_rng(seed).choice(len(frame), max_rows, replace=False)
        idx.sort()
        frame, y = frame.iloc[idx], y[idx]
    metric = "roc_auc" if task is Task.CLASSIFICATION else "r2"
    if task is Task.CLASSIFICATION and len(np.unique(y)) < 2:
        return {"method": None, "reason": "the holdout has one label value"}
    result = permutation_importance(
        model, frame, y, scoring=metric, n_repeats=repeats, random_state=seed, n_jobs=1
    )
    order = np.argsort(-result.importances_mean, kind="stable")
    features = [
        {
            "feature": str(frame.columns[j]),
            "mean": float(result.importances_mean[j]),
            "std": float(result.importances_std[j]),
        }
        for j in order
    ]
    return {
        "method": "sklearn.inspection.permutation_importance",
        "metric": metric,
        "period": "holdout",
        "rows": len(frame),
        "repeats": repeats,
        "features": features,
    }
