"""Confidence routing, input checks, rules, the review queue, and fallbacks when the
online store goes away (a real redis-server, stopped mid-traffic and restarted)."""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from framework.logs.review_queue import ReviewQueue
from framework.registry.model_registry import ModelRef
from serving.dataplane.routing import ACCEPT, REVIEW, VALIDATE, Router
from tests.support.model_versions import register_copy
from tests.support.services import free_port, start_redis
from tests.support.workspaces import Served

SERVING = {"threshold": 0.5, "accept": 0.85, "review_below": 0.60}
REFERENCE = {
    "amount": {"kind": "numerical", "min": 1.0, "max": 101.0, "null_rate": 0.0},
    "txn_count_1h": {"kind": "numerical", "min": 0.0, "max": 10.0, "null_rate": 0.4},
    "category": {"kind": "categorical", "categories": {"grocery": 5}, "other_count": 0,
                 "null_rate": 0.0},
    "country": {"kind": "categorical", "categories": {"GB": 5}, "other_count": 0,
                "null_rate": 0.0},
}  # fmt: skip
ROW = {"amount": 50.0, "txn_count_1h": 1, "category": "grocery", "country": "GB"}


def router(**serving: Any) -> Router:
    """The router of a manifest with these serving settings and ``REFERENCE`` (the rest of
    the manifest plays no part in routing)."""
    from framework.models.manifest import Manifest, Reference
    from framework.models.spec import ServingSpec

    manifest = Manifest.model_construct(
        serving=ServingSpec.model_validate({**SERVING, **serving}),
        reference=Reference(features=REFERENCE),
    )
    return Router.from_manifest(manifest)


@pytest.mark.parametrize(
    ("confidence", "decision"),
    [(1.0, ACCEPT), (0.85, ACCEPT), (0.8499, VALIDATE), (0.60, VALIDATE), (0.5999, REVIEW)],
)
def test_confidence_boundaries(confidence: float, decision: str) -> None:
    got, reasons, issues = router().decide(confidence, ROW, {})
    assert got == decision
    assert reasons[0].startswith(f"confidence {confidence:.3f}")
    assert issues == []


@pytest.mark.parametrize(
    ("change", "kind", "reason"),
    [
        ({"amount": 112.0}, "out_of_range", "amount=112 is outside the training range"),
        ({"amount": -9.5}, "out_of_range", "outside"),
        ({"category": "crypto_exchange"}, "unseen_category", "never appeared in training"),
        ({"country": None}, "unexpected_missing", "missing in under 1% of training"),
    ],
)
def test_input_checks_cap_the_decision(change: dict[str, Any], kind: str, reason: str) -> None:
    row = {**ROW, **change}
    status = {k: "NOT_FOUND" for k, v in change.items() if v is None}
    decision, reasons, issues = router().decide(0.99, row, status)
    assert decision == VALIDATE
    assert [i.kind for i in issues] == [kind]
    assert any(reason in r for r in reasons)
    stricter, _, _ = router(**{f"cap_on_{kind}": "REVIEW"}).decide(0.99, row, status)
    assert stricter == REVIEW
    off, _, _ = router(**{f"cap_on_{kind}": "none"}).decide(0.99, row, status)
    assert off == ACCEPT


def test_inside_the_margin_and_usual_nulls_pass() -> None:
    row = {**ROW, "amount": 110.0, "txn_count_1h": None}  # within 10% of the span; often null
    decision, _, issues = router().decide(0.99, row, {"txn_count_1h": "OUTSIDE_MAX_AGE"})
    assert (decision, issues) == (ACCEPT, [])


def test_rules_run_on_validate_only() -> None:
    rules = [
        {"name": "big_abroad", "when": "amount > 90 and country != 'FR'", "decision": "REVIEW"},
    ]
    r = router(rules=rules)
    decision, reasons, _ = r.decide(0.7, {**ROW, "amount": 95.0}, {})
    assert decision == REVIEW and "rule big_abroad holds" in reasons[-1]
    decision, reasons, _ = r.decide(0.7, ROW, {})
    assert decision == VALIDATE and reasons[-1] == "rules passed: big_abroad"
    decision, _, _ = r.decide(0.95, {**ROW, "amount": 95.0}, {})
    assert decision == ACCEPT  # rules are for VALIDATE predictions
    broken = router(rules=[{"name": "typo", "when": "amuont > 1", "decision": "REVIEW"}])
    decision, reasons, _ = broken.decide(0.7, ROW, {})
    assert decision == REVIEW and "could not run" in reasons[-1]


