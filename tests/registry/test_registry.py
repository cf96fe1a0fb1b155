"""Model registry and promotion: lineage, artifact integrity, the gate, rollback,
concurrent moves and crash safety, on real files and real processes."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from framework.errors import ConfigError
from framework.loop.promotion import PromotionRefused, promote, rollback
from framework.registry import artifact
from framework.registry import model_registry as registry_module
from framework.registry.model_registry import (
    ARTIFACT,
    SMOKE,
    ModelRef,
    ModelRegistry,
    NotFoundError,
)
from tests.support.workspaces import ROOT, Trained, make_workspace

pytestmark = pytest.mark.integration

NAME = "fraud_model"
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def register_copy(registry: ModelRegistry, pr_auc_change: float = 0.0) -> int:
    """A new version with version 1's artifact and smoke bytes (and holdout pr_auc changed)."""
    ref = ModelRef(NAME, 1)
    manifest = copy.deepcopy(registry.manifest(ref))
    manifest["metrics"]["holdout"]["pr_auc"] += pr_auc_change
    folder = registry.version_dir(ref)
    files = {ARTIFACT: (folder / ARTIFACT).read_bytes(), SMOKE: (folder / SMOKE).read_bytes()}
    return registry.register(NAME, files, manifest).version


def flip_byte(path: Path) -> bytes:
    """Flip one byte in the middle of ``path``; returns the original bytes."""
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return original


def assert_history_file_valid(registry: ModelRegistry) -> list[dict[str, Any]]:
    text = (registry.root / NAME / "history.jsonl").read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def staging_entries(registry: ModelRegistry) -> list[str]:
    return sorted(p.name for p in (registry.root / NAME / ".staging").iterdir())


