"""Model specs: what ``parity train`` fits, declared in a TOML file in the repository.

A spec names the model, the Feast feature service it reads, where its labels
come from (a DuckDB query over files of the repository), the training window, the
time-based split, the scikit-learn estimator, calibration, the serving
thresholds and the promotion gate. The sample's spec is
``feature_repo/models/fraud_model.toml``; ``parity train`` uses the only spec in
``<repo>/models/`` unless ``--spec`` names another.

Validation is pydantic's: a wrong spec fails with the field's dotted path and
the reason, before anything is trained.

Defaults are task-aware: a regression spec left at the defaults has no
calibration period (its train period takes that share) and gates on ``rmse``;
a classification spec calibrates on 10 % and gates on ``pr_auc``. What can
only be checked against the feature service (the names a serving rule uses) is
checked by :func:`check_rule_names` once ``parity train`` knows the service's
contract, before any label is read.
"""

from __future__ import annotations

import ast
import importlib
import tokenize
import tomllib
from collections.abc import Collection
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from framework.errors import ConfigError

#: Metrics where a higher value is better; the others (losses, errors) are lower-better.
HIGHER_IS_BETTER = {"roc_auc", "pr_auc", "precision", "recall", "r2"}
CLASSIFICATION_METRICS = {"roc_auc", "pr_auc", "log_loss", "brier", "ece"}
REGRESSION_METRICS = {"mae", "rmse", "r2"}


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


