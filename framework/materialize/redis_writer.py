"""Feast's Redis online store, bulk-written.

One hash per entity key (``serialize_entity_key`` + project), fields
``mmh3("<view>:<feature>")`` and ``_ts:<view>``. Like Feast, a batch first
reads the stored ``_ts`` of its keys and writes only entities whose new event
time is later (``skip_dedup`` skips the read, as in Feast). The commands are
packed into the Redis protocol (RESP) by Arrow string kernels, a batch per
send, over a connection from redis-py's pool (which handles the address,
AUTH, database and TLS); replies are parsed by hiredis, redis-py's own C
parser. Hand-packing because redis-py's pipeline packs each argument in
Python (~5 us per HSET) and reads each reply through ~1.3 us of Python: that
alone would cap a write near Feast's speed. One batch's writes are read back
while the next batch is sent, so Redis is never idle waiting for the client.

Parity's per-view state lives in hash ``parity:materialization:<project>``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from framework import feast_private
from framework.errors import FeatureStoreError
from framework.materialize.online_encoding import timestamp_protos
from framework.materialize.writer import Batch, OnlineWriter, ViewTarget, Written, one_line


def _bulk(value: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _resp(parts: list[Any]) -> pa.Array:
    """One RESP command per row: ``parts`` are constant bytes or per-row binary arrays,
    each array element becoming a bulk string (``$<length>\\r\\n<bytes>\\r\\n``)."""
    pieces: list[Any] = []
    constant = b""
    for part in parts:
        if isinstance(part, bytes):
            constant += part
            continue
        lengths = pc.cast(pc.binary_length(part), pa.string()).cast(pa.binary())
        pieces += [pa.scalar(constant + b"$", pa.binary()), lengths]
        pieces += [pa.scalar(b"\r\n", pa.binary()), part]
        constant = b"\r\n"
    pieces.append(pa.scalar(constant, pa.binary()))
    return pc.binary_join_element_wise(*pieces, b"")


def _payload(commands: pa.Array) -> memoryview:
    """The bytes of all commands back to back (zero-copy: the array's data buffer)."""
    commands = commands.cast(pa.binary())
    offsets = np.frombuffer(commands.buffers()[1], np.int32, len(commands) + 1, commands.offset * 4)
    data = commands.buffers()[2]
    return memoryview(data)[int(offsets[0]) : int(offsets[-1])]


class RedisWriter(OnlineWriter):
    """Feast's Redis online store, bulk-written (see the module docstring)."""

    kind = "redis"

    def __init__(self, store: Any) -> None:
        self.config = store.config
        self.project = store.config.project
        self.key_version = int(store.config.entity_key_serialization_version)
        self.settings = store.config.online_store
        self._client: Any = None
        self._conn: Any = None
        self._reader: Any = None
        self._buffer = bytearray(1 << 20)
        self._pending = 0  # replies to writes not read yet

    def describe(self) -> str:
        return f"redis {self.settings.connection_string.split(',')[0]}"

    def _connection(self) -> Any:
        if self._conn is None:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry

            nodes, params = feast_private.parse_redis_connection_string(
                self.settings.connection_string
            )
            params.setdefault("socket_connect_timeout", 10)
            # redis-py retries a refused connection for ~10 s by default; a batch job
            # should say at once that the store is unreachable.
            params.setdefault("retry", Retry(ExponentialBackoff(cap=0.5, base=0.1), 2))
            client = redis.Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **params)
            try:
                client.ping()
                conn = client.connection_pool.get_connection()
                conn.connect()  # type: ignore[no-untyped-call]
            except redis.RedisError as exc:
                client.close()
                raise FeatureStoreError(
                    f"The Redis online store at {self.describe().split(' ', 1)[1]} is "
                    f"unreachable: {one_line(exc)}"
                ) from exc
            import hiredis

            self._client, self._conn, self._reader = client, conn, hiredis.Reader()
        return self._conn

    def check(self, targets: list[ViewTarget]) -> None:
        self._connection()

    def _names(self, target: ViewTarget) -> tuple[bytes, list[bytes]]:
        name = feast_private.redis_view_name(target.view, self.config)
        return f"_ts:{name}".encode(), [
            feast_private.redis_field_hash(f"{name}:{f}") for f in target.features
        ]

    def prepare(self, target: ViewTarget, batch: Batch) -> Any:
        keys = pc.binary_join_element_wise(
            batch.keys, pa.scalar(self.project.encode(), pa.binary()), b""
        )
        return keys, batch

    def _fail(self, exc: BaseException) -> FeatureStoreError:
        if self._conn is not None:
            self._conn.disconnect()
        self.close()
        self._pending = 0
        return FeatureStoreError(f"Writing to Redis failed: {one_line(exc)}")

    def _send(self, commands: pa.Array) -> None:
        import redis

        try:
            self._connection()._sock.sendall(_payload(commands))  # redis-py's connected socket
        except (OSError, redis.RedisError) as exc:
            raise self._fail(exc) from exc

    def _read(self, n: int) -> list[Any]:
        """The next ``n`` replies on the connection.

        Parsed by hiredis (redis-py's own C parser) straight from the socket:
        ``Connection.read_response`` costs ~1.3 us of Python per reply, as much as
        Redis spends executing an HSET.
        """
        import hiredis
        import redis

        sock = self._connection()._sock
        replies: list[Any] = []
        try:
            while len(replies) < n:
                reply = self._reader.gets()
                if reply is not False:
                    replies.append(reply)
                    continue
                received = sock.recv_into(self._buffer)
                if not received:
                    raise redis.ConnectionError("Redis closed the connection")
                self._reader.feed(self._buffer, 0, received)
        except (OSError, redis.RedisError, hiredis.ProtocolError) as exc:
            raise self._fail(exc) from exc
        errors = [r for r in replies if isinstance(r, hiredis.ReplyError)]
        if errors:
            raise FeatureStoreError(
                f"Redis refused {len(errors)} of {len(replies)} commands: {errors[0]}"
            )
        return replies

    def flush(self) -> None:
        """Wait for the replies to the writes sent so far; raise if Redis refused any."""
        pending, self._pending = self._pending, 0
        self._read(pending)

    def write(self, target: ViewTarget, prepared: Any) -> Written:
        """Read the batch's stored times, then send its writes without waiting for the
        replies: they are read at the next batch (or :meth:`flush`), so Redis executes
        one batch's writes while the next one is prepared."""
        keys, batch = prepared
        ts_field, fields = self._names(target)
        stamps = timestamp_protos(batch.event_us)
        newer = np.ones(batch.rows, bool)
        if not self.settings.skip_dedup:
            self._send(_resp([b"*3\r\n$4\r\nHGET\r\n", keys, _bulk(ts_field)]))
            self.flush()  # the previous batch's writes come first on the connection
            newer = _is_newer(batch.event_us, stamps, self._read(batch.rows))
        chosen = pa.array(newer)
        if not newer.all():
            keys, stamps = keys.filter(chosen), stamps.filter(chosen)
        written = int(newer.sum())
        if written:
            parts: list[Any] = [b"*%d\r\n$4\r\nHSET\r\n" % (4 + 2 * len(fields)), keys]
            parts += [_bulk(ts_field), stamps]
            for feature, field_key in zip(target.features, fields, strict=True):
                values = batch.values[feature]
                parts += [_bulk(field_key), values if newer.all() else values.filter(chosen)]
            self._send(_resp(parts))
            self._pending += written
            if self.settings.key_ttl_seconds:
                ttl = str(int(self.settings.key_ttl_seconds)).encode()
                self._send(_resp([b"*3\r\n$6\r\nEXPIRE\r\n", keys, _bulk(ttl)]))
                self._pending += written
        return Written(written, batch.rows - written)

    def _state_key(self) -> str:
        return f"parity:materialization:{self.project}"

    def read_state(self) -> dict[str, dict[str, Any]]:
        self._connection()
        raw = self._client.hgetall(self._state_key())
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def write_state(self, view: str, state: dict[str, Any]) -> None:
        self._connection()
        self._client.hset(self._state_key(), view, json.dumps(state, sort_keys=True))

    def close(self) -> None:
        if self._client is not None:
            if self._conn is not None:
                self._client.connection_pool.release(self._conn)
            self._client.close()
            self._conn = self._client = None


def _is_newer(event_us: np.ndarray, stamps: pa.Array, stored: list[bytes | None]) -> np.ndarray:
    """Feast's rule: write unless the stored ``_ts`` is at least as new (a zero stored
    time counts as none)."""
    from google.protobuf.timestamp_pb2 import Timestamp

    old = pa.array(stored, pa.binary())
    newer = np.asarray(old.is_null())
    same = np.asarray(pc.fill_null(pc.equal(old, stamps), False))
    for i in np.flatnonzero(~newer & ~same):  # only stored times that differ: parse them
        raw = stored[i]
        assert raw is not None
        ts = Timestamp.FromString(raw)
        old_ns = ts.seconds * 1_000_000_000 + ts.nanos
        newer[i] = old_ns == 0 or int(event_us[i]) * 1_000 > old_ns
    return newer
