"""What monitoring reads from a logged model version's manifest, in one place.

The log names versions; their manifests (from :mod:`framework.registry`) hold
what monitoring compares the log with: the reference statistics, the task, the
join keys and features, the holdout metrics. Every read of a manifest field by
monitoring, skew and feedback goes through a function here.
"""

from __future__ import annotations

from typing import Any

from framework.models.manifest import Manifest
from framework.models.spec import Task
from framework.registry.model_registry import ModelRef, ModelRegistry, NotFoundError


def version_manifest(registry: ModelRegistry, model: str, version: str) -> Manifest | None:
    """The manifest of a logged version; None when the registry does not hold it (then
    the summary has operations only, no reference)."""
    try:
        return Manifest.read(registry, ModelRef(model, int(version)))
    except (NotFoundError, ValueError):
        return None


def key_types_of(manifest: Manifest | None) -> dict[str, str]:
    """A model version's join keys with their Feast value type names (versions trained
    before keys were typed had INT64 keys only)."""
    if manifest is None:
        return {}
    return {k: manifest.join_key_types.get(k, "INT64") for k in manifest.join_keys}


def feature_names(manifest: Manifest | None) -> list[str]:
    return [f.name for f in manifest.features] if manifest is not None else []


def request_fields(manifest: Manifest | None) -> list[str]:
    return list(manifest.request_data) if manifest is not None else []


def has_confidence(manifest: Manifest | None) -> bool:
    """Whether the version's predictions carry a confidence (by its task, not the log)."""
    return manifest is None or manifest.task is not Task.REGRESSION


def reference(manifest: Manifest | None) -> dict[str, Any]:
    """The reference statistics recorded at training (empty: none), as the drift
    computations read them (profiles per feature, score, confidence)."""
    return manifest.reference.model_dump() if manifest is not None else {}


def importance(manifest: Manifest | None) -> dict[str, float]:
    """Each feature's permutation importance recorded at training."""
    recorded = (manifest.importance if manifest is not None else None) or {}
    return {f["feature"]: f["mean"] for f in recorded.get("features", [])}


def importance_std(manifest: Manifest | None) -> dict[str, float]:
    """The spread of each feature's permutation importance over its repeats."""
    recorded = (manifest.importance if manifest is not None else None) or {}
    return {f["feature"]: f["std"] for f in recorded.get("features", []) if "std" in f}


def holdout_metrics(manifest: Manifest | None) -> dict[str, Any]:
    return manifest.metrics.holdout if manifest is not None else {}


def calibration_bins(manifest: Manifest) -> int:
    """The bins of the expected calibration error the version was evaluated with."""
    return int(manifest.spec.get("calibration", {}).get("bins", 10))
