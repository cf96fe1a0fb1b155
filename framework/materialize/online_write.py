"""Writing feature rows into Feast's online stores, in Feast's own layout, in bulk.

``parity materialize`` writes exactly the rows and keys Feast's
``online_write_batch`` would write, so Feast's ``get_online_features`` (and
parity's server, which reads through it) cannot tell the difference — but a
whole batch at a time instead of one entity at a time:

SQLite (:class:`SqliteWriter`)
    Feast's table per view (``<project>_<view>``: entity key, feature name,
    value, value_text, event_ts, created_ts) and Feast's upsert statement, run
    as multi-row ``INSERT ... ON CONFLICT`` statements, one transaction per
    batch, rows in primary-key order (inserting in key order keeps SQLite's
    B-trees appending instead of splitting pages: ~3x faster on a fresh table).
    Like Feast's, the upsert overwrites whatever the row held.
    Journal: when another connection has the store open (a running server), the
    batches go through SQLite's write-ahead log, so readers never wait for a
    commit. When nothing else has it open, they go through a rollback journal,
    as Feast's own writes do: every page is written once instead of twice (log,
    then checkpoint), ~25 % faster for a large load; a reader that opens the
    store meanwhile waits while a batch commits. Either way the store is left in
    WAL mode, so the next run finds a running server and keeps out of its way.
    (SQLite tells who has a WAL-mode store open, not who has a rollback-journal
    one: a store still as Feast created it, before parity's first run, is
    written with its rollback journal, as Feast's own materialize writes it.)

Redis (:class:`RedisWriter`)
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

import contextlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from framework import feast_private
from framework.errors import FeatureStoreError
from framework.materialize.online_encoding import sqlite_seconds, timestamp_protos

STATE_TABLE = "parity_materialization"


@dataclass
class Batch:
    """One batch of a view, encoded: everything a writer needs, column by column.

    ``values`` maps each feature (sorted by name) to serialized ``feast.types.Value``
    bytes; ``texts`` to SQLite's ``value_text`` column (Python values or None).
    """

    keys: pa.Array  # serialize_entity_key bytes
    values: dict[str, pa.Array]
    texts: dict[str, list[Any]]
    event_us: np.ndarray
    created_us: np.ndarray | None

    @property
    def rows(self) -> int:
        return len(self.keys)


@dataclass
class Written:
    """What one batch did: entities written, and entities left as they were (Redis:
    the stored value was as new or newer)."""

    written: int
    skipped: int = 0


@dataclass
class ViewTarget:
    """A feature view as a writer addresses it."""

    view: Any  # feast FeatureView
    features: list[str] = field(default_factory=list)  # sorted


class OnlineWriter:
    """Base class: bulk writes of :class:`Batch` es plus parity's per-view state."""

    kind = ""
    #: Whether batches should arrive in serialized-key order (SQLite: yes).
    wants_key_order = False
    #: Whether batches need SQLite's ``value_text`` column.
    wants_texts = False
    #: The repository's ``entity_key_serialization_version`` (keys are written in it).
    key_version = 3

    def check(self, targets: list[ViewTarget]) -> None:
        """Fail before anything is written when a view cannot be written."""

    def prepare(self, target: ViewTarget, batch: Batch) -> Any:
        """Turn a batch into what :meth:`write` sends (runs ahead, on the producer side)."""
        raise NotImplementedError

    def write(self, target: ViewTarget, prepared: Any) -> Written:
        raise NotImplementedError

    def flush(self) -> None:
        """Return once every batch written so far is stored (raise if one was refused)."""

    def read_state(self) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def write_state(self, view: str, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""

    def describe(self) -> str:
        return self.kind


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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


# ----------------------------------------------------------------------- SQLite


class SqliteWriter(OnlineWriter):
    """Feast's SQLite online store, bulk-written (see the module docstring)."""

    kind = "sqlite"
    wants_key_order = True
    wants_texts = True

    def __init__(self, store: Any) -> None:
        self.config = store.config
        self.project = store.config.project
        self.key_version = int(store.config.entity_key_serialization_version)
        self.path = Path(feast_private.sqlite_db_path(store.config)).resolve()
        self._con: sqlite3.Connection | None = None
        self._statements: dict[tuple[str, int, bool, int], str] = {}
        #: The journal the batches go through ("wal", or a rollback journal: "delete"...),
        #: chosen by :meth:`check`.
        self.journal = ""

    def describe(self) -> str:
        if self.journal == "wal":
            return f"sqlite {self.path} (write-ahead log: the store is open elsewhere)"
        if self.journal:
            return f"sqlite {self.path} (rollback journal: nothing else has the store open)"
        return f"sqlite {self.path}"

    @property
    def con(self) -> sqlite3.Connection:
        if self._con is None:
            if not self.path.exists():
                raise FeatureStoreError(
                    f"The SQLite online store {self.path} does not exist (run parity apply)."
                )
            try:
                con = sqlite3.connect(
                    self.path, timeout=60, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as exc:
                raise FeatureStoreError(
                    f"Cannot open the SQLite online store {self.path}: {_one_line(exc)}"
                ) from exc
            self._con = con
        return self._con

    def table(self, target: ViewTarget) -> str:
        from feast.infra.online_stores.helpers import compute_table_id

        versioning = self.config.registry.enable_online_feature_view_versioning
        return str(compute_table_id(self.project, target.view, versioning))

    def check(self, targets: list[ViewTarget]) -> None:
        try:
            self.journal = self._choose_journal()
            # NORMAL sync keeps every committed batch across a killed process.
            self.con.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise FeatureStoreError(
                f"Cannot write to the SQLite online store {self.path}: {_one_line(exc)}"
            ) from exc
        existing = {
            row[0] for row in self.con.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        for target in targets:
            name = self.table(target)
            if name not in existing:
                raise FeatureStoreError(
                    f"The SQLite online store {self.path} has no table {name!r} for feature "
                    f"view {target.view.name!r} (run parity apply)."
                )

    def _choose_journal(self) -> str:
        """WAL if another connection has the store open, else a rollback journal (see
        the module docstring). SQLite itself tells: leaving WAL mode needs the only
        connection to the database, and fails at once (busy timeout 0) otherwise."""
        (mode,) = self.con.execute("PRAGMA journal_mode").fetchone()
        if mode != "wal":
            return str(mode)  # a rollback journal already (Feast creates the store so)
        self.con.execute("PRAGMA busy_timeout = 0")
        try:
            (mode,) = self.con.execute("PRAGMA journal_mode = DELETE").fetchone()
        except sqlite3.OperationalError:  # "database is locked": a reader has it open
            mode = "wal"
        finally:
            self.con.execute("PRAGMA busy_timeout = 60000")
        return str(mode)

    #: Feast's columns when neither vector search nor value_num is on (other set-ups
    #: go to Feast's own materialize).
    COLUMNS = ("entity_key", "feature_name", "value", "value_text", "event_ts", "created_ts")
    #: Rows per INSERT statement (SQLite's variable limit permitting).
    ROWS_PER_STATEMENT = 500

    def _statement(self, table: str, features: list[str], created: bool, entities: int) -> str:
        """Feast's upsert for ``entities`` entities: one row per (entity, feature), in
        (key, feature name) order. Each entity's key and times are bound once and feature
        names are literals, which halves the values bound (and the work binding them)."""
        cached = self._statements.get((table, len(features), created, entities))
        if cached is not None:
            return cached
        per = 2 + int(created) + 2 * len(features)
        rows = []
        for e in range(entities):
            base = e * per
            key, ts = f"?{base + 1}", f"?{base + 2}"
            made = f"?{base + 3}" if created else "NULL"
            first = base + 3 + int(created)
            for j, name in enumerate(features):
                literal = "'" + name.replace("'", "''") + "'"
                value, text = f"?{first + 2 * j}", f"?{first + 2 * j + 1}"
                rows.append(f"({key}, {literal}, {value}, {text}, {ts}, {made})")
        update = ", ".join(
            f"{c} = excluded.{c}" for c in self.COLUMNS if c not in ("entity_key", "feature_name")
        )
        cached = (
            f"INSERT INTO {_quote(table)} ({', '.join(self.COLUMNS)}) VALUES "
            + ", ".join(rows)
            + f" ON CONFLICT(entity_key, feature_name) DO UPDATE SET {update};"
        )
        self._statements[(table, len(features), created, entities)] = cached
        return cached

    def prepare(self, target: ViewTarget, batch: Batch) -> Any:
        """One flat parameter list: per entity its key, times, then value and text of each
        feature (sorted by name)."""
        n, features = batch.rows, target.features
        created = batch.created_us is not None
        per = 2 + int(created) + 2 * len(features)
        flat: list[Any] = [None] * (n * per)
        flat[0::per] = batch.keys.to_pylist()
        flat[1::per] = sqlite_seconds(batch.event_us).tolist()
        if batch.created_us is not None:
            flat[2::per] = sqlite_seconds(batch.created_us).tolist()
        first = 2 + int(created)
        for j, name in enumerate(features):
            flat[first + 2 * j :: per] = batch.values[name].to_pylist()
            flat[first + 2 * j + 1 :: per] = batch.texts[name]
        return self.table(target), created, per, flat

    def write(self, target: ViewTarget, prepared: Any) -> Written:
        table, created, per, flat = prepared
        features = target.features
        entities = len(flat) // per
        limit = self.con.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        size = max(1, min(self.ROWS_PER_STATEMENT // max(1, len(features)), limit // per))
        full = entities // size * size
        step = size * per
        try:
            self.con.execute("BEGIN IMMEDIATE")
            try:
                # ?NNN placeholders are named parameters to Python's sqlite3: bound from
                # a mapping ("1" -> the first value), as 3.12 asks (a sequence is
                # deprecated there, refused from 3.14).
                if full:
                    names = _NAMES[:step] if step <= len(_NAMES) else _names(step)
                    self.con.executemany(
                        self._statement(table, features, created, size),
                        (
                            dict(zip(names, flat[i : i + step], strict=True))
                            for i in range(0, full * per, step)
                        ),
                    )
                if entities > full:
                    rest = flat[full * per :]
                    self.con.execute(
                        self._statement(table, features, created, entities - full),
                        dict(zip(_names(len(rest)), rest, strict=True)),
                    )
                self.con.execute("COMMIT")
            except BaseException:
                if self.con.in_transaction:
                    self.con.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise FeatureStoreError(
                f"Writing feature view {target.view.name!r} to {self.path} failed: {_one_line(exc)}"
            ) from exc
        return Written(entities)

    def _ensure_state_table(self) -> None:
        self.con.execute(
            f"CREATE TABLE IF NOT EXISTS {STATE_TABLE} "
            "(project TEXT, view TEXT, state TEXT, PRIMARY KEY (project, view))"
        )

    def read_state(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            rows = self.con.execute(
                f"SELECT view, state FROM {STATE_TABLE} WHERE project = ?", [self.project]
            ).fetchall()
        except sqlite3.OperationalError:  # no state table yet: nothing materialised by parity
            return {}
        return {view: json.loads(state) for view, state in rows}

    def write_state(self, view: str, state: dict[str, Any]) -> None:
        self._ensure_state_table()
        self.con.execute(
            f"INSERT INTO {STATE_TABLE} (project, view, state) VALUES (?, ?, ?) "
            "ON CONFLICT (project, view) DO UPDATE SET state = excluded.state",
            [self.project, view, json.dumps(state, sort_keys=True)],
        )

    def close(self) -> None:
        if self._con is not None:
            if self.journal and self.journal != "wal":
                # Leave the store in WAL mode: the next run then finds a running server
                # and keeps out of its way; readers never wait for its commits.
                with contextlib.suppress(sqlite3.Error):
                    self._con.execute("PRAGMA journal_mode = WAL")
            self._con.close()
            self._con = None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ------------------------------------------------------------------------ Redis


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
                    f"unreachable: {_one_line(exc)}"
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
        return FeatureStoreError(f"Writing to Redis failed: {_one_line(exc)}")

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


def _names(n: int) -> list[str]:
    """The names of numbered parameters ``?1`` .. ``?n`` as Python's sqlite3 looks them up."""
    return [str(i) for i in range(1, n + 1)]


_NAMES = _names(32_766)  # SQLite's default SQLITE_MAX_VARIABLE_NUMBER
