"""Faults under the production profile, each against real servers (no mocks):

1. the PostgreSQL registry unreachable when a command starts;
2. the registry unreachable while ``parity serve`` runs (a TCP proxy between the
   server and PostgreSQL is closed, then reopened on the same port);
3. a tampered or corrupt model artifact promoted while the server is under load;
4. ``kill -9`` of ``parity train`` and of ``parity models promote``;
5. Redis killed mid-traffic and restarted, with the SQL registry.

Every test gets a fresh PostgreSQL database (dropped afterwards) and its own Redis.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from tests.support.serve_process import ServeProcess, parity_serve
from tests.support.services import free_port, missing, reachable, start_redis
from tests.support.workspaces import ROOT, Trained, Workspace

pytestmark = pytest.mark.integration

PARITY = [sys.executable, "-m", "framework.cli"]
MODEL = "fraud_model"
PG = ("127.0.0.1", 5432)
START = datetime(2000, 1, 1, tzinfo=UTC)


# ----------------------------------------------------------------- a TCP proxy


class TcpProxy:
    """A real socket forwarder from ``127.0.0.1:port`` to ``upstream``.

    :meth:`close` closes the listener and every forwarded connection (the
    registry "goes away"); :meth:`open` listens again on the same port.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.accepted = 0
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    def open(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()
        return self

    def close(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # stops listening now, wakes accept()
            assert self._acceptor is not None
            self._acceptor.join()
            listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    if not reachable(*PG):
        missing("PostgreSQL is not reachable on 127.0.0.1:5432")
    proxy = TcpProxy(PG).open()
    try:
        yield proxy
    finally:
        proxy.close()


def via(url: str, proxy: TcpProxy) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).set(port=proxy.port).render_as_string(hide_password=False)


# ----------------------------------------------------------------- a private Redis


class RedisProcess:
    """A ``redis-server`` of the test's own, which the test may kill and restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> RedisProcess:
        self.proc = start_redis(self.port, self.workdir)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    redis = RedisProcess(tmp_path).start()
    try:
        yield redis
    finally:
        redis.kill()


# ----------------------------------------------------------------- a production server


@dataclass
class Production:
    """A copy of the trained workspace on the production profile: definitions applied
    to a fresh PostgreSQL database, features materialised into Redis (unless
    ``online=False``), ``fraud_model`` version 1 champion."""

    ws: Workspace
    registry_url: str
    redis: str
    now: datetime
    env: dict[str, str] = field(default_factory=dict)

    def rows(self, n: int) -> list[dict[str, Any]]:
        from tests.support.fraud_requests import recent_rows

        return recent_rows(SimpleNamespace(workspace=self.ws), n)  # type: ignore[arg-type]


def production(
    trained: Trained,
    root: Path,
    registry_url: str,
    redis: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    cache_ttl_seconds: int | None = None,
    online: bool = True,
) -> Production:
    import duckdb

    from framework.features.repository import Profile, apply, open_store
    from framework.loop.promotion import promote
    from framework.materialize.job import materialize
    from framework.registry.model_registry import ModelRegistry

    shutil.copytree(
        trained.workspace.root, root, ignore=shutil.ignore_patterns("predictions", "review")
    )
    ws = Workspace(root)
    if cache_ttl_seconds is not None:  # a test-only copy of the repository: a shorter TTL
        yaml = ws.repo / "feature_store.production.yaml"
        text = yaml.read_text()
        assert "cache_ttl_seconds: 60\n" in text
        yaml.write_text(
            text.replace("cache_ttl_seconds: 60\n", f"cache_ttl_seconds: {cache_ttl_seconds}\n")
        )
    monkeypatch.setenv("PARITY_REGISTRY_URL", registry_url)
    monkeypatch.setenv("PARITY_REDIS", redis)
    last = duckdb.sql(
        f"SELECT max(transaction_timestamp) FROM '{ws.data / 'raw' / 'transactions.parquet'}'"
    ).fetchone()[0]  # type: ignore[index]
    now = last.astimezone(UTC) + timedelta(minutes=30)
    apply(ws.repo, Profile.PRODUCTION)
    with open_store(ws.repo, Profile.PRODUCTION) as store:
        if online:
            materialize(store, start=START, end=now + timedelta(days=1))
        promote(ModelRegistry(ws.data / "models"), MODEL, 1, store=store, reason="fault tests")
    env = {**os.environ, "PARITY_REGISTRY_URL": registry_url, "PARITY_REDIS": redis}
    return Production(ws, registry_url, redis, now, env)


@contextlib.contextmanager
def production_serve(p: Production, env: dict[str, str] | None = None) -> Iterator[ServeProcess]:
    """``parity serve --profile production`` as a process, stopped by SIGTERM afterwards."""
    with parity_serve(
        "--profile", "production", "--repo", str(p.ws.repo), "--metrics-port", "0",
        "--now", p.now.isoformat(), "--model", f"{MODEL}@champion",
        logs=p.ws.root, name=f"server-{time.monotonic_ns()}", env=env or p.env, cwd=ROOT,
    ) as server:  # fmt: skip
        yield server


@dataclass
class Answer:
    at: float
    phase: str
    versions: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    error: str | None = None
    done: float = 0.0  # time.monotonic() of the answer


class Traffic:
    """Concurrent clients calling Predict in a loop; every answer and error is kept,
    labelled with the phase it was sent in."""

    def __init__(self, target: str, rows: list[dict[str, Any]], clients: int = 4) -> None:
        self.target, self.rows, self.clients = target, rows, clients
        self.phase = "start"
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        from serving.grpc.client import PredictionClient

        with PredictionClient(self.target, timeout=10) as client:
            while not self._stop.is_set():
                answer = Answer(time.monotonic(), self.phase)
                try:
                    out = client.predict(MODEL, self.rows)
                    answer.versions = [p["model_version"] for p in out]
                    answer.decisions = [p["decision"] for p in out]
                    answer.scores = [p["score"] for p in out]
                except grpc.RpcError as exc:
                    answer.error = f"{exc.code().name}: {exc.details()}"
                except Exception as exc:  # every failure counts
                    answer.error = f"{type(exc).__name__}: {exc}"
                answer.done = time.monotonic()
                self.answers.append(answer)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def in_phase(self, phase: str) -> list[Answer]:
        return [a for a in self.answers if a.phase == phase]

    def wait_for(self, n: int, phase: str, timeout: float = 60) -> None:
        """Until ``n`` answers of ``phase`` arrived."""
        deadline = time.monotonic() + timeout
        while len(self.in_phase(phase)) < n:
            assert time.monotonic() < deadline, f"fewer than {n} answers in phase {phase}"
            time.sleep(0.05)


# ============================================================== 1. registry down at start


@pytest.mark.parametrize(
    "command",
    [
        ["serve", "--port", "0"],
        ["apply"],
        ["materialize", "--start", "2026-01-01", "--end", "2026-02-01"],
        ["train"],
        ["models", "promote", MODEL, "1"],
    ],
    ids=lambda c: "-".join(c[:2]) if c[0] == "models" else c[0],
)
def test_registry_unreachable_at_start_fails_in_one_line(
    workspace: Workspace, command: list[str]
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:{port}/parity"
    env = {**os.environ, "PARITY_REGISTRY_URL": url, "PARITY_REDIS": "127.0.0.1:1"}
    started = time.monotonic()
    result = subprocess.run(
        [*PARITY, *command, "--repo", str(workspace.repo), "--profile", "production"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert f"PostgreSQL at 127.0.0.1:{port}/parity" in lines[0]
    assert "Connection refused" in lines[0]
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "listening" not in result.stdout and "registered" not in result.stdout
    assert seconds < 30, seconds  # a refused connection fails at once, not after retries


# ============================================================== 2. registry down mid-run


@pytest.mark.slow
def test_registry_outage_while_serving_keeps_cached_definitions(
    trained: Trained,
    postgres_url: str,
    pg_proxy: TcpProxy,
    redis_address: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ttl = 1
    p = production(
        trained, tmp_path / "ws", postgres_url, redis_address, monkeypatch, cache_ttl_seconds=ttl
    )
    env = {**p.env, "PARITY_REGISTRY_URL": via(postgres_url, pg_proxy)}
    rows = p.rows(4)
    with production_serve(p, env) as server:
        from serving.grpc.client import PredictionClient

        with PredictionClient(server.target) as client:
            baseline = client.predict(MODEL, rows)
        assert "FALLBACK" not in {b["decision"] for b in baseline}
        with Traffic(server.target, rows) as traffic:
            traffic.wait_for(20, "start")
            traffic.phase = "down"
            pg_proxy.close()
            assert not reachable("127.0.0.1", pg_proxy.port)
            time.sleep(6 * ttl)  # well past the registry cache's TTL
            traffic.phase = "down-past-ttl"
            traffic.wait_for(40, "down-past-ttl")
            with PredictionClient(server.target) as client:
                during = client.predict(MODEL, rows)
            assert server.metric("parity_registry_up") == 0.0
            assert server.metric("parity_registry_refresh_failures_total") >= 1
            assert server.metric("parity_registry_snapshot_age_seconds") >= 5 * ttl
            traffic.phase = "back"
            accepted = pg_proxy.accepted
            pg_proxy.open()  # the same port
            deadline = time.monotonic() + 60
            while pg_proxy.accepted == accepted or not [
                r for r in server.records() if "registry reachable again" in r.get("message", "")
            ]:  # the server reconnects to refresh, and says so
                assert time.monotonic() < deadline, "the server never reconnected"
                time.sleep(0.1)
            traffic.wait_for(20, "back")
            assert server.metric("parity_registry_up") == 1.0
        records = server.records()
    answers = traffic.answers
    counts = Counter(a.phase for a in answers)
    errors = [a.error for a in answers if a.error]
    assert errors == [], Counter(errors)
    assert {d for a in answers for d in a.decisions} <= {"ACCEPT", "VALIDATE", "REVIEW"}
    assert {v for a in answers for v in a.versions} == {"1"}
    assert all(a.scores == [b["score"] for b in baseline] for a in answers)
    assert [d["score"] for d in during] == [b["score"] for b in baseline]
    print(f"registry outage: {dict(counts)} requests, {len(errors)} errors")
    # The outage is logged once when it starts, and its end once.
    failed = [r for r in records if "registry refresh failed" in r.get("message", "")]
    back = [r for r in records if "registry reachable again" in r.get("message", "")]
    assert len(failed) == 1, [r for r in records if r.get("rpc") is None]
    assert failed[0]["level"] == "WARNING"
    assert f"127.0.0.1:{pg_proxy.port}" in failed[0]["message"]
    assert len(back) == 1, records[-10:]


# ============================================================== 3. a damaged artifact


def _damage(registry: Any, version: int, how: str) -> str:
    """Damage ``version``'s artifact; the words the refusal gives for it."""
    import hashlib

    from framework.registry.model_registry import ModelRef

    folder = registry.version_dir(ModelRef(MODEL, version))
    artifact = folder / "model.skops"
    artifact.chmod(0o644)
    data = bytearray(artifact.read_bytes())
    if how == "tampered":  # one byte changed, the manifest untouched
        data[len(data) // 2] ^= 0x01
        artifact.write_bytes(bytes(data))
        return "does not match its manifest checksum"
    # corrupt bytes, with a manifest rewritten to match them (the checksum cannot help)
    junk = bytes(data[:64]) + os.urandom(len(data) - 64)
    artifact.write_bytes(junk)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artifact"]["sha256"] = hashlib.sha256(junk).hexdigest()
    manifest_path.chmod(0o644)
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return "is not a skops file"


@pytest.mark.slow
@pytest.mark.parametrize("how", ["tampered", "corrupt"])
def test_a_damaged_version_is_refused_while_v1_keeps_serving(
    trained: Trained,
    postgres_url: str,
    redis_address: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    from framework.registry.model_registry import ModelRegistry
    from serving.grpc.client import PredictionClient
    from tests.support.model_versions import register_copy

    p = production(trained, tmp_path / "ws", postgres_url, redis_address, monkeypatch)
    registry = ModelRegistry(p.ws.data / "models")
    two = register_copy(registry)
    words = _damage(registry, two, how)
    rows = p.rows(3)
    with production_serve(p) as server, Traffic(server.target, rows) as traffic:
        traffic.wait_for(20, "start")
        # The real command: the promotion gate refuses the damaged version.
        traffic.phase = "gate"
        refused = subprocess.run(
            [*PARITY, "models", "promote", MODEL, str(two), "--profile", "production",
             "--repo", str(p.ws.repo), "--reason", "fault test"],
            capture_output=True, text=True, env=p.env, cwd=ROOT, timeout=300,
        )  # fmt: skip
        assert refused.returncode == 6, refused.stderr
        assert "artifact check failed" in refused.stderr and words in refused.stderr
        assert registry.aliases(MODEL) == {"champion": 1}
        traffic.wait_for(20, "gate")
        # The alias moves anyway, as when the bytes break after the gate passed them.
        traffic.phase = "moved"
        with registry.lock(MODEL):
            registry.append_event(
                MODEL,
                {"action": "promote", "alias": "champion", "from": 1, "to": two, "by": "test",
                 "reason": "artifact damaged after the gate", "forced": False, "checks": []},
            )  # fmt: skip
        assert registry.aliases(MODEL) == {"champion": two}
        traffic.wait_for(60, "moved")
        with PredictionClient(server.target) as client:
            with pytest.raises(grpc.RpcError) as pinned:
                client.predict(MODEL, rows, version=str(two))
            by_alias = client.predict(MODEL, rows, alias="champion")
        traffic.phase = "pinned-checked"
        traffic.wait_for(20, "pinned-checked")
        records = server.records()
    answers = traffic.answers
    errors = [a.error for a in answers if a.error]
    counts = Counter(a.phase for a in answers)
    print(f"damaged ({how}) v{two}: {dict(counts)} requests, {len(errors)} errors")
    assert errors == [], Counter(errors)
    assert {v for a in answers for v in a.versions} == {"1"}
    assert {d for a in answers for d in a.decisions} <= {"ACCEPT", "VALIDATE", "REVIEW"}
    assert pinned.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert words in (pinned.value.details() or "")
    assert {o["model_version"] for o in by_alias} == {"1"}
    refusals = [
        r for r in records
        if r["level"] == "ERROR" and f"{MODEL}:{two}" in r["message"] and words in r["message"]
    ]  # fmt: skip
    assert refusals, [r for r in records if r.get("rpc") is None]
    assert len(refusals) <= 3  # logged once per retry, not once per request


# ============================================================== 4. kill -9


def _whole_versions_only(registry: Any) -> list[int]:
    """Every version folder is a whole version: listed, numbered without gaps, its
    manifest readable, its artifact verified and loaded. Returns the versions."""
    from framework.registry.model_registry import ModelRef

    versions = registry.versions(MODEL)
    folders = sorted(p.name for p in (registry.root / MODEL / "versions").iterdir())
    assert folders == sorted(map(str, versions))
    assert versions == list(range(1, len(versions) + 1))
    for v in versions:
        model, manifest = registry.load(ModelRef(MODEL, v))
        assert manifest["version"] == v and model is not None
        assert {"model.skops", "smoke.parquet", "manifest.json"} <= {
            p.name for p in registry.version_dir(ModelRef(MODEL, v)).iterdir()
        }
    return versions


def _history_valid(registry: Any) -> list[dict[str, Any]]:
    """The history replays: every move starts where the previous one left off, every
    alias points to a version that verifies. Returns the complete events."""
    from framework.registry.model_registry import ModelRef

    events = registry.history(MODEL)
    text = (registry.root / MODEL / "history.jsonl").read_text()
    assert len(events) == text.count("\n")  # at most a cut-short last line, ignored
    stack: list[int] = []
    for e in events:
        if e["action"] == "promote":
            assert e["from"] == (stack[-1] if stack else None), e
            stack.append(e["to"])
        elif e["action"] == "rollback":
            assert len(stack) >= 2 and (e["from"], e["to"]) == (stack[-1], stack[-2]), e
            stack.pop()
    assert registry.aliases(MODEL) == ({"champion": stack[-1]} if stack else {})
    for v in registry.aliases(MODEL).values():
        registry.verify(ModelRef(MODEL, v))
    return events  # type: ignore[no-any-return]


def _run(command: list[str], p: Production) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PARITY, *command, "--profile", "production", "--repo", str(p.ws.repo)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=p.env, cwd=ROOT,
    )  # fmt: skip


def _at(moment: float) -> Callable[[], bool]:
    return lambda: time.monotonic() >= moment


def _writing(staging: Path, pid: int) -> Callable[[], bool]:
    """True once process ``pid`` writes a version into the staging folder."""

    def ready() -> bool:
        return staging.is_dir() and any(e.name.startswith(f"{pid}-") for e in staging.iterdir())

    return ready


def _kill_when(
    proc: subprocess.Popen[str], ready: Callable[[], bool], timeout: float = 300
) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if it finished first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            proc.communicate()
            return False
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_kill_9_during_training_leaves_whole_versions_and_a_rerun_succeeds(
    trained: Trained,
    postgres_url: str,
    redis_address: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from framework.registry.model_registry import ModelRegistry

    p = production(trained, tmp_path / "ws", postgres_url, redis_address, monkeypatch, online=False)
    registry = ModelRegistry(p.ws.data / "models")
    staging = registry.root / MODEL / ".staging"
    train = ["train", "--json"]

    started = time.monotonic()
    full = _run(train, p)
    out, err = full.communicate(timeout=600)
    seconds = time.monotonic() - started
    assert full.returncode == 0, err
    first = json.loads(out)
    assert first["model"] == f"{MODEL}:2"

    killed: list[str] = []
    finished = registered = 0
    # At spread-out points of the run (loading, the training set, fitting, evaluation),
    # then the moment the new version's files are being written.
    triggers = [f"{f}" for f in (0.15, 0.4, 0.65, 0.9)] + ["writing"] * 2
    for trigger in triggers:
        before = len(registry.versions(MODEL))
        proc = _run(train, p)
        if trigger == "writing":
            ready = _writing(staging, proc.pid)
        else:
            ready = _at(time.monotonic() + float(trigger) * seconds)
        was_killed = _kill_when(proc, ready)
        new = len(registry.versions(MODEL)) - before
        assert new in (0, 1)
        _whole_versions_only(registry)
        finished += not was_killed
        if was_killed:
            registered += new  # killed after its version's rename: whole, and kept
            killed.append(f"{trigger}{'(registered)' if new else ''}")
    assert len(killed) >= 4, (killed, finished)
    assert len(killed) - registered >= 3, killed  # most kills hit before the commit point

    versions = _whole_versions_only(registry)
    assert len(versions) == 2 + finished + registered
    dead = [e.name for e in staging.iterdir()]  # what the killed writers left, if anything

    rerun = _run(train, p)
    out, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    again = json.loads(out)
    assert again["model"] == f"{MODEL}:{len(versions) + 1}"
    assert again["dataset_fingerprint"] == first["dataset_fingerprint"]
    assert again["metrics"] == first["metrics"]  # the same model as the uninterrupted run
    assert _whole_versions_only(registry) == [*versions, len(versions) + 1]
    assert not {e.name for e in staging.iterdir()} & set(dead)  # removed by the next write
    assert registry.aliases(MODEL) == {"champion": 1}
    _history_valid(registry)
    print(
        f"train killed at {killed}, {finished} finished first, {len(dead)} staging left, "
        f"versions {versions} then {len(versions) + 1}; a full run takes {seconds:.1f}s"
    )


def _lock_held(registry: Any) -> bool:
    """True while another process holds the registry lock of the model."""
    with (registry.root / MODEL / ".lock").open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


@pytest.mark.slow
def test_kill_9_during_promotion_leaves_a_valid_history_and_a_rerun_succeeds(
    trained: Trained,
    postgres_url: str,
    redis_address: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from framework.registry.model_registry import ModelRegistry
    from tests.support.model_versions import register_copy

    p = production(trained, tmp_path / "ws", postgres_url, redis_address, monkeypatch, online=False)
    registry = ModelRegistry(p.ws.data / "models")
    two = register_copy(registry)

    def promote_other() -> tuple[list[str], int]:
        target = 1 if registry.aliases(MODEL)["champion"] == two else two
        command = ["models", "promote", MODEL, str(target), "--reason", "kill test", "--json"]
        return command, target

    command, target = promote_other()
    started = time.monotonic()
    full = _run(command, p)
    _, err = full.communicate(timeout=300)
    seconds = time.monotonic() - started
    assert full.returncode == 0, err
    assert registry.aliases(MODEL) == {"champion": target}

    outcomes: list[str] = []
    for trigger in ("0.3", "0.7", "lock", "lock", "lock"):
        command, target = promote_other()
        before = registry.aliases(MODEL)["champion"]
        proc = _run(command, p)
        if trigger == "lock":  # inside the gate: loading, smoke test, Feast definitions
            ready = functools.partial(_lock_held, registry)
        else:
            ready = _at(time.monotonic() + float(trigger) * seconds)
        was_killed = _kill_when(proc, ready)
        after = registry.aliases(MODEL)["champion"]
        assert after in (before, target)  # all or nothing
        outcomes.append(
            f"{trigger}: {'killed' if was_killed else 'finished'}, "
            f"{'moved' if after == target else 'unchanged'}"
        )
        assert not _lock_held(registry)  # the kernel released the dead process's lock
        _history_valid(registry)
        if after == before:  # a rerun of the same command succeeds
            rerun = _run(command, p)
            _, err = rerun.communicate(timeout=300)
            assert rerun.returncode == 0, err
            assert registry.aliases(MODEL) == {"champion": target}
    assert sum("killed" in o for o in outcomes) >= 3, outcomes
    assert sum("killed" in o and "unchanged" in o for o in outcomes) >= 3, outcomes
    events = _history_valid(registry)
    assert all(e["action"] == "promote" for e in events)
    _whole_versions_only(registry)
    print(
        f"promotion killed: {outcomes}; {len(events)} history events; "
        f"a full promotion takes {seconds:.1f}s"
    )


# ============================================================== 5. Redis down mid-traffic


@pytest.mark.slow
def test_redis_killed_mid_traffic_means_fallbacks_then_recovery(
    trained: Trained,
    postgres_url: str,
    private_redis: RedisProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from framework.features.repository import Profile, open_store
    from framework.materialize.job import materialize
    from serving.grpc.client import PredictionClient

    p = production(trained, tmp_path / "ws", postgres_url, private_redis.address, monkeypatch)
    rows = p.rows(4)
    with production_serve(p) as server:
        with PredictionClient(server.target) as client:
            baseline = client.predict(MODEL, rows)
        with Traffic(server.target, rows) as traffic:
            traffic.wait_for(20, "start")
            killed_at = time.monotonic()
            private_redis.kill()
            traffic.phase = "down"
            traffic.wait_for(100, "down")
            traffic.phase = "restarted-empty"
            private_redis.start()  # the same port, nothing persisted
            traffic.wait_for(20, "restarted-empty")
            with open_store(p.ws.repo, Profile.PRODUCTION) as store:
                materialize(store, start=START, end=p.now + timedelta(days=1))
            traffic.phase = "back"
            traffic.wait_for(40, "back")
        records = server.records()
    answers = traffic.answers
    errors = [a.error for a in answers if a.error]
    counts = Counter(a.phase for a in answers)
    decisions = {phase: Counter(d for a in traffic.in_phase(phase) for d in a.decisions)
                 for phase in counts}  # fmt: skip
    print(f"redis killed: {dict(counts)} requests, {len(errors)} errors, decisions {decisions}")
    assert errors == [], Counter(errors)
    assert set(decisions["down"]) == {"FALLBACK"}
    before = Counter(
        d for a in traffic.in_phase("start") if a.done < killed_at for d in a.decisions
    )
    assert "FALLBACK" not in before and "FALLBACK" not in decisions["back"]
    expected = [b["score"] for b in baseline]
    normal = [a for a in traffic.in_phase("start") if a.done < killed_at] + traffic.in_phase("back")
    assert all(a.scores == expected for a in normal)
    assert all(0 < s < 1 for a in traffic.in_phase("down") for s in a.scores)
    assert not [r for r in records if r["level"] == "ERROR"], records[-5:]
