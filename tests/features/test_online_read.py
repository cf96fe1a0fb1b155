"""Parity's direct online readers give exactly what Feast's ``get_online_features`` gives.

The codecs first (Hypothesis): entity-key bytes equal Feast's ``serialize_entity_key``
for every key type, composite keys in any order and both serialization versions, and a
value a key cannot take fails as Feast fails; stored ``Value`` bytes decode to Feast's
Python value, type included. Then the readers, on SQLite and on a real Redis, against
:class:`FeastReader` value for value, status for status and event time for event time.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from framework import feast_private
from framework.feast_private import close_online_store
from framework.features.join_plan import join_plan
from framework.features.online_keys import KeyEncoder
from framework.features.online_read import DirectReader, FeastReader, RawColumn, reader_for
from framework.features.online_values import decode, decode_json
from framework.materialize.job import materialize
from tests.support import online_repos

KEY_TYPES = ["INT64", "INT32", "STRING", "BYTES", "UNIX_TIMESTAMP"]
INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
PLAIN = {
    "INT64": INT64,
    "INT32": INT32,
    "UNIX_TIMESTAMP": INT64,
    "STRING": st.text(),
    "BYTES": st.binary(min_size=1),
}


def _feast_keys(names: list[str], types: list[str], rows: list[list[Any]], version: int) -> Any:
    """Feast's own bytes (or the exception it raises), as get_online_features makes them."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            columns = [
                python_values_to_proto_values([row[i] for row in rows], ValueType[kind])
                for i, kind in enumerate(types)
            ]
            return [
                serialize_entity_key(EntityKey(join_keys=names, entity_values=list(v)), version)
                for v in zip(*columns, strict=True)
            ]
    except Exception as exc:
        return exc


def _ours(names: list[str], types: list[str], rows: list[list[Any]], version: int) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return KeyEncoder(names, types, version).encode(rows)
    except Exception as exc:
        return exc


def _same(ours: Any, feasts: Any) -> None:
    if isinstance(feasts, Exception):
        assert type(ours) is type(feasts), f"Feast raised {feasts!r}, parity gave {ours!r}"
    else:
        assert ours == feasts


@st.composite
def key_batches(draw: st.DrawFn, values: Any = None) -> tuple[list[str], list[str], list[Any]]:
    names = draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3, unique=True))
    types = [draw(st.sampled_from(KEY_TYPES)) for _ in names]
    rows = draw(
        st.lists(
            st.tuples(*[PLAIN[t] if values is None else values for t in types]),
            min_size=1,
            max_size=4,
        )
    )
    return names, types, [list(r) for r in rows]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(batch=key_batches(), version=st.sampled_from([2, 3]))
def test_entity_key_bytes_equal_feasts_for_every_key_type_and_order(
    batch: tuple[list[str], list[str], list[Any]], version: int
) -> None:
    names, types, rows = batch
    feasts = _feast_keys(names, types, rows, version)
    assert not isinstance(feasts, Exception), feasts
    assert _ours(names, types, rows, version) == feasts


ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=3),
    st.text(alphabet="0123456789-", min_size=1, max_size=4),
    st.binary(max_size=3),
    st.integers(-(2**31), 2**31 - 1).map(np.int64),
    st.integers(-(2**31), 2**31 - 1).map(np.int32),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(batch=key_batches(values=ODD_VALUES), version=st.sampled_from([2, 3]))
@example(batch=(["0"], ["BYTES"], [[b""]]), version=2)  # Feast makes no value of it, then refuses
@example(batch=(["0", "1"], ["BYTES", "STRING"], [[b"a", "x"], [b"", "y"]]), version=3)
def test_a_key_value_feast_converts_or_refuses_is_converted_or_refused_alike(
    batch: tuple[list[str], list[str], list[Any]], version: int
) -> None:
    """NumPy integers, strings for integer keys, None, out-of-range numbers, bools..."""
    names, types, rows = batch
    _same(_ours(names, types, rows, version), _feast_keys(names, types, rows, version))


# ------------------------------------------------------------------ values


