"""Personal data in the prediction log: chosen fields hashed or dropped before writing.

The server applies a :class:`LogPrivacy` to every prediction table before it is
logged (``parity serve --log-hash user_id --log-drop email``):

* a **hashed** field ``f`` is replaced by ``f__hmac``: the hex HMAC-SHA256 of its
  value under a secret key (``PARITY_LOG_HASH_KEY``). The same value always gives
  the same pseudonym, so counts, joins and feedback by entity keys still work for
  whoever holds the key, while the log itself no longer holds the value. The
  new name keeps monitoring from mistaking pseudonyms for the raw values (a
  hashed feature is reported as not monitored rather than drifting).
* a **dropped** field is removed, with its ``__status`` and ``__timestamp``
  companions.

Only entity keys, request data and features can be named: the request id,
timestamps, version, score and decision are what the log is for.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import pyarrow as pa

from framework.errors import ConfigError
from framework.logs.rows import LogRows

KEY_ENV = "PARITY_LOG_HASH_KEY"
SUFFIX = "__hmac"
_COMPANIONS = ("__status", "__timestamp")
_MIN_KEY_BYTES = 16


def hash_key_from_env() -> bytes | None:
    value = os.environ.get(KEY_ENV)
    return value.encode() if value else None


def pseudonym(value: object, key: bytes) -> str:
    """The HMAC-SHA256 of a value's text (integers as decimal digits), in hex."""
    return hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()


def pseudonyms(values: Iterable[object], key: bytes) -> list[str | None]:
    return [None if v is None else pseudonym(v, key) for v in values]


T = TypeVar("T", pa.Table, LogRows)


@dataclass(frozen=True)
class LogPrivacy:
    hash: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    key: bytes | None = None
    #: Input schema (serialised) -> (schema, its serialisation, columns kept, hashed).
    _plans: dict[bytes, tuple[pa.Schema, bytes, list[int], set[int]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(cls, hash: Sequence[str], drop: Sequence[str], key: bytes | None) -> LogPrivacy:
        """Checked settings: a long enough key when anything is hashed, no field twice."""
        if both := sorted(set(hash) & set(drop)):
            raise ConfigError(f"log_hash and log_drop both name {', '.join(both)}: pick one.")
        for name in (*hash, *drop):
            if not name or name.startswith("__") or name.endswith(_COMPANIONS + (SUFFIX,)):
                raise ConfigError(f"log_hash/log_drop: {name!r} is not a field name.")
        if hash and (key is None or len(key) < _MIN_KEY_BYTES):
            raise ConfigError(
                f"log_hash needs a secret key of at least {_MIN_KEY_BYTES} bytes in "
                f"{KEY_ENV} (the same key lets feedback match hashed entity keys)."
            )
        return cls(tuple(hash), tuple(drop), key if hash else None)

    @property
    def active(self) -> bool:
        return bool(self.hash or self.drop)

    def check(self, fields: Iterable[str]) -> None:
        """Every configured name must be a field some served model logs (typos fail)."""
        known = set(fields)
        if unknown := sorted(set(self.hash + self.drop) - known):
            raise ConfigError(
                f"log_hash/log_drop: {', '.join(unknown)} is not an entity key, request "
                f"field or feature of the served models (they log: {', '.join(sorted(known))})."
            )

    def apply(self, table: T) -> T:
        """``table`` (a table, or the server's :class:`LogRows`) with the fields hashed
        and dropped."""
        if not self.active:
            return table
        if isinstance(table, LogRows):
            return self._apply_rows(table)
        names = set(table.column_names)
        doomed = [f"{d}{s}" for d in self.drop for s in ("", *_COMPANIONS) if f"{d}{s}" in names]
        if doomed:
            table = table.drop_columns(doomed)
        for name in self.hash:
            if name in names:
                assert self.key is not None  # build() guarantees it
                i = table.schema.get_field_index(name)
                values = pseudonyms(table.column(name).to_pylist(), self.key)
                table = table.set_column(i, name + SUFFIX, pa.array(values, pa.string()))
        return table

    def _apply_rows(self, rows: LogRows) -> LogRows:
        """:meth:`apply` for rows: the new schema worked out once per input schema; a
        hashed value is first what its column holds (an int given for a Float64 field
        hashes as the float, as in a table)."""
        plan = self._plans.get(rows.key)
        if plan is None:
            doomed = {f"{d}{s}" for d in self.drop for s in ("", *_COMPANIONS)}
            keep = [i for i, f in enumerate(rows.schema) if f.name not in doomed]
            hashed = {i for i in keep if rows.schema[i].name in self.hash}
            fields = [
                pa.field(rows.schema[i].name + SUFFIX, pa.string())
                if i in hashed
                else rows.schema[i]
                for i in keep
            ]
            schema = pa.schema(fields)
            plan = self._plans[rows.key] = (schema, schema.serialize().to_pybytes(), keep, hashed)
        schema, key, keep, hashed = plan
        columns = []
        for i in keep:
            values = rows.columns[i]
            if i in hashed:
                assert self.key is not None  # build() guarantees it
                typed = pa.array(values, rows.schema[i].type).to_pylist()
                values = pseudonyms(typed, self.key)
            columns.append(values)
        return LogRows(schema, columns, key)
