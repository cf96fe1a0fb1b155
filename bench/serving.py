"""Serving: parity's server against the two-hop setup a user would otherwise build.

One run, same model, same features, same machine, loopback. A fresh
workspace is built by ``parity demo --drift none`` (50k sample transactions,
features materialised into SQLite, ``fraud_model`` trained and promoted); the
entity rows are the latest transactions of the sample (keys that exist online,
their real amounts and hours), and every server judges TTLs at the sample's end.
Systems, each measured at 1, 8 and 64 requests in flight:

* ``ours Predict``      — ``parity serve``; ``parity.v1.PredictionService/Predict`` with
  entity keys + request data: online lookup + inference + routing + prediction log;
* ``two-hop``           — ``feast serve`` (HTTP ``/get-online-features``, the model's
  feature service) on the SAME repository copy and SQLite file, then MLServer V2 gRPC
  ``ModelInfer`` with those features: two network hops per prediction;
* ``ours Predict+explain`` — the same with ``explain``: SHAP attributions of every
  feature (the cost of an explanation, off the default path);
* ``ours V2``           — ``parity serve``; Open Inference Protocol ``ModelInfer`` with
  every feature supplied as a tensor (no lookup; scored, routed and logged);
* ``MLServer V2``       — MLServer 1.7.1 (``mlserver-sklearn``) ``ModelInfer``, the same
  request message (pandas codec: ``content_type`` ``pd``, one tensor per column);
* ``ours REST``         — ``parity serve --http-port``; the Open Inference Protocol's
  HTTP/REST binding, ``POST /v2/models/fraud_model/infer`` with ``ours V2``'s request as
  JSON (:func:`rest_body`: the same tensors, ``data`` arrays, a missing number ``null``
  as JSON has no NaN), answered in JSON;
* ``MLServer REST``     — MLServer's own REST endpoint (its ``http_port``),
  ``POST /v2/models/fraud_model/infer`` with ``MLServer V2``'s request as JSON (pandas
  codec marked the same way, ``predict_proba`` asked for);
* ``feast serve``       — the feature hop alone (an anchor of the issue);
* ``echo``              — the transport's floor: a bare grpcio server
  (``bench/echo_server.py``) answering ``Predict`` with the bytes of a real
  ``PredictResponse`` parity gave for the first row, sent the same request bytes by the
  same client harness over the same channels; started with each of parity's
  configurations (same processes on one port via SO_REUSEPORT, same threads), so the
  ratio compares servers that differ only in the work per call;
* ``in-process floor``  — one process: Feast ``get_online_features`` (the feature
  service) + the model's feature frame + ``predict_proba``; threads for 8/64;
* ``in-process, compiled model`` — the same with the compiled form the server scores
  with (framework.models.compiled, scikit-learn's numbers): not a target, it shows what
  the server's gRPC, routing and prediction log add to the same work.

MLServer serves the SAME fitted pipeline: loaded from parity's registry (skops,
checksum-verified) in our venv and written as joblib, in an environment with
exactly our scikit-learn, numpy, pandas, scipy and joblib; the run checks its
probabilities against ours before measuring.

The anchors run from their own environments under ``--anchors-venv``, TWO of
them because one cannot hold both: mlserver 1.7.1 needs fastapi<0.116 (hence
starlette<0.47) and feast 0.67 needs starlette>=1.0.1. ``feast/`` holds feast
0.67 pinned to our lock file; ``mlserver/`` holds mlserver 1.7.1 with uvloop
0.21 (1.7.1's parallel inference workers die with uvloop >= 0.22: "There is no
current event loop").

Servers: ``parity serve`` as shipped, in each ``--ours`` configuration (default: 1
process and 2 processes, each with the shipped 8 threads; more threads per process
only fight over the GIL: 2 x 32 answered fewer requests per second than 2 x 8 at 64
in flight on 2026-12-04), with ``--http-port`` so the REST binding listens beside gRPC
(an idle uvicorn thread per process when no REST scenario runs); MLServer with
``parallel_workers`` 1 (its default) and 2, ``debug`` off, OMP_NUM_THREADS=1;
``feast serve --workers 1 --no-access-log --max-requests 0`` (Feast's default
1,000 recycles the worker every thousand requests, mid-measurement). The
targets (``bench/serving_report.py``) compare each of our configurations with the
echo in the same configuration and with the anchors' best number.

Online stores (``--online sqlite,redis``): SQLite is the demo's; for Redis a copy of
the workspace's repository gets Feast's Redis online store at 127.0.0.1:6379 under a
unique Feast project, filled by ``parity materialize``, its keys deleted after the run
(``bench/serving_online.py``). The systems that read the online store (Predict, the
two-hop, ``feast serve``, the in-process floors) run once per store; the table's
``online`` column says which; the others (V2, MLServer, echo) run once (``—``). On
Redis, the redis-server process's CPU during a cell counts as the servers' (SQLite's
reads are in the server's process, so its rows count them too).

OpenMP: HistGradientBoosting runs every one of its 300 trees as an OpenMP
parallel region; with two threads per call on this 2-vCPU VM a one-row
``predict_proba`` takes 6 ms or 35 ms depending on whether the other vCPU is
awake. ``threadpoolctl.threadpool_limits`` in one thread does not help: libgomp
keeps the limit per calling thread, and requests run on worker threads. Only
OMP_NUM_THREADS in the environment binds every thread, so the floor and MLServer
run with OMP_NUM_THREADS=1; ``parity serve`` runs as shipped unless
``--ours-omp-threads`` says otherwise.

Load: a separate load-generator process (never a server's) keeps K requests in
flight for ``--duration`` seconds after ``--warmup`` seconds, recording every
request's latency; p50/p95/p99, requests/s and errors come from the measured
window. The default harness is grpc.aio (one event loop, K coroutines; the
two-hop's HTTP hop and the REST scenarios over one keep-alive HTTP/1.1 connection per
coroutine, so 64 in flight is 64 connections, spread over ``--workers 2`` by
SO_REUSEPORT as the gRPC channels are); ``--harness
threads`` uses K threads with blocking stubs. Either spends about 0.4-1 ms of
CPU per request (the two-hop's JSON the most), 0.1 core at these rates: not
the bottleneck, but a share of the 2 cores. Connections are spread over up to
``CHANNELS`` gRPC channels, so ``--workers 2`` (SO_REUSEPORT) gets connections
on both processes.

Noise: the machine has 2 cores, which client, servers and anything else running
share. Before each cell the run waits (``--quiet-wait``) for other processes to
leave the CPU; the table gives the CPU the servers and the client spent per
request and the share of the machine other processes took during the cell.
``--repeat N`` runs everything N times, every other run in reverse order, and
reports medians.

    .venv/bin/python bench/serving.py --setup-anchors     # once: the anchors' venvs
    .venv/bin/python bench/serving.py [--json results.json] [--repeat 2] [--online sqlite,redis]
    .venv/bin/python bench/serving.py --scenario echo --scenario predict --inflight 1,64 \
        --duration 2 --warmup 1 --online sqlite,redis --workdir /tmp/bench  # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serving_online import REDIS, STORES, redis_repository  # noqa: E402
from bench.serving_report import NO_STORE, RunFacts, aggregate, report  # noqa: E402

ANCHORS_VENV = Path.home() / ".cache" / "parity" / "serving-anchors-venv"
MLSERVER_PINS = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"]
#: Installed in the MLServer environment at exactly the versions of this one.
SAME_AS_OURS = ["scikit-learn", "numpy", "pandas", "scipy", "joblib", "threadpoolctl"]
MODEL = "fraud_model"
REST_PATH = f"/v2/models/{MODEL}/infer"  # the same model name on parity and MLServer
FEATURE_SERVICE = "fraud_model_v1"
FLOOR_DETAIL = "one process, a thread per request in flight, OMP_NUM_THREADS=1"
EXPORT_CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import joblib
from framework.registry.model_registry import ModelRegistry
registry = ModelRegistry(Path(sys.argv[2]))
model, _ = registry.load(registry.resolve("fraud_model@champion"))
joblib.dump(model, sys.argv[3])
"""
ECHO_REPLY = "echo-reply.bin"  # parity's PredictResponse bytes, in the run's log folder
REDIS_PORT = int(REDIS.rsplit(":", 1)[1])
CHANNELS = 8  # gRPC channels (TCP connections) a load generator opens at most
TIMEOUT = 30.0  # per request, seconds


