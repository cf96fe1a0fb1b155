"""What monitoring reads from a logged model version's manifest, in one place.

The log names versions; their manifests (from :mod:`framework.registry`) hold
what monitoring compares the log with: the reference statistics, the task, the
join keys and features, the holdout metrics. Every read of a manifest field by
monitoring, skew and feedback goes through a function here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from framework.registry.model_registry import ModelRef, ModelRegistry, NotFoundError


def version_manifest(registry: ModelRegistry, model: str, version: str) -> dict[str, Any]:
    """The manifest of a logged version; empty when the registry does not hold it (then
    the summary has operations only, no reference)."""
    try:
        return registry.manifest(ModelRef(model, int(version)))
    except (NotFoundError, ValueError):
        return {}


def key_types_of(manifest: Mapping[str, Any]) -> dict[str, str]:
    """A model version's join keys with their Feast value type names (versions trained
    before keys were typed had INT64 keys only)."""
    typed = manifest.get("join_key_types") or {}
    return {k: str(typed.get(k, "INT64")) for k in manifest["join_keys"]}


def feature_names(manifest: Mapping[str, Any]) -> list[str]:
    return [f["name"] for f in manifest.get("features", [])]


def request_fields(manifest: Mapping[str, Any]) -> list[str]:
    return list(manifest.get("request_data", {}))


def has_confidence(manifest: Mapping[str, Any]) -> bool:
    """Whether the version's predictions carry a confidence (by its task, not the log)."""
    return manifest.get("task") != "regression"


def reference(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    """The reference statistics recorded at training (empty: none)."""
    return manifest.get("reference") or {}


def importance(manifest: Mapping[str, Any]) -> dict[str, float]:
    """Each feature's permutation importance recorded at training."""
    recorded = manifest.get("importance") or {}
    return {f["feature"]: f["mean"] for f in recorded.get("features", [])}


def holdout_metrics(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    return (manifest.get("metrics") or {}).get("holdout") or {}