def _feast_value(raw: bytes, as_json: bool = False) -> Any:
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type

    from framework.features.online_values import json_text

    try:
        value = Value.FromString(raw)
        return json_text(value) if as_json else feast_value_type_to_python_type(value)
    except Exception as exc:
        return exc


def _decoded(raw: bytes, as_json: bool = False) -> Any:
    try:
        return decode_json(raw) if as_json else decode(raw)
    except Exception as exc:
        return exc


def _equal_typed(ours: Any, feasts: Any) -> None:
    if isinstance(feasts, Exception):
        assert type(ours) is type(feasts), f"Feast raised {feasts!r}, parity gave {ours!r}"
        return
    assert type(ours) is type(feasts), (ours, feasts)
    if isinstance(feasts, float) and math.isnan(feasts):
        assert math.isnan(ours)
    else:
        assert ours == feasts


def _scalar_values() -> Any:
    from feast.protos.feast.types.Value_pb2 import Value

    return st.one_of(
        st.builds(lambda v: Value(double_val=v), st.floats()),
        st.builds(lambda v: Value(float_val=v), st.floats(width=32)),
        st.builds(lambda v: Value(int64_val=v), INT64),
        st.builds(lambda v: Value(int32_val=v), INT32),
        st.builds(lambda v: Value(bool_val=v), st.booleans()),
        st.builds(lambda v: Value(string_val=v), st.text()),
        st.builds(lambda v: Value(bytes_val=v), st.binary()),
        st.builds(lambda v: Value(unix_timestamp_val=v), st.integers(0, 2**40)),
        st.just(Value()),
    )


@settings(max_examples=400)
@given(data=st.data())
def test_scalar_values_decode_to_feasts_python_value_type_included(data: st.DataObject) -> None:
    raw = data.draw(_scalar_values()).SerializeToString()
    _equal_typed(_decoded(raw), _feast_value(raw))


def _collection_values() -> Any:
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    def proto(kind: str, value: Any) -> bytes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bytes(
                python_values_to_proto_values([value], ValueType[kind])[0].SerializeToString()
            )

    small = st.integers(-(2**31), 2**31 - 1)
    json_like = st.recursive(
        st.none() | st.booleans() | small | st.text(max_size=4),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=6,
    )
    return st.one_of(
        st.lists(small, max_size=4).map(lambda v: proto("INT64_LIST", v)),
        st.lists(small, max_size=4).map(lambda v: proto("INT32_LIST", v)),
        st.lists(st.floats(allow_nan=False), max_size=4).map(lambda v: proto("DOUBLE_LIST", v)),
        st.lists(st.floats(width=32, allow_nan=False), max_size=4).map(
            lambda v: proto("FLOAT_LIST", v)
        ),
        st.lists(st.text(max_size=4), max_size=4).map(lambda v: proto("STRING_LIST", v)),
        st.lists(st.binary(max_size=4), max_size=4).map(lambda v: proto("BYTES_LIST", v)),
        st.lists(st.booleans(), max_size=4).map(lambda v: proto("BOOL_LIST", v)),
        st.dictionaries(st.text(max_size=3), small, max_size=3).map(lambda v: proto("MAP", v)),
        json_like.map(lambda v: proto("JSON", json.dumps(v))),
        st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=3).map(
            lambda v: proto("STRUCT", v)
        ),
    )


@settings(max_examples=300)
@given(data=st.data(), as_json=st.booleans())
def test_collections_json_and_maps_decode_as_feast_converts_them(
    data: st.DataObject, as_json: bool
) -> None:
    raw = data.draw(_collection_values())
    _equal_typed(_decoded(raw, as_json), _feast_value(raw, as_json))


@settings(max_examples=500)
@given(
    raw=st.one_of(
        st.binary(max_size=14),
        st.tuples(st.sampled_from([0x0A, 0x12, 0x18, 0x20, 0x29, 0x35, 0x38]), st.binary()).map(
            lambda t: bytes([t[0]]) + t[1]
        ),
    )
)
def test_any_bytes_decode_as_protobuf_and_feast_read_them_or_fail_alike(raw: bytes) -> None:
    """Unusual encodings (long varints, repeated fields, truncated payloads, bad UTF-8)
    are protobuf's to judge: the same value, or the same kind of error."""
    _equal_typed(_decoded(raw), _feast_value(raw))