@dataclass(frozen=True)
class Scenario:
    """One system to measure: the servers it needs and the load child's client for it.

    A new scenario (say, ``Predict`` with explanations) is one entry here plus one
    client function in :data:`CLIENTS`.
    """

    label: str
    servers: str  # "ours", "anchors" or "none" (in-process)
    client: str  # key of CLIENTS
    what: str
    every_config: bool = True  # False: measured with the group's first configuration only
    uses_online: bool = True  # False: reads no online store, measured with the first only


SCENARIOS = {
    "predict": Scenario("ours Predict", "ours", "predict", "lookup + inference + logging"),
    "explain": Scenario(
        "ours Predict+explain",
        "ours",
        "explain",
        "Predict with explain: SHAP attributions of every feature",
    ),
    "two_hop": Scenario("two-hop", "anchors", "two_hop", "feast serve HTTP, then MLServer V2"),
    "v2_ours": Scenario(
        "ours V2", "ours", "v2_ours", "ModelInfer, features supplied", uses_online=False
    ),
    "v2_mlserver": Scenario(
        "MLServer V2", "anchors", "v2_mlserver", "ModelInfer, pandas codec", uses_online=False
    ),
    "rest_ours": Scenario(
        "ours REST", "ours", "rest_ours", "REST infer, JSON, features supplied", uses_online=False
    ),
    "rest_mlserver": Scenario(
        "MLServer REST", "anchors", "rest_mlserver", "REST infer, pandas codec", uses_online=False
    ),
    "echo": Scenario(
        "echo",
        "echo",
        "echo",
        "bare grpcio, Predict's reply bytes (the transport's floor)",
        uses_online=False,
    ),
    "feast_http": Scenario(
        "feast serve", "anchors", "feast_http", "get-online-features only", every_config=False
    ),
    "floor": Scenario("in-process floor", "none", "floor", "get_online_features + predict_proba"),
    "floor_compiled": Scenario(
        "in-process, compiled model",
        "none",
        "floor_compiled",
        "get_online_features + parity's compiled model (what the server adds, on its own work)",
    ),  # fmt: skip
}


@dataclass(frozen=True)
class OursConfig:
    """``parity serve`` flags, and OMP_NUM_THREADS in its environment if ``omp_threads``."""

    workers: int
    threads: int
    omp_threads: int = 0
    affinity: str = "spread"  #: parity serve --cpu-affinity (spread, as shipped, or off)

    @property
    def label(self) -> str:
        env = f"OMP_NUM_THREADS={self.omp_threads} " if self.omp_threads else ""
        placed = " --cpu-affinity off" if self.affinity == "off" else ""
        return f"{env}parity serve --workers {self.workers} --threads {self.threads}{placed}"

    @property
    def short(self) -> str:
        omp = f" OMP={self.omp_threads}" if self.omp_threads else ""
        placed = ", unpinned" if self.affinity == "off" else ""
        return f"{self.workers} proc × {self.threads} threads{omp}{placed}"

    @property
    def slug(self) -> str:
        return f"w{self.workers}t{self.threads}" + ("-unpinned" if self.affinity == "off" else "")


@dataclass(frozen=True)
class AnchorsConfig:
    """MLServer's ``parallel_workers`` and OMP_NUM_THREADS (0: unset); feast serve's workers."""

    mlserver_workers: int
    omp_threads: int
    feast_workers: int

    @property
    def label(self) -> str:
        omp = f", OMP_NUM_THREADS={self.omp_threads}" if self.omp_threads else ""
        return (f"MLServer parallel_workers={self.mlserver_workers}{omp}; feast serve --workers "
                f"{self.feast_workers} --no-access-log --max-requests 0")  # fmt: skip

    @property
    def short(self) -> str:
        return f"MLServer pw={self.mlserver_workers}, feast w={self.feast_workers}"


@dataclass
class Workspace:
    """A demo workspace and what the load children send."""

    root: Path
    now: str  # the sample's end: the servers' clock
    rows: list[dict[str, Any]]  # entity keys + request data, one per request
    features: list[dict[str, Any]]  # the model's features for those rows (in-process read)
    fields: list[dict[str, str]]  # the model's features, name and Feast type
    proba: list[float]  # the in-process model's fraud probability for those features
    online: str = "sqlite"  # the online store of ``repo``
    repo_name: str = "feature_repo"
    store_pids: tuple[int, ...] = ()  # an online store's server processes (redis-server)

    @property
    def repo(self) -> Path:
        return self.root / self.repo_name

    @property
    def registry(self) -> Path:
        return self.root / "data" / "models"


@dataclass
class Running:
    """Servers up for a group of scenarios: their addresses and process ids."""

    targets: dict[str, str]
    pids: list[int]
    config: str  # short, for the table
    detail: str  # every setting, for the footer
    checks: list[str] = field(default_factory=list)
    workers: int = 0  # server processes (ours, echo); 0 for the others


# ------------------------------------------------------------------ anchors setup


def setup_anchors(root: Path) -> None:
    """Create the feast and MLServer environments (see the module docstring)."""
    feast = f"feast[duckdb,redis]=={metadata.version('feast')}"
    _venv(root / "feast", ["-c", str(ROOT / "requirements.lock"), feast])
    same = [f"{d}=={metadata.version(d)}" for d in SAME_AS_OURS]
    _venv(root / "mlserver", [*MLSERVER_PINS, *same])
    print(f"anchors: {root / 'feast'} ({feast}), {root / 'mlserver'} "
          f"({', '.join(MLSERVER_PINS + same)})")  # fmt: skip


def _venv(path: Path, requirements: list[str]) -> None:
    uv = shutil.which("uv")
    if uv:
        subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(path)], check=True)
        pip = [uv, "pip", "install", "-q", "--python", str(path / "bin" / "python")]
    else:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
        pip = [str(path / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *requirements], check=True)


def _anchor_versions(root: Path) -> dict[str, dict[str, str]]:
    code = ("import json, sys\nfrom importlib import metadata\n"
            "print(json.dumps({d: metadata.version(d) for d in sys.argv[1:]}))")  # fmt: skip
    wanted = {
        "feast": ["feast", "fastapi", "uvicorn", "gunicorn", "redis"],
        "mlserver": ["mlserver", "mlserver-sklearn", "scikit-learn", "grpcio", "uvloop"],
    }
    out = {}
    for venv, dists in wanted.items():
        proc = subprocess.run([str(root / venv / "bin" / "python"), "-c", code, *dists],
                              capture_output=True, text=True, check=True)  # fmt: skip
        out[venv] = json.loads(proc.stdout)
    return out


# ------------------------------------------------------------------ workspace


def build_workspace(root: Path, n_rows: int) -> Workspace:
    """Copy the repository, run ``parity demo --drift none`` in it, pick the entity rows."""
    if not (root / "data" / "models" / MODEL).is_dir():  # a kept --workdir is reused
        _demo(root)
    now = json.loads((root / "data" / "raw" / "manifest.json").read_text())["end"]
    rows = _latest_rows(root / "data" / "raw" / "transactions.parquet", n_rows)
    fields, features, proba = _in_process_features(root / "feature_repo", rows)
    keep = [i for i, f in enumerate(features) if _strings_present(f, fields)]
    return Workspace(root, now, [rows[i] for i in keep], [features[i] for i in keep], fields,
                     [proba[i] for i in keep])  # fmt: skip


