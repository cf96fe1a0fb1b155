"""``parity score`` and ``parity training-set`` on the spark profile, run as a user runs
them: the same rows as the embedded path, in input order, with Spark's progress.

The commands run as child processes (their own Spark driver, as a user's would) on
a copy of the session's trained workspace, with the definitions applied to a fresh
PostgreSQL registry; the embedded results come from the same copy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from framework.features import repository
from framework.features.repository import Profile
from framework.models.batch_score import score_entities
from framework.registry.model_registry import ModelRegistry
from tests.support.cli import parity
from tests.support.training_sets import assert_same_table, sample_entity_frame
from tests.support.workspaces import Trained, copy_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _parts(folder: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(folder.glob("part-*.parquet")))


def test_score_and_training_set_commands_on_the_spark_profile(
    spark_installed: None, trained: Trained, tmp_path: Path, postgres_url: str, redis_server: str
) -> None:
    ws = copy_of(trained, tmp_path / "ws")
    env = {"PARITY_REGISTRY_URL": postgres_url, "PARITY_REDIS": redis_server}
    applied = parity("apply", "--repo", str(ws.repo), "--profile", "spark", cwd=tmp_path, env=env)
    assert applied.returncode == 0, applied.stderr
    repository.apply(ws.repo)  # the copied file registry names the original's files
    entities = sample_entity_frame(ws.data).head(3_000)
    entity_file = tmp_path / "entities.parquet"
    pq.write_table(pa.Table.from_pandas(entities, preserve_index=False), entity_file)
    registry = ModelRegistry(trained.registry_root)
    with repository.open_store(ws.repo) as store:
        local = score_entities(
            store, registry, "fraud_model", entity_file, tmp_path / "local.parquet"
        )

    # From another folder, as a user would, with the registry named.
    scored = parity(
        "score", "--repo", str(ws.repo), "--profile", "spark", "--registry",
        str(trained.registry_root), "--entities", str(entity_file), "--out",
        str(tmp_path / "scores"), "--json", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    summary = json.loads(scored.stdout)
    assert summary["rows"] == 3_000 and summary["model"] == local.model
    assert summary["dataset_fingerprint"] == local.dataset_fingerprint
    assert "spark job" in scored.stderr and "tasks done" in scored.stderr
    ours, theirs = _parts(tmp_path / "scores"), pq.read_table(tmp_path / "local.parquet")
    assert_same_table(ours, theirs, "Spark scores vs local scores")
    assert ours.column("row_idx").to_pylist() == entities["row_idx"].tolist()

    joined = parity(
        "training-set", "--repo", str(ws.repo), "--profile", "spark", "--feature-service",
        "fraud_model_v1", "--entities", str(entity_file), "--out", str(tmp_path / "ts"),
        "--json", cwd=tmp_path, env=env,
    )  # fmt: skip
    assert joined.returncode == 0, joined.stderr
    info: dict[str, Any] = json.loads(joined.stdout)
    assert info["engine"] == "spark" and info["fingerprint"] == local.dataset_fingerprint
    with repository.open_store(ws.repo, Profile.EMBEDDED) as store:
        from framework.features.training_set import build_training_set

        duck = build_training_set(store, "fraud_model_v1", entity_file)
    assert_same_table(_parts(tmp_path / "ts"), duck.replace_schema_metadata(None), "training set")


def test_the_spark_benchmark_runs(spark_installed: None) -> None:
    """A tiny run of ``bench/spark.py`` (every engine and job, Feast's Spark retrieval
    included) completes and prints a line for every engine; its times are for
    docs/benchmarks.md, not asserted."""
    import subprocess
    import sys

    from tests.support.workspaces import ROOT

    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "spark.py"), "--entities", "3k",
         "--transactions", "3k", "--feast-entities", "1k"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [line for line in run.stdout.splitlines() if line.startswith("| training set")]
    rows += [line for line in run.stdout.splitlines() if line.startswith("| batch scoring")]
    assert [r.split("|")[2].strip() for r in rows] == ["duckdb", "spark", "duckdb", "spark"]
    assert any(line.startswith("| feast-spark |") for line in run.stdout.splitlines())