def test_manifest_records_full_lineage(trained: Trained, trained_store: Any) -> None:
    from framework.features.fingerprint import fingerprint
    from framework.features.join_plan import feature_contract
    from framework.features.training_file import read_info
    from framework.features.training_set import build_training_set
    from framework.models.label_query import entity_frame, load_labels
    from framework.models.spec import load_spec

    m = trained.manifest
    registry = ModelRegistry(trained.registry_root)
    assert registry.manifest(ModelRef(NAME, trained.version)) == m
    assert (m["name"], m["version"], m["feature_service"]) == (NAME, 1, "fraud_model_v1")

    contract = feature_contract(trained_store, "fraud_model_v1")
    assert len(m["features"]) == 17
    assert {"name": "category", "dtype": "String", "view": "merchant_profile"} in m["features"]
    assert m["features"] == [
        {"name": f.name, "dtype": f.dtype, "view": f.view} for f in contract.fields
    ]
    assert m["definitions_digest"] == contract.definitions_digest

    dataset = m["dataset"]
    assert HEX64.match(dataset["fingerprint"])
    assert dataset["fingerprint"] == fingerprint(
        m["definitions_digest"], dataset["entity_digest"], dataset["sources"]
    )
    # Rebuilding the training set from the same labels and data gives the same fingerprint.
    spec = load_spec(trained.workspace.repo / "models" / "fraud_model.toml")
    labels = load_labels(spec, trained.workspace.data)
    entities, window = entity_frame(spec, labels, as_of=None, start=None, end=None)
    rebuilt = read_info(build_training_set(trained_store, spec.feature_service, entities))
    assert rebuilt.fingerprint == dataset["fingerprint"]
    assert window == m["window"]

    split = m["split"]
    periods = [split[p][k] for p in ("train", "calibration", "holdout") for k in ("start", "end")]
    stamps = [pd.Timestamp(t) for t in [m["window"]["first_event"], *periods]]
    assert stamps == sorted(stamps) and stamps[0] == stamps[1]
    assert pd.Timestamp(m["window"]["last_event"]) == stamps[-1]
    assert sum(split[p]["rows"] for p in split) == dataset["entity_rows"]

    commit = m["code"]["git_commit"]
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)
    for library in ("scikit-learn", "feast", "skops", "numpy"):
        assert m["libraries"][library] == metadata.version(library)

    path = registry.version_dir(ModelRef(NAME, 1)) / m["artifact"]["file"]
    assert m["artifact"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert m["artifact"]["bytes"] == path.stat().st_size

    profiles = m["reference"]["features"]
    assert list(profiles) == [f["name"] for f in m["features"]]
    train_rows = split["train"]["rows"]
    for f in m["features"]:
        p = profiles[f["name"]]
        assert p["count"] == train_rows and 0 <= p["null_rate"] <= 1
        present = round(train_rows * (1 - p["null_rate"]))
        if f["dtype"] == "String":
            assert p["kind"] == "categorical" and p["categories"], f["name"]
            assert sum(p["categories"].values()) + p["other_count"] == present
        else:
            assert p["kind"] == "numerical", f["name"]
            assert len(p["counts"]) == (len(p["edges"]) + 1 if present else 0)
            assert p["edges"] == sorted(p["edges"])
            assert sum(p["counts"]) == present, f["name"]
    assert any(p["null_rate"] > 0 for p in profiles.values())  # nulls are really counted


def test_tampered_artifact_is_refused_and_recorded(registry_copy: Any, trained_store: Any) -> None:
    registry: ModelRegistry = registry_copy
    model, _ = registry.load(ModelRef(NAME, 1))
    assert hasattr(model, "predict_proba")  # the untouched copy loads
    flip_byte(registry.version_dir(ModelRef(NAME, 1)) / ARTIFACT)

    for check in (registry.load, registry.verify):
        with pytest.raises(artifact.ArtifactError, match="checksum"):
            check(ModelRef(NAME, 1))
    with pytest.raises(PromotionRefused, match=r"artifact check failed: .*checksum") as refused:
        promote(registry, NAME, 1, store=trained_store, by="tester", reason="try")
    assert "metrics check failed" not in str(refused.value)

    (event,) = registry.history(NAME)
    summary = [event[k] for k in ("action", "to", "by", "reason")]
    assert summary == ["promote-refused", 1, "tester", "try"]
    assert {c["name"]: c["ok"] for c in event["checks"]}["artifact"] is False
    assert registry.aliases(NAME) == {}


def _untrusted_function(x: Any) -> Any:
    return x


@pytest.mark.parametrize("func", [_untrusted_function, os.system], ids=["test-func", "os.system"])
def test_untrusted_type_is_refused_even_with_matching_checksum(
    registry_copy: Any, trained_store: Any, func: Callable[..., Any]
) -> None:
    import skops.io as sio
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    registry: ModelRegistry = registry_copy
    folder = registry.version_dir(ModelRef(NAME, 1))
    blob = bytes(sio.dumps(make_pipeline(FunctionTransformer(func=func))))
    (folder / ARTIFACT).write_bytes(blob)
    manifest_path = folder / "manifest.json"
    manifest_path.chmod(0o644)
    manifest = json.loads(manifest_path.read_text())
    manifest["artifact"]["sha256"] = hashlib.sha256(blob).hexdigest()
    manifest_path.write_text(json.dumps(manifest))

    registry.verify(ModelRef(NAME, 1))  # the checksum matches: only the type check refuses
    type_name = f"{func.__module__}.{func.__name__}"
    with pytest.raises(artifact.ArtifactError, match=re.escape(type_name)) as refused:
        artifact.load(folder / ARTIFACT, manifest["artifact"]["sha256"])
    assert "does not trust" in str(refused.value)
    with pytest.raises(PromotionRefused, match=re.escape(type_name)):
        promote(registry, NAME, 1, store=trained_store)
    assert registry.aliases(NAME) == {}


@pytest.mark.slow
def test_changed_definitions_refuse_promotion(trained: Trained, tmp_path: Path) -> None:
    from framework.features.repository import apply, open_store
    from framework.models.spec import spec_from_dict
    from framework.models.training import train_model

    ws = make_workspace(tmp_path)
    shutil.copytree(trained.workspace.data, ws.data)
    shutil.rmtree(ws.data / "models")
    # A fresh Feast registry: the copied one records the original workspace's online
    # tables (absolute paths), and Feast's apply would tear those down.
    shutil.rmtree(ws.data / "feast")
    apply(ws.repo)
    spec_path = ws.repo / "models" / "fraud_model.toml"
    registry = ModelRegistry(ws.data / "models")
    raw = tomllib.loads(spec_path.read_text())
    raw["estimator"]["params"]["max_iter"] = 30  # a quicker fit: only the definitions matter
    train_model(ws.repo, spec_from_dict(raw), registry=registry, spec_path=spec_path)
    original = (ws.repo / "fraud.py").read_text()

    def promote_with(old: str, new: str) -> None:
        assert original.count(old) == 1, old
        (ws.repo / "fraud.py").write_text(original.replace(old, new))
        apply(ws.repo)
        with open_store(ws.repo) as store:
            promote(registry, NAME, 1, store=store)

    cases = [
        ("        merchant_profile,\n", "", r"merchant_profile:category is no longer in"),
        ('name="txn_count_1h", dtype=Int64', 'name="txn_count_1h", dtype=Float64',
         r"user_txn_1h:txn_count_1h is now Float64, was Int64"),
        ("ttl=timedelta(hours=1)", "ttl=timedelta(hours=2)", r"definitions behind .* changed"),
    ]  # fmt: skip
    for old, new, reason in cases:
        with pytest.raises(PromotionRefused, match=r"definitions check failed: .*" + reason) as e:
            promote_with(old, new)
        assert "artifact check failed" not in str(e.value)
        assert registry.aliases(NAME) == {}

    history = registry.history(NAME)
    assert [e["action"] for e in history] == ["promote-refused"] * len(cases)
    # The same version passes once the definitions are back as they were.
    promote_with(original, original)
    assert registry.aliases(NAME) == {"champion": 1}


def test_metrics_gate_and_forced_promotion(registry_copy: Any, trained_store: Any) -> None:
    registry: ModelRegistry = registry_copy
    worse = register_copy(registry, -0.2)
    slightly_worse = register_copy(registry, -0.005)  # within tolerance 0.01
    promote(registry, NAME, 1, store=trained_store)
    promote(registry, NAME, slightly_worse, store=trained_store)
    assert registry.aliases(NAME) == {"champion": slightly_worse}

    with pytest.raises(PromotionRefused, match=r"metrics check failed: holdout pr_auc") as e:
        promote(registry, NAME, worse, store=trained_store)
    assert re.findall(r"(\w+) check failed", str(e.value)) == ["metrics"]
    assert registry.history(NAME)[-1]["action"] == "promote-refused"

    events = len(registry.history(NAME))
    for reason in ("", "   "):
        with pytest.raises(ConfigError, match="needs a reason"):
            promote(registry, NAME, worse, store=trained_store, force=True, reason=reason)
    assert len(registry.history(NAME)) == events
    assert registry.aliases(NAME) == {"champion": slightly_worse}

    move = promote(registry, NAME, worse, store=trained_store, force=True, reason="incident 42")
    assert (move.previous, move.version) == (slightly_worse, worse)
    event = registry.history(NAME)[-1]
    assert (event["action"], event["forced"], event["reason"]) == ("promote", True, "incident 42")
    metrics_check = next(c for c in event["checks"] if c["name"] == "metrics")
    assert metrics_check["ok"] and "by force: incident 42" in metrics_check["detail"]
    assert registry.aliases(NAME) == {"champion": worse}


def test_rollback_restores_previous_version(registry_copy: Any, trained_store: Any) -> None:
    registry: ModelRegistry = registry_copy
    v2, v3 = register_copy(registry), register_copy(registry)
    with pytest.raises(ConfigError, match="no earlier version .*unset"):
        rollback(registry, NAME)
    for version, by in ((1, "alice"), (v2, "bob"), (v3, "dave")):
        promote(registry, NAME, version, store=trained_store, by=by, reason=f"ship {version}")

    # A rollback target whose artifact no longer matches its checksum is not returned to.
    original = flip_byte(registry.version_dir(ModelRef(NAME, v2)) / ARTIFACT)
    with pytest.raises(artifact.ArtifactError, match="checksum"):
        rollback(registry, NAME)
    (registry.version_dir(ModelRef(NAME, v2)) / ARTIFACT).write_bytes(original)
    assert registry.aliases(NAME) == {"champion": v3}

    for current, previous in ((v3, v2), (v2, 1)):  # one move back at a time
        move = rollback(registry, NAME, by="carol", reason="regression")
        assert (move.previous, move.version) == (current, previous)
        assert registry.aliases(NAME) == {"champion": previous}
    assert registry.resolve(NAME) == ModelRef(NAME, 1)
    with pytest.raises(ConfigError, match="no earlier version .*points to version 1 only"):
        rollback(registry, NAME)
    keys = ("action", "from", "to", "by", "reason")
    assert [tuple(e[k] for k in keys) for e in registry.history(NAME)] == [
        ("promote", None, 1, "alice", "ship 1"),
        ("promote", 1, v2, "bob", f"ship {v2}"),
        ("promote", v2, v3, "dave", f"ship {v3}"),
        ("rollback", v3, v2, "carol", "regression"),
        ("rollback", v2, 1, "carol", "regression"),
    ]


PROMOTER = """
import json, os, sys, time
from pathlib import Path
from framework.errors import ConfigError
from framework.loop.promotion import PromotionRefused, promote, rollback
from framework.registry.model_registry import ModelRegistry
from framework.features.repository import open_store
gate, registry = Path(sys.argv[1]), ModelRegistry(Path(sys.argv[2]))
results = []
with open_store(Path(sys.argv[3])) as store:
    (gate / f"ready-{os.getpid()}").touch()
    while not (gate / "go").exists():
        time.sleep(0.005)
    for op in json.loads(sys.argv[4]):
        try:
            if op:
                m = promote(registry, "fraud_model", op, store=store, by="w", reason="r")
            else:
                m = rollback(registry, "fraud_model", by="w", reason="r")
            results.append({"ok": True, "move": [m.action, m.previous, m.version]})
        except (ConfigError, PromotionRefused) as exc:
            results.append({"ok": False, "error": type(exc).__name__, "message": str(exc)})
print(json.dumps(results))
"""


@pytest.mark.slow
def test_concurrent_promotions_leave_a_valid_history(
    registry_copy: Any, trained: Trained, tmp_path: Path
) -> None:
    registry: ModelRegistry = registry_copy
    for _ in range(3):
        register_copy(registry)
    plans = [[i % 4 + 1, 0, (i + 1) % 4 + 1] for i in range(6)]
    gate = tmp_path / "gate"
    gate.mkdir()
    args = (str(gate), str(registry.root), str(trained.workspace.repo))
    procs = [spawn(PROMOTER, *args, json.dumps(plan)) for plan in plans]
    deadline = time.monotonic() + 300  # a safety net, not an assertion on time
    while len(list(gate.glob("ready-*"))) < len(procs):  # release them together
        dead = [p.communicate()[1] for p in procs if p.poll() is not None]
        assert not dead and time.monotonic() < deadline, dead
        time.sleep(0.05)
    (gate / "go").touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        results += json.loads(out.strip().splitlines()[-1])
    assert len(results) == 6 * 3

    for r in results:
        if not r["ok"]:  # a legitimate conflict, never a refusal or a crash
            assert r["error"] == "ConfigError", r
            assert "already points" in r["message"] or "no earlier version" in r["message"], r
    events = assert_history_file_valid(registry)
    assert events == registry.history(NAME)
    done = [e for e in events if e["action"] in ("promote", "rollback")]
    ok = [tuple(r["move"]) for r in results if r["ok"]]
    assert len(ok) == len(done) == len(events)  # no refusals: the copies all pass the gate
    assert Counter(ok) == Counter((e["action"], e["from"], e["to"]) for e in done)
    assert any(e["action"] == "rollback" for e in done)

    stack: list[int] = []  # replay: every move starts where the previous one left off
    for e in done:
        assert e["from"] == (stack[-1] if stack else None), e
        if e["action"] == "promote":
            stack.append(e["to"])
        else:
            assert len(stack) >= 2 and e["to"] == stack[-2], e
            stack.pop()
    assert registry.aliases(NAME) == {"champion": stack[-1]}
    registry.verify(ModelRef(NAME, stack[-1]))


def test_failed_register_leaves_no_version(
    registry_copy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry: ModelRegistry = registry_copy
    manifest = registry.manifest(ModelRef(NAME, 1))
    with pytest.raises(TypeError):
        registry.register(NAME, {ARTIFACT: b"model", SMOKE: None}, manifest)  # type: ignore[dict-item]

    def broken_rename(*args: Any) -> None:
        raise OSError("disk on fire")

    with monkeypatch.context() as patch:
        patch.setattr(registry_module.os, "rename", broken_rename)
        with pytest.raises(OSError, match="disk on fire"):
            register_copy(registry)
    assert registry.versions(NAME) == [1]
    assert staging_entries(registry) == []
    assert register_copy(registry) == 2  # the failed attempts used no version number
    registry.verify(ModelRef(NAME, 2))


WRITER = """
import hashlib, sys
from pathlib import Path
from framework.registry.model_registry import ModelRef, ModelRegistry
registry = ModelRegistry(Path(sys.argv[1]))
v1 = ModelRef("fraud_model", 1)
base = registry.manifest(v1)
smoke = (registry.version_dir(v1) / "smoke.parquet").read_bytes()
payload = bytearray(int(sys.argv[2]))
print("ready", flush=True)
for i in range(1, 10**6):
    payload[:8] = i.to_bytes(8, "big")
    blob = bytes(payload)
    art = {**base["artifact"], "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    files = {"model.skops": blob, "smoke.parquet": smoke}
    ref = registry.register("fraud_model", files, {**base, "artifact": art})
    with registry.lock("fraud_model"):
        registry.append_event("fraud_model", {"action": "note", "version": ref.version})
"""


@pytest.mark.slow
def test_killed_writer_leaves_whole_versions_only(registry_copy: Any) -> None:
    registry: ModelRegistry = registry_copy
    pids = []
    try:
        for delay in (0.05, 0.2, 0.5, 1.0):
            proc = spawn(WRITER, str(registry.root), str(50 << 20))
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            time.sleep(delay)
            proc.kill()
            proc.communicate()
            assert proc.returncode == -9
            pids.append(proc.pid)
            # A staging folder of the dead writer, whether or not the kill left one.
            (registry.root / NAME / ".staging" / f"{proc.pid}-planted").mkdir(exist_ok=True)

        versions = registry.versions(NAME)
        folders = sorted((registry.root / NAME / "versions").iterdir(), key=lambda p: p.name)
        assert sorted(p.name for p in folders) == sorted(map(str, versions))
        assert versions == list(range(1, len(versions) + 1))
        for v in versions:
            assert registry.verify(ModelRef(NAME, v))["version"] == v
        notes = registry.history(NAME)
        assert {e["version"] for e in notes} <= set(versions)

        new = register_copy(registry)  # the next write removes the dead writers' staging
        assert new == len(versions) + 1
        left = staging_entries(registry)
        assert not [s for s in left if int(s.split("-")[0]) in pids], left
        with registry.lock(NAME):
            registry.append_event(NAME, {"action": "note", "version": new})
        assert assert_history_file_valid(registry)[-1]["version"] == new
    finally:
        shutil.rmtree(registry.root, ignore_errors=True)  # gigabytes at most; free them now


def test_history_line_cut_short_is_ignored_then_truncated(
    registry_copy: Any, trained_store: Any
) -> None:
    registry: ModelRegistry = registry_copy
    promote(registry, NAME, 1, store=trained_store)
    path = registry.root / NAME / "history.jsonl"
    with path.open("a") as f:
        f.write('{"action": "rollback", "alias": "champion", "reason": "' + "x" * 500)
    assert [e["action"] for e in registry.history(NAME)] == ["promote"]
    assert registry.aliases(NAME) == {"champion": 1}

    with registry.lock(NAME):
        registry.append_event(NAME, {"action": "note"})
    events = assert_history_file_valid(registry)
    assert [e["action"] for e in events] == ["promote", "note"]


def test_resolve_addresses(registry_copy: Any, trained_store: Any) -> None:
    registry: ModelRegistry = registry_copy
    with pytest.raises(
        NotFoundError, match=r"'fraud_model' has no alias 'champion' \(aliases: none"
    ):
        registry.resolve(f"{NAME}@champion")
    second = register_copy(registry)
    assert registry.resolve(NAME) == ModelRef(NAME, second)  # no champion: the latest
    promote(registry, NAME, 1, store=trained_store)
    assert registry.resolve(NAME) == ModelRef(NAME, 1)  # the champion, not the latest
    assert registry.resolve(f"{NAME}@champion") == ModelRef(NAME, 1)
    assert registry.resolve(f"{NAME}:{second}") == ModelRef(NAME, second)
    missing = {
        f"{NAME}@challenger": r"'fraud_model' has no alias 'challenger' \(aliases: @champion\)",
        f"{NAME}:7": r"'fraud_model' has no version 7 \(has: 1, 2\)",
        "ghost": r"No model 'ghost'",
        "ghost@champion": r"No model 'ghost'",
        "ghost:1": r"'ghost' has no version 1 \(has: none\)",
    }
    for address, message in missing.items():
        with pytest.raises(NotFoundError, match=message):
            registry.resolve(address)


@pytest.mark.parametrize(
    "address",
    ["", "9lives", "fraud model", "../fraud_model", "a/b:1", "x" * 65, "é@champion"]
    + [f"{NAME}:one", f"{NAME}:-1", f"{NAME}:1.0"],
)
def test_resolve_rejects_bad_addresses(registry_copy: Any, address: str) -> None:
    with pytest.raises(ConfigError) as e:
        registry_copy.resolve(address)
    assert e.type is ConfigError  # a malformed address, not a missing model
    assert re.search("Model names start with a letter|A model version is a number", str(e.value))


@pytest.mark.parametrize("address", [f"{NAME}\n", f"{NAME}:²", f"{NAME}@champion\n"])
def test_resolve_rejects_newline_and_non_ascii_digits(registry_copy: Any, address: str) -> None:
    name, _, alias = address.partition("@")
    with pytest.raises(ConfigError) as e:
        registry_copy.check_alias(alias) if alias else registry_copy.resolve(name)
    assert e.type is ConfigError
