"""Training sets: errors, streaming, fingerprints, source layouts, fallback, labels, CLI.

Equality with Feast's get_historical_features is in test_training_set_parity.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from framework.errors import ConfigError, DataError
from framework.features import repository
from framework.features import training_set as ts_module
from framework.features.training_file import TrainingSetInfo, read_info
from framework.features.training_set import FINGERPRINT_KEY, build_training_set, write_training_set
from framework.models.labels import entity_frame_from_labels, time_split
from tests.support.cli import parity
from tests.support.progress import EVERY_BATCH, counts_to_total
from tests.support.workspaces import Workspace, embedded_store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


# ---------------------------------------------------------- a tiny repository


def tiny_store(root: Path, source_path: str, *, ttl: timedelta | None = None) -> Any:
    """A programmatic Feast store with one view 'stats' keyed by driver_id."""
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Float64, Int64
    from feast.value_type import ValueType

    store = embedded_store(root, "tiny")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name="stats",
        entities=[driver],
        ttl=ttl,
        schema=[Field(name="trips", dtype=Int64), Field(name="rating", dtype=Float64)],
        source=FileSource(path=source_path, timestamp_field="event_timestamp"),
    )
    store.apply([driver, view])
    return store


def stats_rows(days: range, driver: int) -> pa.Table:
    return pa.table(
        {
            "driver_id": pa.array([driver] * len(days), pa.int64()),
            "event_timestamp": pa.array([T0 + timedelta(days=d) for d in days], TS),
            "trips": pa.array([10 * driver + d for d in days], pa.int64()),
            "rating": pa.array([d / 10 for d in days], pa.float64()),
        }
    )


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Any]:
    pq.write_table(pa.concat_tables([stats_rows(range(10), 1), stats_rows(range(3, 6), 2)]),
                   tmp_path / "stats.parquet")  # fmt: skip
    store = tiny_store(tmp_path, str(tmp_path / "stats.parquet"), ttl=timedelta(days=2))
    yield store
    repository.close_store(store)


def entities(*rows: tuple[int, datetime]) -> pd.DataFrame:
    return pd.DataFrame(
        {"driver_id": [r[0] for r in rows], "event_timestamp": [r[1] for r in rows]}
    )


# ---------------------------------------------------------------- semantics


def test_tiny_join_by_hand(tiny: Any) -> None:
    df = entities(
        (1, T0 + timedelta(days=4, hours=5)),  # latest row at or before: day 4
        (1, T0 + timedelta(days=4)),  # exactly on a row: day 4 (inclusive)
        (2, T0 + timedelta(days=7)),  # last row day 5, exactly ttl (2 d) ago: kept
        (2, T0 + timedelta(days=7, microseconds=1)),  # 1 µs past the TTL: null
        (1, T0 - timedelta(days=1)),  # before any row: null
        (3, T0 + timedelta(days=4)),  # unknown driver: null
        (1, T0 + timedelta(days=4, hours=5)),  # duplicate of the first row: kept
    )
    out = build_training_set(tiny, ["stats:trips", "stats:rating"], df).to_pydict()
    assert out["trips"] == [14, 14, 25, None, None, None, 14]
    assert out["rating"] == [0.4, 0.4, 0.5, None, None, None, 0.4]
    assert out["driver_id"] == [1, 1, 2, 2, 1, 3, 1]  # input order, duplicates kept


def test_a_source_with_one_row_per_key_is_hash_joined_with_asof_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A profile-like source (one row per key, smaller than the entity frame) is
    joined by a hash join on keys and time; the result is the ASOF result: the row
    when it is not newer than the entity row (and within the TTL), else null."""
    rows = pa.table(
        {
            "driver_id": pa.array([1, 2, 3, None], pa.int64()),
            "event_timestamp": pa.array([T0 + timedelta(days=d) for d in (1, 5, 2, 0)], TS),
            "trips": pa.array([10, 20, None, 99], pa.int64()),
            "rating": pa.array([0.1, 0.2, 0.3, 0.9], pa.float64()),
        }
    )
    pq.write_table(rows, tmp_path / "stats.parquet")
    store = tiny_store(tmp_path, str(tmp_path / "stats.parquet"), ttl=timedelta(days=3))
    df = entities(
        (1, T0 + timedelta(days=1)),  # exactly on its row
        (1, T0 + timedelta(days=4)),  # 3 days later: at the TTL, kept
        (1, T0 + timedelta(days=4, microseconds=1)),  # past the TTL: null
        (2, T0 + timedelta(days=4)),  # its only row is newer: null
        (3, T0 + timedelta(days=2)),  # row with a null feature
        (4, T0 + timedelta(days=9)),  # no row for this key
        (2, T0 + timedelta(days=6)),
    )
    chosen: list[bool] = []
    original = ts_module._one_row_per_key

    def spy(*args: Any) -> bool:
        chosen.append(original(*args))
        return chosen[-1]

    try:
        monkeypatch.setattr(ts_module, "_one_row_per_key", spy)
        hashed = build_training_set(store, ["stats:trips", "stats:rating"], df)
        monkeypatch.setattr(ts_module, "_one_row_per_key", lambda *args: False)
        asof = build_training_set(store, ["stats:trips", "stats:rating"], df)
    finally:
        repository.close_store(store)
    assert chosen == [True]
    assert hashed.to_pydict()["trips"] == [10, 10, None, None, None, None, 20]
    assert hashed.to_pydict()["rating"] == [0.1, 0.1, None, None, 0.3, None, 0.2]
    assert hashed.equals(asof)


