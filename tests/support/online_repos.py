"""A Feast repository built in code for the online-read tests: every scalar and list
type Feast stores online, Json, Map and Struct, keys of every declared type (INT64,
INT32, STRING, BYTES, composite), nulls, rows older than their view's TTL, a
``field_mapping``, and a feature service with ``view[[...]]``, ``with_name`` and
``with_join_key_map`` projections. One store per (root, project, online store)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

T0 = datetime(2026, 1, 1, tzinfo=UTC)
START, END = T0 - timedelta(days=30), T0 + timedelta(days=1)
N = 40  # entities per view; ids N..N+9 are asked for but never written
SERVICE = "everything"


def _rows(n: int) -> dict[str, Any]:
    """Columns shared by the views: a time (every 7th row 10 days old: beyond the TTL)
    and values of every type, with nulls."""
    times = [T0 - timedelta(days=10 if i % 7 == 0 else 0, seconds=i) for i in range(n)]

    def nulls(values: list[Any], every: int) -> list[Any]:
        return [None if i % every == 3 else v for i, v in enumerate(values)]

    return {
        "ts": pa.array(times, pa.timestamp("us", tz="UTC")),
        "f64": pa.array(nulls([i / 3 - 5 for i in range(n)], 5), pa.float64()),
        "f32": pa.array(nulls([i / 7 for i in range(n)], 6), pa.float32()),
        "i64": pa.array(nulls([(i - 20) * 10**12 for i in range(n)], 4), pa.int64()),
        "i32": pa.array(nulls([(i - 20) * 10**6 for i in range(n)], 8), pa.int32()),
        "flag": pa.array(nulls([i % 2 == 0 for i in range(n)], 5), pa.bool_()),
        "text": pa.array(nulls([f"é{i}" * (i % 3) for i in range(n)], 4)),
        "blob": pa.array([bytes([i]) * (1 + i % 3) for i in range(n)], pa.binary()),
        "stamp": pa.array(nulls(times, 6), pa.timestamp("us", tz="UTC")),
        "l_i64": pa.array(nulls([[i, -i] for i in range(n)], 5), pa.list_(pa.int64())),
        "l_i32": pa.array([[i] * (i % 3) for i in range(n)], pa.list_(pa.int32())),
        "l_f64": pa.array([[i / 2] for i in range(n)], pa.list_(pa.float64())),
        "l_f32": pa.array([[i / 4, 1.5] for i in range(n)], pa.list_(pa.float32())),
        "l_str": pa.array(nulls([[f"s{i}", ""] for i in range(n)], 6), pa.list_(pa.string())),
        "l_bytes": pa.array([[bytes([i])] for i in range(n)], pa.list_(pa.binary())),
        "l_bool": pa.array([[True, i % 2 == 1] for i in range(n)], pa.list_(pa.bool_())),
        "l_stamp": pa.array([[times[i]] for i in range(n)], pa.list_(pa.timestamp("us", "UTC"))),
        "doc": pa.array(nulls([json.dumps({"i": i, "xs": [i, "a"]}) for i in range(n)], 5)),
        # Feast's materialize takes a Map or Struct as its JSON text, not an Arrow map.
        "attrs": pa.array([json.dumps({"k": f"v{i}", "n": str(i)}) for i in range(n)]),
        "shape": pa.array([json.dumps({"w": i, "name": f"n{i}"}) for i in range(n)]),
    }


def build(root: Path, project: str, online_store: dict[str, Any]) -> Any:
    """The repository under ``root`` (Parquet sources, registry) with its views applied;
    returns its ``FeatureStore``."""
    from feast import (
        Entity,
        FeatureService,
        FeatureStore,
        FeatureView,
        Field,
        FileSource,
        RepoConfig,
    )
    from feast.types import (
        Array,
        Bool,
        Bytes,
        Float32,
        Float64,
        Int32,
        Int64,
        Json,
        Map,
        String,
        Struct,
        UnixTimestamp,
    )  # fmt: skip
    from feast.value_type import ValueType

    root.mkdir(parents=True, exist_ok=True)
    base = _rows(N)
    tables = {
        "users": {"user_id": pa.array(range(N), pa.int64()), **base},
        "shops": {"shop": pa.array([f"shop-{i}" for i in range(N)]), **base},
        "codes": {"code": pa.array(range(-5, N - 5), pa.int32()), **base},
        "tokens": {"token": pa.array([b"t%d" % i for i in range(N)], pa.binary()), **base},
        "pairs": {
            "user_id": pa.array([i % 20 for i in range(N)], pa.int64()),
            "country": pa.array(["FR" if i < 20 else "DE" for i in range(N)]),
            **base,
        },
    }
    for name, columns in tables.items():
        pq.write_table(pa.table(columns), root / f"{name}.parquet")
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    shop = Entity(name="shop", join_keys=["shop"], value_type=ValueType.STRING)
    code = Entity(name="code", join_keys=["code"], value_type=ValueType.INT32)
    token = Entity(name="token", join_keys=["token"], value_type=ValueType.BYTES)
    country = Entity(name="country", join_keys=["country"], value_type=ValueType.STRING)
    scalars = [
        Field(name="f64", dtype=Float64), Field(name="f32", dtype=Float32),
        Field(name="i64", dtype=Int64), Field(name="i32", dtype=Int32),
        Field(name="flag", dtype=Bool), Field(name="text", dtype=String),
        Field(name="blob", dtype=Bytes), Field(name="stamp", dtype=UnixTimestamp),
    ]  # fmt: skip
    lists = [
        Field(name="l_i64", dtype=Array(Int64)), Field(name="l_i32", dtype=Array(Int32)),
        Field(name="l_f64", dtype=Array(Float64)), Field(name="l_f32", dtype=Array(Float32)),
        Field(name="l_str", dtype=Array(String)), Field(name="l_bytes", dtype=Array(Bytes)),
        Field(name="l_bool", dtype=Array(Bool)),
        Field(name="l_stamp", dtype=Array(UnixTimestamp)),
    ]  # fmt: skip
    complex_ = [
        Field(name="doc", dtype=Json),
        Field(name="attrs", dtype=Map),
        Field(name="shape", dtype=Struct({"w": Int64, "name": String})),
    ]

    def view(name: str, source: str, entities: list[Any], schema: list[Any], **kw: Any) -> Any:
        return FeatureView(
            name=name,
            entities=entities,
            ttl=timedelta(days=3),
            schema=schema,
            source=FileSource(path=str(root / f"{source}.parquet"), timestamp_field="ts", **kw),
        )

    views = [
        view("user_scalars", "users", [user], scalars),
        view("user_lists", "users", [user], lists),
        view("user_complex", "users", [user], complex_),
        view(
            "shop_mapped", "shops", [shop],
            [Field(name="shop_f64", dtype=Float64), Field(name="shop_text", dtype=String)],
            field_mapping={"f64": "shop_f64", "text": "shop_text"},
        ),
        view("code_view", "codes", [code], [Field(name="code_i64", dtype=Int64)],
             field_mapping={"i64": "code_i64"}),
        view("token_view", "tokens", [token], [Field(name="token_f32", dtype=Float32)],
             field_mapping={"f32": "token_f32"}),
        view("pair_view", "pairs", [user, country], [Field(name="pair_i32", dtype=Int32)],
             field_mapping={"i32": "pair_i32"}),
    ]  # fmt: skip
    by_name = {v.name: v for v in views}
    service = FeatureService(
        name=SERVICE,
        features=[
            by_name["user_scalars"],
            by_name["user_lists"][["l_i64", "l_str", "l_stamp", "l_f32"]],
            by_name["user_complex"],
            by_name["shop_mapped"].with_name("shop_alias"),
            by_name["code_view"],
            by_name["token_view"].with_join_key_map({"token": "other_token"}),
            by_name["pair_view"].with_join_key_map({"user_id": "buyer_id"}),
        ],
    )
    store = FeatureStore(
        config=RepoConfig(
            project=project,
            provider="local",
            registry=str(root / "registry.db"),
            offline_store={"type": "duckdb"},
            online_store=online_store,
            entity_key_serialization_version=3,
            repo_path=str(root),
        )
    )
    store.apply([user, shop, code, token, country, *views, service])
    return store


def entity_rows() -> list[dict[str, Any]]:
    """Rows the service reads: present, missing (ids >= N) and duplicated entities."""
    rows = []
    for i in [*range(0, N + 10, 3), 0, 5, 5, N + 1]:
        rows.append(
            {
                "user_id": i,
                "shop": f"shop-{i}",
                "code": i - 5,
                "other_token": b"t%d" % i,
                "buyer_id": i % 25,
                "country": "FR" if i % 2 else "DE",
            }
        )
    return rows