def test_review_queue_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "review" / "queue.db"
    queue = ReviewQueue(path)
    item = {"request_id": "r1", "row_index": 0, "model": "m", "version": "1", "score": 0.4,
            "confidence": 0.6, "reasons": ["x"], "entity_keys": {"user_id": 1},
            "features": {}}  # fmt: skip
    assert queue.add([item, {**item, "row_index": 1}]) == 2
    assert queue.add([item]) == 0  # the same prediction is queued once
    queue.close()
    reopened = ReviewQueue(path)
    assert reopened.depth() == 2
    first = reopened.list()[0]
    assert (first.request_id, first.entity_keys) == ("r1", {"user_id": 1})
    done = reopened.resolve(first.id, label="1", by="alice", note="chargeback")
    assert (done.status, done.label, done.resolved_by) == ("resolved", "1", "alice")
    assert reopened.depth() == 1
    with pytest.raises(Exception, match="already resolved"):
        reopened.resolve(first.id, label="0", by="bob")
    with pytest.raises(Exception, match="No review item 99"):
        reopened.resolve(99, label="0", by="bob")
    reopened.close()


# ------------------------------------------------------------------ fallbacks


@pytest.mark.integration
@pytest.mark.slow
def test_online_store_down_means_fallback_then_recovery(served: Served, tmp_path: Path) -> None:
    from framework.features.repository import open_store
    from serving.grpc.client import PredictionClient
    from serving.grpc.server import start_server
    from serving.grpc.settings import ServeSettings
    from tests.support.fraud_requests import recent_rows

    root = tmp_path / "ws"
    shutil.copytree(served.workspace.root, root, ignore=shutil.ignore_patterns("predictions"))
    port = free_port()
    yaml = root / "feature_repo" / "feature_store.yaml"
    yaml.write_text(
        yaml.read_text().replace(
            "  type: sqlite\n  path: ../data/feast/online.db",
            f'  type: redis\n  connection_string: "127.0.0.1:{port}"',
        )
    )
    redis = start_redis(port, tmp_path)
    rows = recent_rows(served, 4)

    def materialize(store: Any) -> None:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            store.materialize(
                start_date=datetime(2000, 1, 1, tzinfo=UTC),
                end_date=served.now + timedelta(days=1),
            )

    try:
        with open_store(root / "feature_repo") as store:
            materialize(store)
            settings = ServeSettings(port=0, feature_timeout_seconds=2.0)
            running = start_server(
                store, served.registry.__class__(root / "data" / "models"), root / "data",
                settings, clock=served.now.timestamp,
            )  # fmt: skip
            target = f"127.0.0.1:{running.port}"
            try:
                with PredictionClient(target) as client:
                    normal = client.predict("fraud_model", rows)
                    assert {p["decision"] for p in normal} <= {ACCEPT, VALIDATE, REVIEW}
                    redis.kill()
                    redis.wait()
                    down = client.predict("fraud_model", rows)
                    assert [p["decision"] for p in down] == ["FALLBACK"] * len(rows)
                    assert all("online store unavailable" in p["reasons"][0] for p in down)
                    assert all("fallback model on amount, hour_of_day" in p["reasons"][1]
                               for p in down)  # fmt: skip
                    assert all(0 < p["score"] < 1 for p in down)
                    redis = start_redis(port, tmp_path)  # back, but empty (nothing persisted)
                    materialize(store)
                    back = client.predict("fraud_model", rows)
                assert [p["score"] for p in back] == pytest.approx([p["score"] for p in normal])
                assert [p["decision"] for p in back] == [p["decision"] for p in normal]
            finally:
                running.stop(1)
            metrics = running.metrics.fallbacks.labels(
                "fraud_model", "1", "online store unavailable"
            )
            assert metrics._value.get() == len(rows)
    finally:
        redis.kill()
        redis.wait()