def test_sources_with_repeated_keys_or_larger_than_the_entities_are_asof_joined(
    tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen: list[bool] = []
    original = ts_module._one_row_per_key
    monkeypatch.setattr(
        ts_module, "_one_row_per_key", lambda *a: chosen.append(original(*a)) or chosen[-1]
    )
    many = entities(*[(1, T0 + timedelta(days=d)) for d in range(20)])
    build_training_set(tiny, ["stats:trips"], many)  # 13 rows, 2 keys: repeated keys
    few = entities((1, T0 + timedelta(days=4)))
    assert build_training_set(tiny, ["stats:trips"], few).to_pydict()["trips"] == [14]
    assert chosen == [False, False]


def test_naive_entity_timestamps_are_utc(tiny: Any) -> None:
    naive = entities((1, datetime(2026, 1, 5, 0, 0)))
    aware = entities((1, datetime(2026, 1, 5, 0, 0, tzinfo=UTC)))
    a = build_training_set(tiny, ["stats:trips"], naive)
    b = build_training_set(tiny, ["stats:trips"], aware)
    assert a.column("trips").to_pylist() == b.column("trips").to_pylist() == [14]
    assert a.schema.field("event_timestamp").type.tz == "UTC"


def test_full_feature_names(tiny: Any) -> None:
    out = build_training_set(
        tiny, ["stats:trips"], entities((1, T0 + timedelta(days=1))), full_feature_names=True
    )
    assert out.column_names == ["driver_id", "event_timestamp", "stats__trips"]


def test_ties_on_event_time_go_to_the_latest_created(tmp_path: Path) -> None:
    """Regression: DuckDB 1.5.6's top_n_window_elimination picked row 2007 here."""
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Int64
    from feast.value_type import ValueType

    t = T0 + timedelta(hours=2)
    minute = timedelta(minutes=1)
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array([1, 1, 1, 1], pa.int64()),
                "ts": pa.array([t, t, t, t], TS),
                "created": pa.array([None, t - minute, t + minute, t], TS),
                "count": pa.array([0, 1, 2, 7], pa.int64()),
                "row_id": pa.array([2000, 2001, 2002, 2007], pa.int64()),
            }
        ),
        tmp_path / "ties.parquet",
    )
    store = embedded_store(tmp_path, "ties")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name="ties",
        entities=[driver],
        schema=[Field(name="count", dtype=Int64), Field(name="row_id", dtype=Int64)],
        source=FileSource(
            path=str(tmp_path / "ties.parquet"),
            timestamp_field="ts",
            created_timestamp_column="created",
        ),
    )
    store.apply([driver, view])
    try:
        # Two features, the second one checked: the shape that made DuckDB pick wrongly.
        refs = ["ties:count", "ties:row_id"]
        out = build_training_set(store, refs, entities((1, t), (1, t + minute)))
    finally:
        repository.close_store(store)
    assert out.column("row_id").to_pylist() == [2002, 2002]
    assert out.column("count").to_pylist() == [2, 2]


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("features", "frame", "error", "match"),
    [
        ("no_such_service", None, ConfigError, "Unknown feature service 'no_such_service'"),
        (["nope:trips"], None, ConfigError, "Unknown feature view 'nope'"),
        (["stats:nope"], None, ConfigError, "has no feature 'nope'"),
        (["stats"], None, ConfigError, "must have the form 'view:feature'"),
        ([], None, ConfigError, "'features' parameter is empty"),
        (["stats:trips"], pd.DataFrame({"event_timestamp": [T0]}), DataError,
         "no join-key column 'driver_id'"),
        (["stats:trips"], pd.DataFrame({"driver_id": [1], "x": [1]}), DataError,
         "needs an 'event_timestamp' column"),
        (["stats:trips"], pd.DataFrame({"driver_id": [1], "event_timestamp": [17]}), DataError,
         "type BIGINT, which cannot be compared"),
        (["stats:trips"], pd.DataFrame({"driver_id": [1], "event_timestamp": ["soon"]}),
         DataError, "not timestamps"),
        (["stats:trips"], entities()[0:0], DataError, "entity frame is empty"),
        (["stats:trips"], pa.table({"driver_id": [1], "event_timestamp": pa.array(
            [1_767_225_600_000_000_400], pa.timestamp("ns"))}), DataError,
         "finer than a microsecond"),
        (["stats:trips"], [1, 2], ConfigError, "'entity_df' parameter must be"),
    ],
)  # fmt: skip
def test_errors_name_the_problem(
    tiny: Any, features: Any, frame: Any, error: type[Exception], match: str
) -> None:
    frame = entities((1, T0)) if frame is None else frame
    if isinstance(frame, pd.DataFrame) and len(frame) == 0:
        frame = frame.astype({"driver_id": "int64", "event_timestamp": "datetime64[ns, UTC]"})
    with pytest.raises(error, match=match):
        build_training_set(tiny, features, frame)


