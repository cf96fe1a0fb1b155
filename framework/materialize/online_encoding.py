"""Feast's online-store byte formats, computed a whole Arrow column at a time.

Feast's ``materialize`` turns every feature value into a ``feast.types.Value``
protobuf and every entity key into ``serialize_entity_key`` bytes one Python
object at a time (``feast.utils._convert_arrow_to_proto``); profiled on 20k
entities x 3 features, that conversion is a third of its run. Neither Feast nor
protobuf offers a columnar encoder, so this module writes the same bytes with
NumPy and Arrow array operations:

- :func:`encode_values` — ``Value(<type>_val=x).SerializeToString()`` per row,
  and ``b""`` (an empty ``Value``, which Feast reads as null) where Feast writes
  one: nulls, and NaN for floating-point types (Feast tests ``pd.isnull``).
- :func:`encode_entity_keys` — ``serialize_entity_key(key, 3)`` per row.
- :func:`timestamp_protos` — ``google.protobuf.Timestamp`` bytes (Redis ``_ts:``).
- :func:`sqlite_seconds` — the integer Feast's SQLite adapter stores for a time.

Value types without a columnar encoder here (lists, maps, JSON, timestamps as
values, ...) go through Feast's own ``python_values_to_proto_values``, so every
type Feast can write is written, the scalar ones fast. The bytes are checked
against Feast's conversion value by value in ``tests/materialize/test_online_encoding.py``,
including Hypothesis-generated columns.

One deliberate difference: Feast converts an integer column with nulls through
float64 (``to_numpy``), so it would round values beyond 2**53; here integers are
written exactly.
"""

from __future__ import annotations

import datetime as _dt
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Protobuf wire tags of feast.types.Value's scalar fields: (field number << 3) | wire type.
_TAG_BYTES = 0x0A  # bytes_val = 1, length-delimited
_TAG_STRING = 0x12  # string_val = 2, length-delimited
_TAG_INT32 = 0x18  # int32_val = 3, varint
_TAG_INT64 = 0x20  # int64_val = 4, varint
_TAG_DOUBLE = 0x29  # double_val = 5, 64-bit
_TAG_FLOAT = 0x35  # float_val = 6, 32-bit
_TAG_BOOL = 0x38  # bool_val = 7, varint
# google.protobuf.Timestamp: seconds = 1 (varint), nanos = 2 (varint).
_TAG_SECONDS = 0x08
_TAG_NANOS = 0x10

_INTEGER_TYPES = {
    pa.int8(),
    pa.int16(),
    pa.int32(),
    pa.int64(),
    pa.uint8(),
    pa.uint16(),
    pa.uint32(),
}
_INT32_SOURCES = {pa.int8(), pa.int16(), pa.int32(), pa.uint8(), pa.uint16()}
_FLOAT_SOURCES = {pa.float16(), pa.float32(), pa.float64()}


# ------------------------------------------------------------------ primitives