def _demo(root: Path) -> None:
    """``parity demo --drift none`` in a copy of the repository (its data in ``root/data``)."""
    shutil.copytree(ROOT / "feature_repo", root / "feature_repo")
    proc = subprocess.run(
        [sys.executable, "-m", "framework.cli", "demo", "--repo", str(root / "feature_repo"),
         "--drift", "none", "--json"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"parity demo failed:\n{proc.stderr[-3000:]}")


def _latest_rows(path: Path, n: int) -> list[dict[str, Any]]:
    """Entity keys and request data of the ``n`` latest transactions."""
    import duckdb

    con = duckdb.connect()
    try:
        rows = con.execute(
            """SELECT user_id, merchant_id, amount,
                      hour(transaction_timestamp AT TIME ZONE 'UTC')::BIGINT AS hour_of_day
               FROM read_parquet(?) ORDER BY transaction_timestamp DESC, transaction_id LIMIT ?""",
            [str(path), n],
        ).fetchall()
    finally:
        con.close()
    return [{"user_id": u, "merchant_id": m, "amount": a, "hour_of_day": h} for u, m, a, h in rows]


def _in_process_features(
    repo: Path, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, str]], list[dict[str, Any]], list[float]]:
    """The model's fields, the features Feast reads from ``repo``'s online store for
    ``rows`` and the model's scores."""
    import pyarrow as pa

    from framework.features.fields import FeatureField
    from framework.features.repository import load_store
    from framework.models.estimator import feature_frame
    from framework.registry.model_registry import ModelRegistry

    store = load_store(repo)
    registry = ModelRegistry(repo.parent / "data" / "models")
    model, manifest = registry.load(registry.resolve(f"{MODEL}@champion"))
    fields = [{"name": f["name"], "dtype": f["dtype"]} for f in manifest["features"]]
    service = store.get_feature_service(manifest["feature_service"])
    read = store.get_online_features(features=service, entity_rows=rows).to_dict()
    features = [{f["name"]: read[f["name"]][i] for f in fields} for i in range(len(rows))]
    typed = [FeatureField(f["name"], f["dtype"], "") for f in fields]
    frame = feature_frame(pa.table({f.name: read[f.name] for f in typed}), typed)
    proba = [float(p) for p in model.predict_proba(frame)[:, 1]]
    return fields, features, proba


def _strings_present(features: dict[str, Any], fields: list[dict[str, str]]) -> bool:
    """A V2 BYTES tensor has no null: keep rows whose text features all have a value."""
    return all(features[f["name"]] is not None for f in fields if f["dtype"] in ("String", "Bytes"))


# ------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    """Poll ``ready`` until it holds; fail with the log's tail if the process exits or
    a minute passes."""
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(Exception):
            if ready():
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} not ready within 60 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


@contextlib.contextmanager
def _process(cmd: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None
             ) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    """A server in its own process group, stopped (SIGTERM, then SIGKILL) on exit."""
    import psutil

    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)  # fmt: skip
    try:
        yield proc
    finally:
        family = [proc.pid]
        with contextlib.suppress(psutil.NoSuchProcess):
            family += [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in family[1:]:  # children that left the group, if any
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()


def _family(pids: list[int]) -> list[Any]:
    import psutil

    out = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            p = psutil.Process(pid)
            out += [p, *p.children(recursive=True)]
    return out


def _cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of the processes and all their descendants."""
    import psutil

    total = 0.0
    for p in _family(pids):
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def _listeners(port: int) -> list[int]:
    """The process of each socket listening on ``port`` (any user's)."""
    import psutil

    return [c.pid for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.pid
            and getattr(c.laddr, "port", None) == port]  # fmt: skip


def _listening(port: int, pids: list[int]) -> int:
    """How many of the processes (or their descendants) listen on ``port``."""
    family = {p.pid for p in _family(pids)}
    return sum(1 for pid in _listeners(port) if pid in family)


# ------------------------------------------------------------------ servers


@contextlib.contextmanager
def serve_ours(ws: Workspace, config: OursConfig, logs: Path) -> Iterator[Running]:
    """``parity serve`` on a free port, ready once every worker listens and reports healthy."""
    port, http_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "framework.cli", "serve", "--repo", str(ws.repo), "--port",
           str(port), "--http-port", str(http_port), "--workers", str(config.workers),
           "--threads", str(config.threads), "--now", ws.now, "--model", f"{MODEL}@champion",
           "--cpu-affinity", config.affinity]  # fmt: skip
    log = logs / f"parity-serve-{config.slug}-{ws.online}.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(config.omp_threads)} if config.omp_threads else None
    with _process(cmd, log, ROOT, env) as proc:
        _wait(lambda: _listening(port, [proc.pid]) == config.workers and _healthy(port)
              and _listening(http_port, [proc.pid]) == config.workers,
              proc, "parity serve", log)  # fmt: skip
        targets = {"ours": f"127.0.0.1:{port}", "ours_http": f"127.0.0.1:{http_port}"}
        running = Running(targets, [proc.pid], config.short, config.label,
                          workers=config.workers)  # fmt: skip
        running.checks.append(check_ours(ws, targets["ours"], targets["ours_http"]))
        if not (logs / ECHO_REPLY).exists():
            _capture_reply(ws, running.targets["ours"], logs / ECHO_REPLY)
        yield running


def _capture_reply(ws: Workspace, target: str, path: Path) -> None:
    """The echo's reply: parity's serialised ``PredictResponse`` to the first row's request."""
    import grpc

    from serving.stubs.parity.v1 import prediction_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        reply = pb_grpc.PredictionServiceStub(channel).Predict(predict_request(ws.rows[0]),
                                                                timeout=10)  # fmt: skip
    path.write_bytes(reply.SerializeToString())


@contextlib.contextmanager
def serve_echo(ws: Workspace, config: OursConfig, logs: Path) -> Iterator[Running]:
    """The echo server (``bench/echo_server.py``) in ``config``'s processes and threads,
    replying parity's ``Predict`` answer, captured first from a ``parity serve`` if no
    configuration of ours has run yet."""
    reply = logs / ECHO_REPLY
    if not reply.exists():
        with serve_ours(ws, OursConfig(1, 1, config.omp_threads, config.affinity), logs):
            pass
    port = free_port()
    cmd = [sys.executable, str(ROOT / "bench" / "echo_server.py"), "--port", str(port),
           "--workers", str(config.workers), "--threads", str(config.threads),
           "--reply", str(reply), "--cpu-affinity", config.affinity]  # fmt: skip
    log = logs / f"echo-{config.slug}.log"
    with _process(cmd, log, ROOT) as proc:
        target = f"127.0.0.1:{port}"
        request = predict_request(ws.rows[0])
        _wait(lambda: _listening(port, [proc.pid]) == config.workers and _echoes(target, request),
              proc, "echo server", log)  # fmt: skip
        label = (f"bench/echo_server.py --workers {config.workers} --threads {config.threads} "
                 f"--cpu-affinity {config.affinity} "
                 f"(grpcio generic handler, {reply.stat().st_size}-byte reply)")  # fmt: skip
        running = Running({"echo": target}, [proc.pid], config.short, label,
                          workers=config.workers)  # fmt: skip
        size = request.ByteSize()
        running.checks.append(f"echo: replies {reply.stat().st_size} bytes (parity's Predict "
                              f"answer to a {size}-byte request), parsed as a PredictResponse")  # fmt: skip
        yield running


def _echoes(target: str, request: Any) -> bool:
    import grpc

    from serving.stubs.parity.v1 import prediction_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        reply = pb_grpc.PredictionServiceStub(channel).Predict(request, timeout=2)
    return len(reply.predictions) == 1