# ------------------------------------------------------------------ the readers


def _stores(tmp: Path, kind: str, online_store: dict[str, Any]) -> dict[str, Any]:
    """The test repository materialised by Feast's ``materialize`` and by parity's."""
    stores = {}
    for writer in ("feast", "parity"):
        project = f"olr_{kind}_{writer}_{uuid.uuid4().hex[:6]}"
        store = online_repos.build(tmp / writer, project, online_store)
        if writer == "feast":
            with contextlib.redirect_stdout(io.StringIO()):
                store.materialize(start_date=online_repos.START, end_date=online_repos.END)
        else:
            materialize(store, start=online_repos.START, end=online_repos.END)
        stores[writer] = store
    return stores


@pytest.fixture(scope="module")
def sqlite_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("online-read-sqlite")
    stores = _stores(tmp, "sqlite", {"type": "sqlite", "path": str(tmp / "online.db")})
    yield stores
    for store in stores.values():
        close_online_store(store)


@pytest.fixture(scope="module")
def redis_stores(
    tmp_path_factory: pytest.TempPathFactory, redis_server: str
) -> Iterator[dict[str, Any]]:
    import redis

    tmp = tmp_path_factory.mktemp("online-read-redis")
    stores = _stores(tmp, "redis", {"type": "redis", "connection_string": redis_server})
    yield stores
    host_port, _, options = redis_server.partition(",")
    host, port = host_port.split(":")
    client = redis.Redis(host=host, port=int(port), db=int(options.removeprefix("db=") or 0))
    try:
        for store in stores.values():
            close_online_store(store)
            project = store.config.project.encode()
            doomed = [k for k in client.scan_iter(count=1000) if k.endswith(project)]
            doomed.append(f"parity:materialization:{store.config.project}".encode())
            client.delete(*doomed)
    finally:
        client.close()


def _readers(store: Any) -> tuple[FeastReader, Any]:
    plan = join_plan(store, online_repos.SERVICE, False)
    json_features = {
        f.name for fv in plan.feature_views for f in fv.features if str(f.dtype) == "Json"
    }
    direct = reader_for(store, plan, json_features)
    assert isinstance(direct, DirectReader), "the store should get a direct reader"
    return FeastReader(store, plan, json_features), direct


def _typed(value: Any) -> Any:
    """``value`` with every element's type alongside it (1, 1.0 and True differ)."""
    if isinstance(value, list):
        return [_typed(v) for v in value]
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    return (type(value).__name__, value)


def _assert_same(ours: dict[str, RawColumn], feasts: dict[str, RawColumn]) -> None:
    assert sorted(ours) == sorted(feasts)
    for name, column in feasts.items():
        mine = ours[name]
        assert mine.statuses == column.statuses, name
        assert mine.event_us == column.event_us, name
        assert _typed(mine.values) == _typed(column.values), name


@pytest.mark.integration
@pytest.mark.parametrize("writer", ["feast", "parity"])
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_the_direct_reader_gives_what_feast_gives(
    request: pytest.FixtureRequest, kind: str, writer: str
) -> None:
    """Every type, every key type, missing and duplicated entities, expired rows, nulls,
    projections and field mappings; in a batch and one row at a time."""
    store = request.getfixturevalue(f"{kind}_stores")[writer]
    feast, direct = _readers(store)
    rows = online_repos.entity_rows()
    feasts = feast.read(rows)
    statuses = {s for column in feasts.values() for s in column.statuses}
    assert len(feasts) == 20 and "PRESENT" in statuses
    assert any(v is None for c in feasts.values() for v in c.values)
    _assert_same(direct.read(rows), feasts)
    for row in rows[:8]:
        _assert_same(direct.read([row]), feast.read([row]))


