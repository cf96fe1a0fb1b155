"""Entity keys as Feast's online stores key their rows: ``serialize_entity_key``'s bytes.

Feast turns each request's join-key values into ``Value`` protobufs
(``python_values_to_proto_values`` with the key's declared type), builds an
``EntityKey`` per row and serializes it (``feast.infra.key_encoding_utils``): the
number of keys (version 3), then per key sorted by name its type code (STRING), its
length (version 3) and its name, then per value its type code, length and bytes
(little-endian integers: INT64 and UNIX_TIMESTAMP as 8 bytes, 4 bytes up to version 1;
INT32 as 4). That is two protobuf objects and a sort per row; a read of one entity
spends more time there than in the store.

:class:`KeyEncoder` writes the same bytes with ``struct`` for the values whose Python
type makes Feast's conversion the identity (``int`` for the integer keys, ``str``,
``bytes``). A batch holding anything else (a NumPy integer, a string for an integer
key, a ``datetime``, ``None``...) goes through Feast's own conversion and serializer
as a whole, because Feast's conversion looks at the whole column (its first non-empty
value decides what a BYTES key accepts): so it gives Feast's bytes, or raises
Feast's error. ``tests/features/test_online_read.py`` holds the bytes equal to
Feast's for every key type, composite keys and both serialization versions.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

#: Feast's ``ValueType`` codes of the key types encoded here (``Value.proto``).
_CODES = {"BYTES": 1, "STRING": 2, "INT32": 3, "INT64": 4, "UNIX_TIMESTAMP": 8}
_STRING = 2
_INT32 = struct.Struct("<IIi")
_INT64 = struct.Struct("<IIq")
_INT64_V1 = struct.Struct("<IIl")
_HEAD = struct.Struct("<II")


class KeyEncoder:
    """``serialize_entity_key`` bytes for rows of join-key values.

    Parameters
    ----------
    names
        The join keys, as the view names them (in the order the values come).
    types
        Their Feast ``ValueType`` names (``INT64``, ``STRING``, ...).
    version
        The repository's ``entity_key_serialization_version``.
    """

    def __init__(self, names: Sequence[str], types: Sequence[str], version: int) -> None:
        for name, kind in zip(names, types, strict=True):
            if kind not in _CODES:
                raise ValueError(f"Join key {name!r} has type {kind}, which has no encoder.")
        self.names = list(names)
        self.types = list(types)
        self.version = version
        order = sorted(range(len(names)), key=lambda i: names[i]) if len(names) > 1 else [0]
        #: Value positions in Feast's order (sorted by key name).
        self.order = order if names else []
        head = [struct.pack("<I", len(names))] if version > 2 else []
        for i in self.order:
            encoded = names[i].encode("utf8")
            head.append(struct.pack("<I", _STRING))
            if version > 2:
                head.append(struct.pack("<I", len(encoded)))
            head.append(encoded)
        self.prefix = b"".join(head)
        int64 = _INT64_V1 if version <= 1 else _INT64
        self._packers = [self._packer(types[i], int64) for i in self.order]

    @staticmethod
    def _packer(kind: str, int64: struct.Struct) -> Any:
        code = _CODES[kind]
        if kind == "INT32":
            return (int, lambda v: _INT32.pack(code, 4, v))
        if kind in ("INT64", "UNIX_TIMESTAMP"):
            return (int, lambda v: int64.pack(code, int64.size - 8, v))
        if kind == "STRING":
            return (str, lambda v: _with_head(code, v.encode("utf8")))
        return (bytes, lambda v: _with_head(code, v))

    def encode(self, rows: Sequence[Sequence[Any]]) -> list[bytes]:
        """The key bytes of each row (values in :attr:`names` order), as Feast's
        ``serialize_entity_key`` gives them; raises what Feast raises for a value the
        key cannot take."""
        try:
            return [self._fast(row) for row in rows]
        except (_NotPlain, struct.error, UnicodeEncodeError):
            return self._feast(rows)

    def _fast(self, row: Sequence[Any]) -> bytes:
        parts = [self.prefix]
        for i, (kind, pack) in zip(self.order, self._packers, strict=True):
            value = row[i]
            if type(value) is not kind or (kind is bytes and not value):
                # Feast converts an empty bytes key to no value at all and then refuses
                # it: its own path raises what it raises.
                raise _NotPlain
            parts.append(pack(value))
        return b"".join(parts)

    def _feast(self, rows: Sequence[Sequence[Any]]) -> list[bytes]:
        """Feast's own conversion (``python_values_to_proto_values`` per key column, as
        ``get_online_features`` converts entity rows) and serializer."""
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.type_map import python_values_to_proto_values
        from feast.value_type import ValueType

        columns = [
            python_values_to_proto_values([row[i] for row in rows], ValueType[kind])
            for i, kind in enumerate(self.types)
        ]
        return [
            serialize_entity_key(
                EntityKey(join_keys=self.names, entity_values=list(values)), self.version
            )
            for values in zip(*columns, strict=True)
        ]


class _NotPlain(Exception):
    """A value whose Python type Feast converts (or refuses): the batch goes to Feast."""


def _with_head(code: int, data: bytes) -> bytes:
    return _HEAD.pack(code, len(data)) + data