def _healthy(port: int) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@contextlib.contextmanager
def serve_anchors(ws: Workspace, venvs: Path, config: AnchorsConfig, logs: Path
                  ) -> Iterator[Running]:  # fmt: skip
    """MLServer with the same pipeline, and ``feast serve`` on the same repository copy."""
    ml_args = (config.mlserver_workers, config.omp_threads)
    with serve_mlserver(ws, venvs / "mlserver", *ml_args, logs) as (ml, ml_http, ml_pid):
        with serve_feast(ws, venvs / "feast", config.feast_workers, logs) as (fs, fs_pid):
            targets = {"mlserver": ml, "mlserver_http": ml_http, "feast": fs}
            running = Running(targets, [ml_pid, fs_pid], config.short, config.label)
            running.checks += [check_mlserver(ws, ml, ml_http), check_feast(ws, fs)]
            yield running


@contextlib.contextmanager
def serve_mlserver(ws: Workspace, venv: Path, workers: int, omp_threads: int, logs: Path
                   ) -> Iterator[tuple[str, str, int]]:  # fmt: skip
    """MLServer 1.7.1 serving our fitted pipeline (written as joblib) as ``fraud_model``:
    its gRPC and its REST address, and its process."""
    folder = ws.root / "mlserver"
    _write_mlserver_model(ws, folder / MODEL)
    grpc_port, http_port = free_port(), free_port()
    settings = {"debug": False, "host": "127.0.0.1", "http_port": http_port,
                "grpc_port": grpc_port, "metrics_port": free_port(),
                "parallel_workers": workers}  # fmt: skip
    (folder / "settings.json").write_text(json.dumps(settings))
    log = logs / "mlserver.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(omp_threads)} if omp_threads else None
    cmd = [str(venv / "bin" / "mlserver"), "start", str(folder)]
    with _process(cmd, log, folder, env) as proc:
        _wait(lambda: _model_ready(grpc_port) and _http_ok(http_port, f"/v2/models/{MODEL}/ready"),
              proc, "mlserver", log)  # fmt: skip
        yield f"127.0.0.1:{grpc_port}", f"127.0.0.1:{http_port}", proc.pid


def _write_mlserver_model(ws: Workspace, folder: Path) -> None:
    """The champion, loaded from our registry (checksum-verified skops), as joblib; in a
    fresh process: once Feast has run an on-demand view, dill's picklers are installed and
    the joblib file would need dill to load."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", EXPORT_CHILD, str(ROOT), str(ws.registry),
                    str(folder / "model.joblib")], check=True)  # fmt: skip
    (folder / "model-settings.json").write_text(json.dumps({
        "name": MODEL, "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }))  # fmt: skip


def _model_ready(port: int) -> bool:
    import grpc

    from serving.stubs.inference import grpc_predict_v2_pb2 as v2
    from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = v2_grpc.GRPCInferenceServiceStub(channel)
        return bool(stub.ModelReady(v2.ModelReadyRequest(name=MODEL), timeout=2).ready)


@contextlib.contextmanager
def serve_feast(ws: Workspace, venv: Path, workers: int, logs: Path
                ) -> Iterator[tuple[str, int]]:  # fmt: skip
    """``feast serve`` over the workspace's repository (its registry, its SQLite file).

    ``--max-requests 0``: Feast's default (1,000) recycles the gunicorn worker every
    thousand requests, a restart in the middle of a measurement."""
    port = free_port()
    cmd = [str(venv / "bin" / "feast"), "-c", str(ws.repo), "serve", "-p", str(port),
           "--workers", str(workers), "--no-access-log", "--max-requests", "0"]  # fmt: skip
    log = logs / "feast-serve.log"
    with _process(cmd, log, ws.repo) as proc:
        _wait(lambda: _http_ok(port) and _listening(port, [proc.pid]) >= 1, proc, "feast serve",
              log)  # fmt: skip
        yield f"127.0.0.1:{port}", proc.pid


def _http_ok(port: int, path: str = "/health") -> bool:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
        return bool(reply.status == 200)


# ------------------------------------------------------------------ answer checks


def check_ours(ws: Workspace, target: str, http: str) -> str:
    """Our answers are the model's: no FALLBACK on Predict, V2 scores (gRPC and REST) equal
    in-process ones."""
    import grpc

    from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc
    from serving.stubs.parity.v1 import prediction_pb2 as pb
    from serving.stubs.parity.v1 import prediction_pb2_grpc as pb_grpc

    n = min(32, len(ws.rows))
    with grpc.insecure_channel(target) as channel:
        predict = pb_grpc.PredictionServiceStub(channel).Predict
        decisions = Counter(
            pb.Decision.Name(predict(predict_request(r), timeout=10).predictions[0].decision)
            for r in ws.rows[:n]
        )
        infer = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        scores = [_output(infer(v2_request(ws.fields, f, False), timeout=10), "score")[0]
                  for f in ws.features[:n]]  # fmt: skip
    diff = max(abs(a - b) for a, b in zip(scores, ws.proba, strict=False))
    rest_diff = _rest_diff(ws, http, False, n)
    return (f"ours: Predict on {n} rows {dict(decisions)}; V2 (features supplied) vs in-process "
            f"predict_proba: max |diff| {diff:.2e} over gRPC, {rest_diff:.2e} over REST "
            f"({_rest_rows(n)})")  # fmt: skip


def check_mlserver(ws: Workspace, target: str, http: str) -> str:
    """MLServer's probabilities for the same features (gRPC and REST) against ours
    (in-process)."""
    import grpc

    from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc

    n = min(32, len(ws.features))
    with grpc.insecure_channel(target) as channel:
        infer = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        proba = [_output(infer(v2_request(ws.fields, f, True), timeout=10), "predict_proba")[1]
                 for f in ws.features[:n]]  # fmt: skip
    diff = max(abs(a - b) for a, b in zip(proba, ws.proba, strict=False))
    rest_diff = _rest_diff(ws, http, True, n)
    verdict = "same model" if max(diff, rest_diff) < 1e-9 else "**DIFFERENT**"
    return (f"MLServer vs in-process predict_proba on {n} rows: max |diff| {diff:.2e} over "
            f"gRPC, {rest_diff:.2e} over REST ({_rest_rows(n)}) ({verdict})")  # fmt: skip


def _rest_rows(n: int) -> str:
    return f"the first {n} rows with every feature and the first {n} with a missing one"


def _rest_diff(ws: Workspace, http: str, mlserver: bool, n: int) -> float:
    """Largest |REST score - in-process probability| over the first ``n`` rows with every
    feature and the first ``n`` with a missing one (sent as ``null``)."""
    missing = [any(v is None or (isinstance(v, float) and math.isnan(v)) for v in f.values())
               for f in ws.features]  # fmt: skip
    rows = ([i for i, m in enumerate(missing) if not m][:n]
            + [i for i, m in enumerate(missing) if m][:n])  # fmt: skip
    name, index = ("predict_proba", 1) if mlserver else ("score", 0)
    return max(
        abs(_rest_output(_rest_post(http, rest_body(v2_request(ws.fields, ws.features[i],
                                                               mlserver))), name)[index]
            - ws.proba[i])
        for i in rows
    )  # fmt: skip


def check_feast(ws: Workspace, target: str) -> str:
    """``feast serve`` returns the features the in-process read returned."""
    import urllib.request

    n = min(32, len(ws.rows))
    body = json.dumps(feast_body(ws.rows[:n])).encode()
    request = urllib.request.Request(f"http://{target}/get-online-features", body,
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as reply:
        served = feast_features(json.loads(reply.read()), n)
    differ = sum(
        1 for i in range(n) for f in ws.fields
        if not _same(served[i].get(f["name"]), ws.features[i][f["name"]])
    )  # fmt: skip
    return f"feast serve vs in-process features on {n} rows: {differ} values differ"


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


def _output(response: Any, name: str) -> list[Any]:
    for i, out in enumerate(response.outputs):
        if out.name == name:
            if response.raw_output_contents:
                import numpy as np

                return list(np.frombuffer(response.raw_output_contents[i], "<f8"))
            return list(out.contents.fp64_contents)
    raise KeyError(name)


# ------------------------------------------------------------------ requests (shared)


def predict_request(row: dict[str, Any]) -> Any:
    """``Predict`` for one row: entity keys and request data."""
    from serving.grpc.converters import to_value
    from serving.stubs.parity.v1 import prediction_pb2 as pb

    request = pb.PredictRequest(model_name=MODEL)
    r = request.rows.add()
    for key in ("user_id", "merchant_id"):
        r.entity_keys[key].CopyFrom(to_value(row[key]))
    for key in ("amount", "hour_of_day"):
        r.request_data[key].CopyFrom(to_value(row[key]))
    return request


def v2_request(fields: list[dict[str, str]], features: dict[str, Any], mlserver: bool) -> Any:
    """``ModelInfer`` with one tensor per feature, MLServer's pandas codec marked
    (parity ignores the parameters); MLServer is asked for ``predict_proba``."""
    from serving.stubs.inference import grpc_predict_v2_pb2 as v2

    request = v2.ModelInferRequest(model_name=MODEL)
    request.parameters["content_type"].string_param = "pd"
    for f in fields:
        value = features[f["name"]]
        tensor = request.inputs.add(name=f["name"], shape=[1])
        if f["dtype"] in ("String", "Bytes"):
            tensor.datatype = "BYTES"
            tensor.parameters["content_type"].string_param = "str"
            tensor.contents.bytes_contents.append(str(value).encode())
        else:
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.append(math.nan if value is None else float(value))
    if mlserver:
        request.outputs.add(name="predict_proba")
    return request


def rest_body(request: Any) -> bytes:
    """A ``ModelInferRequest`` as the REST binding's JSON body: the same tensors (name,
    datatype, shape, parameters) with their contents as ``data`` arrays, the same
    parameters and requested outputs. A missing number is ``null``: JSON has no NaN
    (RFC 8259), MLServer 1.7.1 answers Python's ``NaN`` token with 422 "JSON decode
    error", and both servers read ``null`` in an FP64 tensor as a missing value."""

    def params(m: Any) -> dict[str, Any]:
        return {k: getattr(v, str(v.WhichOneof("parameter_choice"))) for k, v in m.items()}

    inputs = []
    for t in request.inputs:
        if t.datatype == "BYTES":
            data: list[Any] = [b.decode() for b in t.contents.bytes_contents]
        elif t.datatype == "FP64":
            data = [None if math.isnan(v) else v for v in t.contents.fp64_contents]
        else:  # v2_request sends only these two
            raise ValueError(f"rest_body: datatype {t.datatype} not handled")
        tensor = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": data}
        if t.parameters:
            tensor["parameters"] = params(t.parameters)
        inputs.append(tensor)
    doc: dict[str, Any] = {"parameters": params(request.parameters), "inputs": inputs}
    if request.outputs:
        doc["outputs"] = [{"name": o.name} for o in request.outputs]
    return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()


