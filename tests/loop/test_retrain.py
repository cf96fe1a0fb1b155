"""Gated retraining: champion and challenger scored on the same most recent holdout, a better
challenger staged (or promoted), a worse one refused with its numbers recorded, no training
row after the holdout starts, triggers from monitoring, and a staged challenger promoted
after it served enough shadow predictions through a running server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framework.loop.promotion import promote
from framework.loop.retrain import check_trigger, promote_after, retrain
from framework.models.spec import spec_from_dict
from framework.models.training import train_model
from framework.registry.model_registry import ModelRegistry
from tests.support.specs import spec_dict
from tests.support.workspaces import Served, Trained

WEAK = {"class": "sklearn.ensemble.HistGradientBoostingClassifier",
        "params": {"max_iter": 2, "learning_rate": 0.01, "max_leaf_nodes": 2}}  # fmt: skip
FIRE = {"reason": "schedule", "fired": True, "why": "test", "alerts": []}


def _registry_with_champion(trained: Trained, tmp_path: Path, store: Any, weak: bool) -> Any:
    """A fresh registry whose champion is the shipped spec's model, or a weak one."""
    registry = ModelRegistry(tmp_path / "models")
    spec = spec_from_dict(spec_dict(estimator=WEAK) if weak else spec_dict())
    ref = train_model(trained.workspace.repo, spec, store=store, registry=registry).ref
    promote(registry, "fraud_model", ref.version, store=store, reason="test champion")
    return registry


def test_a_better_challenger_is_staged_then_promoted(
    trained: Trained, trained_store: Any, tmp_path: Path
) -> None:
    registry = _registry_with_champion(trained, tmp_path, trained_store, weak=True)
    spec = spec_from_dict(spec_dict())
    result = retrain(trained.workspace.repo, spec, store=trained_store, registry=registry,
                     trigger=FIRE)  # fmt: skip
    assert result.status == "challenger", result.message
    m = result.metrics
    assert m["challenger"]["pr_auc"] > m["champion"]["pr_auc"]  # on the same rows
    assert m["challenger"]["roc_auc"] > m["baseline"]["roc_auc"]
    aliases = registry.aliases("fraud_model")
    assert aliases["challenger"] == result.challenger and aliases["champion"] == result.champion
    # The decision is in the history with its numbers.
    event = [e for e in registry.history("fraud_model") if e["action"] == "retrain"][-1]
    assert event["verdict"] == "passed" and event["to"] == result.challenger
    assert event["metrics"]["champion"]["pr_auc"] == pytest.approx(m["champion"]["pr_auc"])
    # No leakage: every training and calibration row precedes the holdout.
    split = registry.manifest(registry.resolve(f"fraud_model:{result.challenger}"))["split"]
    assert split["train"]["end"] < split["holdout"]["start"]
    assert split["calibration"]["end"] < split["holdout"]["start"]
    assert result.holdout["rows"] == split["holdout"]["rows"]
    # Promote at once next time: a second challenger takes both aliases.
    again = retrain(trained.workspace.repo, spec, store=trained_store, registry=registry,
                    trigger=FIRE, promote_now=True)  # fmt: skip
    assert again.status == "promoted" and registry.aliases("fraud_model")["champion"] == (
        again.challenger
    )
    promotion = [e for e in registry.history("fraud_model") if e["action"] == "promote"][-1]
    metrics_check = next(c for c in promotion["checks"] if c["name"] == "metrics")
    assert metrics_check["detail"].startswith("parity retrain:") and not promotion["forced"]


