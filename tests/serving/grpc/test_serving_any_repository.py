"""Serving a repository shaped unlike the sample: string join keys with leading zeros,
Map and Json columns that an on-demand view sources (so the online read carries them).

Guards against these serving defects, each seen once:

- string join keys were typed INT64 everywhere on the serving side ("must be INT64"), and
  ``parity predict`` turned ``postcode=02139`` into the integer 2139;
- a Map or Json value in a view an on-demand view sources made every request a silent
  ``FALLBACK`` ("Expected bytes, got a 'dict' object");
- a failure of parity's own was answered as an outage (``FALLBACK``); now it is
  ``INTERNAL``, named, logged once per cause and counted, and found at start-up when it
  can be (the server reads each model's probe rows before it reports ready).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from framework.models.spec import spec_from_dict
from framework.registry.model_registry import ModelRegistry
from tests.support.online_values import stored_as_text

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE = datetime(2026, 3, 1, tzinfo=UTC)
POSTCODES = ["007", "02139", "00000", *[f"{i:05d}" for i in range(100, 140)]]
MODEL = "spend_model"

DEFINITIONS = """
from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Json, Map, String
from feast.value_type import ValueType

area = Entity(name="area", join_keys=["postcode"], value_type=ValueType.STRING)

source = FileSource(
    name="areas_source",
    path="data/areas.parquet",
    timestamp_field="event_timestamp",
)

areas = FeatureView(
    name="areas",
    entities=[area],
    ttl=timedelta(days=30),
    schema=[
        Field(name="income", dtype=Float64),
        Field(name="region", dtype=String),
        Field(name="meta", dtype=Map),
        Field(name="settings", dtype=Json),
    ],
    source=source,
)

basket = RequestSource(name="basket", schema=[Field(name="basket", dtype=Float64)])


@on_demand_feature_view(
    sources=[areas, basket], schema=[Field(name="spend_ratio", dtype=Float64)]
)
def spend(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["spend_ratio"] = inputs["basket"] / inputs["income"]
    return out


spend_v1 = FeatureService(
    name="spend_v1",
    features=[areas[["income", "region"]], spend],
)
"""

FEATURE_STORE = """
project: any_repo
provider: local
registry: data/registry.db
online_store:
  type: sqlite
  path: data/online.db
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""


def _write_repository(repo: Path) -> datetime:
    """The repository and its data; returns the time just after the last feature row."""
    (repo / "data").mkdir(parents=True)
    (repo / "definitions.py").write_text(DEFINITIONS)
    (repo / "feature_store.yaml").write_text(FEATURE_STORE)
    rng = np.random.default_rng(5)
    rows: dict[str, list[Any]] = {k: [] for k in ("postcode", "event_timestamp", "income")}
    rows |= {"region": [], "meta": [], "settings": []}
    for day in range(10):
        for i, code in enumerate(POSTCODES):
            rows["postcode"].append(code)
            rows["event_timestamp"].append(BASE + timedelta(days=day, minutes=i))
            rows["income"].append(float(rng.normal(40_000 + 500 * i, 3_000)))
            rows["region"].append(["north", "south", "east"][i % 3])
            rows["meta"].append({"tier": str(i % 4), "zone": code[:2]})
            rows["settings"].append(json.dumps({"limit": i, "tags": ["a", code]}))
    table = pa.table(
        {
            "postcode": pa.array(rows["postcode"], pa.string()),
            "event_timestamp": pa.array(rows["event_timestamp"], pa.timestamp("us", "UTC")),
            "income": pa.array(rows["income"], pa.float64()),
            "region": pa.array(rows["region"], pa.string()),
            # A Map feature stored as a struct, as `feast init`'s sample stores it.
            "meta": pa.array(rows["meta"]),
            "settings": pa.array(rows["settings"], pa.string()),
        }
    )
    pq.write_table(table, repo / "data" / "areas.parquet")
    n = 600
    codes = rng.choice(POSTCODES, n)
    when = [BASE + timedelta(days=1, hours=float(h)) for h in np.sort(rng.uniform(0, 24 * 9, n))]
    baskets = rng.uniform(10, 500, n)
    label = (baskets > 250) ^ (rng.uniform(size=n) < 0.1)
    labels = pa.table(
        {
            "postcode": pa.array(codes, pa.string()),
            "ts": pa.array(when, pa.timestamp("us", "UTC")),
            "basket": pa.array(baskets, pa.float64()),
            "label": pa.array(label.astype(np.int64)),
        }
    )
    pq.write_table(labels, repo / "data" / "labels.parquet")
    return BASE + timedelta(days=10)


@dataclass
class AnyServed:
    repo: Path
    target: str
    running: Any
    store: Any
    registry: ModelRegistry
    now: datetime


def _spec(repo: Path) -> dict[str, Any]:
    return {
        "name": MODEL,
        "feature_service": "spend_v1",
        "labels": {
            "query": f"SELECT * FROM read_parquet('{repo / 'data' / 'labels.parquet'}')",
            "keys": ["postcode"],
            "column": "label",
            "event_timestamp": "ts",
        },
        "estimator": {"class": "sklearn.linear_model.LogisticRegression"},
        "gate": {"smoke_rows": 16},
    }


@pytest.fixture(scope="module")
def any_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnyServed]:
    from framework.features.repository import apply, open_store
    from framework.loop.promotion import promote
    from framework.materialize.job import materialize
    from framework.models.training import train_model
    from serving.grpc.server import start_server
    from serving.grpc.settings import ServeSettings

    repo = tmp_path_factory.mktemp("any") / "areas_repo"
    now = _write_repository(repo)
    apply(repo)
    registry = ModelRegistry(repo / ".parity" / "models")
    with open_store(repo) as store:
        result = train_model(repo, spec_from_dict(_spec(repo)), store=store, registry=registry)
        materialize(store, start=BASE - timedelta(days=1), end=now)
        promote(registry, MODEL, result.ref.version, store=store, reason="tests")
        settings = ServeSettings(port=0, metrics_port=0, log_flush_seconds=0.2)
        running = start_server(store, registry, repo / ".parity", settings, clock=now.timestamp)
        try:
            assert running.failed == {}
            yield AnyServed(repo, f"127.0.0.1:{running.port}", running, store, registry, now)
        finally:
            running.stop(2)


