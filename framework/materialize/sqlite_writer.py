"""Feast's SQLite online store, bulk-written.

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

Parity's per-view state lives in table ``parity_materialization`` (:data:`STATE_TABLE`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from framework import feast_private
from framework.errors import FeatureStoreError
from framework.materialize.online_encoding import sqlite_seconds
from framework.materialize.writer import Batch, OnlineWriter, ViewTarget, Written, one_line

STATE_TABLE = "parity_materialization"


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
                    f"Cannot open the SQLite online store {self.path}: {one_line(exc)}"
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
                f"Cannot write to the SQLite online store {self.path}: {one_line(exc)}"
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
                f"Writing feature view {target.view.name!r} to {self.path} failed: {one_line(exc)}"
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


def _names(n: int) -> list[str]:
    """The names of numbered parameters ``?1`` .. ``?n`` as Python's sqlite3 looks them up."""
    return [str(i) for i in range(1, n + 1)]


_NAMES = _names(32_766)  # SQLite's default SQLITE_MAX_VARIABLE_NUMBER
