"""A model version's manifest: what it was trained on and how to serve it, as one type.

``parity train`` writes it (:meth:`Manifest.record`, handed to the registry, which adds
``name`` and ``version``); everything that reads a version reads it through
:meth:`Manifest.read` or :meth:`Manifest.load`, so ``mypy --strict`` checks every
field a stage uses. The JSON file is unchanged: the same keys, so versions registered
before this type existed read the same way.

The registry stays a store of versions (:mod:`framework.registry`): it knows the
``artifact`` record it checks, not the rest; the rest is the model's.

Free-form parts (reference statistics, explanation settings, lineage) stay mappings:
each has one owner module that writes and reads it (:mod:`framework.models.reference_stats`,
:mod:`framework.models.explain`, :mod:`framework.models.training`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from framework.features.fields import FeatureField
from framework.models.spec import GateSpec, ServingSpec, Task
from framework.registry.model_registry import ModelRef, ModelRegistry


class _Record(BaseModel):
    # Unknown keys are kept (a newer parity may add fields; this one writes them back).
    model_config = ConfigDict(extra="allow", frozen=True)


class PinnedFeature(_Record):
    """One model input as training pinned it."""

    name: str
    dtype: str
    view: str


class ArtifactRecord(_Record):
    """The fitted model's file in the version's folder, checked by hash before loading."""

    file: str
    format: str
    sha256: str
    bytes: int


class SmokeRecord(_Record):
    """Holdout rows with the scores they had at training time (the promotion gate's smoke test)."""

    file: str
    rows: int


class Metrics(_Record):
    """Holdout metrics of the version, of it before calibration, and of the trivial baseline."""

    holdout: dict[str, Any]
    uncalibrated: dict[str, Any]
    baseline: dict[str, Any]
    #: A classifier's label-free estimate (ROC-AUC, PR-AUC) on its holdout scores: what a
    #: monitored window's estimate is compared with (:mod:`framework.models.estimated`).
    holdout_estimated: dict[str, float] | None = None


class Reference(_Record):
    """Training-time distributions the server checks inputs against and drift is measured from."""

    features: dict[str, Any]
    score: dict[str, Any] | None = None
    confidence: dict[str, Any] | None = None  # None for regression: it has no confidence
    label_rate: float | None = None


class FeatureAge(_Record):
    """How old one feature's values were at their training rows' times, in seconds
    (entity event time − the matched feature row's event time), over the ``rows``
    training rows that got a value; the percentiles are None when none did."""

    view: str
    rows: int
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None


class Freshness(_Record):
    """The ages the model saw in training (:mod:`framework.features.feature_ages`): per
    feature read from a feature view, and the features that have no age (on-demand
    features and request data, computed or sent at request time). The server flags a
    value older than the feature's ``p99``; ``parity monitor`` compares served ages."""

    unit: str = "seconds"
    features: dict[str, FeatureAge] = {}
    without_age: list[str] = []


class Probe(_Record):
    """Rows the server reads at start-up to prove it can serve the version."""

    entity_rows: list[dict[str, Any]] = []
    request_data: list[dict[str, Any]] = []


class Manifest(_Record):
    """A registered model version's manifest (``manifest.json``)."""

    name: str = ""  # assigned by the registry
    version: int = 0  # assigned by the registry
    created_at: str
    created_by: str | None = None
    task: Task = Task.CLASSIFICATION
    description: str = ""
    feature_service: str
    features: list[PinnedFeature]
    join_keys: list[str] = []
    join_key_types: dict[str, str] = {}
    request_data: dict[str, str] = {}
    definitions_digest: str
    label: str | None = None
    dataset: dict[str, Any] = {}
    window: dict[str, Any] = {}
    split: dict[str, Any] = {}
    estimator: dict[str, Any] = {}
    calibration: dict[str, Any] | None = None
    serving: ServingSpec = ServingSpec()
    gate: GateSpec = GateSpec()
    metrics: Metrics
    reference: Reference
    code: dict[str, Any] = {}
    libraries: dict[str, str] = {}
    spec: dict[str, Any] = {}
    spec_path: str | None = None
    artifact: ArtifactRecord
    smoke: SmokeRecord | None = None
    fallback: dict[str, Any] | None = None
    explanation: dict[str, Any] | None = None
    importance: dict[str, Any] | None = None
    probe: Probe | None = None
    #: None: not measured (versions trained before ages were, or a Feast-built set).
    freshness: Freshness | None = None

    @property
    def fields(self) -> list[FeatureField]:
        """The model's inputs, in the order the pipeline takes them."""
        return [FeatureField(name=f.name, dtype=f.dtype, view=f.view) for f in self.features]

    @property
    def ref(self) -> ModelRef:
        return ModelRef(self.name, self.version)

    def record(self) -> dict[str, Any]:
        """The manifest as the JSON object the registry writes (the same keys as ever)."""
        # fallback=str: what json.dumps(default=str) made of values JSON has no type for
        # (a numpy integer among an estimator's parameters), as the registry always did.
        return self.model_dump(mode="json", exclude={"name", "version"}, fallback=str)

    def as_dict(self) -> dict[str, Any]:
        """The whole manifest as JSON-ready values, ``name`` and ``version`` included."""
        return {**self.record(), "name": self.name, "version": self.version}

    @classmethod
    def read(cls, registry: ModelRegistry, ref: ModelRef) -> Manifest:
        """The manifest of ``ref``; a manifest that is not one names what is wrong."""
        return cls.of(registry.manifest(ref), ref)

    @classmethod
    def load(cls, registry: ModelRegistry, ref: ModelRef) -> tuple[Any, Manifest]:
        """The fitted model (its checksum verified first) and its manifest."""
        model, raw = registry.load(ref)
        return model, cls.of(raw, ref)

    @classmethod
    def of(cls, raw: dict[str, Any], ref: ModelRef | None = None) -> Manifest:
        from pydantic import ValidationError

        from framework.errors import DataError

        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise DataError(
                f"The manifest of {ref or 'this version'} is not valid: {where}: {first['msg']}."
            ) from exc
