"""Training sets on Spark equal the DuckDB path's, row for row, fingerprint included.

``framework.spark.training_set`` promises the embedded path's semantics (TTL bounds,
ties on created time, no-match nulls, every entity row in input order, duplicates,
on-demand views by Feast's code) and its fingerprint. Checked on Hypothesis-generated
repositories (the generator of ``tests/features/test_training_set_parity.py``, whose
DuckDB result is itself checked against Feast and a brute-force reference) and on the
sample repository with its edge-case entity frame; ``parity train`` on the spark
profile records the same dataset and feature ages as on the embedded one.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings

from framework.errors import ConfigError
from framework.features import repository
from framework.features.training_file import read_info
from framework.features.training_set import build_training_set
from framework.spark import training_set as spark_training_set
from tests.strategies import TrainingCase, training_cases
from tests.support.training_sets import (
    ROW_IDX,
    assert_same_table,
    generated_store,
    parity_entity_df,
    sample_entity_frame,
)
from tests.support.workspaces import Workspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# A Spark join of a few rows still runs several jobs (~1-2 s): few examples.
SPARK_SETTINGS = settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def on_spark(store: Any, features: Any, entity_df: Any, out: Path, **kw: Any) -> pa.Table:
    spark_training_set.write_training_set(store, features, entity_df, out, **kw)
    return spark_training_set.read_table(out)


@SPARK_SETTINGS
@given(case=training_cases())
def test_generated_repositories_equal_the_duckdb_path(
    spark: Any, tmp_path: Path, case: TrainingCase
) -> None:
    out = tmp_path / "ts"
    with generated_store(case) as store:
        duck = build_training_set(
            store,
            list(case.refs),
            parity_entity_df(case),
            full_feature_names=case.full_feature_names,
        )
        ours = on_spark(
            store,
            list(case.refs),
            parity_entity_df(case),
            out,
            full_feature_names=case.full_feature_names,
        )
    assert_same_table(ours, duck, "Spark vs DuckDB")
    assert read_info(ours).fingerprint == read_info(duck).fingerprint
    assert read_info(ours).engine == "spark"


def test_sample_repository_equals_the_duckdb_path_with_ages(
    spark: Any, sample_workspace: Workspace, tmp_path: Path
) -> None:
    """The sample's service (on-demand view included) on its edge-case entity frame:
    before every feature row, on and 1 µs past each TTL, unknown keys, duplicates,
    shuffled; the values, the order, the fingerprint and the ages all agree."""
    repository.apply(sample_workspace.repo)
    entity_df = sample_entity_frame(sample_workspace.data)
    with repository.open_store(sample_workspace.repo) as store:
        duck = build_training_set(store, "fraud_model_v1", entity_df)
        # Adaptive execution would coalesce this small result into one part; four
        # parts check that they are written and read back in row order.
        spark.conf.set("spark.sql.adaptive.enabled", "false")
        try:
            ours = on_spark(store, "fraud_model_v1", entity_df, tmp_path / "ts", ages=True)
        finally:
            spark.conf.unset("spark.sql.adaptive.enabled")
    assert_same_table(ours, duck, "Spark vs DuckDB")
    assert ours.column(ROW_IDX).to_pylist() == list(range(len(entity_df)))
    assert 0 < ours.column("txn_count_1h").null_count < ours.num_rows - 1_000
    theirs, mine = read_info(duck), read_info(ours)
    assert mine.fingerprint == theirs.fingerprint
    assert theirs.ages is not None and mine.ages is not None
    assert mine.ages.keys() == theirs.ages.keys()
    for feature, want in theirs.ages.items():
        got = mine.ages[feature]
        assert got["view"] == want["view"] and got["rows"] == want["rows"], feature
        for key in ("p50", "p90", "p99", "max"):
            assert math.isclose(got[key], want[key], rel_tol=1e-12), (feature, key)
    # Several parts, each a run of consecutive rows; the ages measured travel in
    # columns of their own that the reader leaves out.
    parts = spark_training_set.parts(tmp_path / "ts")
    assert len(parts) > 1
    runs = [pq.read_table(p, columns=[ROW_IDX]).column(0).to_pylist() for p in parts]
    assert [i for run in runs for i in run] == list(range(len(entity_df)))
    assert any(n.startswith(spark_training_set.AGE_PREFIX) for n in pq.read_schema(parts[0]).names)
    assert not any(n.startswith(spark_training_set.AGE_PREFIX) for n in ours.column_names)


def test_rewriting_replaces_the_folder_and_a_failure_leaves_none(
    spark: Any, sample_workspace: Workspace, tmp_path: Path
) -> None:
    repository.apply(sample_workspace.repo)
    entity_df = sample_entity_frame(sample_workspace.data).head(200)
    folder = tmp_path / "out"
    out = folder / "ts"
    out.mkdir(parents=True)
    (out / "stale.parquet").write_bytes(b"old")
    with repository.open_store(sample_workspace.repo) as store:
        spark_training_set.write_training_set(store, "fraud_model_v1", entity_df, out)
        assert not (out / "stale.parquet").exists()
        assert spark_training_set.read_table(out).num_rows == 200
        # A source that vanished: the error names it, nothing is written, nothing left over.
        shutil.rmtree(sample_workspace.data / "offline")
        with pytest.raises(Exception, match="user_profile"):
            spark_training_set.write_training_set(
                store, "fraud_model_v1", entity_df, folder / "second"
            )
    assert sorted(p.name for p in folder.iterdir()) == ["ts"]


def test_a_source_spark_cannot_read_is_named(
    spark: Any, sample_workspace: Workspace, tmp_path: Path
) -> None:
    from feast import PushSource

    repository.apply(sample_workspace.repo)
    with repository.open_store(sample_workspace.repo) as store:
        view = store.get_feature_view("user_profile")
        view.batch_source = PushSource(name="pushed", batch_source=view.batch_source)
        from framework.features.view_sources import View
        from framework.spark.sources import identify

        with pytest.raises(ConfigError, match="'user_profile' reads a PushSource"):
            identify(
                View(
                    name="user_profile", projection_name="user_profile", join_keys={},
                    features=[], output=[], timestamp_field="ts", created_field=None,
                    ttl=None, source=view.batch_source,
                ),
                sample_workspace.repo,
            )  # fmt: skip


def test_parity_train_on_spark_records_the_embedded_dataset(
    spark: Any,
    trained: Any,
    tmp_path: Path,
    postgres_url: str,
    redis_server: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``parity train`` under the spark profile: same dataset fingerprint, rows and
    feature ages as the session's embedded training of the same spec and data."""
    from framework.features.repository import Profile
    from framework.models.spec import load_spec
    from framework.models.training import train_model
    from framework.registry.model_registry import ModelRegistry
    from tests.support.workspaces import copy_of

    monkeypatch.setenv("PARITY_REGISTRY_URL", postgres_url)
    monkeypatch.setenv("PARITY_REDIS", redis_server)
    ws = copy_of(trained, tmp_path / "ws")
    repository.apply(ws.repo, Profile.SPARK)
    spec_path = ws.repo / "models" / "fraud_model.toml"
    with repository.open_store(ws.repo, Profile.SPARK) as store:
        result = train_model(
            ws.repo,
            load_spec(spec_path),
            store=store,
            registry=ModelRegistry(tmp_path / "models"),
            spec_path=spec_path,
        )
    spark_manifest = result.manifest.as_dict()
    embedded = trained.manifest
    assert spark_manifest["dataset"]["engine"] == "spark"
    for key in ("entity_rows", "entity_digest"):
        assert spark_manifest["dataset"][key] == embedded["dataset"][key], key

    def files(dataset: dict[str, Any]) -> list[tuple[str, int, int]]:
        # The copy's paths differ; its files are the same (copied with their times).
        return [(s["view"], s["bytes"], s["mtime_ns"]) for s in dataset["sources"]]

    assert files(spark_manifest["dataset"]) == files(embedded["dataset"])
    assert (
        spark_manifest["freshness"]["features"].keys() == embedded["freshness"]["features"].keys()
    )
    for name, want in embedded["freshness"]["features"].items():
        got = spark_manifest["freshness"]["features"][name]
        assert got["rows"] == want["rows"], name
        assert math.isclose(got["p99"], want["p99"], rel_tol=1e-12), name
    # Same rows, same model: the holdout metrics agree.
    for metric in ("roc_auc", "pr_auc"):
        assert math.isclose(
            spark_manifest["metrics"]["holdout"][metric],
            embedded["metrics"]["holdout"][metric],
            rel_tol=1e-9,
        ), metric


