"""A direct reader of Feast's Redis online store: one pipelined round trip per read.

Feast's ``RedisOnlineStore`` keeps one hash per entity key (``serialize_entity_key`` +
the project's name), with a field per feature (``mmh3("<view>:<feature>")``) and one per
view for its event time (``_ts:<view>``, a ``google.protobuf.Timestamp``). Its
``_read_features_per_fv`` sends one ``HMGET`` per view and distinct entity, all views in
one pipeline. This reader sends one per distinct entity, for all the views keyed by it
(their fields live in the same hash), in one pipeline, then decodes the values with
:mod:`framework.features.online_values` instead of building protobuf responses.

Exactly as Feast (``_get_features_for_entity``), including what looks odd:

- a hash without a feature's field gives that feature ``PRESENT`` with an empty value
  (``None``), not ``NOT_FOUND``;
- an entity Redis does not hold is not ``NOT_FOUND`` either: every feature is
  ``PRESENT`` and empty, with event time 0;
- the event time is ``datetime.fromtimestamp(seconds + nanos / 1e9, UTC)``: float
  arithmetic rounded to the microsecond.

The client is built from Feast's ``connection_string`` as ``RedisOnlineStore._get_client``
builds it (:func:`framework.feast_private.parse_redis_connection_string`) for a single
Redis server; cluster and sentinel deployments are read through Feast. Each thread reads
on a connection of its own, made by that client's pool (so with its TLS, password,
database and timeouts), with redis-py's public ``send_packed_command`` and
``read_response``: a ``Pipeline`` object per read, its pool checkout and its reset cost
about 50 µs of CPU a read here, more than the round trip's own 35 µs.
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections.abc import Sequence
from typing import Any

from framework import feast_private
from framework.features.online_values import varint_after_tag
from framework.features.online_views import Triple, ViewRead, keys_of

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_US = _dt.timedelta(microseconds=1)


class RedisReader:
    """Reads the service's views from Feast's Redis online store (module docstring)."""

    def __init__(self, store: Any, views: list[ViewRead]) -> None:
        config = store.config
        self.settings = config.online_store
        self.project = config.project.encode("utf-8")
        self.views = views
        self.fields: list[list[bytes]] = []
        for view in views:
            name = feast_private.redis_view_name(view.view, config)
            hashed = [feast_private.redis_field_hash(f"{name}:{f}") for f in view.features]
            self.fields.append([*hashed, f"_ts:{name}".encode()])
        # Views keyed alike read the same hash: one HMGET per distinct entity asks for all
        # their fields (Feast sends one per view; the fields' values are the same).
        grouped: dict[tuple[Any, ...], list[int]] = {}
        for i, view in enumerate(views):
            grouped.setdefault(view.key_id, []).append(i)
        self._groups = [
            (members, [f for v in members for f in self.fields[v]]) for members in grouped.values()
        ]
        self._client: Any = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[Any] = []
        self._budget: float | None = None

    def _redis(self) -> Any:
        """A client as Feast's ``_get_client`` makes one (redis-py's pool is thread-safe)."""
        if self._client is None:
            import redis

            with self._lock:
                if self._client is None:
                    nodes, params = feast_private.parse_redis_connection_string(
                        self.settings.connection_string
                    )
                    if self._budget is not None:
                        params = {**params, **_bounded(params, self._budget)}
                    self._client = redis.Redis(
                        host=nodes[0]["host"], port=nodes[0]["port"], **params
                    )
        return self._client

    def _connection(self) -> Any:
        """This thread's connection, made by the client's pool with its settings (it
        connects on first use and again after an error closed it)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            client = self._redis()
            conn = client.connection_pool.make_connection()
            with self._lock:
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    def read(self, entity_rows: Sequence[dict[str, Any]]) -> dict[str, Triple]:
        """Each view feature's values, statuses and event times for ``entity_rows``."""
        keyed = keys_of(self.views, entity_rows)
        commands = [
            ("HMGET", key + self.project, *fields)
            for members, fields in self._groups
            for key in keyed[members[0]][0]
        ]
        conn = self._connection()
        try:
            # Every command sent at once, then every reply read: a pipeline's one round trip.
            conn.send_packed_command(conn.pack_commands(commands))
            replies = [conn.read_response() for _ in commands]
        except BaseException:
            conn.disconnect()  # replies may be left unread: the next read reconnects
            raise
        out: dict[str, Triple] = {}
        offset = 0
        for members, _ in self._groups:
            keys, index = keyed[members[0]]
            held = replies[offset : offset + len(keys)]
            offset += len(keys)
            start = 0
            for v in members:
                view, end = self.views[v], start + len(self.fields[v])
                found = []
                for reply in held:
                    values = reply[start:end]
                    stamp = event_us(values[-1])
                    found.append((stamp, dict(zip(view.features, values, strict=False))))
                out.update(view.columns(found, index))
                start = end
        return out

    def bound_reads(self, seconds: float) -> bool:
        """Yes: this reader's client gives up a read after ``seconds``. A read is one
        pipelined round trip on a pooled connection: half the budget to connect (when
        a new connection is needed), half to wait for the reply, and no retries (redis-py
        retries a failed command three times by default, which would multiply the wait);
        a shorter timeout from Feast's ``connection_string`` is kept. So a caller with a
        budget reads on its own thread, with no hand-off to another."""
        self._budget = seconds
        self.close()  # the next read makes a client with these timeouts
        return True

    def close(self) -> None:
        """Close this reader's connections and client (a later read opens others)."""
        with self._lock:
            connections, self._connections = self._connections, []
            self._local = threading.local()
            client, self._client = self._client, None
        for conn in connections:
            conn.disconnect()
        if client is not None:
            client.close()


def _bounded(params: dict[str, Any], budget: float) -> dict[str, Any]:
    """redis-py settings that bound one read to ``budget`` seconds (see bound_reads)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    half = budget / 2
    out: dict[str, Any] = {"retry": Retry(NoBackoff(), 0)}
    for name in ("socket_timeout", "socket_connect_timeout"):
        given = params.get(name)
        out[name] = half if given is None else min(float(given), half)
    return out


#: The seconds ``datetime`` can hold (years 1 to 9999): Feast's conversion fails outside.
_FIRST_SECOND, _LAST_SECOND = -62_135_596_800, 253_402_300_799
_TAG_SECONDS = 0x08  # google.protobuf.Timestamp's field 1 (seconds), a varint


def event_us(raw: bytes | None) -> int:
    """Feast's event time for a stored ``_ts`` field, in µs (0 when there is none)."""
    if not raw:
        return 0
    if raw[0] == _TAG_SECONDS:
        # Whole seconds only (no nanos field, as parity's writer and Feast's store the
        # usual times): ``seconds + 0 / 1e9`` is exact as a float, so Feast's
        # ``fromtimestamp`` gives the seconds themselves; no protobuf object, no datetime.
        number = varint_after_tag(raw)
        if number is not None:
            seconds = number - (1 << 64) if number >> 63 else number
            if _FIRST_SECOND <= seconds <= _LAST_SECOND:
                return seconds * 1_000_000
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp.FromString(raw)
    moment = _dt.datetime.fromtimestamp(ts.seconds + ts.nanos / 1_000_000_000.0, tz=_dt.UTC)
    return (moment - _EPOCH) // _US
