"""Promotion and rollback: moving an alias, after a gate, with a recorded reason.

A version may take an alias (``champion`` by default) only when every check
passes:

``artifact``     the file matches its manifest checksum and loads (skops,
                 trusted types only);
``smoke``        it scores the stored smoke sample and reproduces the scores
                 recorded at training time;
``definitions``  its pinned feature service, features, types and definitions
                 digest still match the Feast registry;
``metrics``      its holdout metric (the spec's gate metric) is not worse than
                 the alias's current version's beyond the gate tolerance —
                 the one check ``force`` (with a reason) may override.

A refused promotion raises :class:`PromotionRefused` naming the failed checks
and is recorded in the history too. Rollback moves the alias back to the
version it pointed to before (the artifact's checksum is verified first).
Both hold the registry lock for the whole decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from framework.errors import ConfigError, ParityError
from framework.features.pinned import check_pinned
from framework.models.estimator import feature_frame, score
from framework.models.manifest import Manifest
from framework.models.spec import HIGHER_IS_BETTER, Task
from framework.registry.model_registry import ModelRef, ModelRegistry, default_actor

SMOKE_TOLERANCE = 1e-9


class PromotionRefused(ParityError):
    """The promotion gate refused a version; the message names the failed checks."""

    exit_code = 6


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class AliasMove:
    name: str
    alias: str
    previous: int | None
    version: int | None
    action: str
    checks: list[Check] = field(default_factory=list)
    event: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_artifact_and_smoke(registry: ModelRegistry, ref: ModelRef) -> list[Check]:
    try:
        model, manifest = Manifest.load(registry, ref)
    except ParityError as exc:
        return [
            Check("artifact", False, str(exc)),
            Check("smoke", False, "not run: the artifact did not load"),
        ]
    checks = [Check("artifact", True, f"sha256 {manifest.artifact.sha256[:16]}... loads")]
    try:
        if manifest.smoke is None:
            raise ValueError("the version has no smoke sample")
        table = pq.read_table(registry.version_dir(ref) / manifest.smoke.file)
        frame = feature_frame(table, manifest.fields)
        got = score(model, frame, manifest.task, manifest.serving.threshold)
        expected = table.column("expected_score").to_numpy()
        if not np.all(np.isfinite(got.score)):
            raise ValueError("non-finite scores")
        if manifest.task is Task.CLASSIFICATION and not np.all((got.score >= 0) & (got.score <= 1)):
            raise ValueError("probabilities outside [0, 1]")
        worst = float(np.max(np.abs(got.score - expected))) if len(expected) else 0.0
        if worst > SMOKE_TOLERANCE:
            raise ValueError(f"scores differ from training time by up to {worst:.3g}")
        checks.append(Check("smoke", True, f"{table.num_rows} rows reproduce their scores"))
    except Exception as exc:
        checks.append(Check("smoke", False, f"the smoke sample failed: {exc}"))
    return checks


def _check_definitions(store: Any, manifest: Manifest) -> Check:
    pinned = check_pinned(
        store, manifest.feature_service, manifest.fields, manifest.definitions_digest
    )
    return Check("definitions", pinned.ok, pinned.detail)


def _check_metrics(
    candidate: Manifest, current: Manifest | None, force_reason: str | None
) -> Check:
    metric, tolerance = candidate.gate.metric, candidate.gate.tolerance
    if current is None:
        return Check("metrics", True, "no current version to compare with")
    mine = candidate.metrics.holdout.get(metric)
    theirs = current.metrics.holdout.get(metric)
    if mine is None or theirs is None:
        return Check("metrics", False, f"holdout {metric} missing on one side; cannot compare")
    higher = metric in HIGHER_IS_BETTER
    worse_by = (theirs - mine) if higher else (mine - theirs)
    text = f"holdout {metric} {mine:.4f} vs {theirs:.4f} for {current.ref} (tolerance {tolerance})"
    if worse_by > tolerance:
        if force_reason:
            return Check("metrics", True, f"{text}: worse, promoted by force: {force_reason}")
        return Check("metrics", False, f"{text}: worse by {worse_by:.4f}")
    return Check("metrics", True, text)


def promote(
    registry: ModelRegistry,
    name: str,
    version: int,
    *,
    store: Any,
    alias: str = "champion",
    by: str | None = None,
    reason: str = "",
    force: bool = False,
    compared: Check | None = None,
) -> AliasMove:
    """Point ``name@alias`` at ``version`` if the gate passes; record the decision.

    ``compared`` replaces the ``metrics`` check with a comparison made elsewhere on
    better evidence (``parity retrain``'s: both versions scored on the same rows).
    """
    registry.check_alias(alias)
    if force and not reason.strip():
        raise ConfigError("A forced promotion needs a reason (--reason TEXT).")
    ref = registry.resolve(f"{name}:{version}")
    with registry.lock(name):
        current = registry.aliases(name).get(alias)
        if current == version:
            raise ConfigError(f"{name}@{alias} already points to version {version}.")
        manifest = Manifest.read(registry, ref)
        checks = _check_artifact_and_smoke(registry, ref)
        checks.append(_check_definitions(store, manifest))
        current_manifest = Manifest.read(registry, ModelRef(name, current)) if current else None
        checks.append(
            compared
            if compared is not None
            else _check_metrics(manifest, current_manifest, reason if force else None)
        )
        failed = [c for c in checks if not c.ok]
        event = {
            "action": "promote" if not failed else "promote-refused",
            "alias": alias,
            "from": current,
            "to": version,
            "by": by or default_actor(),
            "reason": reason,
            "forced": force,
            "checks": [asdict(c) for c in checks],
        }
        event = registry.append_event(name, event)
    if failed:
        raise PromotionRefused(
            f"Refused to promote {name}:{version} to @{alias}: "
            + "; ".join(f"{c.name} check failed: {c.detail}" for c in failed)
        )
    return AliasMove(name, alias, current, version, "promote", checks, event)


def rollback(
    registry: ModelRegistry,
    name: str,
    *,
    alias: str = "champion",
    by: str | None = None,
    reason: str = "",
) -> AliasMove:
    """Point ``name@alias`` back at the version it pointed to before the last move."""
    registry.check_alias(alias)
    registry.resolve(name)  # the model exists
    with registry.lock(name):
        stack = registry.alias_stacks(name).get(alias, [])
        if len(stack) < 2:
            raise ConfigError(
                f"{name}@{alias} has no earlier version to roll back to"
                + (f" (it points to version {stack[-1]} only)." if stack else " (it is unset).")
            )
        current, target = stack[-1], stack[-2]
        registry.verify(ModelRef(name, target))
        event = registry.append_event(
            name,
            {
                "action": "rollback",
                "alias": alias,
                "from": current,
                "to": target,
                "by": by or default_actor(),
                "reason": reason,
            },
        )
    return AliasMove(name, alias, current, target, "rollback", [], event)
