"""The spark profile against the DuckDB path: training sets and batch scoring.

One run measures, side by side on the same generated sample and entity frame:

* ``duckdb``      — the embedded path: ``write_training_set`` (streamed to Parquet) and
  ``score_entities``
* ``spark``       — the spark profile (local[2]): parity's point-in-time join on Spark,
  Parquet parts written by the executors; scoring on the executors
* ``feast-spark`` — Feast 0.67's own Spark retrieval (``get_historical_features`` of its
  Spark offline store over the same files redefined as ``SparkSource``), written to
  Parquet by Spark without collecting: the alternative to parity's plan
  (``--feast-entities`` rows: its range join grows with the rows per key)

Each measurement runs in a fresh child process. For Spark the session (a JVM) starts
before the clock and is timed on its own. Memory is sampled every 0.2 s across the
process tree: the driver's Python, the JVM (driver and, in local mode, executors) and
the executors' Python workers. Prints Markdown tables with medians over ``--repeat``.

    .venv/bin/python bench/spark.py --entities 10M --transactions 10M --repeat 1
    .venv/bin/python bench/spark.py --entities 200k --partitions 8,32   # scaling
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.training_set import parse_count, setup  # noqa: E402

CHILD = r"""
import json, os, sys, threading, time, warnings
warnings.simplefilter("ignore")
mode, repo, entities, out, registry, partitions = sys.argv[1:7]
from pathlib import Path
import psutil
from framework.features.repository import load_store

peaks = {"driver": 0.0, "jvm": 0.0, "workers": 0.0}
stop = threading.Event()
me = psutil.Process()

def sample():
    while not stop.wait(0.2):
        try:
            kids = me.children(recursive=True)
            driver = me.memory_info().rss
            jvm = sum(k.memory_info().rss for k in kids if "java" in k.name())
            workers = sum(k.memory_info().rss for k in kids if "java" not in k.name())
        except psutil.Error:
            continue
        for k, v in (("driver", driver), ("jvm", jvm), ("workers", workers)):
            peaks[k] = max(peaks[k], v / 2**20)

threading.Thread(target=sample, daemon=True).start()
if mode.startswith("duckdb"):
    store = load_store(Path(repo))
else:  # the same repository with Feast's Spark offline store (spark_yaml)
    from feast import FeatureStore
    store = FeatureStore(repo_path=repo, fs_yaml_file=Path(repo) / "feature_store.spark-local.yaml")
startup = 0.0
if mode.startswith("spark") or mode.startswith("feast"):
    from pyspark.sql import SparkSession
    from framework.spark.session import DEFAULT_CONF, REQUIRED_CONF, quiet_start
    quiet_start()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    t = time.perf_counter()
    b = SparkSession.builder.appName("parity-bench")
    conf = {**DEFAULT_CONF, "spark.master": "local[2]", "spark.driver.memory": "4g",
            "spark.ui.enabled": "false", "spark.sql.shuffle.partitions": partitions,
            **REQUIRED_CONF}
    for k, v in conf.items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    startup = time.perf_counter() - t
t = time.perf_counter()
if mode == "duckdb-ts":
    from framework.features.training_set import write_training_set
    rows = write_training_set(store, "fraud_model_v1", Path(entities), Path(out)).entity_rows
elif mode == "spark-ts":
    from framework.spark.training_set import write_training_set
    rows = write_training_set(store, "fraud_model_v1", Path(entities), Path(out)).entity_rows
elif mode == "feast-spark-ts":
    import pyarrow.parquet as pq
    frame = spark.read.parquet(entities)
    job = store.get_historical_features(
        entity_df=frame, features=store.get_feature_service("fraud_model_v1"))
    job.to_spark_df().write.parquet(out)
    rows = pq.read_metadata(entities).num_rows
elif mode in ("duckdb-score", "spark-score"):
    from framework.models.batch_score import score_entities
    from framework.registry.model_registry import ModelRegistry
    rows = score_entities(store, ModelRegistry(Path(registry)), "fraud_model",
                          Path(entities), Path(out)).rows