#: Per task, what a spec that leaves them out gets: (gate.metric, split.calibration).
TASK_DEFAULTS: dict[Task, tuple[str, float]] = {
    Task.CLASSIFICATION: ("pr_auc", 0.1),
    Task.REGRESSION: ("rmse", 0.0),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelSpec(_Strict):
    """Where labels come from and how they become an entity frame."""

    query: str = Field(
        description="DuckDB SQL returning the keys, the label, the event time, the label's "
        "arrival time (optional) and any request data; a relative file path in it resolves "
        "against the repository folder (else against parity's state folder for the "
        "repository), never against the working directory."
    )
    keys: list[str] = Field(min_length=1, description="Entity join-key columns.")
    column: str = Field(description="The label column.")
    event_timestamp: str = Field(description="When the prediction would have been made.")
    label_timestamp: str | None = Field(
        default=None, description="When the label became known; later labels are not used."
    )
    feedback: bool = Field(
        default=False,
        description="Also train on the outcomes `parity feedback` joined to this model's "
        "predictions (offline/feedback/NAME.parquet in the repository's state folder), "
        "where the query has no row for "
        "the same keys and event time.",
    )
    offset_microseconds: int = Field(
        default=0,
        description="Added to the event time before the join, e.g. -1 to use the features "
        "known just before the event (when a feature row at the event includes the event).",
    )


class WindowSpec(_Strict):
    """Which labelled events to train on (``start`` <= event time < ``end``)."""

    start: datetime | None = None
    end: datetime | None = None
    lookback_days: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_start(self) -> WindowSpec:
        if self.start is not None and self.lookback_days is not None:
            raise ValueError("give 'start' or 'lookback_days', not both")
        return self


class SplitSpec(_Strict):
    """Consecutive time periods: train, calibration, holdout (fractions of the rows)."""

    train: float = Field(
        default=0.7,
        gt=0,
        lt=1,
        description="Default: what calibration and holdout leave (0.7 for classification, "
        "0.8 for regression).",
    )
    calibration: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="Default 0.1 for classification; 0 (and must be 0) for regression, "
        "which is not calibrated.",
    )
    holdout: float = Field(default=0.2, gt=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _train_takes_the_rest(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "train" not in raw:
            rest = 1 - float(raw.get("calibration", 0.1)) - float(raw.get("holdout", 0.2))
            raw = {**raw, "train": round(rest, 12)}
        return raw

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitSpec:
        total = self.train + self.calibration + self.holdout
        if abs(total - 1) > 1e-9:
            raise ValueError(f"train + calibration + holdout must be 1, got {total:g}")
        return self


class EstimatorSpec(_Strict):
    """A scikit-learn estimator class and its keyword parameters."""

    class_: str = Field(alias="class", description="Dotted path, e.g. sklearn.linear_model.X.")
    params: dict[str, Any] = Field(default_factory=dict)
    scale: Literal["auto", "yes", "no"] = Field(
        default="auto",
        description="Standard-scale numerical features; auto scales for every estimator "
        "except tree ensembles, which do not need it.",
    )
    min_category_frequency: int = Field(
        default=5,
        ge=1,
        description="Categories seen fewer times in training share one 'infrequent' column; "
        "categories never seen map there too.",
    )

    @field_validator("class_")
    @classmethod
    def _sklearn_only(cls, value: str) -> str:
        if not value.startswith("sklearn.") or value.count(".") < 2:
            raise ValueError(
                f"must be a scikit-learn estimator such as "
                f"'sklearn.linear_model.LogisticRegression', got {value!r}"
            )
        return value

    def resolve(self) -> type:
        module, _, name = self.class_.rpartition(".")
        try:
            return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"estimator.class: cannot import {self.class_!r} ({exc}).") from exc

    @property
    def is_tree_ensemble(self) -> bool:
        return ".ensemble." in self.class_ or ".tree." in self.class_


class CalibrationSpec(_Strict):
    """Probability calibration on the calibration period (classification only)."""

    method: Literal["isotonic", "sigmoid", "none"] = "isotonic"
    bins: int = Field(default=10, ge=2, description="Bins of the expected calibration error.")


class RuleSpec(_Strict):
    """A check on a VALIDATE prediction: a pandas expression over its features and
    request data, e.g. ``amount > 2000 and country != home_country``."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
    when: str = Field(
        min_length=1,
        description="A pandas expression (DataFrame.eval) over the model's features, join "
        "keys and request data; every name it uses must be one of them (checked by "
        "parity train).",
    )
    decision: Literal["REVIEW", "ACCEPT"] = "REVIEW"

    @field_validator("when")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            rule_names(value)
        except SyntaxError as exc:
            raise ValueError(f"cannot parse {value!r} as a pandas expression ({exc.msg})") from None
        return value


def rule_names(expression: str) -> set[str]:
    """The column names a rule's pandas expression reads (``@local`` names as ``@name``).

    pandas' own tokenizer reads it (so a backtick-quoted name is one name, as in
    ``DataFrame.eval``), then Python's parser: names called as functions (``abs``,
    ``log``...) and pandas' default globals (``inf``, ``Timestamp``...) are not columns.
    Raises ``SyntaxError`` when the expression does not parse.
    """
    # pandas' private tokenizer is the one DataFrame.eval uses: its backtick handling
    # is the definition of what a quoted name is (no public API offers it).
    from pandas.core.computation.parsing import (  # type: ignore[import-not-found]
        BACKTICK_QUOTED_STRING,
        tokenize_string,
    )
    from pandas.core.computation.scope import DEFAULT_GLOBALS  # type: ignore[attr-defined]

    quoted: dict[str, str] = {}
    tokens: list[tuple[int, str]] = []
    local = False
    try:
        for kind, text in tokenize_string(expression):
            if kind == BACKTICK_QUOTED_STRING or local:
                placeholder = f"__parity_name_{len(quoted)}"
                quoted[placeholder] = f"@{text}" if local else text
                tokens.append((tokenize.NAME, placeholder))
                local = False
            elif kind == tokenize.OP and text == "@":
                local = True
            else:
                tokens.append((kind, text))
    except tokenize.TokenError as exc:
        raise SyntaxError(str(exc.args[0])) from None
    # Tokens joined by spaces, so two tokens never fuse into one (``> >`` is not ``>>``).
    source = " ".join(text for kind, text in tokens if kind not in (tokenize.NL, tokenize.NEWLINE))
    tree = ast.parse(source.strip(), mode="eval")
    called = {
        id(node.func)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    return {
        quoted.get(node.id, node.id)
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and id(node) not in called and node.id not in DEFAULT_GLOBALS
    }


def check_rule_names(rules: list[RuleSpec], known: Collection[str]) -> None:
    """Refuse a serving rule that reads a name the model's rows do not have (a typo
    would otherwise send every VALIDATE prediction to REVIEW at serving time)."""
    for rule in rules:
        unknown = sorted(rule_names(rule.when) - set(known))
        if unknown:
            raise ConfigError(
                f"serving.rules {rule.name!r}: {rule.when!r} uses {unknown[0]!r}, which is not "
                f"a feature, join key or request-data field of the model (it has: "
                f"{', '.join(sorted(known))})."
            )


class ServingSpec(_Strict):
    """Thresholds the server uses; training reports metrics at them."""

    threshold: float = Field(default=0.5, gt=0, lt=1, description="score >= threshold: label 1")
    accept: float = Field(default=0.85, gt=0, le=1, description="confidence >= accept: ACCEPT")
    review_below: float = Field(default=0.60, gt=0, le=1, description="confidence < it: REVIEW")
    report_thresholds: list[float] = Field(
        default_factory=list, description="More score thresholds to report precision/recall at."
    )
    rules: list[RuleSpec] = Field(
        default_factory=list,
        description="Checks run on VALIDATE predictions before answering; a rule whose "
        "expression holds sends the prediction to its decision (REVIEW by default).",
    )
    range_margin: float = Field(
        default=0.1,
        ge=0,
        description="A number further than this share of the training range outside it "
        "is out of range.",
    )
    cap_on_out_of_range: Literal["VALIDATE", "REVIEW", "none"] = "VALIDATE"
    cap_on_unseen_category: Literal["VALIDATE", "REVIEW", "none"] = "VALIDATE"
    cap_on_unexpected_missing: Literal["VALIDATE", "REVIEW", "none"] = Field(
        default="VALIDATE",
        description="For features (almost) never missing in training (null rate < 1%).",
    )
    max_missing_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="More of the features than this without a value: answer with the "
        "fallback model instead.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ServingSpec:
        if self.review_below > self.accept:
            raise ValueError(
                f"review_below ({self.review_below}) must not exceed accept ({self.accept})"
            )
        return self


class GateSpec(_Strict):
    """Promotion gate: the candidate's holdout metric against the current champion's."""

    metric: str = Field(
        default="pr_auc",
        description="Default pr_auc for classification, rmse (lower is better) for regression.",
    )
    tolerance: float = Field(
        default=0.01, ge=0, description="How much worse than the champion is still accepted."
    )
    smoke_rows: int = Field(default=64, ge=1, le=10_000)

    @property
    def higher_is_better(self) -> bool:
        return self.metric in HIGHER_IS_BETTER


class RetrainSpec(_Strict):
    """``parity retrain``'s gate, in the spirit of TFX's model blessing: the challenger and
    the champion are scored on the same, most recent holdout rows, and the challenger must
    clear every absolute threshold and every change threshold."""

    lookback_days: int | None = Field(
        default=None, gt=0, description="Train on the labelled events of the last N days "
        "before --as-of (default: the spec's window).",
    )  # fmt: skip
    absolute: dict[str, float] = Field(
        default_factory=dict,
        description="Metric -> bound the challenger must meet on the holdout: at least it "
        "for metrics where higher is better, at most it for the others (log_loss, brier...).",
    )
    change: dict[str, float] = Field(
        default_factory=dict,
        description="Metric -> least improvement over the champion on the same rows "
        "(negative: the regression still accepted). Default: the gate metric, "
        "-gate.tolerance.",
    )


class ModelSpec(_Strict):
    """One model: features, labels, window, split, estimator, calibration, serving, gate."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    task: Task = Field(
        default=Task.CLASSIFICATION,
        description="classification: a binary label (0/1 or true/false), scored as the "
        "probability of 1; a label with more values (multiclass) is refused by parity train "
        "before the join, naming the values seen, because parity's calibration, confidence "
        "routing, explanations and monitoring are binary. regression: a numeric label; "
        "defaults to no calibration period and gate.metric rmse.",
    )
    feature_service: str
    labels: LabelSpec
    window: WindowSpec = WindowSpec()
    split: SplitSpec = SplitSpec()
    estimator: EstimatorSpec
    calibration: CalibrationSpec = CalibrationSpec()
    serving: ServingSpec = ServingSpec()
    gate: GateSpec = GateSpec()
    retrain: RetrainSpec = RetrainSpec()
    random_state: int = 0

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, raw: Any) -> Any:
        """Fill what the spec leaves out by its task (:data:`TASK_DEFAULTS`)."""
        if not isinstance(raw, dict):
            return raw
        try:
            task = Task(raw.get("task", Task.CLASSIFICATION))
        except ValueError:
            return raw  # pydantic names the bad task
        metric, calibration = TASK_DEFAULTS[task]
        out = dict(raw)
        for section, key, value in (("gate", "metric", metric), ("split", "calibration",
                                                                  calibration)):  # fmt: skip
            given = out.get(section, {})
            if isinstance(given, dict) and key not in given:
                out[section] = {**given, key: value}
        return out

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        known = CLASSIFICATION_METRICS if self.task is Task.CLASSIFICATION else REGRESSION_METRICS
        if self.gate.metric not in known:
            raise ValueError(
                f"gate.metric {self.gate.metric!r} is not a {self.task.value} metric "
                f"(one of {', '.join(sorted(known))})"
            )
        for metric in (*self.retrain.absolute, *self.retrain.change):
            if metric not in known:
                raise ValueError(
                    f"retrain: {metric!r} is not a {self.task.value} metric "
                    f"(one of {', '.join(sorted(known))})"
                )
        if self.task is Task.REGRESSION and self.split.calibration:
            raise ValueError("split.calibration must be 0 for a regression model")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def load_spec(path: Path) -> ModelSpec:
    """Read and validate a spec file; errors name the file, the field and the reason."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"No model spec at {path}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}).") from exc
    return spec_from_dict(raw, source=str(path))


def spec_from_dict(raw: dict[str, Any], *, source: str = "spec") -> ModelSpec:
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{source}: {where}: {first['msg']}{more}.") from exc
    spec.estimator.resolve()  # fail now on an unknown class, not after the join
    return spec


def find_spec(repo: Path, spec: Path | None) -> Path:
    """The spec to use: ``spec`` if given, else the only ``*.toml`` in ``<repo>/models/``."""
    if spec is not None:
        return spec
    folder = repo / "models"
    found = sorted(folder.glob("*.toml"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(f"No model spec in {folder}; pass --spec PATH.")
    names = ", ".join(p.name for p in found)
    raise ConfigError(f"{folder} has several specs ({names}); pick one with --spec PATH.")
