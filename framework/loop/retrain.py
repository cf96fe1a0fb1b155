"""``parity retrain``: a challenger trained on fresh labels must prove itself first.

:func:`retrain` runs when its trigger holds — ``schedule`` (always), ``drift``
(``parity monitor`` raises a drift alert for the champion in the window) or
``quality`` (a live-quality drop alert from the outcomes ``parity feedback``
joined) — and then:

1. trains a challenger with the same spec over a fresh window (labels known by
   ``as_of``, the spec's or ``lookback_days``' window), registered as a new version;
2. scores the champion and the challenger on the **same** rows: the challenger's
   holdout, the most recent period, which the challenger never trained on (the
   time split puts every training and calibration row before it);
3. gates like a release process, in the spirit of TFX's model blessing: every
   absolute threshold (``retrain.absolute``), better than the base-rate
   baseline on the gate metric, and every change threshold against the champion
   (``retrain.change``; by default the gate metric may not be worse by more than
   the gate tolerance);
4. records the decision and its numbers in the model's history (action
   ``retrain``), and on a pass moves ``@challenger`` to the new version (a server
   with ``--shadow-alias challenger`` or ``--canary-share`` then scores traffic with
   it) — or straight to ``@champion`` with ``promote``.

:func:`promote_after` finishes a staged rollout: once the challenger has at least
N logged predictions (shadow or canary) without an operational alert (fallback,
review or latency), it becomes the champion. A running server follows the alias
within a second; ``parity models rollback`` undoes it as fast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from framework.errors import ConfigError, DataError
from framework.loop.promotion import Check, promote
from framework.models import evaluation
from framework.models.estimator import feature_frame, score
from framework.models.manifest import Manifest
from framework.models.spec import HIGHER_IS_BETTER, ModelSpec
from framework.registry.model_registry import ModelRef, ModelRegistry, default_actor

if TYPE_CHECKING:
    from framework.models.training import TrainResult

TRIGGERS = ("schedule", "drift", "quality")
_DRIFT_ALERTS = {"dataset_drift", "feature_drift", "prediction_drift", "confidence_drift"}
_OPERATIONAL_ALERTS = {"fallback_rate", "review_rate", "latency_p99", "missing_features"}


@dataclass
class RetrainResult:
    """What a run decided, with the numbers behind it (JSON-ready via :meth:`to_dict`)."""

    status: str  # not-triggered | challenger | promoted | refused | waiting | nothing
    message: str
    trigger: dict[str, Any] = field(default_factory=dict)
    champion: int | None = None
    challenger: int | None = None
    holdout: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status in ("challenger", "promoted")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_trigger(
    reason: str,
    log_root: Path,
    registry: ModelRegistry,
    model: str,
    *,
    outcomes_root: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    request_id_prefix: str | None = None,
) -> dict[str, Any]:
    """Whether ``reason`` holds now: ``{"reason", "fired", "why", "alerts"}``."""
    if reason not in TRIGGERS:
        raise ConfigError(f"--reason must be one of {', '.join(TRIGGERS)}. Got {reason!r}.")
    if reason == "schedule":
        return {"reason": reason, "fired": True, "why": "scheduled run", "alerts": []}
    from framework.monitoring.summary import monitor_summary

    champion = registry.aliases(model).get("champion")
    summary = monitor_summary(
        log_root, registry, model, since=since, until=until,
        request_id_prefix=request_id_prefix,
        outcomes_root=outcomes_root if reason == "quality" else None,
    )  # fmt: skip
    wanted = _DRIFT_ALERTS if reason == "drift" else {"quality_drop"}
    alerts = [
        a for a in summary.alerts
        if a.name in wanted and (champion is None or a.version == str(champion))
    ]  # fmt: skip
    why = "; ".join(f"{a.name}: {a.message}" for a in alerts[:5])
    return {
        "reason": reason,
        "fired": bool(alerts),
        "why": why or f"no {reason} alert for the champion ({summary.status})",
        "alerts": [a.name for a in alerts],
    }


def _metrics(spec: ModelSpec, model: Any, frame: Any, y: np.ndarray) -> dict[str, Any]:
    scores = score(model, frame, spec.task, spec.serving.threshold)
    return evaluation.metrics(spec.task, y, scores, spec.serving, spec.calibration.bins)


def _labels(holdout: pa.Table, spec: ModelSpec) -> np.ndarray:
    values = np.asarray(holdout.column(spec.labels.column).to_pylist(), dtype=np.float64)
    return values.astype(np.int64) if spec.task.value == "classification" else values


def _champion_frame(store: Any, manifest: Manifest, holdout: pa.Table) -> Any:
    """The champion's features for the holdout rows: from the table when it pins the same
    features, else joined point-in-time from its own feature service."""
    fields = manifest.fields
    if not all(f.name in holdout.column_names for f in fields):
        from framework.features.training_set import build_training_set

        request = [c for c in manifest.request_data if c in holdout.column_names]
        keep = [*manifest.join_keys, "event_timestamp", *request]
        holdout = build_training_set(store, manifest.feature_service, holdout.select(keep))
    return feature_frame(holdout, fields)


def gate_checks(
    spec: ModelSpec,
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    baseline: dict[str, Any],
    *,
    absolute: dict[str, float] | None = None,
    change: dict[str, float] | None = None,
) -> list[Check]:
    """Every threshold the challenger must clear (see the module docstring)."""
    checks = []
    metric = spec.gate.metric
    for name, bound in {**spec.retrain.absolute, **(absolute or {})}.items():
        value = challenger.get(name)
        higher = name in HIGHER_IS_BETTER
        ok = value is not None and (value >= bound if higher else value <= bound)
        checks.append(Check(f"absolute {name}", ok, f"{_f(value)} {'>=' if higher else '<='} "
                                                    f"{bound:g} required"))  # fmt: skip
    mine, base = challenger.get(metric), baseline.get(metric)
    higher = metric in HIGHER_IS_BETTER
    ok = mine is not None and base is not None and (mine > base if higher else mine < base)
    checks.append(Check(f"baseline {metric}", ok, f"{_f(mine)} vs {_f(base)} for the training "
                                                  "base rate"))  # fmt: skip
    if champion is None:
        checks.append(Check("change", True, "no champion to compare with"))
        return checks
    least = {**(spec.retrain.change or {metric: -spec.gate.tolerance}), **(change or {})}
    for name, need in least.items():
        a, b = challenger.get(name), champion.get(name)
        if a is None or b is None:
            checks.append(Check(f"change {name}", False, f"{name} missing on one side"))
            continue
        gain = (a - b) if name in HIGHER_IS_BETTER else (b - a)
        checks.append(
            Check(f"change {name}", gain >= need, f"challenger {a:.4f} vs champion {b:.4f} on "
                  f"the same rows: improvement {gain:+.4f}, at least {need:+g} required")
        )  # fmt: skip
    return checks


def _f(value: Any) -> str:
    return "missing" if value is None else f"{value:.4f}"


def retrain(
    repo: Path,
    spec: ModelSpec,
    *,
    store: Any,
    registry: ModelRegistry,
    trigger: dict[str, Any],
    spec_path: Path | None = None,
    as_of: datetime | None = None,
    promote_now: bool = False,
    absolute: dict[str, float] | None = None,
    change: dict[str, float] | None = None,
    by: str | None = None,
) -> RetrainResult:
    """Train a challenger, gate it against the champion on the same rows, record and act."""
    from framework.models.training import train_model

    name = spec.name
    if not trigger.get("fired"):
        return RetrainResult("not-triggered", trigger["why"], trigger=trigger)
    champion_version = registry.aliases(name).get("champion") if name in registry.names() else None
    start = None
    if spec.retrain.lookback_days and as_of is not None:
        from datetime import timedelta

        start = as_of - timedelta(days=spec.retrain.lookback_days)
    trained = train_model(repo, spec, store=store, registry=registry, spec_path=spec_path,
                          as_of=as_of, start=start, by=by)  # fmt: skip
    holdout = trained.holdout
    if holdout is None or holdout.num_rows == 0:
        raise DataError("The challenger's holdout is empty; nothing to compare on.")
    metrics = _compare_on_holdout(spec, store, registry, trained, champion_version)
    checks = gate_checks(spec, metrics["challenger"], metrics.get("champion"),
                         metrics["baseline"], absolute=absolute, change=change)  # fmt: skip
    passed = all(c.ok for c in checks)
    split = trained.manifest.split
    result = RetrainResult(
        status="challenger" if passed else "refused",
        message="",
        trigger=trigger,
        champion=champion_version,
        challenger=trained.ref.version,
        holdout={
            "rows": holdout.num_rows,
            **split["holdout"],
            "train_end": split["train"]["end"],
        },  # fmt: skip
        metrics=metrics,
        checks=[asdict(c) for c in checks],
    )
    _record(registry, result, trained.ref, trigger, by)
    if not passed:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok)
        result.message = f"{trained.ref} refused: {failed}"
        return result
    _promote(registry, store, result, trained.ref, trigger, checks, promote_now, by)
    return result


def _compare_on_holdout(
    spec: ModelSpec,
    store: Any,
    registry: ModelRegistry,
    trained: TrainResult,
    champion_version: int | None,
) -> dict[str, dict[str, Any]]:
    """The challenger's, the baseline's and (if there is one) the champion's metrics on
    the challenger's holdout rows: the same rows for all three."""
    holdout = trained.holdout
    assert holdout is not None  # checked by the caller
    y = _labels(holdout, spec)
    challenger_model, _ = Manifest.load(registry, trained.ref)
    frame = feature_frame(holdout, trained.manifest.fields)
    metrics = {"challenger": _metrics(spec, challenger_model, frame, y)}
    label_rate = trained.manifest.reference.label_rate
    rate = float(np.mean(y) if label_rate is None else label_rate)
    base_scores = evaluation.baseline_scores(spec.task, np.array([rate]), len(y),
                                             spec.serving.threshold)  # fmt: skip
    metrics["baseline"] = evaluation.metrics(spec.task, y, base_scores, spec.serving,
                                             spec.calibration.bins)  # fmt: skip
    if champion_version is not None:
        ref = ModelRef(spec.name, champion_version)
        champion_model, champion_manifest = Manifest.load(registry, ref)
        frame = _champion_frame(store, champion_manifest, holdout)
        metrics["champion"] = _metrics(spec, champion_model, frame, y)
    return metrics