wall = time.perf_counter() - t
stop.set()
print(json.dumps({"wall": wall, "startup": startup, "rows": rows, **peaks}))
"""


def child(mode: str, repo: Path, entities: Path, out: Path, registry: Path, parts: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(repo), str(entities), str(out), str(registry),
         parts],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{result.stderr[-3000:]}")
    if out.is_dir():
        shutil.rmtree(out)
    else:
        out.unlink(missing_ok=True)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def trained_registry(work: Path) -> Path:
    """The sample's model trained on a small sample of its own (same definitions)."""
    from framework.features.repository import apply
    from framework.models.spec import load_spec
    from framework.models.training import train_model
    from framework.registry.model_registry import ModelRegistry
    from framework.sample.data import generate
    from framework.sample.pipeline import build_offline_sources
    from framework.sample.scenario import GenerationConfig

    shutil.copytree(ROOT / "feature_repo", work / "feature_repo",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    generate(GenerationConfig(seed=5, transactions=20_000), work / "data")
    build_offline_sources(work / "data" / "raw", work / "data" / "offline")
    apply(work / "feature_repo")
    spec = work / "feature_repo" / "models" / "fraud_model.toml"
    registry = ModelRegistry(work / "models")
    train_model(work / "feature_repo", load_spec(spec), registry=registry, spec_path=spec)
    return registry.root


def spark_yaml(repo: Path) -> None:
    """``feature_store.spark-local.yaml``: the embedded profile's file registry and SQLite,
    with Feast's Spark offline store (what dispatches parity's work to Spark)."""
    yaml = (repo / "feature_store.yaml").read_text()
    (repo / "feature_store.spark-local.yaml").write_text(
        yaml.replace("type: duckdb", "type: spark")
    )


def spark_source_repo(repo: Path) -> None:
    """The repository with every FileSource redefined as a SparkSource over the same
    files, for Feast's own Spark retrieval (which reads nothing else)."""
    text = (repo / "fraud.py").read_text()
    text = text.replace("FileSource(", "SparkSource(file_format='parquet', ")
    text = text.replace(
        "from feast import ",
        "from feast.infra.offline_stores.contrib.spark_offline_store.spark_source "
        "import SparkSource\nfrom feast import ",
        1,
    )
    (repo / "fraud.py").write_text(text)
    # Applying a SparkSource asks the offline store for its columns: Spark's.
    shutil.copy(repo / "feature_store.spark-local.yaml", repo / "feature_store.yaml")


def med(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", default="1M")
    parser.add_argument("--transactions", default="1M")
    parser.add_argument(
        "--feast-entities",
        default="100k",
        help="entity rows for the Feast Spark retrieval comparison (0: skip)",
    )
    parser.add_argument(
        "--partitions", default="8", help="spark.sql.shuffle.partitions, comma-separated to compare"
    )
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, "
               f"Python {platform.python_version()}")  # fmt: skip
    partitions = args.partitions.split(",")
    with tempfile.TemporaryDirectory(prefix="parity-bench-spark-") as tmp:
        work = Path(tmp)
        registry = trained_registry(work / "model")
        repo, entities, rows = setup(
            work / "big", parse_count(args.transactions), parse_count(args.entities)
        )
        spark_yaml(repo)
        n = parse_count(args.entities)
        print(f"spark profile vs DuckDB: {n:,} entity rows; feature rows: "
              + ", ".join(f"{k} {v:,}" for k, v in rows.items())
              + f"; {args.repeat} run(s) each, fresh process per run; Spark local[2], "
              f"driver memory 4g ({machine})")  # fmt: skip
        print()
        print(
            "| job | engine | shuffle partitions | wall s | Spark start s | driver Python "
            "peak MiB | JVM peak MiB | executor Python peak MiB | wall vs DuckDB |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for job in ("ts", "score"):
            label = {"ts": "training set -> Parquet", "score": "batch scoring -> Parquet"}[job]
            base: dict = {}
            runs = [("duckdb", "-")] + [("spark", p) for p in partitions]
            for engine, parts in runs:
                results = [
                    child(f"{engine}-{job}", repo, entities, work / "out", registry,
                          parts if parts != "-" else "8")
                    for _ in range(args.repeat)
                ]  # fmt: skip
                if engine == "duckdb":
                    base = {"wall": med(results, "wall")}
                print(
                    f"| {label} | {engine} | {parts} | {med(results, 'wall'):.1f} | "
                    f"{med(results, 'startup'):.1f} | {med(results, 'driver'):,.0f} | "
                    f"{med(results, 'jvm'):,.0f} | {med(results, 'workers'):,.0f} | "
                    f"{med(results, 'wall') / base['wall']:.2f}× |"
                )
                sys.stdout.flush()
        if parse_count(args.feast_entities):
            m = parse_count(args.feast_entities)
            small_repo, small_entities, _ = setup(work / "small", m, m)
            spark_yaml(small_repo)
            print()
            print(f"point-in-time join on Spark, {m:,} entity rows (local[2]): parity's plan vs "
                  "Feast's Spark retrieval")  # fmt: skip
            print()
            print("| engine | wall s | JVM peak MiB | wall vs parity |")
            print("|---|---:|---:|---:|")
            ours = child("spark-ts", small_repo, small_entities, work / "o", registry, "8")
            spark_source_repo(small_repo)
            from framework.features.repository import apply

            apply(small_repo)
            feast = child("feast-spark-ts", small_repo, small_entities, work / "o", registry, "8")
            for name, r in (("parity", ours), ("feast-spark", feast)):
                print(f"| {name} | {r['wall']:.1f} | {r['jvm']:,.0f} | "
                      f"{r['wall'] / ours['wall']:.2f}× |")  # fmt: skip


if __name__ == "__main__":
    main()