def _rest_post(target: str, body: bytes) -> dict[str, Any]:
    """One REST inference call (the answer checks'), its JSON answer."""
    import urllib.request

    request = urllib.request.Request(f"http://{target}{REST_PATH}", body,
                                     {"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as reply:
        answer: dict[str, Any] = json.loads(reply.read())
    return answer


def _rest_output(answer: dict[str, Any], name: str) -> list[Any]:
    for out in answer["outputs"]:
        if out["name"] == name:
            return list(out["data"])
    raise KeyError(name)


def feast_body(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``/get-online-features``: the feature service, entity keys and request data as columns."""
    return {"feature_service": FEATURE_SERVICE,
            "entities": {k: [r[k] for r in rows] for k in rows[0]}}  # fmt: skip


def feast_features(payload: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """Rows of name -> value from ``feast serve``'s JSON answer."""
    names = payload["metadata"]["feature_names"]
    return [{name: res["values"][i] for name, res in zip(names, payload["results"], strict=True)}
            for i in range(n)]  # fmt: skip


# ------------------------------------------------------------------ load child: clients
#
# A client is ``(spec, aio) -> (open_worker, close)``; ``open_worker(i)`` returns the
# call in-flight slot ``i`` makes (``call(j)`` sends request ``j``; async under aio) and
# the call returns an outcome to count (a decision, "ok").


def _channels(target: str, n: int, aio: bool) -> list[Any]:
    import grpc

    # A local subchannel pool: each channel its own TCP connection (gRPC shares them
    # between equal channels otherwise), so SO_REUSEPORT can spread them over workers.
    options = [("grpc.use_local_subchannel_pool", 1)]
    make = grpc.aio.insecure_channel if aio else grpc.insecure_channel
    return [make(target, options=options) for _ in range(n)]


def _grpc_client(stubs: list[Any], method: str, requests: list[Any],
                 outcome: Callable[[Any], str], aio: bool) -> Callable[[int], Any]:  # fmt: skip
    def open_worker(i: int) -> Any:
        call = getattr(stubs[i % len(stubs)], method)
        n = len(requests)
        if aio:

            async def run_async(j: int) -> str:
                return outcome(await call(requests[j % n], timeout=TIMEOUT))

            return run_async

        def run(j: int) -> str:
            return outcome(call(requests[j % n], timeout=TIMEOUT))

        return run

    return open_worker


def client_predict(
    spec: dict[str, Any], aio: bool, explain: bool = False, target: str = "ours"
) -> tuple[Callable[[int], Any], Callable[[], Any]]:
    """``Predict`` on parity, or (``target="echo"``) the same calls on the echo server."""
    from serving.stubs.parity.v1 import prediction_pb2 as pb
    from serving.stubs.parity.v1 import prediction_pb2_grpc as pb_grpc

    channels = _channels(spec["targets"][target], spec["channels"], aio)
    stubs = [pb_grpc.PredictionServiceStub(c) for c in channels]
    requests = [predict_request(r) for r in spec["rows"]]
    for request in requests:
        request.explain = explain

    def decision(reply: Any) -> str:
        return str(pb.Decision.Name(reply.predictions[0].decision))

    return _grpc_client(stubs, "Predict", requests, decision, aio), _closer(channels)


def client_v2(spec: dict[str, Any], aio: bool, mlserver: bool
              ) -> tuple[Callable[[int], Any], Callable[[], Any]]:  # fmt: skip
    from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc

    target = spec["targets"]["mlserver" if mlserver else "ours"]
    channels = _channels(target, spec["channels"], aio)
    stubs = [v2_grpc.GRPCInferenceServiceStub(c) for c in channels]
    requests = [v2_request(spec["fields"], f, mlserver) for f in spec["features"]]
    outcome = _proba_outcome if mlserver else _decision_outcome
    return _grpc_client(stubs, "ModelInfer", requests, outcome, aio), _closer(channels)


def _decision_outcome(reply: Any) -> str:
    for i, out in enumerate(reply.outputs):
        if out.name == "decision":
            if reply.raw_output_contents:
                return str(reply.raw_output_contents[i][4:].decode())
            return str(out.contents.bytes_contents[0].decode())
    raise KeyError("decision")


def _proba_outcome(reply: Any) -> str:
    proba = reply.outputs[0].contents.fp64_contents
    if len(proba) != 2 or not 0 <= proba[1] <= 1:
        raise ValueError(f"not a probability pair: {list(proba)}")
    return "ok"


def client_rest(spec: dict[str, Any], aio: bool, mlserver: bool
                ) -> tuple[Callable[[int], Any], Callable[[], Any]]:  # fmt: skip
    """``POST /v2/models/fraud_model/infer`` with :func:`rest_body` JSON, to parity's REST
    binding or MLServer's; one keep-alive connection per in-flight slot. The answer is
    parsed and checked as the gRPC clients check theirs (a decision; a probability pair)."""
    host, port = spec["targets"]["mlserver_http" if mlserver else "ours_http"].rsplit(":", 1)
    bodies = [rest_body(v2_request(spec["fields"], f, mlserver)) for f in spec["features"]]
    n = len(bodies)

    def outcome(payload: bytes) -> str:
        answer = json.loads(payload)
        if mlserver:
            proba = _rest_output(answer, "predict_proba")
            if len(proba) != 2 or not 0 <= proba[1] <= 1:
                raise ValueError(f"not a probability pair: {proba}")
            return "ok"
        return str(_rest_output(answer, "decision")[0])

    def open_worker(i: int) -> Any:
        if aio:
            conn = _AioHttp(host, int(port))

            async def run_async(j: int) -> str:
                return outcome(await conn.post(REST_PATH, bodies[j % n]))

            return run_async
        post = _sync_http(host, int(port))

        def run(j: int) -> str:
            return outcome(post(REST_PATH, bodies[j % n]))

        return run

    return open_worker, list


def client_two_hop(spec: dict[str, Any], aio: bool
                   ) -> tuple[Callable[[int], Any], Callable[[], Any]]:  # fmt: skip
    """What a user would build: HTTP to ``feast serve``, then gRPC ``ModelInfer`` to MLServer."""
    from serving.stubs.inference import grpc_predict_v2_pb2_grpc as v2_grpc

    host, port = spec["targets"]["feast"].rsplit(":", 1)
    bodies = [json.dumps(feast_body([r])).encode() for r in spec["rows"]]
    channels = _channels(spec["targets"]["mlserver"], spec["channels"], aio)
    stubs = [v2_grpc.GRPCInferenceServiceStub(c) for c in channels]
    fields, n = spec["fields"], len(bodies)

    def infer_request(payload: bytes) -> Any:
        return v2_request(fields, feast_features(json.loads(payload), 1)[0], True)

    def open_worker(i: int) -> Any:
        stub = stubs[i % len(stubs)]
        if aio:
            conn = _AioHttp(host, int(port))

            async def run_async(j: int) -> str:
                payload = await conn.post("/get-online-features", bodies[j % n])
                return _proba_outcome(
                    await stub.ModelInfer(infer_request(payload), timeout=TIMEOUT)
                )

            return run_async
        post = _sync_http(host, int(port))

        def run(j: int) -> str:
            payload = post("/get-online-features", bodies[j % n])
            return _proba_outcome(stub.ModelInfer(infer_request(payload), timeout=TIMEOUT))

        return run

    return open_worker, _closer(channels)


def client_feast_http(spec: dict[str, Any], aio: bool
                      ) -> tuple[Callable[[int], Any], Callable[[], Any]]:  # fmt: skip
    """The feature hop alone: ``feast serve`` ``/get-online-features``."""
    host, port = spec["targets"]["feast"].rsplit(":", 1)
    bodies = [json.dumps(feast_body([r])).encode() for r in spec["rows"]]
    n = len(bodies)

    def open_worker(i: int) -> Any:
        if aio:
            conn = _AioHttp(host, int(port))

            async def run_async(j: int) -> str:
                json.loads(await conn.post("/get-online-features", bodies[j % n]))
                return "ok"

            return run_async
        post = _sync_http(host, int(port))

        def run(j: int) -> str:
            json.loads(post("/get-online-features", bodies[j % n]))
            return "ok"

        return run

    return open_worker, list


def client_floor(spec: dict[str, Any], aio: bool, compiled: bool = False
                 ) -> tuple[Callable[[int], Any], Callable[[], Any]]:  # fmt: skip
    """In process: Feast ``get_online_features`` + the model's frame + ``predict_proba``, one
    OpenMP thread per call (the load child runs with OMP_NUM_THREADS=1, see the docstring).
    ``compiled``: the model's compiled form (framework.models.compiled), as the server
    scores it, instead of scikit-learn's ``predict_proba``."""
    import pyarrow as pa

    from framework.features.fields import FeatureField
    from framework.features.repository import load_store
    from framework.models.compiled import CompiledModel
    from framework.models.estimator import feature_frame
    from framework.registry.model_registry import ModelRegistry

    store = load_store(Path(spec["repo"]))
    registry = ModelRegistry(Path(spec["registry"]))
    model, manifest = registry.load(registry.resolve(f"{MODEL}@champion"))
    if compiled:
        model = CompiledModel(model)
    fields = [FeatureField(**f) for f in manifest["features"]]
    service = store.get_feature_service(manifest["feature_service"])
    rows = spec["rows"]

    def open_worker(i: int) -> Callable[[int], str]:
        def run(j: int) -> str:
            read = store.get_online_features(features=service, entity_rows=[rows[j % len(rows)]])
            values = read.to_dict()
            frame = feature_frame(pa.table({f.name: values[f.name] for f in fields}), fields)
            p = float(model.predict_proba(frame)[0, 1])
            return "ok" if 0 <= p <= 1 else "bad"

        return run

    return open_worker, list


CLIENTS: dict[str, Callable[..., tuple[Callable[[int], Any], Callable[[], Any]]]] = {
    "predict": client_predict,
    "explain": lambda spec, aio: client_predict(spec, aio, explain=True),
    "echo": lambda spec, aio: client_predict(spec, aio, target="echo"),
    "v2_ours": lambda spec, aio: client_v2(spec, aio, mlserver=False),
    "v2_mlserver": lambda spec, aio: client_v2(spec, aio, mlserver=True),
    "rest_ours": lambda spec, aio: client_rest(spec, aio, mlserver=False),
    "rest_mlserver": lambda spec, aio: client_rest(spec, aio, mlserver=True),
    "two_hop": client_two_hop,
    "feast_http": client_feast_http,
    "floor": client_floor,
    "floor_compiled": lambda spec, aio: client_floor(spec, aio, compiled=True),
}
SYNC_ONLY = {"floor", "floor_compiled"}  # in-process: threads whatever the harness


def _closer(channels: list[Any]) -> Callable[[], Any]:
    def close() -> Any:
        results = [c.close() for c in channels]
        return [r for r in results if asyncio.iscoroutine(r)]

    return close


class _AioHttp:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams (POST, JSON, Content-Length)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> bytes:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
        self.writer.write(head.encode() + body)
        try:
            lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            headers = dict(h.lower().split(": ", 1) for h in lines[1:] if ": " in h)
            payload = await self.reader.readexactly(int(headers["content-length"]))
        except Exception:
            self.writer.close()
            self.writer = None  # reconnect on the next request
            raise
        status = int(lines[0].split(" ", 2)[1])
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")
        return payload


def _sync_http(host: str, port: int) -> Callable[[str, bytes], bytes]:
    """A keep-alive ``http.client`` connection; returns ``post(path, body) -> payload``."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    headers = {"Content-Type": "application/json"}

    def post(path: str, body: bytes) -> bytes:
        conn.request("POST", path, body, headers)
        reply = conn.getresponse()
        payload = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"HTTP {reply.status}: {payload[:200]!r}")
        return payload

    return post


# ------------------------------------------------------------------ load child: harness


@dataclass
class _Tally:
    """What one in-flight slot saw; the measured window only, except ``total``."""

    latencies: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    total: int = 0
    last_end: float = 0.0

    def add(self, measured: bool, seconds: float, outcome: str | None, error: str | None,
            end: float) -> None:  # fmt: skip
        self.total += 1
        if not measured:
            return
        self.latencies.append(seconds)
        self.last_end = max(self.last_end, end)
        if error is None:
            self.outcomes[str(outcome)] += 1
        else:
            self.errors[error] += 1


def _error_name(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if callable(code):
        with contextlib.suppress(Exception):
            details = exc.details()  # type: ignore[attr-defined]
            return f"{code().name}: {' '.join(str(details).split())[:120]}"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}"


def run_threads(open_worker: Callable[[int], Any], spec: dict[str, Any]) -> list[_Tally]:
    """K threads, each sending its next request when the last one answered."""
    k, tallies = spec["inflight"], [_Tally() for _ in range(spec["inflight"])]
    calls = [open_worker(i) for i in range(k)]
    spec["cpu_start"] = _rusage_seconds()
    start = time.perf_counter() + 0.05
    measure_from, stop = start + spec["warmup"], start + spec["warmup"] + spec["duration"]

    def slot(i: int) -> None:
        call, tally, j = calls[i], tallies[i], i
        while (began := time.perf_counter()) < stop:
            outcome, error = None, None
            try:
                outcome = call(j)
            except Exception as exc:
                error = _error_name(exc)
            end = time.perf_counter()
            tally.add(began >= measure_from, end - began, outcome, error, end)
            j += k

    threads = [threading.Thread(target=slot, args=(i,), daemon=True) for i in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spec["measure_from"] = measure_from
    return tallies


async def run_aio(open_worker: Callable[[int], Any], spec: dict[str, Any]) -> list[_Tally]:
    """K coroutines on one event loop, each sending its next request when the last answered."""
    k, tallies = spec["inflight"], [_Tally() for _ in range(spec["inflight"])]
    calls = [open_worker(i) for i in range(k)]
    spec["cpu_start"] = _rusage_seconds()
    start = time.perf_counter()
    measure_from, stop = start + spec["warmup"], start + spec["warmup"] + spec["duration"]

    async def slot(i: int) -> None:
        call, tally, j = calls[i], tallies[i], i
        while (began := time.perf_counter()) < stop:
            outcome, error = None, None
            try:
                outcome = await call(j)
            except Exception as exc:
                error = _error_name(exc)
            end = time.perf_counter()
            tally.add(began >= measure_from, end - began, outcome, error, end)
            j += k

    await asyncio.gather(*(slot(i) for i in range(k)))
    spec["measure_from"] = measure_from
    return tallies


def load_child(spec_path: Path) -> None:
    """The load generator: run one client at one in-flight level, print JSON."""

    spec = json.loads(spec_path.read_text())
    client = CLIENTS[spec["client"]]
    aio = spec["harness"] == "aio" and spec["client"] not in SYNC_ONLY
    if aio:

        async def main() -> list[_Tally]:
            open_worker, close = client(spec, True)
            try:
                return await run_aio(open_worker, spec)
            finally:
                await asyncio.gather(*close())

        tallies = asyncio.run(main())
    else:
        open_worker, close = client(spec, False)
        tallies = run_threads(open_worker, spec)
        close()
    cpu = _rusage_seconds() - spec["cpu_start"]  # the load itself: no imports, no set-up
    print(json.dumps({**summarise(tallies, spec["measure_from"]), "client_cpu_s": cpu,
                      "client_cpu_total_s": _rusage_seconds(),
                      "harness": "aio" if aio else "threads"}))  # fmt: skip


def _rusage_seconds() -> float:
    """CPU seconds (user + system) of this process, all its threads."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def summarise(tallies: list[_Tally], measure_from: float) -> dict[str, Any]:
    """Percentiles (ms), requests/s over the measured window, outcomes and errors."""
    import numpy as np

    latencies = np.array([s for t in tallies for s in t.latencies]) * 1000
    outcomes: Counter[str] = sum((t.outcomes for t in tallies), Counter())
    errors: Counter[str] = sum((t.errors for t in tallies), Counter())
    window = max(t.last_end for t in tallies) - measure_from if len(latencies) else 0.0
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if len(latencies) else (0, 0, 0)
    return {
        "requests": int(len(latencies)), "total_requests": sum(t.total for t in tallies),
        "seconds": window, "rps": len(latencies) / window if window else 0.0,
        "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
        "max_ms": float(latencies.max()) if len(latencies) else 0.0,
        "errors": sum(errors.values()), "error_kinds": dict(errors.most_common(5)),
        "outcomes": dict(outcomes),
    }  # fmt: skip


# ------------------------------------------------------------------ measuring


def measure(scenario: Scenario, inflight: int, ws: Workspace, running: Running | None,
            args: argparse.Namespace, tmp: Path) -> dict[str, Any]:  # fmt: skip
    """One load child against the running servers; its result plus the CPU the servers,
    the client and everything else on the machine spent meanwhile."""
    import psutil

    spec = {
        "client": scenario.client, "inflight": inflight, "harness": args.harness,
        "warmup": args.warmup, "duration": args.duration,
        "channels": min(inflight, CHANNELS), "targets": running.targets if running else {},
        "rows": ws.rows, "features": ws.features, "fields": ws.fields,
        "repo": str(ws.repo), "registry": str(ws.registry),
    }  # fmt: skip
    path = tmp / "load-spec.json"
    path.write_text(json.dumps(spec))
    waited = wait_for_quiet(args)
    # The online store's server works for the servers measured: its CPU is theirs.
    pids = (running.pids if running else []) + list(ws.store_pids)
    server0, machine0, t0 = _cpu_seconds(pids), psutil.cpu_times(), time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the floor's model calls (see the docstring)
    proc = subprocess.run([sys.executable, __file__, "--load-child", str(path)], cwd=ROOT,
                          capture_output=True, text=True, env=env)  # fmt: skip
    server, machine = _cpu_seconds(pids) - server0, _busy(psutil.cpu_times(), machine0)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(
            f"load child ({scenario.label}, {inflight}) failed:\n{proc.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    n = max(result["total_requests"], 1)
    client = result["client_cpu_total_s"]
    result.update(
        waited_s=waited, server_cpu_ms=server / n * 1000, client_cpu_ms=result["client_cpu_s"] / n * 1000,
        other_cpu_share=max(machine - server - client, 0.0) / (wall * (os.cpu_count() or 1)),
    )  # fmt: skip
    return result


def wait_for_quiet(args: argparse.Namespace) -> float:
    """Before a cell, wait (at most ``--quiet-wait`` seconds, and ``--quiet-budget`` in
    all) until the machine's other work takes under 10 % of it; the servers are idle then,
    so what is busy is someone else's. Returns the seconds waited."""
    import psutil

    waited = 0.0
    while waited < args.quiet_wait and args.quiet_budget > 0:
        if psutil.cpu_percent(interval=1.0) < 10:
            break
        waited += 1.0
        args.quiet_budget -= 1.0
    return waited


def _busy(after: Any, before: Any) -> float:
    """Busy CPU seconds of the whole machine between two ``psutil.cpu_times()``."""
    idle = (after.idle + getattr(after, "iowait", 0)) - (before.idle + getattr(before, "iowait", 0))
    total = sum(after) - sum(before)
    return float(total - idle)


def run_all(stores: list[Workspace], args: argparse.Namespace, tmp: Path, checks: list[str]
            ) -> list[dict[str, Any]]:  # fmt: skip
    """Every selected scenario at every in-flight level, servers started per group, each
    group once per online store in ``stores`` (the workspace on each store; scenarios
    that read no store only with the first); the servers' answer checks go to ``checks``."""
    chosen = [SCENARIOS[name] for name in args.scenario]
    results: list[dict[str, Any]] = []
    groups: list[tuple[str, Any, Workspace]] = []
    for ws in stores:
        groups += [("none", None, ws)] + [("ours", c, ws) for c in args.ours]
        groups += [("anchors", c, ws) for c in args.anchors]
    groups += [("echo", c, stores[0]) for c in args.ours]
    for rep, i in itertools.product(range(args.repeat), range(len(groups))):
        n = i if rep % 2 == 0 else len(groups) - 1 - i  # odd repeats in reverse order
        group, config, ws = groups[n]
        first = all(g != group or w is not ws for g, _, w in groups[:n])
        scenarios = [s for s in chosen if s.servers == group and (first or s.every_config)
                     and (s.uses_online or ws is stores[0])]  # fmt: skip
        if not scenarios:
            continue
        with _servers(group, config, ws, args, tmp) as running:
            for line in running.checks if running else []:
                print(f"  check: {line}", file=sys.stderr, flush=True)
                checks.append(line)
            for scenario in scenarios:
                for k in args.inflight:
                    r = measure(scenario, k, ws, running, args, tmp)
                    r.update(system=scenario.label, what=scenario.what, inflight=k, repeat=rep,
                             config=running.config if running else "threads",
                             detail=running.detail if running else FLOOR_DETAIL,
                             online=ws.online if scenario.uses_online else NO_STORE,
                             workers=running.workers if running else 0)  # fmt: skip
                    results.append(r)
                    _progress(r)
    return results


@contextlib.contextmanager
def _servers(group: str, config: Any, ws: Workspace, args: argparse.Namespace,
             tmp: Path) -> Iterator[Running | None]:  # fmt: skip
    if group == "ours":
        with serve_ours(ws, config, tmp) as running:
            yield running
    elif group == "anchors":
        with serve_anchors(ws, args.anchors_venv, config, tmp) as running:
            yield running
    elif group == "echo":
        with serve_echo(ws, config, tmp) as running:
            yield running
    else:
        yield None


def _progress(r: dict[str, Any]) -> None:
    print(f"  {r['system']:<17} {r['inflight']:>3} in flight: p50 {r['p50_ms']:.2f} ms, "
          f"p99 {r['p99_ms']:.2f} ms, {r['rps']:,.0f} req/s, {r['errors']} errors, other load "
          f"{r['other_cpu_share']:.0%}, server CPU {r['server_cpu_ms']:.2f} ms/req "
          f"({r['config']}, {r['online']})", file=sys.stderr, flush=True)  # fmt: skip


# ------------------------------------------------------------------ main


def _ours_configs(text: str, omp_threads: int) -> list[OursConfig]:
    """``1x8,2x8/off``: workers x threads per process, ``/off`` for --cpu-affinity off."""
    out = []
    for item in text.split(","):
        shape, _, affinity = item.strip().lower().partition("/")
        if affinity not in ("", "spread", "off"):
            raise SystemExit(f"--ours {item!r}: the placement after '/' is spread or off")
        workers, threads = shape.split("x")
        out.append(OursConfig(int(workers), int(threads), omp_threads, affinity or "spread"))
    return out


def _on_store(online: str, ws: Workspace, root: Path, stack: contextlib.ExitStack,
              checks: list[str]) -> Workspace:  # fmt: skip
    """The workspace on ``online``: as built (SQLite), or its Redis copy, set up now and
    cleaned up when ``stack`` closes; the copy's features checked against SQLite's."""
    if online == "sqlite":
        return ws
    print("  redis: parity apply + materialize into a copy of the repository ...",
          file=sys.stderr, flush=True)  # fmt: skip
    copy, project = stack.enter_context(redis_repository(ws.repo, ws.now, ROOT, root))
    on_redis = dataclasses.replace(ws, online=online, repo_name=copy.name,
                                   store_pids=tuple(sorted(set(_listeners(REDIS_PORT)))))  # fmt: skip
    n = min(64, len(ws.rows))
    _, features, _ = _in_process_features(on_redis.repo, ws.rows[:n])
    differ = sum(1 for a, b in zip(features, ws.features[:n], strict=True)
                 for f in ws.fields if not _same(a[f["name"]], b[f["name"]]))  # fmt: skip
    line = (f"redis (Feast project {project}, 127.0.0.1:6379) vs sqlite, in-process "
            f"features on {n} rows: {differ} values differ")  # fmt: skip
    print(f"  check: {line}", file=sys.stderr, flush=True)
    checks.append(line)
    return on_redis


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup-anchors", action="store_true",
                        help="create the feast and MLServer environments, then exit")  # fmt: skip
    parser.add_argument("--anchors-venv", type=Path, default=ANCHORS_VENV)
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                        help="repeatable; default: all")  # fmt: skip
    parser.add_argument(
        "--inflight", default="1,8,64", help="requests in flight (default: %(default)s)"
    )
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--harness", choices=["aio", "threads"], default="aio")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run everything N times (servers restarted, every other run in "
                        "reverse order), report medians")  # fmt: skip
    parser.add_argument("--quiet-wait", type=float, default=30,
                        help="before a cell, wait up to this many seconds for other processes "
                        "to leave the CPU (default: %(default)s)")  # fmt: skip
    parser.add_argument("--quiet-budget", type=float, default=120,
                        help="most seconds to wait for quiet in all (default: %(default)s)")  # fmt: skip
    parser.add_argument("--ours", default="1x32,2x32",
                        help="parity serve configurations, WORKERSxTHREADS[/off] (/off: "
                             "--cpu-affinity off; default: %(default)s)")  # fmt: skip
    parser.add_argument("--ours-omp-threads", type=int, default=0,
                        help="OMP_NUM_THREADS for parity serve (default 0: unset, as shipped)")  # fmt: skip
    parser.add_argument("--mlserver-workers", default="1,2",
                        help="MLServer parallel_workers, one anchors run each (default: %(default)s)")  # fmt: skip
    parser.add_argument("--mlserver-omp-threads", type=int, default=1,
                        help="OMP_NUM_THREADS for MLServer (0: unset); default: %(default)s")  # fmt: skip
    parser.add_argument("--feast-workers", type=int, default=1, help="feast serve --workers")
    parser.add_argument("--rows", type=int, default=512, help="latest transactions to cycle")
    parser.add_argument("--online", default=",".join(STORES),
                        help="online stores, comma-separated, of: sqlite (the demo's), redis "
                        "(127.0.0.1:6379, a unique Feast project, keys deleted after); "
                        "default: %(default)s")  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="keep the workspace and server logs here")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--load-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.scenario = args.scenario or list(SCENARIOS)
    args.inflight = [int(k) for k in args.inflight.split(",")]
    args.online = list(dict.fromkeys(s.strip() for s in args.online.split(",")))
    if not args.online or set(args.online) - set(STORES):
        parser.error(f"--online: a comma-separated list of {', '.join(STORES)}; got {args.online}")
    args.ours = _ours_configs(args.ours, args.ours_omp_threads)
    args.anchors = [AnchorsConfig(int(w), args.mlserver_omp_threads, args.feast_workers)
                    for w in args.mlserver_workers.split(",")]  # fmt: skip
    return args


