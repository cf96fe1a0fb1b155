"""Serving replicas: separate ``parity serve`` processes that share nothing but Redis (the
online store), Feast's SQL registry on PostgreSQL, the model registry and the
prediction-log storage (the folders a Kubernetes deployment mounts from one shared
volume, deploy/kubernetes/) behave as one service."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest

from serving.grpc.client import PredictionClient
from tests.support.fraud_requests import recent_rows
from tests.support.serve_process import PARITY, parity_serve
from tests.support.workspaces import Trained, copy_of

MODEL = "fraud_model"


def _parity(*args: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [*PARITY, *args, "--json"], capture_output=True, text=True, timeout=300,
        env={**os.environ, **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout))


def _version(target: str, rows: list[dict[str, Any]], request_id: str) -> str:
    with PredictionClient(target, timeout=10) as client:
        answers = client.predict(MODEL, rows, request_id=request_id)
    return str(answers[0]["model_version"])


@pytest.mark.slow
@pytest.mark.integration
def test_replicas_that_share_only_their_stores_behave_as_one_service(
    trained: Trained, tmp_path: Path, postgres_url: str, redis_address: str
) -> None:
    import duckdb

    from framework.logs.reader import read_log
    from framework.monitoring.summary import monitor_summary
    from framework.registry.model_registry import ModelRegistry

    ws = copy_of(trained, tmp_path / "ws")
    env = {"PARITY_REGISTRY_URL": postgres_url, "PARITY_REDIS": redis_address}
    where = ("--repo", str(ws.repo), "--profile", "production")
    last = duckdb.sql(
        f"SELECT max(transaction_timestamp) FROM '{ws.data / 'raw' / 'transactions.parquet'}'"
    ).fetchone()[0]  # type: ignore[index]
    now = last.astimezone(UTC) + timedelta(minutes=30)
    _parity("apply", *where, env=env)
    _parity("materialize", *where, "--start", "2000-01-01", "--end", now.isoformat(), env=env)
    _parity("models", "promote", MODEL, "1", *where, "--reason", "replicas", env=env)

    rows = recent_rows(ws, 4)
    serve = (*where, "--now", now.isoformat())
    with (
        parity_serve(*serve, logs=tmp_path, name="a", env=env) as a,
        parity_serve(*serve, logs=tmp_path, name="b", env=env) as b,
    ):
        answers: dict[str, list[dict[str, Any]]] = {}
        for i in range(10):
            for name, replica in (("a", a), ("b", b)):
                with PredictionClient(replica.target, timeout=10) as client:
                    answers.setdefault(name, []).extend(
                        client.predict(MODEL, rows, request_id=f"{name}-{i}")
                    )
        # One service: the same rows get the same answer from either replica.
        scores = {n: [x["score"] for x in got[:4]] for n, got in answers.items()}
        assert scores["a"] == scores["b"] and {x["model_version"] for x in answers["a"]} == {"1"}

        # A promotion (here of a retrained version) reaches every replica, no restart.
        trained_again = _parity("train", *where, env=env)
        version = trained_again["model"].split(":")[1]
        _parity("models", "promote", MODEL, version, *where, "--force", "--reason", "replicas",
                env=env)  # fmt: skip
        promoted = time.monotonic()
        reached: dict[str, float] = {}
        while len(reached) < 2 and time.monotonic() - promoted < 30:
            for name, replica in (("a", a), ("b", b)):
                if (
                    name not in reached
                    and _version(replica.target, rows[:1], f"p-{name}") == version
                ):
                    reached[name] = time.monotonic() - promoted
            time.sleep(0.05)
        print(f"\npromotion reached the replicas after {reached} seconds")
        assert set(reached) == {"a", "b"}, reached
        for replica in (a, b):
            assert replica.stop(signal.SIGTERM) == 0, replica.errors()

    # Each replica wrote its own log files, none overwritten: every answer is logged once,
    # and the monitor reads both replicas' files as one log.
    log = ws.data / "predictions"
    files = sorted(p.name for p in log.rglob("part-*.parquet"))
    assert len(files) == len(set(files)) >= 2
    logged = read_log(log, MODEL)["__request_id"].to_pylist()
    expected = [f"{n}-{i}" for n in ("a", "b") for i in range(10) for _ in range(4)]
    probes = [r for r in logged if r.startswith("p-")]
    assert sorted(r for r in logged if not r.startswith("p-")) == sorted(expected)
    summary = monitor_summary(log, ModelRegistry(ws.data / "models"), MODEL)
    assert summary.window.rows == len(expected) + len(probes)
    by_version = {v.version: v.operations for v in summary.versions}
    assert set(by_version) == {"1", version}
