"""A direct reader of Feast's SQLite online store: one query per read, for all views.

Feast's ``SqliteOnlineStore.online_read`` runs one query per view (``SELECT entity_key,
feature_name, value, event_ts FROM <project>_<view> WHERE entity_key IN (...)``),
parses every value into a protobuf and builds a response. Here the views' queries are
one ``UNION ALL`` statement and the values are decoded by
:mod:`framework.features.online_values`; what is read is the same
(:mod:`framework.features.online_views` says how rows become columns).

Exactly as Feast:

- an entity's event time is its *last* row's, in the order Feast's query reads them:
  through the ``<table>_ek`` index on ``entity_key``, so rows of one entity come in
  ``rowid`` order (selected here and compared, rather than trusted to a plan);
- Feast stores ``int(naive_utc.timestamp())`` and reads it back with
  ``datetime.fromtimestamp`` (local time) labelled UTC: on a machine whose zone is not
  UTC that shifts the time by the zone's offset, and so does this reader.

Connections: one per thread (requests come from many), opened on first use, each with
the busy timeout :meth:`SqliteReader.bound_reads` last set (Python's 5 s by default, as
Feast's own connection has).
"""

from __future__ import annotations

import datetime as _dt
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from framework import feast_private
from framework.features.online_views import Triple, ViewRead, keys_of

_UTC = _dt.UTC


class SqliteReader:
    """Reads the service's views from Feast's SQLite online store (module docstring)."""

    def __init__(self, store: Any, views: list[ViewRead]) -> None:
        from feast.infra.online_stores.helpers import compute_table_id

        self.path = feast_private.sqlite_db_path(store.config)
        self.views = views
        self.tables = [
            '"' + compute_table_id(store.config.project, v.view).replace('"', '""') + '"'
            for v in views
        ]
        self._busy_ms = 5000
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._sql: dict[tuple[int, ...], str] = {}
        self._utc = _local_zone_is_utc()

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        con: sqlite3.Connection | None = getattr(local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            local.con, local.busy = con, None
            with self._lock:
                self._connections.append(con)
        if local.busy != self._busy_ms:
            con.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
            local.busy = self._busy_ms
        return con

    def _query(self, counts: tuple[int, ...]) -> str:
        sql = self._sql.get(counts)
        if sql is None:
            sql = " UNION ALL ".join(
                f"SELECT {i}, entity_key, feature_name, value, event_ts, rowid FROM {table} "
                f"WHERE entity_key IN ({','.join('?' * n)})"
                for i, (table, n) in enumerate(zip(self.tables, counts, strict=True))
            )
            self._sql[counts] = sql
        return sql

    def read(self, entity_rows: Sequence[dict[str, Any]]) -> dict[str, Triple]:
        """Each view feature's values, statuses and event times for ``entity_rows``."""
        keyed = keys_of(self.views, entity_rows)
        params = [key for keys, _ in keyed for key in keys]
        rows = self._connection().execute(
            self._query(tuple(len(keys) for keys, _ in keyed)), params
        )
        found: list[dict[bytes, list[Any]]] = [{} for _ in self.views]
        for i, key, feature, value, seconds, rowid in rows:
            entry = found[i].get(key)
            if entry is None:
                found[i][key] = [rowid, seconds, {feature: value}]
                continue
            entry[2][feature] = value
            if rowid > entry[0]:
                entry[0], entry[1] = rowid, seconds
        out: dict[str, Triple] = {}
        for view, (keys, index), held in zip(self.views, keyed, found, strict=True):
            results = [held.get(key) for key in keys]
            out.update(
                view.columns(
                    [None if r is None else (self._event_us(r[1]), r[2]) for r in results],
                    index,
                )
            )
        return out

    def _event_us(self, stored: Any) -> int:
        """The event time Feast reports for a stored ``event_ts``: ``fromtimestamp``
        (local) labelled UTC, in µs."""
        seconds = stored if type(stored) is int else int(stored)
        if self._utc:
            return seconds * 1_000_000
        local = _dt.datetime.fromtimestamp(seconds).replace(tzinfo=_UTC)
        return (local - _EPOCH) // _dt.timedelta(microseconds=1)

    def bound_reads(self, seconds: float) -> bool:
        """The busy timeout of every connection (a read waits only for a writer's lock)."""
        self._busy_ms = max(1, round(seconds * 1000))
        return True

    def close(self) -> None:
        """Close the connections this reader opened (threads reopen on their next read)."""
        with self._lock:
            connections, self._connections = self._connections, []
            self._local = threading.local()
        for con in connections:
            con.close()


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_UTC)


def _local_zone_is_utc() -> bool:
    return all(
        _dt.datetime(2001, month, 1).timestamp()
        == _dt.datetime(2001, month, 1, tzinfo=_UTC).timestamp()
        for month in (1, 4, 7, 10)
    )