@pytest.mark.integration
@pytest.mark.slow
def test_a_locked_sqlite_store_means_fallback_within_the_budget(
    served: Served, tmp_path: Path
) -> None:
    """A local SQLite store is read on the request's own thread; the budget still holds:
    a writer's lock the read would wait for turns into a fallback after the budget (not
    after Python's 5 s default busy wait), and answers return when the lock goes."""
    import sqlite3

    from framework.features.repository import open_store
    from framework.registry.model_registry import ModelRegistry
    from serving.grpc.client import PredictionClient
    from serving.grpc.server import start_server
    from serving.grpc.settings import ServeSettings
    from tests.support.fraud_requests import recent_rows

    root = tmp_path / "ws"
    shutil.copytree(served.workspace.root, root, ignore=shutil.ignore_patterns("predictions"))
    writer = sqlite3.connect(root / "data" / "feast" / "online.db", isolation_level=None)
    # A rollback journal: a writer's exclusive lock keeps readers out (WAL would not).
    assert writer.execute("PRAGMA journal_mode = DELETE").fetchone() == ("delete",)
    rows = recent_rows(served, 3)
    try:
        with open_store(root / "feature_repo") as store:
            running = start_server(
                store, ModelRegistry(root / "data" / "models"), root / "data",
                ServeSettings(port=0, feature_timeout_seconds=0.5), clock=served.now.timestamp,
            )  # fmt: skip
            try:
                with PredictionClient(f"127.0.0.1:{running.port}") as client:
                    normal = client.predict("fraud_model", rows)
                    writer.execute("BEGIN EXCLUSIVE")
                    started = time.monotonic()
                    locked = client.predict("fraud_model", rows)
                    waited = time.monotonic() - started
                    writer.execute("ROLLBACK")
                    back = client.predict("fraud_model", rows)
            finally:
                running.stop(1)
    finally:
        writer.close()
    assert [p["decision"] for p in locked] == ["FALLBACK"] * len(rows)
    assert all("online store unavailable: database is locked" in p["reasons"][0]
               for p in locked)  # fmt: skip
    assert waited < 5.0  # Feast's connection alone would wait 5 s before giving up
    assert [p["score"] for p in back] == [p["score"] for p in normal]
    assert {p["decision"] for p in normal} <= {ACCEPT, VALIDATE, REVIEW}


# ------------------------------------------------------------------- rollout


def _private_server(served: Served, root: Path, **settings: Any) -> Any:
    from framework.registry.model_registry import ModelRegistry
    from serving.grpc.server import start_server
    from serving.grpc.settings import ServeSettings

    shutil.copytree(served.workspace.root, root, ignore=shutil.ignore_patterns("predictions"))
    registry = ModelRegistry(root / "data" / "models")
    running = start_server(
        served.store, registry, root / "data", ServeSettings(port=0, **settings),
        clock=served.now.timestamp,
    )  # fmt: skip
    return running, registry


