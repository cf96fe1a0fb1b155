"""A bounded soak of ``parity serve`` on the production profile, with faults injected.

    .venv/bin/python bench/soak.py [--minutes 3] [--concurrency 16] [--workdir DIR]

What runs, all real: a copy of the repository with ``parity demo --drift none``'s
model; Feast's SQL registry in a fresh PostgreSQL database on 127.0.0.1:5432;
Feast's Redis online store in a private ``redis-server`` (append-only file, so a
restart brings its data back); ``parity serve --profile production``.

Timeline (fractions of the run): steady load until 0.6 (memory is judged from
0.1 to 0.6, after warm-up); at 0.6 Redis is killed with SIGKILL and at 0.7
restarted (the server answers FALLBACK meanwhile); at 0.8 the server is killed
with SIGKILL and started again (clients retry UNAVAILABLE with backoff, as a
real client would; the new process recovers the dead one's journal). At the end
the server is stopped with SIGTERM and every answered prediction is looked up in
the prediction log: records lost and duplicated are counted (target 0 and 0).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.serving import MODEL, build_workspace, free_port  # noqa: E402
from framework.logs.reader import read_log  # noqa: E402
from serving.stubs.parity.v1 import prediction_pb2 as pb  # noqa: E402
from serving.stubs.parity.v1 import prediction_pb2_grpc as pb_grpc  # noqa: E402

RETRY_FOR = 60.0  # seconds a client keeps retrying UNAVAILABLE (a restarting server)


def _redis(port: int, folder: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes", "--appendfsync", "always", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        with (
            contextlib.suppress(OSError),
            __import__("socket").create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return proc
        time.sleep(0.1)
    raise SystemExit("redis-server did not start")


def _cli(ws_repo: Path, env: dict[str, str], *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "framework.cli", *args, "--repo", str(ws_repo),
         "--profile", "production"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"parity {' '.join(args)} failed:\n{proc.stderr[-2000:]}")


def _serve(
    repo: Path, port: int, now: str, env: dict[str, str], log: Path
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "framework.cli", "serve", "--repo", str(repo), "--profile",
         "production", "--port", str(port), "--now", now, "--threads", "16"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log.open("a"), text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        raise SystemExit(f"parity serve did not start: {line!r}; see {log}")
    return proc


class Load:
    """``concurrency`` threads sending Predict until stopped; what was answered, by id."""

    def __init__(self, target: str, rows: list[dict[str, Any]], concurrency: int) -> None:
        self.target, self.rows, self.concurrency = target, rows, concurrency
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.answered: list[tuple[str, int]] = []
        self.decisions: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.retries = self.sent = 0
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(concurrency)]

    def _request(self, i: int, n: int) -> pb.PredictRequest:
        row = self.rows[(i * 7919 + n) % len(self.rows)]
        request = pb.PredictRequest(model_name=MODEL, request_id=f"soak-{i}-{n}")
        r = request.rows.add()
        for k in ("user_id", "merchant_id"):
            r.entity_keys[k].int64_value = row[k]
        r.request_data["amount"].double_value = row["amount"]
        r.request_data["hour_of_day"].int64_value = row["hour_of_day"]
        return request

    def _run(self, i: int) -> None:
        channel = grpc.insecure_channel(self.target)
        stub = pb_grpc.PredictionServiceStub(channel)
        n = 0
        while not self.stop.is_set():
            request = self._request(i, n)
            n += 1
            deadline, wait = time.monotonic() + RETRY_FOR, 0.05
            with self.lock:
                self.sent += 1
            while True:
                try:
                    reply = stub.Predict(request, timeout=10)
                except grpc.RpcError as exc:
                    code = exc.code()  # type: ignore[attr-defined]
                    if code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline:
                        with self.lock:
                            self.retries += 1
                        time.sleep(wait + random.random() * wait)
                        wait = min(wait * 2, 1.0)
                        continue
                    with self.lock:
                        self.errors[code.name] += 1
                    break
                with self.lock:
                    self.answered += [
                        (request.request_id, j) for j in range(len(reply.predictions))
                    ]
                    self.decisions.update(pb.Decision.Name(p.decision) for p in reply.predictions)
                break
        channel.close()


def _rss(pid: int) -> int:
    with contextlib.suppress(psutil.NoSuchProcess):
        return int(psutil.Process(pid).memory_info().rss)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workdir", type=Path, help="kept for reuse (default: a temp dir)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="parity-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"workspace {work}: demo model ...", flush=True)
    ws = build_workspace(work / "ws", 400)
    shutil.rmtree(ws.root / "data" / "predictions", ignore_errors=True)
    database = f"parity_soak_{os.getpid()}"
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc",
                    f"CREATE DATABASE {database}"], check=True)  # fmt: skip
    redis_port, server_port = free_port(), free_port()
    (work / "redis").mkdir(exist_ok=True)
    redis = _redis(redis_port, work / "redis")
    env = {**os.environ, "PARITY_REDIS": f"127.0.0.1:{redis_port}",
           "PARITY_REGISTRY_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"}  # fmt: skip
    log = work / "server.log"
    server = None
    try:
        _cli(ws.repo, env, "apply")
        _cli(ws.repo, env, "materialize", "--start", "2000-01-01", "--end", ws.now)
        server = _serve(ws.repo, server_port, ws.now, env, log)
        load = Load(f"127.0.0.1:{server_port}", ws.rows, args.concurrency)
        total = args.minutes * 60
        start = time.monotonic()
        for t in load.threads:
            t.start()
        faults: list[str] = []
        rss: list[tuple[float, int]] = []
        plan = [(0.6, "kill -9 redis"), (0.7, "restart redis"), (0.8, "kill -9 parity serve")]
        while (elapsed := time.monotonic() - start) < total:
            rss.append((elapsed / total, _rss(server.pid)))
            if plan and elapsed / total >= plan[0][0]:
                at, what = plan.pop(0)
                faults.append(f"{what} at {elapsed:.0f}s")
                print(f"  {elapsed:6.0f}s  {what}", flush=True)
                if what == "kill -9 redis":
                    redis.kill()
                    redis.wait()
                elif what == "restart redis":
                    redis = _redis(redis_port, work / "redis")
                else:
                    server.kill()
                    server.wait()
                    server = _serve(ws.repo, server_port, ws.now, env, log)
                    faults[-1] += f", restarted in {time.monotonic() - start - elapsed:.1f}s"
            time.sleep(1.0)
        load.stop.set()
        for t in load.threads:
            t.join()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        server = None
    finally:
        if server is not None:
            server.kill()
        redis.kill()
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc",
                        f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"], check=False)  # fmt: skip
    logged = read_log(ws.root / "data" / "predictions", MODEL)
    pairs = Counter(zip(logged["__request_id"].to_pylist(), logged["__row_index"].to_pylist(),
                        strict=True))  # fmt: skip
    answered = Counter(load.answered)
    lost = sum((answered - pairs).values())
    duplicated = sum(c - 1 for c in pairs.values() if c > 1)
    steady = [r for f, r in rss if 0.1 <= f <= 0.6 and r]
    first, last = steady[0], steady[-1]
    mib = 1 << 20
    recovered = sum(
        int(m.group(1))
        for m in re.finditer(r"(\d+) rows recovered from a stopped process", log.read_text())
    )
    print(f"\nSoak: {args.minutes:g} min, {args.concurrency} concurrent clients, production profile "
          f"(Redis {redis_port}, PostgreSQL registry {database})")  # fmt: skip
    table = [
        ("requests sent", f"{load.sent:,}"),
        ("predictions answered", f"{len(load.answered):,}"),
        ("decisions", ", ".join(f"{k} {v:,}" for k, v in sorted(load.decisions.items()))),
        ("faults injected", "; ".join(faults)),
        ("errors (after client retries)", f"{sum(load.errors.values())} {dict(load.errors) or ''}"),
        ("UNAVAILABLE retried (server restarting)", f"{load.retries:,}"),
        ("records lost (answered, not in the log)", f"{lost}"),
        ("records logged twice", f"{duplicated}"),
        ("rows recovered from the killed server's journal", f"{recovered:,}"),
        ("server RSS, steady phase (10% -> 60%)",
         f"{first / mib:.0f} -> {last / mib:.0f} MiB ({(last - first) / mib:+.1f} MiB, "
         f"{(last - first) / first:+.1%}); max {max(steady) / mib:.0f} MiB"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in table)
    for k, v in table:
        print(f"  {k:<{width}}  {v}")


if __name__ == "__main__":
    main()
