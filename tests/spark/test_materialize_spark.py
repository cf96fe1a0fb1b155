"""``parity materialize`` on the spark profile against the DuckDB path, on real servers.

What is promised (``framework/spark/materialize.py``): Spark's executors write the
same Redis hashes, byte for byte, as the embedded DuckDB path (itself checked
against Feast's materialize in ``tests/materialize``), so Feast's
``get_online_features`` reads the same; incremental runs write only what is new
and converge; a view's interval reaches the Feast registry only after every
partition of it is written, so a failed run records nothing for the view it
did not finish and running again converges.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from framework.errors import FeatureStoreError
from framework.features.repository import Profile, apply, open_store
from framework.materialize import job
from framework.spark import materialize as spark_materialize
from tests.support.redis_store import redis_client, redis_db, redis_dump
from tests.support.workspaces import Workspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START = datetime(2000, 1, 1, tzinfo=UTC)
END = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
def stores(
    sample_workspace: Workspace,
    postgres_url: str,
    redis_server: str,
    monkeypatch: pytest.MonkeyPatch,
    spark: Any,
) -> Iterator[tuple[Workspace, str, str]]:
    """The sample applied under the spark profile (a fresh PostgreSQL registry), and two
    empty Redis databases: one for the Spark path, one for the DuckDB path."""
    ours, reference = redis_db(redis_server, 1), redis_db(redis_server, 2)
    for address in (ours, reference):
        client = redis_client(address)
        client.flushdb()
        client.close()
    monkeypatch.setenv("PARITY_REGISTRY_URL", postgres_url)
    monkeypatch.setenv("PARITY_REDIS", ours)
    apply(sample_workspace.repo, Profile.SPARK)
    yield sample_workspace, ours, reference


def _on_spark(ws: Workspace, address: str, **kwargs: Any) -> job.MaterializeSummary:
    os.environ["PARITY_REDIS"] = address  # restored by the fixture's monkeypatch
    with open_store(ws.repo, Profile.SPARK) as store:
        return spark_materialize.materialize(store, **kwargs)


def _on_duckdb(ws: Workspace, address: str, **kwargs: Any) -> job.MaterializeSummary:
    """The embedded path (DuckDB over the same Parquet) into ``address``."""
    os.environ["PARITY_REDIS"] = address
    with open_store(ws.repo, Profile.SPARK) as store:
        return job.materialize(store, **kwargs)


def _online_reads(ws: Workspace, address: str) -> dict[str, list[Any]]:
    """Feast's get_online_features for every user and merchant of the sample."""
    offline = ws.data / "offline"
    users = pq.read_table(offline / "user_profile.parquet")["user_id"].to_pylist()
    merchants = pq.read_table(offline / "merchant_profile.parquet")["merchant_id"].to_pylist()
    rows = [
        {"user_id": u, "merchant_id": merchants[i % len(merchants)]} for i, u in enumerate(users)
    ]
    os.environ["PARITY_REDIS"] = address
    with open_store(ws.repo, Profile.SPARK) as store:
        refs = [f"{fv.name}:{f.name}" for fv in store.list_feature_views() for f in fv.features]
        return dict(store.get_online_features(features=refs, entity_rows=rows).to_dict())


def _intervals(ws: Workspace) -> dict[str, list[tuple[datetime, datetime]]]:
    with open_store(ws.repo, Profile.SPARK) as store:
        return {
            fv.name: [tuple(i) for i in fv.materialization_intervals]
            for fv in store.list_feature_views()
        }


def _state(address: str) -> dict[str, Any]:
    """parity's per-view bookkeeping in Redis, without the run's own clock."""
    client = redis_client(address)
    try:
        raw = client.hgetall("parity:materialization:parity")
    finally:
        client.close()
    state = {k.decode(): json.loads(v) for k, v in raw.items()}
    for value in state.values():
        value["last_run"].pop("finished_at")
    return state


def test_spark_writes_the_same_redis_bytes_as_the_duckdb_path(
    stores: tuple[Workspace, str, str],
) -> None:
    ws, ours, reference = stores
    duck = _on_duckdb(ws, reference, start=START, end=END)
    summary = _on_spark(ws, ours, start=START, end=END, batch_rows=64)

    assert {v.engine for v in summary.views} == {"spark"}
    assert summary.online_store == f"redis {ours.split(',')[0]}"
    assert [(v.view, v.entities, v.written, v.newest_event) for v in summary.views] == [
        (v.view, v.entities, v.written, v.newest_event) for v in duck.views
    ]
    assert all(v.entities > 0 for v in summary.views)
    dumped = redis_dump(ours)
    assert dumped and dumped == redis_dump(reference)  # key for key, byte for byte
    assert _state(ours) == _state(reference)
    assert _online_reads(ws, ours) == _online_reads(ws, reference)
    # Each view's interval was recorded twice: by the DuckDB run, then by Spark's.
    assert {name: i for name, i in _intervals(ws).items()} == {
        v.view: [(START, END), (START, END)] for v in summary.views
    }


