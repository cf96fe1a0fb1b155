"""Feast's online-store byte formats, computed a whole Arrow column at a time
(``framework/materialize/online_encoding.py``), against Feast's own conversion value
by value: values, entity keys, timestamps, SQLite's value text and key order.
"""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.materialize.online_encoding import (
    encode_entity_keys,
    encode_values,
    sqlite_seconds,
    timestamp_protos,
)

START = datetime(2000, 1, 1, tzinfo=UTC)
END = datetime(2030, 1, 1, tzinfo=UTC)
PARITY = [sys.executable, "-m", "framework.cli"]


def _feast_values(column: pa.Array, value_type: Any) -> list[bytes]:
    from feast.type_map import python_values_to_proto_values

    protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    return [p.SerializeToString() for p in protos]


def _int64s(with_nulls: bool) -> st.SearchStrategy[list[int | None]]:
    # Feast converts an integer column with nulls through float64: exact to 2**53 only.
    bound = 2**53 if with_nulls else 2**63 - 1
    item: st.SearchStrategy[int | None] = st.integers(-bound, bound)
    return st.lists(st.one_of(st.none(), item) if with_nulls else item, max_size=40)


_COLUMNS = st.sampled_from(
    ["int64", "int64-null", "int32", "double", "float", "string", "bytes", "bool"]
)


@st.composite
def _columns(draw: st.DrawFn) -> tuple[pa.Array, Any]:
    from feast.value_type import ValueType as V

    kind = draw(_COLUMNS)
    nullable = lambda s: st.lists(st.one_of(st.none(), s), max_size=40)  # noqa: E731
    if kind == "int64":
        return pa.array(draw(_int64s(False)), pa.int64()), V.INT64
    if kind == "int64-null":
        values = draw(_int64s(True))
        return pa.array(values, pa.int64()), V.INT64
    if kind == "int32":
        return pa.array(draw(nullable(st.integers(-(2**31), 2**31 - 1))), pa.int32()), V.INT32
    if kind == "double":
        return pa.array(draw(nullable(st.floats())), pa.float64()), V.DOUBLE
    if kind == "float":
        return pa.array(draw(nullable(st.floats(width=32))), pa.float32()), V.FLOAT
    if kind == "string":
        return pa.array(draw(nullable(st.text(max_size=300))), pa.string()), V.STRING
    if kind == "bytes":
        return pa.array(draw(nullable(st.binary(max_size=300))), pa.binary()), V.BYTES
    return pa.array(draw(nullable(st.booleans())), pa.bool_()), V.BOOL


@settings(max_examples=300, deadline=None)
@given(_columns())
def test_values_encode_to_feasts_bytes(case: tuple[pa.Array, Any]) -> None:
    column, value_type = case
    if len(column) and column.null_count == len(column) and value_type.name == "BOOL":
        column = column.cast(pa.bool_())
    assert encode_values(column, value_type).to_pylist() == _feast_values(column, value_type)


