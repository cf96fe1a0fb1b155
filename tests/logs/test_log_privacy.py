"""Personal data out of the prediction log: hashed and dropped fields, on a real server,
with feedback still matching outcomes by hashed entity keys for whoever holds the key."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from framework.errors import ConfigError
from framework.logs import outcome_join
from framework.logs import privacy as log_privacy
from framework.logs.privacy import LogPrivacy, pseudonym
from framework.logs.reader import read_log
from serving.grpc.client import PredictionClient
from serving.grpc.server import RunningServer, start_server
from serving.grpc.settings import ServeSettings
from tests.support.fraud_requests import recent_rows
from tests.support.workspaces import Served

KEY = "a-test-secret-of-32-characters!!"
MODEL = "fraud_model"


@contextlib.contextmanager
def private_server(served: Served, data: Path, **settings: Any) -> Iterator[RunningServer]:
    config = ServeSettings(port=0, log_flush_seconds=0.2, **settings)
    running = start_server(served.store, served.registry, data, config, clock=served.now.timestamp)
    try:
        yield running
    finally:
        running.stop(1)


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="PARITY_LOG_HASH_KEY"):
        LogPrivacy.build(["user_id"], [], None)
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        LogPrivacy.build(["user_id"], [], b"short")
    with pytest.raises(ConfigError, match="both name user_id"):
        LogPrivacy.build(["user_id"], ["user_id"], KEY.encode())
    with pytest.raises(ConfigError, match="'__request_id' is not a field name"):
        LogPrivacy.build([], ["__request_id"], None)
    with pytest.raises(ConfigError, match="usr_id is not an entity key.*they log: amount"):
        LogPrivacy.build(["usr_id"], [], KEY.encode()).check(["amount", "user_id"])
    assert not LogPrivacy.build([], [], None).active


def test_apply_hashes_and_drops_with_companions() -> None:
    table = pa.table({
        "__request_id": ["r1", "r2"], "user_id": [7, None], "amount": [1.5, 2.5],
        "f": [0.1, 0.2], "f__status": ["PRESENT", "PRESENT"], "f__timestamp": [1, 2],
    })  # fmt: skip
    out = LogPrivacy.build(["user_id"], ["f", "amount"], KEY.encode()).apply(table)
    assert out.column_names == ["__request_id", "user_id__hmac"]
    assert out["user_id__hmac"].to_pylist() == [pseudonym(7, KEY.encode()), None]
    assert len(out["user_id__hmac"][0].as_py()) == 64  # hex SHA-256
    other = LogPrivacy.build(["user_id"], [], b"another-secret-of-32-characters!").apply(table)
    assert other["user_id__hmac"][0] != out["user_id__hmac"][0]  # keyed, not a bare hash


def test_a_server_logs_no_hashed_or_dropped_value(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(log_privacy.KEY_ENV, KEY)
    rows = recent_rows(served, 4)
    with private_server(served, tmp_path, log_hash=["user_id"], log_drop=["amount"]) as running:
        with PredictionClient(f"127.0.0.1:{running.port}") as client:
            answers = client.predict(MODEL, rows, request_id="pii-1")
        assert running.prediction_log.flush(30)
    logged = read_log(tmp_path / "predictions", MODEL)
    assert logged.num_rows == len(answers) == 4
    assert "user_id" not in logged.column_names and "amount" not in logged.column_names
    assert "merchant_id" in logged.column_names and "hour_of_day" in logged.column_names
    assert sorted(logged["user_id__hmac"].to_pylist()) == sorted(
        pseudonym(r["entity_keys"]["user_id"], KEY.encode()) for r in rows
    )
    # Scores are unchanged: privacy applies to the log, not to the model's input.
    with PredictionClient(served.target) as client:
        plain = client.predict(MODEL, rows)
    assert [a["score"] for a in answers] == [p["score"] for p in plain]

    # Feedback by entity keys + time still finds these predictions, given the key...
    outcomes = pa.table({
        "oid": list(range(4)), "request_id": pa.nulls(4, pa.string()),
        "row_index": pa.nulls(4, pa.int64()), "label": [1.0, 0.0, 0.0, 1.0],
        "received_at": pa.array([served.now] * 4, pa.timestamp("us", tz="UTC")),
        "event_time": pa.array([served.now] * 4, pa.timestamp("us", tz="UTC")),
        "key_user_id": [r["entity_keys"]["user_id"] for r in rows],
        "key_merchant_id": [r["entity_keys"]["merchant_id"] for r in rows],
    })  # fmt: skip
    con = duckdb.connect()
    con.register("log", logged)
    joined, counts = outcome_join.match(
        con, outcomes, ["user_id", "merchant_id"], within=timedelta(days=1)
    )
    assert counts["by_entity_keys"] == 4 and joined.num_rows == 4
    # ... and without it, only the keys the log still holds can be used.
    monkeypatch.delenv(log_privacy.KEY_ENV)
    _, narrowed = outcome_join.hashed_keys(
        outcomes, ["user_id", "merchant_id"], set(logged.column_names)
    )
    assert narrowed == ["merchant_id"]


def test_an_unknown_field_stops_the_server_naming_it(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(log_privacy.KEY_ENV, KEY)
    with (
        pytest.raises(ConfigError, match="usr_id is not an entity key"),
        private_server(served, tmp_path, log_hash=["usr_id"]),
    ):
        pass
