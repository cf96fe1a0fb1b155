"""Stored feature values back to Python, as Feast's ``get_online_features`` gives them.

Feast's online stores keep each value as a serialized ``feast.types.Value`` protobuf
(``b""``, an empty ``Value``, is null). Feast parses each into a protobuf object, copies
it into its response and parity converts it with ``feast_value_type_to_python_type``.

:func:`decode` gives the same Python value straight from the bytes for the scalar types
(double, float, int64, int32, bool, string, bytes) when they hold exactly one field in
the form protobuf writes it (tag, then a varint, a fixed-width number or a
length-delimited payload): a ``struct`` unpack or a slice, about a tenth of the parse
and conversion. Protobuf offers no decoder short of the message object, hence the hand
decoding of these seven forms, the inverse of
:mod:`framework.materialize.online_encoding`. Anything else (lists, maps, Json, structs,
timestamps, unusual encodings) is parsed by protobuf and converted by Feast's own
``feast_value_type_to_python_type``, exactly as :class:`~framework.features.online_read.FeastReader`
does; Json features give their JSON text (:func:`decode_json`).
"""

from __future__ import annotations

import json
import struct
from typing import Any

_DOUBLE = struct.Struct("<d").unpack_from
_FLOAT = struct.Struct("<f").unpack_from

# Protobuf wire tags of feast.types.Value's scalar fields: (field number << 3) | wire type.
_TAG_BYTES = 0x0A
_TAG_STRING = 0x12
_TAG_INT32 = 0x18
_TAG_INT64 = 0x20
_TAG_DOUBLE = 0x29
_TAG_FLOAT = 0x35
_TAG_BOOL = 0x38
_VARINT_TAGS = (_TAG_INT32, _TAG_INT64, _TAG_BOOL)


def decode(raw: bytes | None) -> Any:
    """The Python value of one stored ``Value`` (``None`` for null or absent bytes)."""
    if not raw:
        return None
    tag = raw[0]
    size = len(raw)
    if tag == _TAG_DOUBLE and size == 9:
        return _DOUBLE(raw, 1)[0]
    if tag == _TAG_FLOAT and size == 5:
        return _FLOAT(raw, 1)[0]
    if tag in _VARINT_TAGS:
        number = varint_after_tag(raw)
        if number is not None:
            if tag == _TAG_INT64:
                return number - (1 << 64) if number >> 63 else number
            if tag == _TAG_BOOL:
                return number != 0
            number &= 0xFFFFFFFF  # protobuf keeps an int32's low 32 bits
            return number - (1 << 32) if number >> 31 else number
    elif tag in (_TAG_STRING, _TAG_BYTES):
        start = _payload_start(raw)
        if start is not None:
            payload = raw[start:]
            if tag == _TAG_BYTES:
                return bytes(payload)
            try:
                return payload.decode("utf-8")
            except UnicodeDecodeError:
                pass  # protobuf refuses it too, in its own words: let it
    return _feast(raw)


def decode_json(raw: bytes | None) -> str | None:
    """A Json feature's stored value as its JSON text, as the offline Parquet source
    holds it (:func:`json_text`, what ``FeastReader`` gives)."""
    from feast.protos.feast.types.Value_pb2 import Value

    if not raw:
        return None
    return json_text(Value.FromString(raw))


def json_text(value: Any) -> str | None:
    """A Json ``Value`` as its JSON text, as the offline Parquet source holds it."""
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    raw = getattr(value, kind)
    return raw if isinstance(raw, str) else json.dumps(raw)


def _feast(raw: bytes) -> Any:
    """Protobuf's parse and Feast's conversion, for every other value."""
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(Value.FromString(raw))


def varint_after_tag(raw: bytes) -> int | None:
    """The varint after the tag when it spans the rest of ``raw`` and fits 64 bits, as
    protobuf writes it; else None (the caller lets protobuf parse)."""
    number = shift = 0
    for position in range(1, min(len(raw), 11)):
        byte = raw[position]
        number |= (byte & 0x7F) << shift
        if byte < 0x80:
            ok = position == len(raw) - 1 and number < (1 << 64)
            return number if ok else None
        shift += 7
    return None


def _payload_start(raw: bytes) -> int | None:
    """Where a length-delimited field's payload starts, when the length after the tag
    says it runs to the end of ``raw``; else None."""
    length = shift = 0
    for position in range(1, min(len(raw), 6)):
        byte = raw[position]
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return position + 1 if position + 1 + length == len(raw) else None
        shift += 7
    return None