def test_value_types_without_a_columnar_encoder_use_feasts_conversion() -> None:
    from feast.value_type import ValueType as V

    column = pa.array([[1, 2], None, []], pa.list_(pa.int64()))
    assert encode_values(column, V.INT64_LIST).to_pylist() == _feast_values(column, V.INT64_LIST)
    ints_as_doubles = pa.array([1, None, 3], pa.int64())  # Feast writes double_val
    assert encode_values(ints_as_doubles, V.DOUBLE).to_pylist() == _feast_values(
        ints_as_doubles, V.DOUBLE
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(2**63), 2**63 - 1), st.text(max_size=20), st.binary(max_size=9)),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from([("user_id",), ("user_id", "a_name"), ("z_code", "user_id", "blob")]),
)
def test_entity_keys_serialize_as_feast(
    rows: list[tuple[int, str, bytes]], names: tuple[str, ...]
) -> None:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.value_type import ValueType as V

    columns = {
        "user_id": (pa.array([r[0] for r in rows], pa.int64()), V.INT64, "int64_val", 0),
        "a_name": (pa.array([r[1] for r in rows], pa.string()), V.STRING, "string_val", 1),
        "z_code": (pa.array([r[1] for r in rows], pa.string()), V.STRING, "string_val", 1),
        "blob": (pa.array([r[2] for r in rows], pa.binary()), V.BYTES, "bytes_val", 2),
    }
    ours = encode_entity_keys([(n, columns[n][0], columns[n][1]) for n in names]).to_pylist()
    theirs = [
        serialize_entity_key(
            EntityKey(
                join_keys=list(names),
                entity_values=[Value(**{columns[n][2]: row[columns[n][3]]}) for n in names],
            ),
            3,
        )
        for row in rows
    ]
    assert ours == theirs


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(10**16), 4 * 10**16), min_size=1, max_size=50))
def test_times_encode_as_feasts_redis_and_sqlite_writers(micros: list[int]) -> None:
    from feast.infra.online_stores.sqlite import adapt_datetime_epoch
    from feast.utils import to_naive_utc
    from google.protobuf.timestamp_pb2 import Timestamp

    times = [datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=m) for m in micros]
    protos = []
    for t in times:
        proto = Timestamp()
        proto.FromDatetime(t)
        protos.append(proto.SerializeToString())
    assert timestamp_protos(np.array(micros)).to_pylist() == protos
    assert sqlite_seconds(np.array(micros)).tolist() == [
        adapt_datetime_epoch(to_naive_utc(t)) for t in times
    ]


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.tuples(st.lists(st.floats(), min_size=1, max_size=50), st.just(False)),
        st.tuples(st.lists(st.floats(width=32), min_size=1, max_size=50), st.just(True)),
    )
)
def test_sqlite_value_text_is_pythons_str(case: tuple[list[float], bool]) -> None:
    """Feast stores ``str(value)`` in value_text; DuckDB formats it (materialize.latest_rows)."""
    from feast.value_type import ValueType

    from framework.materialize.latest_rows import text_sql

    values, single = case
    kind = pa.float32() if single else pa.float64()
    column = pa.array(np.array(values, np.float32 if single else np.float64), kind)
    con = duckdb.connect()
    con.register("frame", pa.table({"x": column}))
    sql = text_sql("x", ValueType.FLOAT if single else ValueType.DOUBLE)
    texts = [r[0] for r in con.execute(f"SELECT {sql} FROM frame").fetchall()]
    con.close()
    assert texts == [None if math.isnan(v) else str(v) for v in column.to_pylist()]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-(2**63), 2**63 - 1), st.text(max_size=300)),
        min_size=1,
        max_size=60,
        unique_by=lambda row: row,
    )
)
def test_duckdb_sorts_rows_in_serialized_key_order(rows: list[tuple[int, str]]) -> None:
    """SQLite writes go in primary-key order (framework.materialize.latest_rows.key_order)."""
    from feast.value_type import ValueType

    from framework.materialize.latest_rows import key_order

    ids = pa.array([r[0] for r in rows], pa.int64())
    names = pa.array([r[1] for r in rows], pa.string())
    con = duckdb.connect()
    con.register("frame", pa.table({"user_id": ids, "code": names}))
    order = [
        *(key_order("code", ValueType.STRING) or []),
        *(key_order("user_id", ValueType.INT64) or []),
    ]
    got = con.execute(f"SELECT code, user_id FROM frame ORDER BY {', '.join(order)}").fetchall()
    con.close()
    keys = encode_entity_keys(
        [("code", names, ValueType.STRING), ("user_id", ids, ValueType.INT64)]
    )
    expected = [
        (c, u)
        for _, c, u in sorted(
            zip(keys.to_pylist(), names.to_pylist(), ids.to_pylist(), strict=True)
        )
    ]
    assert got == expected
