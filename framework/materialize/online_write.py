"""Writing feature rows into Feast's online stores, in Feast's own layout, in bulk.

``parity materialize`` writes exactly the rows and keys Feast's
``online_write_batch`` would write, so Feast's ``get_online_features`` (and
parity's server, which reads through it) cannot tell the difference — but a
whole batch at a time instead of one entity at a time:

SQLite: :mod:`framework.materialize.sqlite_writer`; Redis:
:mod:`framework.materialize.redis_writer` (each module says how it writes). The
interface they share is :mod:`framework.materialize.writer`.

Each writer also keeps parity's per-view bookkeeping next to the data it
describes (:meth:`OnlineWriter.read_state` / ``write_state``): the newest event
time written and the rows of the last run — what ``parity materialize
--status`` and the freshness metric report. SQLite: table
``parity_materialization``; Redis: hash ``parity:materialization:<project>``.

Anything else (other online stores, SQLite with vector search, Redis cluster or
sentinel) has no writer here: :func:`open_writer` says why, and
:mod:`framework.materialize.job` hands those views to Feast's own ``materialize``.
"""

from __future__ import annotations

from typing import Any

from framework.materialize.redis_writer import RedisWriter
from framework.materialize.sqlite_writer import SqliteWriter
from framework.materialize.writer import OnlineWriter

__all__ = [
    "open_writer",
]


def open_writer(store: Any) -> tuple[OnlineWriter | None, str]:
    """A bulk writer for the store's online store, or None and why there is none."""
    config = store.config.online_store
    kind = getattr(config, "type", "")
    if kind == "sqlite" or str(kind).endswith("SqliteOnlineStore"):
        if getattr(config, "vector_enabled", False):
            return None, "the SQLite online store has vector search enabled"
        if getattr(config, "enable_openai_compatible_store", False):
            return None, "the SQLite online store keeps a value_num column"
        return SqliteWriter(store), ""
    if kind == "redis" or str(kind).endswith("RedisOnlineStore"):
        redis_type = str(getattr(config.redis_type, "value", config.redis_type))
        if redis_type != "redis":
            return None, f"Redis type {redis_type!r} (only a single Redis server is bulk-written)"
        return RedisWriter(store), ""
    return None, f"online store type {kind!r} has no bulk writer"
