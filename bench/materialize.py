"""Materialisation: parity's ``materialize`` against Feast's own, same data, same store.

One synthetic feature view (one INT64 entity; an Int64, a Float64 and a String
feature — every type the sample uses — with some nulls) over a Parquet table of
``--rows`` rows and ``--entities`` distinct entities. For each online store
(SQLite file; Redis: a private ``redis-server`` on a free port) and each engine,
a fresh child process opens a fresh copy of the repository (empty online store),
imports everything, then times exactly one call:

* ``feast``  — ``FeatureStore.materialize(start, end)`` (Feast 0.67, in-process)
* ``parity`` — ``framework.materialize.job.materialize(store, start=..., end=...)``

and reports wall time, entities/s, peak RSS and RSS above the post-import
baseline. After each run the online state is fingerprinted (SQLite: SHA-256 of
every row in key order; Redis: ``DEBUG DIGEST`` of the database), so the table
also says whether both engines left byte-identical online stores.

    .venv/bin/python bench/materialize.py --entities 20k,1M --rows 2M [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The child: import everything first, then time exactly one materialisation.
CHILD = r"""
import json, resource, sys, time, warnings, contextlib, io
warnings.simplefilter("ignore")
engine, repo = sys.argv[1], sys.argv[2]
from datetime import datetime, UTC
from pathlib import Path
import psutil
from framework.features.repository import load_store
from framework.materialize.job import materialize
store = load_store(Path(repo))
start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)
base = psutil.Process().memory_info().rss / 2**20
t = time.perf_counter()
if engine == "feast":
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        store.materialize(start_date=start, end_date=end)
    entities = None
else:
    entities = materialize(store, start=start, end=end).entities
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall": wall, "entities": entities, "rss_mb": peak, "delta_mb": peak - base}))
"""

DEFINITIONS = """
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