@pytest.mark.integration
def test_a_missing_redis_field_and_entity_read_as_feast_reports_them(
    redis_stores: dict[str, Any], redis_server: str
) -> None:
    """Feast reports a hash without a feature's field as PRESENT and empty, and an
    entity Redis does not hold as PRESENT, empty, at time 0: so does the direct reader."""
    import redis

    store = redis_stores["parity"]
    feast, direct = _readers(store)
    rows = online_repos.entity_rows()[:2]
    key = KeyEncoder(["user_id"], ["INT64"], 3).encode([[rows[0]["user_id"]]])[0]
    field = feast_private.redis_field_hash("user_scalars:f64")
    host_port, _, options = redis_server.partition(",")
    host, port = host_port.split(":")
    client = redis.Redis(host=host, port=int(port), db=int(options.removeprefix("db=") or 0))
    redis_key = key + store.config.project.encode()
    saved = client.hget(redis_key, field)
    try:
        client.hdel(redis_key, field)
        feasts = feast.read(rows)
        assert feasts["f64"].statuses[0] == "PRESENT" and feasts["f64"].values[0] is None
        _assert_same(direct.read(rows), feasts)
    finally:
        if saved is not None:
            client.hset(redis_key, field, saved)
        client.close()


@pytest.mark.integration
def test_a_redis_error_reply_leaves_no_reply_behind_for_the_next_read(
    redis_stores: dict[str, Any], redis_server: str
) -> None:
    """A read whose first command fails (a key holding a string, not a hash) raises
    Redis's error; the replies it left unread must not answer the next read."""
    import redis

    store = redis_stores["parity"]
    feast, direct = _readers(store)
    rows = online_repos.entity_rows()[:3]
    key = KeyEncoder(["user_id"], ["INT64"], 3).encode([[rows[0]["user_id"]]])[0]
    host_port, _, options = redis_server.partition(",")
    host, port = host_port.split(":")
    client = redis.Redis(host=host, port=int(port), db=int(options.removeprefix("db=") or 0))
    redis_key = key + store.config.project.encode()
    saved = client.dump(redis_key)
    try:
        client.delete(redis_key)
        client.set(redis_key, b"not a hash")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            direct.read(rows)
    finally:
        client.delete(redis_key)
        if saved is not None:
            client.restore(redis_key, 0, saved)
        client.close()
    _assert_same(direct.read(rows), feast.read(rows))
    _assert_same(direct.read(rows[1:]), feast.read(rows[1:]))


@given(
    seconds=st.one_of(
        st.integers(-(2**63), 2**63 - 1), st.integers(-62_135_596_801, 253_402_300_800)
    ),
    nanos=st.one_of(st.just(0), st.integers(0, 999_999_999)),
)
@example(seconds=253_402_300_799, nanos=0)
@example(seconds=253_402_300_800, nanos=0)
@example(seconds=-62_135_596_800, nanos=0)
@example(seconds=-1, nanos=0)
@example(seconds=1_700_000_000, nanos=500)
def test_a_redis_event_time_reads_as_feasts_conversion_gives_it(seconds: int, nanos: int) -> None:
    """The stored ``_ts`` Timestamp to µs: whole seconds decoded from the bytes, anything
    else through protobuf; both equal to Feast's ``fromtimestamp(seconds + nanos / 1e9)``,
    or failing alike where that fails (years outside 1-9999)."""
    import datetime as dt

    from google.protobuf.timestamp_pb2 import Timestamp

    from framework.features.online_redis import event_us

    raw = Timestamp(seconds=seconds, nanos=nanos).SerializeToString()

    def feasts() -> int:
        moment = dt.datetime.fromtimestamp(seconds + nanos / 1_000_000_000.0, tz=dt.UTC)
        return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)

    try:
        want: Any = feasts()
    except (ValueError, OverflowError, OSError) as exc:
        want = type(exc)
    try:
        got: Any = event_us(raw)
    except (ValueError, OverflowError, OSError) as exc:
        got = type(exc)
    assert got == want