def _append_rows(path: Path, users: list[int], at: datetime) -> None:
    """New feature rows for ``users`` at ``at``, every feature 7."""
    table = pq.read_table(path)
    n = len(users)
    columns = {}
    for name, field in zip(table.column_names, table.schema, strict=True):
        value: list[Any] = users if name == "user_id" else [7] * n
        if name == "event_timestamp":
            value = [at] * n
        columns[name] = pa.array(value, field.type)
    pq.write_table(pa.concat_tables([table, pa.table(columns)]), path)


def test_incremental_runs_write_what_is_new_and_converge(
    stores: tuple[Workspace, str, str],
) -> None:
    ws, ours, reference = stores
    latest = [
        max(pq.read_table(path)["event_timestamp"].to_pylist())
        for path in (ws.data / "offline").glob("*.parquet")
    ]
    first_end = max(latest) + timedelta(minutes=1)  # after every row of every source
    # A view with new rows, one without (fewer views: each is a few Spark jobs per run).
    views = ["user_profile", "user_txn_7d"]
    first = _on_spark(ws, ours, start=START, end=first_end, views=views)
    nothing = _on_spark(ws, ours, incremental=True, end=first_end, views=views)
    second_end = first_end + timedelta(hours=1)
    _append_rows(ws.data / "offline" / "user_transaction_features.parquet", [1, 2, 3], second_end)
    second = _on_spark(ws, ours, incremental=True, end=second_end, views=views)
    again = _on_spark(ws, ours, incremental=True, end=second_end, views=views)

    assert [v.view for v in first.views] == views and all(v.entities > 0 for v in first.views)
    assert all(v.entities == 0 and v.start == first_end.isoformat() for v in nothing.views)
    assert [(v.entities, v.written) for v in second.views] == [(0, 0), (3, 3)]
    # Both ends are inclusive: the rows at second_end come again, and change nothing.
    assert [(v.entities, v.written, v.skipped) for v in again.views] == [(0, 0, 0), (3, 0, 3)]
    assert _intervals(ws)["user_txn_7d"] == [
        (START, first_end),
        (first_end, first_end),
        (first_end, second_end),
        (second_end, second_end),
    ]
    # Converged: what the incremental runs left is what one DuckDB run over it all writes.
    _on_duckdb(ws, reference, start=START, end=second_end, views=views)
    assert redis_dump(ours) == redis_dump(reference)


@pytest.fixture
def merchants_only(stores: tuple[Workspace, str, str]) -> Iterator[str]:
    """A Redis user of the Spark path's database allowed only merchant keys (and parity's
    bookkeeping): writing a user view fails in the executors, as an outage would."""
    _, ours, _ = stores
    client = redis_client(ours)
    client.acl_setuser(
        "smat",
        enabled=True,
        passwords=["+smat"],
        keys=["*merchant_id*", "parity:*"],
        commands=["+@all"],
    )
    try:
        yield f"{ours},username=smat,password=smat"
    finally:
        client.acl_deluser("smat")
        client.close()


def test_a_view_whose_partitions_fail_records_no_interval_and_a_rerun_converges(
    stores: tuple[Workspace, str, str], merchants_only: str
) -> None:
    ws, ours, reference = stores
    _on_duckdb(ws, reference, start=START, end=END)
    with pytest.raises(FeatureStoreError, match="'user_profile' on Spark failed") as failed:
        _on_spark(ws, merchants_only, start=START, end=END)
    # One line naming the executor's error, not Spark's stack trace.
    assert "\n" not in str(failed.value) and "Redis refused" in str(failed.value)
    assert "NOPERM" in str(failed.value)
    recorded = {name for name, i in _intervals(ws).items() if len(i) == 2}
    # Views run in name order: both merchant views were written in full and recorded;
    # user_profile failed in its tasks, and nothing after it ran.
    assert recorded == {"merchant_profile", "merchant_risk_30d"}
    written = redis_dump(ours)
    assert written and all(b"merchant_id" in key for key in written)
    _on_spark(ws, ours, start=START, end=END)
    assert redis_dump(ours) == redis_dump(reference)
    merchant = {"merchant_profile", "merchant_risk_30d"}
    # DuckDB's run, the failed run (merchant views only), the rerun.
    assert {name: len(i) for name, i in _intervals(ws).items()} == {
        name: 3 if name in merchant else 2 for name in _intervals(ws)
    }


def test_the_cli_runs_the_spark_path_for_the_spark_profile(
    stores: tuple[Workspace, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``parity materialize --profile spark --incremental``, in this process (so on the
    tests' Spark session: one JVM per run)."""
    from framework.cli.main import main

    ws, ours, _ = stores
    argv = ["materialize", "--repo", str(ws.repo), "--profile", "spark", "--incremental"]
    assert main([*argv, "--end", END.isoformat(), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert {v["engine"] for v in summary["views"]} == {"spark"}
    assert summary["entities"] == sum(v["entities"] for v in summary["views"]) > 0
    assert main([*argv, "--end", END.isoformat()]) == 0
    printed = capsys.readouterr()
    assert "(spark profile): 0 entities" in printed.out
    assert "[spark]" in printed.err  # a line per view on the progress stream
    assert redis_dump(ours)