def main() -> None:
    args = parse_args()
    if args.load_child:
        load_child(args.load_child)
        return
    if args.setup_anchors:
        setup_anchors(args.anchors_venv)
        return
    needs_anchors = any(SCENARIOS[s].servers == "anchors" for s in args.scenario)
    if needs_anchors and not (args.anchors_venv / "mlserver" / "bin" / "mlserver").exists():
        raise SystemExit(f"No anchors environment at {args.anchors_venv}: run with "
                         "--setup-anchors first (or pick --scenario predict, v2_ours, floor).")  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="parity-bench-serving-") as tmp,
        contextlib.ExitStack() as stack,  # the Redis copy: keys deleted before tmp goes
    ):
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        print(f"workspace {root}: parity demo --drift none ...", file=sys.stderr, flush=True)
        ws = build_workspace(root / "ws", args.rows)
        (root / ECHO_REPLY).unlink(missing_ok=True)  # a kept --workdir: captured afresh
        checks: list[str] = []
        stores = [_on_store(online, ws, root, stack, checks) for online in args.online]
        runs = run_all(stores, args, root, checks)
    results = aggregate(runs)
    anchors = any(SCENARIOS[s].servers == "anchors" for s in args.scenario)
    versions = _anchor_versions(args.anchors_venv) if anchors else None
    facts = RunFacts(MODEL, FEATURE_SERVICE, len(ws.fields), len(ws.rows), ws.now, versions)
    report(results, facts, checks, args)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "runs": runs, "checks": checks,
                                         "now": ws.now,
                                         "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