@pytest.mark.integration
@pytest.mark.slow
def test_hot_reload_and_rollback_under_load(served: Served, tmp_path: Path) -> None:
    import threading

    from framework.loop.promotion import promote, rollback
    from serving.grpc.client import PredictionClient
    from tests.support.fraud_requests import recent_rows

    running, registry = _private_server(served, tmp_path / "ws")
    two = register_copy(registry)
    rows = recent_rows(served, 2)
    seen: list[tuple[float, str]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def traffic() -> None:
        with PredictionClient(f"127.0.0.1:{running.port}") as client:
            while not stop.is_set():
                try:
                    sent = time.monotonic()
                    out = client.predict("fraud_model", rows)
                    seen.append((sent, out[0]["model_version"]))
                except BaseException as exc:  # every failure counts
                    errors.append(exc)

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        promoting = time.monotonic()
        promote(registry, "fraud_model", two, store=served.store, reason="hot reload test")
        promoted = time.monotonic()
        time.sleep(1.5)
        rolling = time.monotonic()  # the alias moves somewhere inside the call
        rollback(registry, "fraud_model", reason="roll back under load")
        rolled = time.monotonic()
        time.sleep(1.5)
        # The version loaded under traffic was compiled off the request path meanwhile.
        loaded = running.predictor.load(ModelRef("fraud_model", two))
        assert loaded.compiling is not None and loaded.compiling.result(timeout=60) is True
    finally:
        stop.set()
        for t in threads:
            t.join()
        running.stop(1)
    assert errors == []
    # Every request sent a second or more after an alias move is served by the new version.
    assert {v for at, v in seen if promoted + 1.0 < at < rolling} == {str(two)}
    assert {v for at, v in seen if at > rolled + 1.0} == {"1"}
    assert {v for at, v in seen if at < promoting} == {"1"}


@pytest.mark.integration
@pytest.mark.slow
def test_canary_is_sticky_and_shadow_is_logged_not_returned(served: Served, tmp_path: Path) -> None:
    from framework.logs.reader import read_log
    from framework.loop.promotion import promote
    from serving.grpc.client import PredictionClient

    running, registry = _private_server(
        served, tmp_path / "ws", canary_share=0.3, shadow_alias="shadow"
    )
    two = register_copy(registry)
    three = register_copy(registry)
    promote(registry, "fraud_model", two, store=served.store, alias="challenger")
    promote(registry, "fraud_model", three, store=served.store, alias="shadow")
    users = range(1, 401)
    try:
        with PredictionClient(f"127.0.0.1:{running.port}") as client:

            def version(user: int, request_id: str) -> str:
                row = {"entity_keys": {"user_id": user, "merchant_id": 1},
                       "request_data": {"amount": 10.0, "hour_of_day": 12}}  # fmt: skip
                out = client.predict("fraud_model", [row], request_id=request_id)
                return str(out[0]["model_version"])

            first = {u: version(u, f"a{u}") for u in users}
            again = {u: version(u, f"b{u}") for u in users}
            pinned = client.predict(
                "fraud_model",
                [{"entity_keys": {"user_id": 1, "merchant_id": 1},
                  "request_data": {"amount": 10.0, "hour_of_day": 12}}],
                version="1", request_id="pinned",
            )  # fmt: skip
    finally:
        running.stop(2)
    assert first == again  # sticky: a user always sees the same version
    share = sum(v == str(two) for v in first.values()) / len(users)
    assert 0.22 < share < 0.38  # 30% +- sampling noise for 400 users
    assert set(first.values()) == {"1", str(two)}  # the shadow version is never returned
    assert pinned[0]["model_version"] == "1"
    log = read_log(tmp_path / "ws" / "data" / "predictions", "fraud_model").to_pylist()
    primary = [r for r in log if r["role"] == "primary"]
    shadow = [r for r in log if r["role"] == "shadow"]
    assert len(primary) == 2 * len(users) + 1
    assert {r["model_version"] for r in shadow} == {str(three)}
    # Every client request was also scored by the shadow, under its request id.
    assert sorted(r["__request_id"] for r in shadow) == sorted(r["__request_id"] for r in primary)


@pytest.mark.integration
def test_model_ready_reports_a_version_without_loading_it(served: Served, tmp_path: Path) -> None:
    """``ModelReady`` says whether a version is loaded; asking does not load it (a version
    registered after start-up loads on its first request, and only then is ready)."""
    import grpc

    from serving.stubs.inference import grpc_predict_v2_pb2 as v2
    from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc

    running, registry = _private_server(served, tmp_path / "ws")
    two = register_copy(registry)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = v2_grpc.GRPCInferenceServiceStub(channel)

            def ready(version: str = "") -> bool:
                answer = stub.ModelReady(
                    v2.ModelReadyRequest(name="fraud_model", version=version), timeout=10
                )
                return bool(answer.ready)

            assert ready() and ready("1")  # the champion, loaded at start-up
            assert not ready(str(two)) and not ready(str(two))
            assert ModelRef("fraud_model", two) not in running.predictor.versions.loaded()
            with pytest.raises(grpc.RpcError) as err:
                ready("99")
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            request = v2.ModelInferRequest(model_name="fraud_model", model_version=str(two))
            for name, value in (("user_id", 1), ("merchant_id", 1), ("hour_of_day", 12)):
                tensor = request.inputs.add(name=name, datatype="INT64", shape=[1])
                tensor.contents.int64_contents.append(value)
            amount = request.inputs.add(name="amount", datatype="FP64", shape=[1])
            amount.contents.fp64_contents.append(10.0)
            assert stub.ModelInfer(request, timeout=60).model_version == str(two)
            assert ready(str(two))
    finally:
        running.stop(1)


@pytest.mark.integration
def test_model_info_follows_promotions_and_versions_loaded_later(
    served: Served, tmp_path: Path
) -> None:
    """``parity_model_info`` is read at each scrape: a promotion moves its ``aliases``
    label, and a version loaded by a request after start-up appears."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from framework.loop.promotion import promote
    from serving.grpc.client import PredictionClient
    from tests.support.fraud_requests import recent_rows

    running, registry = _private_server(served, tmp_path / "ws")

    def info() -> dict[str, str]:
        text = generate_latest(running.metrics.registry).decode()
        (family,) = [
            f for f in text_string_to_metric_families(text) if f.name == "parity_model_info"
        ]
        assert all(s.value == 1.0 and s.labels["model"] == "fraud_model" for s in family.samples)
        return {s.labels["version"]: s.labels["aliases"] for s in family.samples}

    try:
        assert info() == {"1": "champion"}
        two = register_copy(registry)
        assert info() == {"1": "champion"}  # registered, not loaded
        promote(registry, "fraud_model", two, store=served.store, reason="model_info test")
        assert info() == {"1": ""}  # the alias moved; version two loads on first use
        with PredictionClient(f"127.0.0.1:{running.port}") as client:
            assert client.predict("fraud_model", recent_rows(served, 1))[0]["model_version"] == str(
                two
            )
        assert info() == {"1": "", str(two): "champion"}
    finally:
        running.stop(1)