def _record(
    registry: ModelRegistry,
    result: RetrainResult,
    challenger: ModelRef,
    trigger: dict[str, Any],
    by: str | None,
) -> None:
    """The retraining and its verdict, in the model's history."""
    passed = result.status != "refused"
    with registry.lock(challenger.name):
        registry.append_event(challenger.name, {
            "action": "retrain", "alias": "challenger", "from": result.champion,
            "to": challenger.version, "by": by or default_actor(),
            "reason": f"{trigger['reason']}: {trigger['why']}", "verdict":
            "passed" if passed else "refused", "holdout": result.holdout,
            "metrics": {k: _summary(v) for k, v in result.metrics.items()},
            "checks": result.checks,
        })  # fmt: skip


def _promote(
    registry: ModelRegistry,
    store: Any,
    result: RetrainResult,
    challenger: ModelRef,
    trigger: dict[str, Any],
    checks: list[Check],
    promote_now: bool,
    by: str | None,
) -> None:
    """A challenger that passed becomes @challenger, and the champion when asked."""
    name, version = challenger.name, challenger.version
    evidence = Check("metrics", True, "parity retrain: " + "; ".join(c.detail for c in checks))
    reason = f"retrain ({trigger['reason']}): passed the gate on the same holdout"
    if registry.aliases(name).get("challenger") != version:
        promote(registry, name, version, store=store, alias="challenger", by=by,
                reason=reason, compared=evidence)  # fmt: skip
    if promote_now:
        promote(registry, name, version, store=store, by=by, reason=reason,
                compared=evidence)  # fmt: skip
        result.status = "promoted"
        result.message = f"{challenger} passed the gate and is the champion now"
    else:
        result.message = f"{challenger} passed the gate and is @challenger"


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "mae", "rmse", "r2")
    return {k: m[k] for k in keys if k in m}