def test_on_demand_features_in_batches_equal_one_whole_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On-demand views run a batch of rows at a time; column types each batch infers
    (all nulls in one, ints in another, floats in a third) end up as one whole-table
    run would give them, and the values are the same."""
    from feast import Entity, FeatureView, Field, FileSource
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float64, Int64
    from feast.value_type import ValueType

    pq.write_table(stats_rows(range(10), 1), tmp_path / "stats.parquet")
    store = embedded_store(tmp_path, "odfv")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    stats = FeatureView(
        name="stats",
        entities=[driver],
        schema=[Field(name="trips", dtype=Int64), Field(name="rating", dtype=Float64)],
        source=FileSource(path=str(tmp_path / "stats.parquet"), timestamp_field="event_timestamp"),
    )

    @on_demand_feature_view(
        sources=[stats], schema=[Field(name="scaled", dtype=Float64)], mode="python"
    )
    def scaled(inputs: dict) -> dict:  # type: ignore[type-arg]
        out = []
        for trips in inputs["trips"]:
            out.append(None if trips in (10, 11, 12) else trips if 13 <= trips <= 15 else trips / 2)
        return {"scaled": out}

    store.apply([driver, stats, scaled])
    df = entities(*[(1, T0 + timedelta(days=d)) for d in range(10)])
    try:
        whole = build_training_set(store, ["stats:trips", "scaled:scaled"], df)
        monkeypatch.setattr(ts_module, "BATCH_ROWS", 3)
        batched = build_training_set(store, ["stats:trips", "scaled:scaled"], df)
        write_training_set(store, ["stats:trips", "scaled:scaled"], df, tmp_path / "t.parquet")
    finally:
        repository.close_store(store)
    assert whole.schema.field("scaled").type == pa.float64()
    assert batched.to_pydict()["scaled"] == [None, None, None, 13, 14, 15, 8, 8.5, 9, 9.5]
    assert batched.equals(whole)
    # Streamed: the first batch is all null, the second ints: the file still has the
    # declared type (Float64) and the same values.
    streamed = pq.read_table(tmp_path / "t.parquet")
    assert streamed.schema.field("scaled").type == pa.float64()
    assert streamed.to_pydict() == whole.to_pydict()


def test_string_timestamps_are_parsed(tiny: Any) -> None:
    out = build_training_set(
        tiny, ["stats:trips"], pd.DataFrame({"driver_id": [1], "event_timestamp": ["2026-01-05"]})
    )
    assert out.column("trips").to_pylist() == [14]


def test_missing_request_data_is_named(sample_workspace: Workspace) -> None:
    repository.apply(sample_workspace.repo)
    df = pd.DataFrame({"user_id": [1], "merchant_id": [1], "event_timestamp": [T0]})
    with pytest.raises(DataError, match="no column 'amount'.*request data.*transaction_context"):
        build_training_set(sample_workspace.repo, "fraud_model_v1", df)


def test_bad_repo_argument() -> None:
    with pytest.raises(ConfigError, match="'repo' parameter"):
        build_training_set(42, ["stats:trips"], entities((1, T0)))


# ------------------------------------------------ streaming and fingerprints


def _sample_entities(ws: Workspace, n: int = 2_000) -> pd.DataFrame:
    tx = pq.read_table(ws.data / "raw" / "transactions.parquet").slice(0, n).to_pandas()
    return pd.DataFrame(
        {
            "user_id": tx["user_id"],
            "merchant_id": tx["merchant_id"],
            "amount": tx["amount"],
            "hour_of_day": tx["transaction_timestamp"].dt.hour.astype("int64"),
            "event_timestamp": tx["transaction_timestamp"],
        }
    )


def test_streamed_parquet_equals_in_memory_result(
    sample_workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repository.apply(sample_workspace.repo)
    df = _sample_entities(sample_workspace)
    table = build_training_set(sample_workspace.repo, "fraud_model_v1", df)
    monkeypatch.setattr(ts_module, "BATCH_ROWS", 300)  # many batches, each transformed alone
    info = write_training_set(
        sample_workspace.repo,
        "fraud_model_v1",
        df,
        tmp_path / "ts.parquet",
        memory_limit="256MB",
        temp_directory=tmp_path / "spill",
    )
    written = pq.read_table(tmp_path / "ts.parquet")
    assert written.to_pandas().equals(table.to_pandas())
    assert read_info(tmp_path / "ts.parquet") == info
    # The fingerprint does not depend on the batch size or the output form.
    assert info.fingerprint == table.schema.metadata[FINGERPRINT_KEY].decode()
    assert not list(tmp_path.glob("*.tmp"))


def test_fingerprint_follows_entities_definitions_and_sources(
    sample_workspace: Workspace,
) -> None:
    repository.apply(sample_workspace.repo)
    df = _sample_entities(sample_workspace, 500)

    def fp(frame: pd.DataFrame, features: Any = "fraud_model_v1") -> str:
        return read_info(build_training_set(sample_workspace.repo, features, frame)).fingerprint

    base = fp(df)
    assert fp(df.copy()) == base  # same inputs, same fingerprint
    assert fp(df.iloc[::-1].reset_index(drop=True)) != base  # row order matters
    changed = df.copy()
    changed.loc[0, "amount"] += 1
    assert fp(changed) != base
    assert fp(df, ["user_txn_7d:txn_count_7d"]) != base
    # A source file rewritten (new identity) changes it.
    source = sample_workspace.data / "offline" / "user_profile.parquet"
    pq.write_table(pq.read_table(source), source)
    assert fp(df) != base


def test_definitions_digest_is_the_same_in_every_process(sample_workspace: Workspace) -> None:
    """The digest pins a model's definitions, so it must not depend on the hash seed
    (Feast's dill pickle of an on-demand UDF does; the digest uses its source text)."""
    repository.apply(sample_workspace.repo)
    code = (
        "from framework.features.join_plan import feature_contract; "
        f"print(feature_contract({str(sample_workspace.repo)!r}, "
        "'fraud_model_v1').definitions_digest)"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2", "3", "4")
    }
    assert len(digests) == 1
    assert len(next(iter(digests))) == 64


# ------------------------------------------------------------ source layouts


def test_glob_and_partitioned_folder_sources(tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    for driver in (1, 2):
        folder = parts / f"region=r{driver}"
        folder.mkdir(parents=True)
        pq.write_table(stats_rows(range(6), driver), folder / "data.parquet")
    df = entities((1, T0 + timedelta(days=3)), (2, T0 + timedelta(days=5, hours=1)))
    for i, path in enumerate([str(parts), str(parts / "*" / "*.parquet")]):
        root = tmp_path / f"repo{i}"
        root.mkdir()
        store = tiny_store(root, path)
        try:
            out = build_training_set(store, ["stats:trips"], df)
        finally:
            repository.close_store(store)
        assert out.column("trips").to_pylist() == [13, 25]
        assert len(read_info(out).sources) == 2


def test_missing_source_files_are_named(tmp_path: Path) -> None:
    store = tiny_store(tmp_path, str(tmp_path / "absent.parquet"))
    try:
        with pytest.raises(DataError, match="'stats' has no Parquet files"):
            build_training_set(store, ["stats:trips"], entities((1, T0)))
    finally:
        repository.close_store(store)


def test_fallback_to_feast_for_sources_duckdb_cannot_read(
    tiny: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    df = entities((2, T0 + timedelta(days=4)), (1, T0 + timedelta(days=9, hours=3)))
    ours = build_training_set(tiny, ["stats:trips", "stats:rating"], df)
    # Pretend the source is of a kind DuckDB cannot read: Feast does the join.
    monkeypatch.setattr(ts_module, "local_files", lambda view, repo_path: None)
    feast = build_training_set(tiny, ["stats:trips", "stats:rating"], df)
    info = read_info(feast)
    assert info.engine == "feast" and "DuckDB" in info.engine_reason
    assert read_info(ours).engine == "duckdb"
    assert feast.column("trips").to_pylist() == ours.column("trips").to_pylist() == [24, 19]
    written = write_training_set(
        tiny, ["stats:trips", "stats:rating"], df, tmp_path / "fallback.parquet"
    )
    assert written.engine == "feast"
    assert written.fingerprint == info.fingerprint
    assert pq.read_table(tmp_path / "fallback.parquet").column("trips").to_pylist() == [24, 19]


# -------------------------------------------------------------------- labels


def test_entity_frame_from_labels_uses_only_arrived_labels() -> None:
    labels = pd.DataFrame(
        {
            "user_id": [1, 2, 3],
            "is_fraud": [0, 1, 1],
            "tx_ts": pd.to_datetime(["2026-01-02", "2026-01-03", "2026-01-04"], utc=True),
            "arrived": pd.to_datetime(["2026-02-01", "2026-02-10", "2026-03-01"], utc=True),
            "amount": [1.0, 2.0, 3.0],
        }
    )
    out = entity_frame_from_labels(
        labels,
        keys=["user_id"],
        label="is_fraud",
        event_timestamp="tx_ts",
        label_timestamp="arrived",
        as_of=datetime(2026, 2, 10, tzinfo=UTC),  # inclusive
        offset=-timedelta(microseconds=1),
        extra=["amount"],
    )
    assert out.column_names == ["user_id", "event_timestamp", "is_fraud", "amount"]
    assert out.column("user_id").to_pylist() == [1, 2]
    assert out.column("event_timestamp")[0].as_py() == datetime(2026, 1, 2, tzinfo=UTC) - timedelta(
        microseconds=1
    )
    with pytest.raises(DataError, match="no column 'label'"):
        entity_frame_from_labels(labels, keys=["user_id"], label="label", event_timestamp="tx_ts")
    with pytest.raises(ConfigError, match="go together"):
        entity_frame_from_labels(
            labels, keys=["user_id"], label="is_fraud", event_timestamp="tx_ts", as_of=T0
        )


def test_time_split_never_overlaps_in_time() -> None:
    stamps = [T0 + timedelta(hours=h // 3) for h in range(300)]  # groups of equal timestamps
    frame = pa.table({"event_timestamp": pa.array(stamps, TS), "i": list(range(300))})
    train, valid, test = time_split(frame, fractions=(0.7, 0.15, 0.15))
    assert train.num_rows + valid.num_rows + test.num_rows == 300
    for a, b in ((train, valid), (valid, test)):
        latest = max(a.column("event_timestamp").to_pylist())
        earliest = min(b.column("event_timestamp").to_pylist())
        assert latest < earliest
    assert 190 <= train.num_rows <= 230
    assert train.column("i").to_pylist() == sorted(train.column("i").to_pylist())
    cut = T0 + timedelta(hours=50)
    before, after = time_split(frame, cutoffs=[cut])
    assert max(before.column("event_timestamp").to_pylist()) < cut
    assert min(after.column("event_timestamp").to_pylist()) == cut
    with pytest.raises(ConfigError, match="'fractions'"):
        time_split(frame, fractions=(0.5, 0.6))
    with pytest.raises(ConfigError, match="increasing"):
        time_split(frame, cutoffs=[cut, T0])
    with pytest.raises(ConfigError, match="exactly one"):
        time_split(frame)


# ----------------------------------------------------------------------- CLI


def test_cli_training_set(sample_workspace: Workspace, tmp_path: Path) -> None:
    repository.apply(sample_workspace.repo)
    entities_path = tmp_path / "entities.parquet"
    pq.write_table(pa.Table.from_pandas(_sample_entities(sample_workspace, 300)), entities_path)
    out = tmp_path / "out" / "train.parquet"
    cmd = [
        sys.executable,
        "-m",
        "framework.cli.main",
        "training-set",
        "--repo",
        str(sample_workspace.repo),
    ]
    result = subprocess.run(
        [*cmd, "--feature-service", "fraud_model_v1", "--entities", str(entities_path),
         "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["entity_rows"] == 300 == pq.read_metadata(out).num_rows
    assert summary["engine"] == "duckdb"
    assert summary["fingerprint"] == read_info(out).fingerprint
    bad = subprocess.run(
        [*cmd, "--features", "user_txn_7d:nope", "--entities", str(entities_path),
         "--out", str(tmp_path / "x.parquet")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "parity training-set: error: Feature view 'user_txn_7d' has no feature 'nope'; it has: "
        "txn_count_7d, amount_mean_7d, amount_std_7d, distinct_merchants_7d."
    ]
    assert not (tmp_path / "x.parquet").exists()


def test_cli_training_set_logs_its_joins_and_rows_on_stderr(
    sample_workspace: Workspace, tmp_path: Path
) -> None:
    """Progress of the joins (one per feature source) and of the rows written, a batch at
    a time (two batches here), goes to stderr; stdout holds the same JSON as ever."""
    repository.apply(sample_workspace.repo)
    entities_path = tmp_path / "entities.parquet"
    rows = pd.concat([_sample_entities(sample_workspace, 5_000)] * 14, ignore_index=True)
    assert len(rows) > ts_module.BATCH_ROWS
    pq.write_table(pa.Table.from_pandas(rows), entities_path)
    out = tmp_path / "train.parquet"
    result = parity(
        "training-set", "--repo", str(sample_workspace.repo), "--feature-service",
        "fraud_model_v1", "--entities", str(entities_path), "--out", str(out), "--json",
        cwd=tmp_path, env=EVERY_BATCH,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == {"out", "seconds"} | {f.name for f in fields(TrainingSetInfo)}
    assert summary["entity_rows"] == len(rows) == pq.read_metadata(out).num_rows
    assert counts_to_total(result.stderr, "join") == [1, 2, 3, 4]
    assert counts_to_total(result.stderr, "write") == [ts_module.BATCH_ROWS, len(rows)]
    assert "join: 3/4 feature sources (" in result.stderr  # which views: the note
    assert "user_txn_1h, user_txn_24h, user_txn_7d" in result.stderr


def test_a_streamed_on_demand_feature_whose_type_cannot_convert_is_named() -> None:
    """A later batch whose on-demand feature cannot take the file's type fails in one
    line naming the feature and both types, instead of a writer error."""
    from framework.features import on_demand

    schema = pa.schema([("driver_id", pa.int64()), ("scaled", pa.float64())])
    part = pa.table({"driver_id": [1], "scaled": ["not a number"]})
    with pytest.raises(DataError, match="on-demand feature 'scaled' is string in one batch"):
        on_demand.as_schema(part, schema)
    ints = pa.table({"driver_id": [1], "scaled": pa.array([3], pa.int64())})
    assert on_demand.as_schema(ints, schema).column("scaled").to_pylist() == [3.0]


def test_the_inputs_an_on_demand_view_adds_come_in_the_views_order_in_every_process(
    sample_workspace: Workspace,
) -> None:
    """Feast groups a view's features in a set, so the inputs an on-demand view pulls in
    (here all of ``user_txn_7d`` for ``transaction_context:is_night``) came in another
    order under every hash seed: a training set's columns changed from run to run.
    They follow the view's schema, whatever the seed."""
    repository.apply(sample_workspace.repo)
    script = (
        "import json, sys; from pathlib import Path; "
        "from framework.features.join_plan import join_plan, open_repo; "
        "plan = join_plan(open_repo(Path(sys.argv[1])), ['transaction_context:is_night'], False); "
        "print(json.dumps([v.features for v in plan.views]))"
    )
    orders = set()
    for seed in ("1", "2", "3"):
        done = subprocess.run(
            [sys.executable, "-c", script, str(sample_workspace.repo)],
            capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )  # fmt: skip
        orders.add(done.stdout.strip())
    assert orders == {
        json.dumps([["txn_count_7d", "amount_mean_7d", "amount_std_7d", "distinct_merchants_7d"]])
    }
