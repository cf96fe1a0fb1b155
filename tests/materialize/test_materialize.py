"""``parity materialize`` against Feast's own ``materialize``, on SQLite and on a real Redis.

What is promised (``framework/materialize/job.py``): the online store ends up holding
exactly what Feast's materialize writes — the same SQLite rows, the same Redis
hashes — so Feast's ``get_online_features`` and parity's server read the same
values; a killed run converges when run again and records no interval for a view
it did not finish; incremental runs write only entities with new rows; bad input
fails in one line before anything is written.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from framework.errors import ConfigError, FeatureStoreError
from framework.features.repository import apply, open_store
from framework.materialize import online_write, sqlite_writer
from framework.materialize.freshness import freshness, status
from framework.materialize.job import materialize
from framework.sample.data import GenerationSummary
from tests.support.redis_store import redis_client, redis_dump
from tests.support.workspaces import ROOT, Served, Workspace, embedded_store, make_workspace

START = datetime(2000, 1, 1, tzinfo=UTC)
END = datetime(2030, 1, 1, tzinfo=UTC)
PARITY = [sys.executable, "-m", "framework.cli"]


# ----------------------------------------------------------------- helpers


def _feast_materialize(store: Any, start: datetime = START, end: datetime = END) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        store.materialize(start_date=start, end_date=end)


def _sqlite_rows(ws: Workspace) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every Feast table in the workspace's SQLite online store."""
    con = sqlite3.connect(ws.data / "feast" / "online.db")
    try:
        tables = [
            r[0]
            for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if r[0] != sqlite_writer.STATE_TABLE
        ]
        return {
            t: con.execute(
                f"SELECT entity_key, feature_name, value, value_text, vector_value, event_ts, "
                f'created_ts FROM "{t}" ORDER BY entity_key, feature_name'
            ).fetchall()
            for t in tables
        }
    finally:
        con.close()


def _online_reads(store: Any, ws: Workspace) -> dict[str, list[Any]]:
    """Feast's get_online_features for every user and merchant of the sample."""
    users = pq.read_table(ws.data / "offline" / "user_profile.parquet")["user_id"].to_pylist()
    merchants = pq.read_table(ws.data / "offline" / "merchant_profile.parquet")[
        "merchant_id"
    ].to_pylist()
    rows = [
        {"user_id": u, "merchant_id": merchants[i % len(merchants)]} for i, u in enumerate(users)
    ]
    refs = [f"{fv.name}:{f.name}" for fv in store.list_feature_views() for f in fv.features]
    return dict(store.get_online_features(features=refs, entity_rows=rows).to_dict())


def _copy(ws: Workspace, root: Path) -> Workspace:
    shutil.copytree(ws.root, root, ignore=shutil.ignore_patterns("__pycache__"))
    return Workspace(root)


def _redis_workspace(ws: Workspace, address: str) -> Workspace:
    """The sample workspace with Feast's Redis online store, applied afresh."""
    yaml = ws.repo / "feature_store.yaml"
    text = yaml.read_text().replace(
        "  type: sqlite\n  path: ../data/feast/online.db",
        f"  type: redis\n  connection_string: {address}",
    )
    assert "type: redis" in text
    yaml.write_text(text)
    apply(ws.repo)
    return ws


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PARITY, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=os.environ
    )


@pytest.fixture(scope="module")
def base(
    tmp_path_factory: pytest.TempPathFactory, sample_data: tuple[Path, GenerationSummary]
) -> Workspace:
    """The sample, applied, nothing online. Tests copy it (never apply in a copy: its
    registry names this workspace's tables)."""
    ws = make_workspace(tmp_path_factory.mktemp("materialize-base"))
    shutil.copytree(sample_data[0], ws.data)
    apply(ws.repo)
    return ws


