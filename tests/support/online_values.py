"""Values in a Feast SQLite online store, changed behind Feast's back for a test."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def entity_key(join_key: str, value: Any) -> bytes:
    """The stored form of a one-column entity key (serialization version 3): a ``str``
    as a string value, anything else as an INT64."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    typed = Value(string_val=value) if isinstance(value, str) else Value(int64_val=value)
    return serialize_entity_key(EntityKey(join_keys=[join_key], entity_values=[typed]), 3)


@contextmanager
def stored_as_text(
    db: Path, table: str, key: tuple[str, Any], feature: str, text: str
) -> Iterator[None]:
    """``feature`` of entity ``key`` (join key, value) in ``table`` stored as the string
    ``text`` for the ``with`` block (what another writer might leave), then restored."""
    from feast.protos.feast.types.Value_pb2 import Value

    with stored_as(db, table, key, feature, Value(string_val=text).SerializeToString()):
        yield


@contextmanager
def stored_as(
    db: Path, table: str, key: tuple[str, Any], feature: str, raw: bytes
) -> Iterator[None]:
    """``feature`` of entity ``key`` stored as the bytes ``raw`` for the ``with`` block
    (``b""``: Feast's null), then restored."""
    where = "WHERE entity_key = ? AND feature_name = ?"
    params = (entity_key(*key), feature)
    with sqlite3.connect(db) as con:
        (old,) = con.execute(f"SELECT value FROM {table} {where}", params).fetchone()
        con.execute(f"UPDATE {table} SET value = ? {where}", (raw, *params))
    try:
        yield
    finally:
        with sqlite3.connect(db) as con:
            con.execute(f"UPDATE {table} SET value = ? {where}", (bytes(old), *params))