def test_nanosecond_timestamps_in_the_sources_read_as_duckdb_reads_them(
    spark: Any, sample_workspace: Workspace, tmp_path: Path
) -> None:
    """pandas writes nanosecond Parquet timestamps (``feast init``'s sample has them),
    which Spark refuses by default; the join reads them, truncated to microseconds as
    DuckDB casts them, and equals the DuckDB path."""
    offline = sample_workspace.data / "offline"
    for path in offline.glob("*.parquet"):
        table = pq.read_table(path)
        fields = [
            f.with_type(pa.timestamp("ns", tz=f.type.tz)) if pa.types.is_timestamp(f.type) else f
            for f in table.schema
        ]
        table = table.cast(pa.schema(fields))
        # A value below a microsecond: truncated, never rounded up past an entity row.
        if "event_timestamp" in table.column_names:
            ts = table.column("event_timestamp").cast(pa.int64())
            nudged = pc.add(ts, 999).cast(pa.timestamp("ns", tz="UTC"))
            index = table.column_names.index("event_timestamp")
            table = table.set_column(index, "event_timestamp", nudged)
        pq.write_table(table, path)
    assert pq.read_schema(offline / "user_transaction_features.parquet").field(
        "event_timestamp"
    ).type == pa.timestamp("ns", tz="UTC")
    repository.apply(sample_workspace.repo)
    entity_df = sample_entity_frame(sample_workspace.data).head(2_000)
    with repository.open_store(sample_workspace.repo) as store:
        duck = build_training_set(store, "fraud_model_v1", entity_df)
        ours = on_spark(store, "fraud_model_v1", entity_df, tmp_path / "ts")
    assert_same_table(ours, duck, "Spark vs DuckDB, nanosecond sources")
    assert ours.column("txn_count_1h").null_count < ours.num_rows
