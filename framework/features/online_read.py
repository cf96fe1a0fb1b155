"""How the online store is read: Feast's ``get_online_features``, or a direct reader.

A reader answers one question — for these entity rows, what does the online store
hold for each of the service's view features — in Feast's own terms, before parity
applies the offline join's semantics (TTL, null values; :mod:`framework.features.online`):

- ``values``: the Python value Feast's ``get_online_features`` would give
  (``feast.type_map.feast_value_type_to_python_type``), except ``Json``, which is
  its JSON text as the offline Parquet source holds it;
- ``statuses``: Feast's ``FieldStatus`` name as Feast reports it (``PRESENT``,
  ``NOT_FOUND``; a stored null is ``PRESENT`` with the value ``None``);
- ``event_us``: the event timestamp Feast reports, in µs since the epoch (0 when Feast
  reports none).

:class:`FeastReader` asks Feast. :func:`reader_for` picks a direct reader where parity
has one for the store (SQLite, Redis: one query or one pipelined round trip per read,
no protobuf response, scalars decoded without protobuf objects) and Feast's otherwise;
the direct readers are held equal to :class:`FeastReader` value for value and status
for status (``tests/features/test_online_read.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from framework import feast_private
from framework.features.online_values import json_text


@dataclass
class RawColumn:
    """One feature's values for a batch of entity rows, as Feast reports them. Each
    read makes new lists: the caller may change them in place."""

    values: list[Any]
    statuses: list[str]
    event_us: list[int]


class Reader(Protocol):
    """Reads the service's view features for entity rows (keys as the service names
    them: after ``with_join_key_map``), one :class:`RawColumn` per feature name."""

    def read(self, entity_rows: Sequence[dict[str, Any]]) -> dict[str, RawColumn]: ...

    def bound_reads(self, seconds: float) -> bool:
        """Make the store give up a read after ``seconds`` where it can; whether it could."""
        ...

    def close(self) -> None:
        """Close the store connections the reader opened (a later read reopens them)."""
        ...


class FeastReader:
    """Feast's ``get_online_features``: one call per distinct join-key map of the plan.

    Feast reads only registered services and plain ``view:feature`` references, so each
    projection is asked for by its view's own name, with the entity rows' columns
    renamed back to the view's join keys."""

    def __init__(self, store: Any, plan: Any, json_features: set[str]) -> None:
        self.store = store
        self.calls = _calls(plan)
        self.json = json_features

    def close(self) -> None:
        """Nothing to close: the Feast store's connections are its owner's."""

    def read(self, entity_rows: Sequence[dict[str, Any]]) -> dict[str, RawColumn]:
        from feast.type_map import feast_value_type_to_python_type as to_python

        out: dict[str, RawColumn] = {}
        for refs, rename in self.calls:
            rows = [{view_key: row[key] for view_key, key in rename.items()} for row in entity_rows]
            response = self.store.get_online_features(features=refs, entity_rows=rows).proto
            keys = set(rename)
            for name, result in zip(
                response.metadata.feature_names.val, response.results, strict=True
            ):
                if name in keys:
                    continue
                as_json = name in self.json
                values, statuses, times = [], [], []
                for value, state, ts in zip(
                    result.values, result.statuses, result.event_timestamps, strict=True
                ):
                    label = _STATUS.get(state, "NOT_FOUND")
                    v = None
                    if label == "PRESENT":
                        v = json_text(value) if as_json else to_python(value)
                    values.append(v)
                    statuses.append(label)
                    times.append(ts.seconds * 1_000_000 + ts.nanos // 1_000)
                out[name] = RawColumn(values, statuses, times)
        return out

    def bound_reads(self, seconds: float) -> bool:
        """A local SQLite file can: a read waits only for a writer's lock, and its busy
        timeout bounds that wait (Feast opens the connection with Python's 5 s default)."""
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        online_store = feast_private.online_store(self.store)
        if not isinstance(online_store, SqliteOnlineStore):
            return False
        connection = feast_private.sqlite_connection(online_store, self.store.config)
        connection.execute(f"PRAGMA busy_timeout = {max(1, round(seconds * 1000))}")
        return True


def reader_for(store: Any, plan: Any, json_features: set[str], *, direct: bool = True) -> Reader:
    """A direct reader for the store where parity has one (and ``direct``), else
    :class:`FeastReader`.

    Direct: Feast's SQLite store (without vector search or the OpenAI-compatible
    ``value_num`` column, whose layouts differ) and a single Redis server (cluster and
    sentinel route keys per node). Through Feast: every other store, and a plan a direct
    read cannot reproduce exactly (:func:`~framework.features.online_views.view_reads`
    says why: versioned views, join keys typed two ways, types without a key encoder).
    """
    from framework.features.online_redis import RedisReader
    from framework.features.online_sqlite import SqliteReader
    from framework.features.online_views import view_reads

    if not direct:
        return FeastReader(store, plan, json_features)
    settings = store.config.online_store
    kind = str(getattr(settings, "type", ""))
    reader: Any = None
    if kind == "sqlite" or kind.endswith("SqliteOnlineStore"):
        plain = not getattr(settings, "vector_enabled", False) and not getattr(
            settings, "enable_openai_compatible_store", False
        )
        reader = SqliteReader if plain else None
    elif kind == "redis" or kind.endswith("RedisOnlineStore"):
        single = str(getattr(settings.redis_type, "value", settings.redis_type)) == "redis"
        glide = str(getattr(getattr(settings, "client", ""), "value", "")) == "glide"
        reader = RedisReader if single and not glide else None
    views = view_reads(store, plan, json_features) if reader is not None else None
    if reader is None or isinstance(views, str) or not views:
        return FeastReader(store, plan, json_features)
    return DirectReader(reader(store, views))


class DirectReader:
    """A direct reader's columns as :class:`RawColumn` (the readers give plain tuples,
    so they need not import this module)."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def read(self, entity_rows: Sequence[dict[str, Any]]) -> dict[str, RawColumn]:
        return {
            name: RawColumn(values, statuses, times)
            for name, (values, statuses, times) in self.source.read(entity_rows).items()
        }

    def bound_reads(self, seconds: float) -> bool:
        return bool(self.source.bound_reads(seconds))

    def close(self) -> None:
        """Close the store connections the reader opened."""
        self.source.close()


def _calls(plan: Any) -> list[tuple[list[str], dict[str, str]]]:
    """The ``get_online_features`` calls a read makes: per distinct join-key map, the
    ``view:feature`` references of its projections (by the views' own names) and how to
    build its entity rows (view join key -> entity column)."""
    calls: dict[tuple[tuple[str, str], ...], tuple[list[str], dict[str, str]]] = {}
    for view, fv in zip(plan.views, plan.feature_views, strict=True):
        key_map = fv.projection.join_key_map or {}
        rename = {c.name: key_map.get(c.name, c.name) for c in fv.entity_columns}
        refs, keys = calls.setdefault(tuple(sorted(key_map.items())), ([], {}))
        refs += [f"{fv.name}:{feature}" for feature in view.features]
        keys.update(rename)
    return list(calls.values())


def _status_names() -> dict[int, str]:
    from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

    return {int(v): k for k, v in FieldStatus.items()}


_STATUS = _status_names()