def test_a_worse_challenger_is_refused_with_its_numbers(
    trained: Trained, trained_store: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from framework.cli import main as cli

    registry = _registry_with_champion(trained, tmp_path, trained_store, weak=False)
    before = registry.aliases("fraud_model")
    spec_path = tmp_path / "weak.toml"
    _write_toml(spec_path, spec_dict(estimator=WEAK))
    code = cli.main(["retrain", "--repo", str(trained.workspace.repo), "--registry",
                     str(registry.root), "--spec", str(spec_path), "--json"])  # fmt: skip
    assert code == 6
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "refused"
    failed = [c for c in out["checks"] if not c["ok"]]
    assert any(c["name"] == "change pr_auc" for c in failed)
    assert out["metrics"]["challenger"]["pr_auc"] < out["metrics"]["champion"]["pr_auc"]
    assert registry.aliases("fraud_model") == before  # nothing moved
    event = [e for e in registry.history("fraud_model") if e["action"] == "retrain"][-1]
    assert event["verdict"] == "refused" and event["checks"] == out["checks"]


def test_absolute_thresholds_refuse_even_without_a_champion(
    trained: Trained, trained_store: Any, tmp_path: Path
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    spec = spec_from_dict(spec_dict(retrain={"absolute": {"roc_auc": 0.99, "log_loss": 0.5}}))
    result = retrain(trained.workspace.repo, spec, store=trained_store, registry=registry,
                     trigger=FIRE)  # fmt: skip
    assert result.status == "refused" and result.champion is None
    by = {c["name"]: c for c in result.checks}
    assert not by["absolute roc_auc"]["ok"] and by["absolute log_loss"]["ok"]
    assert by["change"]["detail"] == "no champion to compare with"
    assert "challenger" not in registry.aliases("fraud_model")


def test_triggers_follow_the_monitor(tmp_path: Path) -> None:
    from tests.support.prediction_logs import MODEL, toy_manifest, toy_rows, write_log

    registry = ModelRegistry(tmp_path / "models")
    manifest = toy_manifest(np.random.default_rng(0))
    ref = registry.register(MODEL, {"model.skops": b"x"}, manifest)
    registry.append_event(MODEL, {"action": "promote", "alias": "champion", "from": None,
                                  "to": ref.version, "by": "t", "reason": "t"})  # fmt: skip
    clean = write_log(tmp_path / "clean", toy_rows(np.random.default_rng(1), 1_000))
    drifted = write_log(tmp_path / "drift", toy_rows(np.random.default_rng(2), 1_000, inflate=2.0))
    assert not check_trigger("drift", clean, registry, MODEL)["fired"]
    fired = check_trigger("drift", drifted, registry, MODEL)
    assert fired["fired"] and "feature_drift" in fired["alerts"]
    assert check_trigger("schedule", clean, registry, MODEL)["fired"]
    # Not fired: nothing is trained.
    spec = spec_from_dict(spec_dict())
    result = retrain(tmp_path, spec, store=None, registry=registry,
                     trigger=check_trigger("drift", clean, registry, MODEL))  # fmt: skip
    assert result.status == "not-triggered" and result.challenger is None


@pytest.mark.integration
@pytest.mark.slow
def test_a_challenger_promoted_after_its_shadow_predictions(served: Served, tmp_path: Path) -> None:
    from serving.grpc.client import PredictionClient
    from serving.grpc.server import start_server
    from serving.grpc.settings import ServeSettings
    from tests.support.fraud_requests import recent_rows

    root = tmp_path / "ws"
    shutil.copytree(served.workspace.root, root, ignore=shutil.ignore_patterns("predictions"))
    registry = ModelRegistry(root / "data" / "models")
    spec = spec_from_dict(spec_dict(retrain={"change": {"pr_auc": -1.0}}))  # accept anything
    staged = retrain(served.workspace.repo, spec, store=served.store, registry=registry,
                     trigger=FIRE)  # fmt: skip
    assert staged.status == "challenger"
    running = start_server(served.store, registry, root / "data",
                           ServeSettings(port=0, shadow_alias="challenger", log_flush_seconds=0.2),
                           clock=served.now.timestamp)  # fmt: skip
    try:
        log = root / "data" / "predictions"
        rows = recent_rows(served, 4)
        with PredictionClient(f"127.0.0.1:{running.port}") as client:
            for _ in range(5):
                client.predict("fraud_model", rows)
            running.predictor.close()  # the shadow scoring in flight finishes
            assert running.prediction_log.flush(30)
            waiting = promote_after(registry, served.store, log, "fraud_model", 100)
            assert waiting.status == "waiting" and "20 of 100" in waiting.message
            done = promote_after(registry, served.store, log, "fraud_model", 20)
            assert done.status == "promoted", done.message
            assert registry.aliases("fraud_model")["champion"] == staged.challenger
    finally:
        running.stop(1)


def _write_toml(path: Path, raw: dict[str, Any]) -> None:
    """A spec dict as TOML (the few shapes a spec uses)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    for k, v in raw.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            for kk, vv in v.items():
                if isinstance(vv, list) and vv and isinstance(vv[0], dict):
                    continue  # arrays of tables (serving.rules) are not needed here
                lines.append(f"{kk} = {value(vv)}")
    path.write_text("\n".join(lines) + "\n")