def _binary(data: np.ndarray, lengths: np.ndarray) -> pa.BinaryArray:
    """An Arrow binary array over ``data`` cut into pieces of ``lengths`` bytes."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:
        return pa.Array.from_buffers(
            pa.large_binary(), len(lengths), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        ).cast(pa.binary())
    return pa.Array.from_buffers(
        pa.binary(),
        len(lengths),
        [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)],
    )


def _ragged(matrix: np.ndarray, lengths: np.ndarray) -> pa.BinaryArray:
    """Row ``i`` of the result is the first ``lengths[i]`` bytes of ``matrix[i]``."""
    keep = np.arange(matrix.shape[1]) < lengths[:, None]
    return _binary(np.ascontiguousarray(matrix[keep]), lengths)


def _varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Base-128 varints of ``values`` (as protobuf writes int32/int64/uint64: negative
    numbers as their 64-bit two's complement, ten bytes): an ``(n, 10)`` byte matrix and
    the number of bytes each value uses."""
    v = values.astype(np.int64, copy=False).view(np.uint64)
    lengths = np.ones(len(v), np.int64)
    for k in range(1, 10):
        lengths += v >= np.uint64(1 << (7 * k))
    out = np.empty((len(v), 10), np.uint8)
    for k in range(10):
        low = ((v >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        out[:, k] = low | np.where(lengths > k + 1, np.uint8(0x80), np.uint8(0))
    return out, lengths


def _tagged_varints(tag: int, values: np.ndarray, present: np.ndarray) -> pa.BinaryArray:
    """``tag`` + varint per row where ``present``, else ``b""``."""
    body, lengths = _varints(values)
    matrix = np.empty((len(values), 11), np.uint8)
    matrix[:, 0] = tag
    matrix[:, 1:] = body
    return _ragged(matrix, np.where(present, lengths + 1, 0))


def _tagged_fixed(tag: int, raw: np.ndarray, present: np.ndarray) -> pa.BinaryArray:
    """``tag`` + the little-endian bytes of each element of ``raw`` where ``present``."""
    width = raw.dtype.itemsize
    matrix = np.empty((len(raw), 1 + width), np.uint8)
    matrix[:, 0] = tag
    matrix[:, 1:] = raw.view(np.uint8).reshape(len(raw), width)
    return _ragged(matrix, np.where(present, 1 + width, 0))


def _length_delimited(tag: int, column: pa.Array) -> pa.BinaryArray:
    """``tag`` + varint length + the bytes, per row; ``b""`` for nulls."""
    column = column.cast(pa.binary())
    present = np.asarray(column.is_valid())
    lengths = pc.fill_null(pc.binary_length(column), 0).to_numpy(zero_copy_only=False)
    header = _tagged_varints(tag, lengths, np.ones(len(column), bool))
    joined = pc.binary_join_element_wise(header, column, b"")
    return _fill_empty(joined, present)


def _fill_empty(array: pa.Array, present: np.ndarray) -> pa.BinaryArray:
    if present.all():
        return array
    return pc.if_else(pa.array(present), array, pa.scalar(b"", pa.binary()))


def _valid(column: pa.Array) -> np.ndarray:
    return np.asarray(column.is_valid())


def _numbers(column: pa.Array, dtype: Any) -> np.ndarray:
    """The column as a NumPy array of ``dtype``, nulls as zero (masked separately)."""
    if column.null_count:
        column = pc.fill_null(column, pa.scalar(False if column.type == pa.bool_() else 0))
    filled = column
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=dtype)


# ----------------------------------------------------------------- the formats


def value_type_name(value_type: Any) -> str:
    """Feast ``ValueType`` (enum member or its number) -> its name, e.g. ``"INT64"``."""
    from feast.value_type import ValueType

    return str(value_type.name if isinstance(value_type, ValueType) else ValueType(value_type).name)


def can_encode(column_type: pa.DataType, value_type: Any) -> bool:
    """True when :func:`encode_values` has a columnar encoder for this pair of types."""
    name = value_type_name(value_type)
    if name == "INT64":
        return column_type in _INTEGER_TYPES
    if name == "INT32":
        return column_type in _INT32_SOURCES
    if name in ("DOUBLE", "FLOAT"):
        return column_type in _FLOAT_SOURCES
    if name == "STRING":
        return column_type in (pa.string(), pa.large_string())
    if name == "BYTES":
        return column_type in (pa.binary(), pa.large_binary())
    if name == "BOOL":
        return bool(column_type == pa.bool_())
    return False


def encode_values(
    column: pa.Array | pa.ChunkedArray, value_type: Any, *, column_has_bytes: bool | None = None
) -> pa.BinaryArray:
    """Serialized ``feast.types.Value`` per row, as Feast's ``materialize`` writes it.

    Parameters
    ----------
    column
        The feature's values.
    value_type
        The feature's Feast ``ValueType`` (``field.dtype.to_value_type()``).
    column_has_bytes
        BYTES only: whether the whole column being materialised (of which ``column``
        may be one batch) holds a non-empty value. Feast picks a "sample" value per
        column and, when every value is null or ``b""``, writes every value as null
        (an empty ``Value``); otherwise ``b""`` is a value. None: decide from
        ``column`` itself.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from feast.value_type import ValueType
    >>> encode_values(pa.array([1, None]), ValueType.INT64).to_pylist()
    [b' \\x01', b'']
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not can_encode(column.type, value_type):
        return _feast_values(column, value_type)
    name = value_type_name(value_type)
    present = _valid(column)
    if name == "INT64":
        return _tagged_varints(_TAG_INT64, _numbers(column, np.int64), present)
    if name == "INT32":
        return _tagged_varints(_TAG_INT32, _numbers(column, np.int64), present)
    if name == "BOOL":
        return _tagged_varints(_TAG_BOOL, _numbers(column, np.int64), present)
    if name in ("DOUBLE", "FLOAT"):
        dtype = np.dtype("<f8") if name == "DOUBLE" else np.dtype("<f4")
        raw = _numbers(column, np.float64).astype(dtype)
        tag = _TAG_DOUBLE if name == "DOUBLE" else _TAG_FLOAT
        return _tagged_fixed(tag, raw, present & ~np.isnan(raw))
    if name == "STRING":
        return _length_delimited(_TAG_STRING, column)
    if column_has_bytes is None:
        column_has_bytes = bool(pc.any(pc.greater(pc.binary_length(column), 0)).as_py())
    if not column_has_bytes:
        return pa.array([b""] * len(column), pa.binary())
    return _length_delimited(_TAG_BYTES, column)


def _feast_values(column: pa.Array, value_type: Any) -> pa.BinaryArray:
    """Feast's own conversion, for value types without a columnar encoder."""
    from feast.type_map import python_values_to_proto_values

    protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    return pa.array([p.SerializeToString() for p in protos], pa.binary())


# Entity keys: serialize_entity_key version 3 writes the number of join keys, then for
# each key (sorted by name) STRING's type code, the name's length and the name, then
# for each value its type code, its length and its bytes (little-endian numbers).
_KEY_TYPES = {"INT64": (4, "<i8"), "INT32": (3, "<i4"), "STRING": (2, None), "BYTES": (1, None)}


def can_encode_keys(columns: Sequence[tuple[str, pa.DataType, Any]]) -> bool:
    """True when :func:`encode_entity_keys` has a columnar encoder for these join keys."""
    for _, column_type, value_type in columns:
        name = value_type_name(value_type)
        if name not in _KEY_TYPES:
            return False
        if name in ("INT64", "INT32") and not can_encode(column_type, value_type):
            return False
        if name in ("STRING", "BYTES") and not can_encode(column_type, value_type):
            return False
    return True


def encode_entity_keys(
    columns: Sequence[tuple[str, pa.Array | pa.ChunkedArray, Any]], version: int = 3
) -> pa.BinaryArray:
    """``serialize_entity_key(EntityKey(join_keys, values), version)`` per row.

    ``columns`` holds (join key name, its values, its Feast ``ValueType``), in any
    order; no value may be null (Feast cannot serialize a null key either). The
    columnar encoder writes version 3 (Feast's default); another version goes through
    Feast's own serializer.
    """
    arrays = [
        (name, c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c, t)
        for name, c, t in columns
    ]
    if version != 3 or not can_encode_keys([(name, c.type, t) for name, c, t in arrays]):
        return _feast_entity_keys(arrays, version)
    ordered = sorted(arrays, key=lambda item: item[0])
    prefix = [struct.pack("<I", len(ordered))]
    for name, _, _ in ordered:
        encoded = name.encode("utf8")
        prefix.append(struct.pack("<II", 2, len(encoded)) + encoded)
    parts: list[Any] = [pa.scalar(b"".join(prefix), pa.binary())]
    n = len(ordered[0][1]) if ordered else 0
    for _, column, value_type in ordered:
        code, dtype = _KEY_TYPES[value_type_name(value_type)]
        if dtype is not None:
            raw = _numbers(column, np.int64).astype(dtype)
            width = raw.dtype.itemsize
            matrix = np.empty((n, 8 + width), np.uint8)
            matrix[:, :8] = np.frombuffer(struct.pack("<II", code, width), np.uint8)
            matrix[:, 8:] = raw.view(np.uint8).reshape(n, width)
            parts.append(_binary(matrix.reshape(-1), np.full(n, 8 + width)))
        else:
            data = column.cast(pa.binary())
            lengths = pc.binary_length(data).to_numpy(zero_copy_only=False).astype("<u4")
            header = np.empty((n, 8), np.uint8)
            header[:, :4] = np.frombuffer(struct.pack("<I", code), np.uint8)
            header[:, 4:] = lengths.view(np.uint8).reshape(n, 4)
            parts.append(_binary(header.reshape(-1), np.full(n, 8)))
            parts.append(data)
    if n == 0:
        return pa.array([], pa.binary())
    if len(parts) == 2:
        return pc.binary_join_element_wise(parts[0], parts[1], b"")
    return pc.binary_join_element_wise(*parts, b"")


def _feast_entity_keys(
    arrays: Sequence[tuple[str, pa.Array, Any]], version: int = 3
) -> pa.BinaryArray:
    """Feast's own entity-key serialization, for key types without a columnar encoder."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values

    names = [name for name, _, _ in arrays]
    protos = [
        python_values_to_proto_values(c.to_numpy(zero_copy_only=False), t) for _, c, t in arrays
    ]
    keys = [
        serialize_entity_key(EntityKey(join_keys=names, entity_values=list(values)), version)
        for values in zip(*protos, strict=True)
    ]
    return pa.array(keys, pa.binary())


def timestamp_protos(micros: np.ndarray) -> pa.BinaryArray:
    """``Timestamp.FromDatetime(t).SerializeToString()`` per UTC time in microseconds."""
    micros = np.asarray(micros, np.int64)
    seconds = np.floor_divide(micros, 1_000_000)
    nanos = (micros - seconds * 1_000_000) * 1_000
    # Protobuf omits fields equal to zero.
    head = _tagged_varints(_TAG_SECONDS, seconds, seconds != 0)
    tail = _tagged_varints(_TAG_NANOS, nanos, nanos != 0)
    return pc.binary_join_element_wise(head, tail, b"")


def _local_zone_is_utc() -> bool:
    return all(
        _dt.datetime(2001, month, 1).timestamp()
        == _dt.datetime(2001, month, 1, tzinfo=_dt.UTC).timestamp()
        for month in (1, 4, 7, 10)
    )


def sqlite_seconds(micros: np.ndarray) -> np.ndarray:
    """What Feast's SQLite store keeps for a UTC time: ``int(naive_utc.timestamp())``.

    Feast makes the time naive UTC and its registered ``sqlite3`` adapter stores
    ``int(dt.timestamp())``, which reads a naive time as *local* time; its reader
    undoes that with ``datetime.fromtimestamp``. On a UTC machine that is the Unix
    time truncated toward zero; elsewhere Python's own conversion is used, per value.
    """
    micros = np.asarray(micros, np.int64)
    if _local_zone_is_utc():
        seconds = np.floor_divide(micros, 1_000_000)
        fraction = micros - seconds * 1_000_000
        # datetime.timestamp() is float arithmetic (whole seconds + microseconds / 1e6),
        # then int() truncates toward zero: the same here, rounding included.
        as_float = seconds.astype(np.float64) + fraction / 1e6
        truncated: np.ndarray = np.trunc(as_float).astype(np.int64)
        return truncated
    epoch = _dt.datetime(1970, 1, 1)
    return np.array(
        [int((epoch + _dt.timedelta(microseconds=int(m))).timestamp()) for m in micros.tolist()],
        np.int64,
    )