def _feast_online(store: Any, codes: list[str]) -> dict[str, list[Any]]:
    refs = ["areas:income", "areas:region"]
    rows = [{"postcode": c} for c in codes]
    return store.get_online_features(features=refs, entity_rows=rows).to_dict()  # type: ignore[no-any-return]


def test_string_keys_with_leading_zeros_are_served_with_the_features_feast_reads(
    any_served: AnyServed,
) -> None:
    from serving.grpc.client import PredictionClient

    codes = ["007", "02139", "00000", "00117"]
    rows = [{"entity_keys": {"postcode": c}, "request_data": {"basket": 120.0}} for c in codes]
    with PredictionClient(any_served.target) as client:
        answers = client.predict(MODEL, rows, return_features=True)
    feast = _feast_online(any_served.store, codes)
    assert [a["row_index"] for a in answers] == list(range(len(codes)))
    for i, answer in enumerate(answers):
        assert answer["decision"] != "FALLBACK", answer["reasons"]
        assert answer["features"]["income"] == feast["income"][i]
        assert answer["features"]["region"] == feast["region"][i]
        assert answer["features"]["spend_ratio"] == pytest.approx(120.0 / feast["income"][i])


def test_an_integer_for_a_string_key_is_refused_naming_the_key(any_served: AnyServed) -> None:
    from serving.grpc.client import PredictionClient

    manifest = any_served.registry.manifest(any_served.registry.resolve(f"{MODEL}@champion"))
    assert manifest["join_key_types"] == {"postcode": "STRING"}  # what feedback types keys by

    rows = [{"entity_keys": {"postcode": 2139}, "request_data": {"basket": 1.0}}]
    with PredictionClient(any_served.target) as client, pytest.raises(grpc.RpcError) as err:
        client.predict(MODEL, rows)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "entity key 'postcode' must be STRING" in (err.value.details() or "")


def test_parity_predict_sends_a_numeric_looking_string_key_as_the_string_it_is(
    any_served: AnyServed, tmp_path: Path
) -> None:
    command = [
        sys.executable, "-m", "framework.cli", "predict", "--target", any_served.target,
        "--model", MODEL, "--entity", "postcode=02139", "--request", "basket=100",
        "--features", "--json",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    feast = _feast_online(any_served.store, ["02139"])
    assert answer["decision"] != "FALLBACK", answer["reasons"]
    assert answer["features"]["income"] == feast["income"][0]
    bad = [*command[:-4], "--entity", "postcode=02139", "--request", "basket=lots"]
    done = subprocess.run(bad, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--request basket: the model takes DOUBLE, got 'lots'" in done.stderr


def corrupted_income(repo: Path, code: str) -> Any:
    """``income`` of ``code`` stored as a string value for the ``with`` block."""
    db = repo / "data" / "online.db"
    return stored_as_text(db, "any_repo_areas", ("postcode", code), "income", "forty thousand")


def test_a_value_parity_cannot_take_is_internal_named_logged_once_and_counted(
    any_served: AnyServed, caplog: pytest.LogCaptureFixture
) -> None:
    from serving.grpc.client import PredictionClient

    metric = any_served.running.metrics.internal_errors.labels(MODEL, "feature_lookup")
    before = metric._value.get()
    rows = [{"entity_keys": {"postcode": "00117"}, "request_data": {"basket": 1.0}}]
    with (
        corrupted_income(any_served.repo, "00117"),
        caplog.at_level(logging.ERROR, "parity.serving"),
        PredictionClient(any_served.target) as client,
    ):
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as err:
                client.predict(MODEL, rows)
            assert err.value.code() == grpc.StatusCode.INTERNAL
            details = err.value.details() or ""
            assert "'income'" in details and "forty thousand" in details
        good = [{"entity_keys": {"postcode": "007"}, "request_data": {"basket": 1.0}}]
        assert client.predict(MODEL, good)[0]["decision"] != "FALLBACK"
    assert metric._value.get() - before == 2
    causes = [r for r in caplog.records if "answered INTERNAL" in r.getMessage()]
    assert len(causes) == 1


def test_the_server_does_not_report_ready_when_it_cannot_read_a_models_features(
    any_served: AnyServed,
) -> None:
    from serving.grpc.server import start_server
    from serving.grpc.settings import ServeSettings

    probe = any_served.registry.manifest(any_served.registry.resolve(f"{MODEL}@champion"))
    code = probe["probe"]["entity_rows"][-1]["postcode"]
    with corrupted_income(any_served.repo, code):
        settings = ServeSettings(port=0, log_flush_seconds=0.2)
        running = start_server(
            any_served.store, any_served.registry, any_served.repo / ".parity" / "second",
            settings, clock=any_served.now.timestamp,
        )  # fmt: skip
        try:
            assert not running.predictor.ready()
            (reason,) = running.failed.values()
            assert "cannot be served" in reason and "'income'" in reason
        finally:
            running.stop(1)