def promote_after(
    registry: ModelRegistry,
    store: Any,
    log_root: Path,
    name: str,
    predictions: int,
    *,
    by: str | None = None,
) -> RetrainResult:
    """Promote ``@challenger`` once it has ``predictions`` logged predictions (shadow or
    canary) and no operational alert; else say how far it is."""
    from framework.monitoring.summary import monitor_summary

    aliases = registry.aliases(name)
    challenger, champion = aliases.get("challenger"), aliases.get("champion")
    if challenger is None or challenger == champion:
        return RetrainResult("nothing", f"{name} has no challenger apart from the champion",
                             champion=champion, challenger=challenger)  # fmt: skip
    passed = [e for e in registry.history(name)
              if e.get("action") == "retrain" and e.get("to") == challenger
              and e.get("verdict") == "passed"]  # fmt: skip
    if not passed:
        raise ConfigError(f"{name}:{challenger} did not pass parity retrain's gate.")
    summary = monitor_summary(log_root, registry, name)
    mine = summary.version(str(challenger))
    seen = mine.operations.rows if mine else 0
    result = RetrainResult("waiting", "", champion=champion, challenger=challenger,
                           metrics=passed[-1].get("metrics", {}))  # fmt: skip
    if seen < predictions:
        result.message = f"{name}:{challenger} has {seen:,} of {predictions:,} predictions logged"
        return result
    alerts = [a for a in summary.alerts
              if a.version == str(challenger) and a.name in _OPERATIONAL_ALERTS]  # fmt: skip
    detail = "; ".join(a.message for a in alerts) or (
        f"{seen:,} predictions without an operational alert"
    )
    result.checks = [asdict(Check("operations", not alerts, detail))]
    if alerts:
        result.status = "refused"
        result.message = f"{name}:{challenger} refused: {result.checks[0]['detail']}"
        return result
    evidence = Check("metrics", True, "parity retrain: " + "; ".join(
        c["detail"] for c in passed[-1].get("checks", [])))  # fmt: skip
    promote(registry, name, challenger, store=store, by=by, compared=evidence,
            reason=f"challenger served {seen:,} predictions without an alert")  # fmt: skip
    result.status = "promoted"
    result.message = f"{name}:{challenger} is the champion now ({seen:,} predictions observed)"
    return result