entity = Entity(name="entity", join_keys=["entity_id"], value_type=ValueType.INT64)
source = FileSource(name="bench_source", path="{path}", timestamp_field="event_timestamp")
bench_view = FeatureView(
    name="bench_view",
    entities=[entity],
    ttl=None,
    source=source,
    schema=[
        Field(name="f_int", dtype=Int64),
        Field(name="f_double", dtype=Float64),
        Field(name="f_str", dtype=String),
    ],
)
"""

ONLINE = {
    "sqlite": "online_store:\n  type: sqlite\n  path: ../data/online.db\n",
    "redis": "online_store:\n  type: redis\n  connection_string: ${BENCH_REDIS}\n",
}


def parse_count(text: str) -> int:
    from framework.sample.data import parse_scale

    return parse_scale(text)


def make_table(path: Path, entities: int, rows: int) -> None:
    """``rows`` feature rows over ``entities`` entities, times spread over 90 days."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        f"""COPY (
          SELECT (i % {entities}) + 1 AS entity_id,
                 TIMESTAMPTZ '2026-01-01 00:00:00+00'
                   + to_microseconds((i * 7919) % 7776000000000 + i % 997) AS event_timestamp,
                 CASE WHEN i % 53 = 0 THEN NULL
                      ELSE (hash(i) % 100000)::BIGINT - 50000 END AS f_int,
                 CASE WHEN i % 47 = 0 THEN NULL ELSE (hash(i * 3) % 1000000) / 7.0 END AS f_double,
                 CASE WHEN i % 41 = 0 THEN NULL
                      ELSE ['alpha', 'beta', 'gamma', 'délta', ''][1 + (i % 5)::INT] END AS f_str
          FROM range({rows}) t(i)
        ) TO '{path}' (FORMAT parquet)"""
    )
    con.close()


def make_repo(root: Path, table: Path, store: str) -> Path:
    """A Feast repository with the bench view, applied (empty online store)."""
    from framework.features.repository import apply

    repo = root / "repo"
    repo.mkdir(parents=True)
    (root / "data").mkdir()
    (repo / "feature_store.yaml").write_text(
        "project: bench\nprovider: local\nregistry: ../data/registry.db\n"
        "offline_store:\n  type: duckdb\n" + ONLINE[store] + "entity_key_serialization_version: 3\n"
    )
    (repo / "definitions.py").write_text(DEFINITIONS.format(path=table))
    apply(repo)
    return repo


def fingerprint(store: str, root: Path, redis_port: int | None) -> str:
    """What the online store holds, as one digest."""
    import hashlib
    import sqlite3

    if store == "sqlite":
        h = hashlib.sha256()
        con = sqlite3.connect(root / "data" / "online.db")
        query = (
            "SELECT entity_key, feature_name, value, value_text, event_ts, created_ts "
            "FROM bench_bench_view ORDER BY entity_key, feature_name"
        )
        for row in con.execute(query):
            h.update(repr(row).encode())
        con.close()
        return h.hexdigest()
    import redis

    client = redis.Redis(port=redis_port)
    client.delete("parity:materialization:bench")  # parity's bookkeeping, not Feast's data
    digest = client.execute_command("DEBUG", "DIGEST")
    client.close()
    return digest.decode() if isinstance(digest, bytes) else str(digest)


def child(engine: str, repo: Path, env: dict[str, str]) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, engine, str(repo)],
        capture_output=True, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (or pass --stores sqlite)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--enable-debug-command", "yes"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start") from None
            time.sleep(0.05)


def stats(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", default="1M", help="comma-separated, e.g. 20k,1M")
    parser.add_argument("--rows", default="2M", help="Parquet rows (at least --entities)")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    import psutil

    machine = (f"{platform.machine()}, {os.cpu_count()} cores, "
               f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}")  # fmt: skip
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="parity-bench-") as tmp:
        work = Path(tmp)
        redis_proc, redis_port = start_redis(work) if "redis" in stores else (None, None)
        env = {**os.environ, "BENCH_REDIS": f"127.0.0.1:{redis_port}"}
        try:
            print(
                f"Materialisation, one view of 3 features (Int64, Float64, String); fresh child "
                f"process and empty online store per run; {args.repeat} run(s) each ({machine})"
            )
            print()
            print("| store | entities | Parquet rows | engine | wall s | entities/s | peak RSS MiB "
                  "| above baseline MiB | throughput vs Feast | same online state as Feast |")  # fmt: skip
            print("|---|---:|---:|---|---:|---:|---:|---:|---:|---|")
            for scale in args.entities.split(","):
                entities = parse_count(scale)
                rows = max(parse_count(args.rows), entities)
                table = work / f"table-{entities}.parquet"
                make_table(table, entities, rows)
                for store in stores:
                    template = work / f"template-{store}-{entities}"
                    os.environ["BENCH_REDIS"] = env["BENCH_REDIS"]
                    make_repo(template, table, store)
                    results: dict[str, list[dict[str, float]]] = {}
                    digests: dict[str, str] = {}
                    for run in range(args.repeat):
                        for engine in ("feast", "parity"):  # interleaved
                            root = work / f"run-{store}-{entities}-{engine}-{run}"
                            shutil.copytree(template, root)
                            if store == "redis":
                                import redis

                                redis.Redis(port=redis_port).flushdb()
                            results.setdefault(engine, []).append(child(engine, root / "repo", env))
                            digests[engine] = fingerprint(store, root, redis_port)
                            shutil.rmtree(root)
                    feast_wall = statistics.median(r["wall"] for r in results["feast"])
                    for engine in ("feast", "parity"):
                        walls = [r["wall"] for r in results[engine]]
                        wall = statistics.median(walls)
                        rss = statistics.median(r["rss_mb"] for r in results[engine])
                        delta = statistics.median(r["delta_mb"] for r in results[engine])
                        same = "—" if engine == "feast" else (
                            "yes" if digests["parity"] == digests["feast"] else "**no**")  # fmt: skip
                        print(
                            f"| {store} | {entities:,} | {rows:,} | {engine} | {stats(walls)} "
                            f"| {entities / wall:,.0f} | {rss:,.0f} | {delta:,.0f} "
                            f"| {feast_wall / wall:.1f}× | {same} |"
                        )
                        sys.stdout.flush()
        finally:
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(timeout=10)


if __name__ == "__main__":
    main()