@pytest.fixture(scope="module")
def feast_reference(base: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A copy of ``base`` materialised by Feast's own materialize (SQLite)."""
    ws = _copy(base, tmp_path_factory.mktemp("feast-ref") / "ws")
    with open_store(ws.repo) as store:
        _feast_materialize(store)
    return ws


# ------------------------------------------------------------ round trips, SQLite


@pytest.mark.integration
def test_sqlite_rows_equal_feasts_and_read_back_the_same(
    base: Workspace, feast_reference: Workspace, tmp_path: Path
) -> None:
    ws = _copy(base, tmp_path / "ws")
    with open_store(ws.repo) as store:
        summary = materialize(store, start=START, end=END, batch_rows=97)
        assert {v.engine for v in summary.views} == {"parity"}
        assert {v.view for v in summary.views} == {fv.name for fv in store.list_feature_views()}
        ours = _online_reads(store, ws)
    reference = _sqlite_rows(feast_reference)
    assert _sqlite_rows(ws) == reference  # byte for byte, every column
    con = sqlite3.connect(ws.data / "feast" / "online.db")
    in_insert_order = [
        r[0] for r in con.execute('SELECT entity_key FROM "parity_user_txn_7d" ORDER BY rowid')
    ]
    con.close()
    assert in_insert_order == sorted(in_insert_order)  # written in primary-key order
    assert sum(len(rows) for rows in reference.values()) > 1000
    with open_store(feast_reference.repo) as store:
        assert ours == _online_reads(store, feast_reference)


def _journal(ws: Workspace) -> str:
    con = sqlite3.connect(ws.data / "feast" / "online.db")
    try:
        return str(con.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        con.close()


def test_sqlite_journal_rollback_when_alone_wal_when_a_reader_has_the_store_open(
    base: Workspace, feast_reference: Workspace, tmp_path: Path
) -> None:
    """Alone, batches go through a rollback journal (each page written once); with a
    reader connected, through the write-ahead log, without waiting for the reader.
    Both leave the store in WAL mode and the same rows as Feast's materialize."""
    ws = _copy(base, tmp_path / "ws")
    assert _journal(ws) == "delete"  # as Feast creates it
    with open_store(ws.repo) as store:
        summary = materialize(store, start=START, end=END, batch_rows=500)
    assert "rollback journal: nothing else has the store open" in summary.online_store
    assert _journal(ws) == "wal"
    assert _sqlite_rows(ws) == _sqlite_rows(feast_reference)

    # Again, now in WAL mode and alone: back to a rollback journal for the run.
    with open_store(ws.repo) as store:
        summary = materialize(store, start=START, end=END, batch_rows=500)
    assert "rollback journal" in summary.online_store
    assert _journal(ws) == "wal"

    # A reader (a server, say) has the store open: WAL.
    reader = sqlite3.connect(ws.data / "feast" / "online.db")
    try:
        before = reader.execute('SELECT count(*) FROM "parity_user_txn_7d"').fetchone()
        with open_store(ws.repo) as store:
            summary = materialize(store, start=START, end=END, batch_rows=500)
        assert "write-ahead log: the store is open elsewhere" in summary.online_store
        assert reader.execute('SELECT count(*) FROM "parity_user_txn_7d"').fetchone() == before
    finally:
        reader.close()
    assert _journal(ws) == "wal"
    assert _sqlite_rows(ws) == _sqlite_rows(feast_reference)


@pytest.mark.integration
def test_the_server_reads_the_same_vectors(
    base: Workspace, feast_reference: Workspace, tmp_path: Path
) -> None:
    from framework.features.online import OnlineFeatures

    ws = _copy(base, tmp_path / "ws")
    rows = [{"user_id": u, "merchant_id": m} for u in range(1, 60) for m in (1, 2, 3)]
    request = [{"amount": 12.5, "hour_of_day": 3}] * len(rows)
    now = datetime(2026, 3, 31, 23, 0, tzinfo=UTC).timestamp()
    vectors = []
    with open_store(ws.repo) as store:
        materialize(store, start=START, end=END)
        vectors.append(
            OnlineFeatures(store, "fraud_model_v1", clock=lambda: now).read(rows, request)
        )
    with open_store(feast_reference.repo) as store:
        vectors.append(
            OnlineFeatures(store, "fraud_model_v1", clock=lambda: now).read(rows, request)
        )
    ours, feasts = vectors
    assert ours.table.equals(feasts.table)
    assert ours.status == feasts.status
    assert any(s == "PRESENT" for s in ours.status["txn_count_7d"])


@pytest.mark.integration
def test_null_on_demand_features_keep_their_declared_types(
    feast_reference: Workspace,
) -> None:
    """An on-demand feature that is null for every row read (a new user, say) has the type
    its view declares, not Arrow's null type: the server's prediction log keeps one schema
    (one file per flush, not one per type) and clients see the declared types."""
    from framework.features.online import OnlineFeatures

    now = datetime(2026, 3, 31, 23, 0, tzinfo=UTC).timestamp()
    with open_store(feast_reference.repo) as store:
        online = OnlineFeatures(store, "fraud_model_v1", clock=lambda: now)
        unknown = online.read([{"user_id": 10**9, "merchant_id": 10**9}], [{"amount": None,
                              "hour_of_day": None}])  # fmt: skip
        known = online.read([{"user_id": 1, "merchant_id": 1}], [{"amount": 12.5,
                            "hour_of_day": 3}])  # fmt: skip
    for name in ("amount_to_mean_7d", "amount_zscore_7d", "is_night"):
        assert unknown.table.column(name).null_count == 1
    assert unknown.table.schema.field("amount_zscore_7d").type == pa.float64()
    assert unknown.table.schema.field("is_night").type == pa.int64()
    assert known.table.column("is_night").to_pylist() == [1]
    assert unknown.table.schema == known.table.schema


def _typed_repo(root: Path, created: bool, key_version: int = 3) -> tuple[Any, Any]:
    """A programmatic repository: two join keys (string, int), a created timestamp, and
    every scalar type plus a list, nulls, NaN and ties on event time; entity keys
    serialized in ``key_version``."""
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Array, Bool, Bytes, Float32, Float64, Int32, Int64, String
    from feast.value_type import ValueType

    rng = np.random.default_rng(3)
    n = 600
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    countries = [["FR", "DE", "ÉÉ"][i % 3] for i in range(n)]
    shops = [int(v) for v in rng.integers(-5, 40, n)]
    times = [t0 + timedelta(seconds=int(s)) for s in rng.integers(0, 50, n)]
    made: list[datetime | None] = [t0 + timedelta(microseconds=i) for i in range(n)]
    for i in range(0, n - 1, 11):
        # A missing created time tied with a known one on (key, event time): the known
        # one wins (Feast sorts created times descending, missing last). The odd
        # microsecond keeps two missing ones from ever tying (Feast's pick is arbitrary).
        times[i] += timedelta(microseconds=i + 1)
        countries[i + 1], shops[i + 1], times[i + 1] = countries[i], shops[i], times[i]
        made[i] = None
    table = pa.table(
        {
            "country": pa.array(countries),
            "shop_id": pa.array(shops, pa.int64()),
            "ts": pa.array(times, pa.timestamp("us", tz="UTC")),
            "created": pa.array(made, pa.timestamp("us", tz="UTC")),
            "i64": pa.array(
                [None if i % 7 == 0 else int(v) for i, v in enumerate(rng.integers(-9, 9**9, n))],
                pa.int64(),
            ),
            "i32": pa.array(rng.integers(-(2**31), 2**31 - 1, n), pa.int32()),
            "f64": pa.array(
                [math.nan if i % 5 == 0 else float(v) for i, v in enumerate(rng.standard_normal(n))]
            ),
            "f32": pa.array(rng.standard_normal(n).astype(np.float32)),
            "s": pa.array([None if i % 4 == 0 else f"v{i}é" for i in range(n)]),
            "b": pa.array([bytes([i % 256]) * (i % 5) for i in range(n)], pa.binary()),
            "flag": pa.array([None if i % 6 == 0 else bool(i % 2) for i in range(n)]),
            "ints": pa.array([[i, -i] if i % 3 else None for i in range(n)], pa.list_(pa.int64())),
        }
    )
    pq.write_table(table, root / "typed.parquet")
    store = embedded_store(root, "typed")
    if key_version != 3:
        from feast import FeatureStore

        config = store.config.model_copy(update={"entity_key_serialization_version": key_version})
        store = FeatureStore(config=config)
    shop = Entity(name="shop", join_keys=["shop_id"], value_type=ValueType.INT64)
    country = Entity(name="country", join_keys=["country"], value_type=ValueType.STRING)
    view = FeatureView(
        name="typed",
        entities=[shop, country],
        ttl=timedelta(days=1),
        schema=[
            Field(name="shop_id", dtype=Int64),
            Field(name="country", dtype=String),
            Field(name="i64", dtype=Int64),
            Field(name="i32", dtype=Int32),
            Field(name="f64", dtype=Float64),
            Field(name="f32", dtype=Float32),
            Field(name="s", dtype=String),
            Field(name="b", dtype=Bytes),
            Field(name="flag", dtype=Bool),
            Field(name="ints", dtype=Array(Int64)),
        ],
        source=FileSource(
            path=str(root / "typed.parquet"),
            timestamp_field="ts",
            created_timestamp_column="created" if created else "",
        ),
    )
    store.apply([shop, country, view])
    return store, view


@pytest.mark.integration
@pytest.mark.parametrize("created", [True, False], ids=["created-timestamps", "no-created"])
@pytest.mark.parametrize("rows_per_key_to_aggregate", [0, 10**9], ids=["aggregate", "window"])
def test_every_type_multi_keys_and_ties_equal_feasts_rows(
    tmp_path: Path, created: bool, rows_per_key_to_aggregate: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both ways of keeping the latest row per key (framework.materialize.latest_rows)."""
    monkeypatch.setattr(
        "framework.materialize.latest_rows.ROWS_PER_KEY_TO_AGGREGATE", rows_per_key_to_aggregate
    )
    feast_root, parity_root = tmp_path / "feast", tmp_path / "parity"
    feast_root.mkdir()
    parity_root.mkdir()
    store, _ = _typed_repo(feast_root, created)
    _feast_materialize(
        store, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 40, tzinfo=UTC)
    )
    store, _ = _typed_repo(parity_root, created)
    materialize(
        store,
        start=datetime(2026, 1, 1, tzinfo=UTC),
        end=datetime(2026, 1, 1, 0, 0, 40, tzinfo=UTC),
        batch_rows=7,
    )
    query = (
        "SELECT entity_key, feature_name, value, value_text, event_ts, created_ts "
        "FROM typed_typed ORDER BY entity_key, feature_name"
    )
    feast_rows = sqlite3.connect(feast_root / "online.db").execute(query).fetchall()
    parity_rows = sqlite3.connect(parity_root / "online.db").execute(query).fetchall()
    assert len(feast_rows) > 500
    if not created:
        # Without a created timestamp, rows tied on event time are Feast's arbitrary pick
        # (pandas' unstable sort): compare the entities and times, not the values.
        feast_rows = [(r[0], r[1], r[4]) for r in feast_rows]
        parity_rows = [(r[0], r[1], r[4]) for r in parity_rows]
    assert parity_rows == feast_rows


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:The serialization version below 3:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:Serialization of entity key with version < 3:UserWarning")
def test_keys_are_written_in_the_repositorys_serialization_version(tmp_path: Path) -> None:
    """The writer assumed version 3; a repository on version 2 got keys Feast never
    finds. Now every row equals Feast's own, keys included, and Feast reads them back."""
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 40, tzinfo=UTC)
    (tmp_path / "feast").mkdir()
    (tmp_path / "parity").mkdir()
    store, _ = _typed_repo(tmp_path / "feast", True, key_version=2)
    _feast_materialize(store, start, end)
    store, _ = _typed_repo(tmp_path / "parity", True, key_version=2)
    assert store.config.entity_key_serialization_version == 2
    materialize(store, start=start, end=end)
    query = "SELECT entity_key, feature_name, value, event_ts FROM typed_typed ORDER BY 1, 2"
    feast_rows = sqlite3.connect(tmp_path / "feast" / "online.db").execute(query).fetchall()
    parity_rows = sqlite3.connect(tmp_path / "parity" / "online.db").execute(query).fetchall()
    assert len(feast_rows) > 500 and parity_rows == feast_rows
    rows = pq.read_table(tmp_path / "parity" / "typed.parquet").to_pylist()
    first = next(r for r in rows if r["ts"] <= end)
    entity = {"shop_id": first["shop_id"], "country": first["country"]}
    read = store.get_online_features(features=["typed:i32"], entity_rows=[entity]).to_dict()
    assert read["i32"][0] is not None  # Feast finds the key parity wrote


# ------------------------------------------------------------- round trips, Redis


@pytest.mark.integration
def test_redis_hashes_equal_feasts_and_read_back_the_same(
    sample_workspace: Workspace, feast_reference: Workspace, redis_address: str
) -> None:
    ws = _redis_workspace(sample_workspace, redis_address)
    with open_store(ws.repo) as store:
        _feast_materialize(store)
        feasts = redis_dump(redis_address)
        redis_client(redis_address).flushdb()
        summary = materialize(store, start=START, end=END, batch_rows=101)
        assert {v.engine for v in summary.views} == {"parity"}
        assert redis_dump(redis_address) == feasts
        ours = _online_reads(store, ws)
    assert len(feasts) > 200  # one hash per user and per merchant
    with open_store(feast_reference.repo) as store:  # what SQLite gives, read through Feast
        assert ours == _online_reads(store, feast_reference)


@pytest.mark.integration
def test_redis_keeps_newer_values_as_feast_does(
    sample_workspace: Workspace, redis_address: str
) -> None:
    """Feast's Redis writer skips an entity whose stored event time is as new or newer."""
    ws = _redis_workspace(sample_workspace, redis_address)
    with open_store(ws.repo) as store:
        first = materialize(store, start=START, end=END, views=["user_txn_7d"])
        again = materialize(store, start=START, end=END, views=["user_txn_7d"])
        older = materialize(
            store, start=START, end=datetime(2026, 2, 1, tzinfo=UTC), views=["user_txn_7d"]
        )
    entities = first.views[0].entities
    assert first.views[0].written == entities > 100
    assert (again.views[0].written, again.views[0].skipped) == (0, entities)
    assert older.views[0].written == 0 and older.views[0].skipped == older.views[0].entities > 0


@pytest.mark.integration
def test_redis_key_ttl_and_skip_dedup_settings_are_honoured(
    sample_workspace: Workspace, redis_address: str
) -> None:
    """Feast's ``key_ttl_seconds`` (EXPIRE per entity) and ``skip_dedup`` (no read)."""
    ws = _redis_workspace(sample_workspace, redis_address)
    yaml = ws.repo / "feature_store.yaml"
    yaml.write_text(
        yaml.read_text().replace(
            f"connection_string: {redis_address}\n",
            f"connection_string: {redis_address}\n  key_ttl_seconds: 3600\n  skip_dedup: true\n",
        )
    )
    with open_store(ws.repo) as store:
        assert store.config.online_store.skip_dedup
        first = materialize(store, start=START, end=END, views=["user_profile"])
        again = materialize(store, start=START, end=END, views=["user_profile"])
    client = redis_client(redis_address)
    try:
        ttls = [client.ttl(key) for key in redis_dump(redis_address)]
    finally:
        client.close()
    assert len(ttls) == first.views[0].entities > 0
    assert all(0 < ttl <= 3600 for ttl in ttls)
    assert again.views[0].written == again.views[0].entities  # skip_dedup: written again


@pytest.mark.integration
def test_production_profile_redis_and_the_sql_registry(
    sample_workspace: Workspace,
    feast_reference: Workspace,
    postgres_url: str,
    redis_address: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--profile production``: Redis online, intervals in Feast's SQL registry."""
    from framework.features.repository import Profile

    monkeypatch.setenv("PARITY_REGISTRY_URL", postgres_url)
    monkeypatch.setenv("PARITY_REDIS", redis_address)
    ws = sample_workspace
    apply(ws.repo, Profile.PRODUCTION)
    result = _cli(
        "materialize", "--repo", str(ws.repo), "--profile", "production",
        "--start", START.isoformat(), "--end", END.isoformat(), "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["online_store"] == f"redis {redis_address.split(',')[0]}"
    with open_store(ws.repo, Profile.PRODUCTION) as store:
        assert type(store.registry).__name__ == "SqlRegistry"
        ends = {fv.name: fv.most_recent_end_time for fv in store.list_feature_views()}
        ours = _online_reads(store, ws)
        rows = {s.view: s for s in status(store, END)}
    assert set(ends.values()) == {END}
    assert all(r.last_end == END.isoformat() and r.newest_event for r in rows.values())
    with open_store(feast_reference.repo) as store:
        assert ours == _online_reads(store, feast_reference)


# ------------------------------------------------------------ interruption


class _Interrupted(Exception):
    pass


@pytest.mark.integration
@pytest.mark.parametrize("store_kind", ["sqlite", "redis"])
def test_an_interrupted_run_converges_and_records_no_unfinished_interval(
    store_kind: str,
    sample_workspace: Workspace,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if store_kind == "redis":
        address = request.getfixturevalue("redis_address")
        ws = _redis_workspace(sample_workspace, address)

        def snapshot() -> Any:
            return redis_dump(address)
    else:
        ws = sample_workspace
        apply(ws.repo)

        def snapshot() -> Any:
            return _sqlite_rows(ws)

    with open_store(ws.repo) as store:
        _feast_materialize(store)
        reference = snapshot()
    # Start again from nothing: a fresh Feast registry (no intervals) and online store.
    shutil.rmtree(ws.data / "feast")
    apply(ws.repo)
    if store_kind == "redis":
        redis_client(address).flushdb()

    writer = online_write.RedisWriter if store_kind == "redis" else online_write.SqliteWriter
    real_write = writer.write
    calls: dict[str, int] = {}

    def write(self: Any, target: Any, prepared: Any) -> Any:
        name = target.view.name
        calls[name] = calls.get(name, 0) + 1
        if name == "merchant_risk_30d" and calls[name] == 2:  # mid-way through view two
            raise _Interrupted("killed")
        return real_write(self, target, prepared)

    monkeypatch.setattr(writer, "write", write)
    with open_store(ws.repo) as store, pytest.raises(_Interrupted):
        materialize(store, start=START, end=END, batch_rows=40)
    monkeypatch.setattr(writer, "write", real_write)

    with open_store(ws.repo) as store:
        intervals = {fv.name: fv.materialization_intervals for fv in store.list_feature_views()}
        done = sorted(name for name, i in intervals.items() if i)
        assert done == ["merchant_profile"]  # the first view finished; the second did not
        assert snapshot() != reference
        materialize(store, start=START, end=END, batch_rows=40)
        assert snapshot() == reference
        intervals = {fv.name: fv.materialization_intervals for fv in store.list_feature_views()}
    assert {name: len(i) for name, i in intervals.items()} == {
        "merchant_profile": 2,  # the interrupted run's, then the rerun's
        "merchant_risk_30d": 1,
        "user_profile": 1,
        "user_txn_1h": 1,
        "user_txn_24h": 1,
        "user_txn_7d": 1,
    }


def test_the_writer_thread_stops_with_either_side() -> None:
    """framework.materialize.job._pump: a failing write stops the producer; an interrupted
    producer stops the writer without writing what was still queued."""
    import threading

    from framework.materialize.pump import pump
    from framework.materialize.writer import Written

    written: list[int] = []

    def write(item: int) -> Written:
        if item == 3:
            raise _Interrupted("the store went away")
        written.append(item)
        return Written(1)

    with pytest.raises(_Interrupted, match="went away"):
        pump(iter(range(100)), write, lambda result: None)
    assert written == [0, 1, 2]

    def produce() -> Iterator[int]:
        yield from range(5)
        raise KeyboardInterrupt

    def slow_write(item: int) -> Written:
        time.sleep(0.1)  # much slower than the producer: the queue (two batches) fills up
        written.append(item)
        return Written(1)

    written.clear()
    with pytest.raises(KeyboardInterrupt):
        pump(produce(), slow_write, lambda result: None)
    assert written == [0, 1, 2]  # 3 and 4 were still queued when the producer stopped
    assert "parity-online-writer" not in {t.name for t in threading.enumerate()}


@pytest.mark.integration
@pytest.mark.slow
def test_killing_the_process_anywhere_then_rerunning_converges(
    base: Workspace, feast_reference: Workspace, tmp_path: Path
) -> None:
    ws = _copy(base, tmp_path / "ws")
    reference = _sqlite_rows(feast_reference)
    total = sum(len(rows) for rows in reference.values())
    # The test watches the store through a connection held open in WAL mode, as a
    # running server would: the job then writes through the log and the watcher's
    # counts never wait for a commit. (With a rollback journal, a reader waits while
    # a batch commits and can miss the whole load: the job writes it in ~0.5 s.)
    watcher = sqlite3.connect(ws.data / "feast" / "online.db")
    watcher.execute("PRAGMA journal_mode=WAL")
    tables = [
        name
        for (name,) in watcher.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if name != sqlite_writer.STATE_TABLE
    ]

    def count() -> int:
        return sum(watcher.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables)

    proc = subprocess.Popen(
        [*PARITY, "materialize", "--repo", str(ws.repo), "--start", START.isoformat(),
         "--end", END.isoformat(), "--batch-size", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and count() == 0:
            time.sleep(0.001)  # one entity a batch: ~6 rows a millisecond once writing
        assert proc.poll() is None, "the job finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        watcher.close()
    written = sum(len(rows) for rows in _sqlite_rows(ws).values())
    assert 0 < written < total
    with open_store(ws.repo) as store:
        for fv in store.list_feature_views():
            if fv.materialization_intervals:  # recorded only once a view is fully written
                assert _sqlite_rows(ws)[f"parity_{fv.name}"] == reference[f"parity_{fv.name}"]
        materialize(store, start=START, end=END)
    assert _sqlite_rows(ws) == reference


# ------------------------------------------------------------ incremental runs


def _append_rows(path: Path, users: list[int], at: datetime) -> None:
    """New feature rows for ``users`` at ``at``, every feature 7."""
    table = pq.read_table(path)
    n = len(users)
    new = pa.table(
        {
            name: pa.array(users, field.type)
            if name == "user_id"
            else pa.array([at] * n, field.type)
            if name == "event_timestamp"
            else pa.array([7] * n, field.type)
            for name, field in zip(table.column_names, table.schema, strict=True)
        }
    )
    pq.write_table(pa.concat_tables([table, new]), path)


@pytest.mark.integration
def test_incremental_runs_write_only_entities_with_new_rows(sample_workspace: Workspace) -> None:
    ws = sample_workspace
    apply(ws.repo)  # this workspace's own source paths, so its files can change
    source = ws.data / "offline" / "user_transaction_features.parquet"
    latest = [
        max(pq.read_table(path)["event_timestamp"].to_pylist())
        for path in (ws.data / "offline").glob("*.parquet")
    ]
    first_end = max(latest) + timedelta(minutes=1)  # after every row of every source
    users = [{"user_id": u} for u in (1, 2, 3, 4)]
    refs = ["user_txn_7d:txn_count_7d", "user_txn_1h:txn_count_1h"]
    with open_store(ws.repo) as store:
        first = materialize(store, start=START, end=first_end)
        before = _sqlite_rows(ws)
        old = store.get_online_features(features=refs, entity_rows=users).to_dict()
        nothing = materialize(store, incremental=True, end=first_end)
        _append_rows(source, [1, 2, 3], first_end + timedelta(hours=1))
        second_end = first_end + timedelta(hours=2)
        second = materialize(store, incremental=True, end=second_end)
        intervals = {fv.name: fv.materialization_intervals for fv in store.list_feature_views()}
        new = store.get_online_features(features=refs, entity_rows=users).to_dict()
    assert all(v.entities > 0 for v in first.views)
    assert all(v.entities == 0 and v.start == first_end.isoformat() for v in nothing.views)
    by_view = {v.view: v for v in second.views}
    for name in ("user_txn_1h", "user_txn_24h", "user_txn_7d"):
        assert by_view[name].entities == by_view[name].written == 3
        assert by_view[name].start == first_end.isoformat()
        assert [tuple(i) for i in intervals[name]] == [
            (START, first_end),
            (first_end, first_end),
            (first_end, second_end),
        ]
    for name in ("user_profile", "merchant_profile", "merchant_risk_30d"):
        assert by_view[name].entities == 0
    assert new["txn_count_7d"][:3] == [7, 7, 7] == new["txn_count_1h"][:3]
    assert new["txn_count_7d"][3] == old["txn_count_7d"][3]
    after = _sqlite_rows(ws)
    changed = {t: len(set(after[t]) - set(before[t])) for t in after if after[t] != before[t]}
    assert changed == {
        "parity_user_txn_1h": 3,
        "parity_user_txn_24h": 3,
        "parity_user_txn_7d": 3 * 4,
    }


def test_incremental_start_of_a_view_never_materialised() -> None:
    from framework.materialize.job import BEGINNING, interval

    class View:
        most_recent_end_time = None
        ttl: timedelta | None = timedelta(hours=1)

    end = datetime(2026, 5, 1, tzinfo=UTC)
    assert interval(View(), None, end, incremental=True) == end - timedelta(hours=1)
    View.ttl = None
    assert interval(View(), None, end, incremental=True) == BEGINNING
    View.most_recent_end_time = datetime(2026, 4, 1)  # type: ignore[assignment]
    assert interval(View(), None, end, incremental=True) == datetime(2026, 4, 1, tzinfo=UTC)


# ------------------------------------------------------------ status, freshness


@pytest.mark.integration
def test_status_reports_intervals_and_the_age_of_the_newest_value(
    base: Workspace, tmp_path: Path
) -> None:
    ws = _copy(base, tmp_path / "ws")
    now = datetime(2026, 6, 1, tzinfo=UTC)
    with open_store(ws.repo) as store:
        assert all(s.last_end is None and s.age_seconds is None for s in status(store, now))
        summary = materialize(store, start=START, end=END)
        rows = {s.view: s for s in status(store, now)}
        ages = freshness(store, now)
    for result in summary.views:
        row = rows[result.view]
        assert (row.last_start, row.last_end) == (START.isoformat(), END.isoformat())
        assert row.newest_event == result.newest_event
        newest = datetime.fromisoformat(result.newest_event or "")
        assert row.age_seconds == ages[result.view]
        assert row.age_seconds == pytest.approx((now - newest).total_seconds(), abs=1e-3)
        assert row.last_entities == result.entities

    listed = _cli("materialize", "--repo", str(ws.repo), "--status", "--json")
    assert listed.returncode == 0, listed.stderr
    views = {v["view"]: v for v in json.loads(listed.stdout)["views"]}
    assert views.keys() == rows.keys()
    assert views["user_txn_7d"]["last_end"] == END.isoformat()


# ------------------------------------------------------------ the command line


@pytest.mark.integration
def test_cli_logs_progress_lines_and_prints_a_json_summary(base: Workspace, tmp_path: Path) -> None:
    ws = _copy(base, tmp_path / "ws")
    result = _cli(
        "materialize", "--repo", str(ws.repo), "--start", "2000-01-01", "--end", "2030-01-01",
        "--views", "user_profile,merchant_profile", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert [v["view"] for v in summary["views"]] == ["user_profile", "merchant_profile"]
    assert summary["entities"] == sum(v["entities"] for v in summary["views"]) > 0
    log = result.stderr.splitlines()
    assert any(line.startswith("user_profile: writing ") for line in log)
    assert any(line.startswith("merchant_profile: ") and "[parity]" in line for line in log)


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (
            ["--start", "2000-01-01", "--views", "user_profile,nope"],
            "Unknown feature view 'nope'",
            2,
        ),
        (
            ["--start", "2026-02-01", "--end", "2026-01-01"],
            "'--start' (2026-02-01T00:00:00+00:00) is after '--end'",
            2,
        ),
        ([], "Give '--start' (and optionally '--end'), or '--incremental'", 2),
        (["--start", "2026-02-01", "--incremental"], "not allowed with argument", 2),
        (["--start", "yesterday"], "not an ISO 8601 time", 2),
    ],
)
def test_bad_arguments_fail_in_one_line_and_write_nothing(
    base: Workspace, tmp_path: Path, args: list[str], message: str, code: int
) -> None:
    ws = _copy(base, tmp_path / "ws")
    result = _cli("materialize", "--repo", str(ws.repo), *args)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert all(not rows for rows in _sqlite_rows(ws).values())
    with open_store(ws.repo) as store:
        assert all(not fv.materialization_intervals for fv in store.list_feature_views())


@pytest.mark.integration
def test_an_unreachable_redis_fails_in_one_line_before_writing(sample_workspace: Workspace) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ws = _redis_workspace(sample_workspace, f"127.0.0.1:{port}")
    result = _cli("materialize", "--repo", str(ws.repo), "--start", "2000-01-01")
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"The Redis online store at 127.0.0.1:{port} is unreachable" in lines[0]
    with open_store(ws.repo) as store:
        assert all(not fv.materialization_intervals for fv in store.list_feature_views())


@pytest.mark.integration
def test_a_missing_online_table_is_named(base: Workspace, tmp_path: Path) -> None:
    ws = _copy(base, tmp_path / "ws")
    con = sqlite3.connect(ws.data / "feast" / "online.db")
    con.execute('DROP TABLE "parity_user_txn_7d"')
    con.close()
    with open_store(ws.repo) as store, pytest.raises(FeatureStoreError, match="parity apply"):
        materialize(store, start=START, end=END)
    assert all(not rows for rows in _sqlite_rows(ws).values())


def test_api_checks_its_arguments(base: Workspace) -> None:
    with open_store(base.repo) as store:
        with pytest.raises(ConfigError, match="not both"):
            materialize(store, start=START, incremental=True)
        with pytest.raises(ConfigError, match="batch size"):
            materialize(store, start=START, batch_rows=0)


# ------------------------------------------------------------ Feast's own path


@pytest.mark.integration
def test_stores_without_a_bulk_writer_go_to_feasts_materialize(sample_workspace: Workspace) -> None:
    ws = sample_workspace
    yaml = ws.repo / "feature_store.yaml"
    yaml.write_text(
        yaml.read_text().replace(
            "  path: ../data/feast/online.db",
            "  path: ../data/feast/online.db\n  enable_openai_compatible_store: true",
        )
    )
    apply(ws.repo)
    with open_store(ws.repo) as store:
        summary = materialize(store, start=START, end=END, views=["user_profile"])
        (result,) = summary.views
        assert result.engine == "feast" and "value_num" in result.engine_reason
        values = store.get_online_features(
            features=["user_profile:card_type"], entity_rows=[{"user_id": 1}]
        ).to_dict()
        (fv,) = [v for v in store.list_feature_views() if v.name == "user_profile"]
    assert values["card_type"][0] in ("debit", "credit", "prepaid")
    assert fv.materialization_intervals == [(START, END)]


# ------------------------------------------------------------ the freshness metric


def _freshness_samples(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        sample.labels["view"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "parity_feature_freshness_seconds"
        for sample in family.samples
    }


@pytest.mark.integration
def test_freshness_is_exported_as_a_gauge(base: Workspace, tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from serving.grpc.metrics import ServerMetrics

    ws = _copy(base, tmp_path / "ws")
    now = datetime(2026, 6, 1, tzinfo=UTC)
    with open_store(ws.repo) as store:
        metrics = ServerMetrics()
        metrics.watch_freshness(store, now.timestamp)
        assert _freshness_samples(generate_latest(metrics.registry).decode()) == {}
        materialize(store, start=START, end=END, views=["user_txn_7d", "user_profile"])
        samples = _freshness_samples(generate_latest(metrics.registry).decode())
        ages = freshness(store, now)
    assert samples == {v: a for v, a in ages.items() if a is not None}
    assert set(samples) == {"user_txn_7d", "user_profile"}


@pytest.mark.integration
def test_the_server_exports_freshness_at_each_scrape(served: Served) -> None:
    import urllib.request

    with open_store(served.workspace.repo) as store:
        materialize(store, start=START, end=served.now, views=["merchant_risk_30d"])
    url = f"http://127.0.0.1:{served.running.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        samples = _freshness_samples(response.read().decode())
    assert set(samples) == {"merchant_risk_30d"}
    assert (
        0 <= samples["merchant_risk_30d"] < 86_400 + 3_600
    )  # daily snapshots, the last before now
