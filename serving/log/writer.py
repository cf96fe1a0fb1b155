"""The prediction log: every prediction the server answers, written off the hot path.

The files' layout under the log root (hive partitions, one schema per file) is
:mod:`framework.logs.layout`'s; :mod:`framework.logs.reader` reads them back.

The request thread hands over prediction rows with :meth:`PredictionLog.append`
(:class:`~serving.log.rows.LogRows`, Python values made into a table off the
request path, or a ``pyarrow.Table``); one background thread batches rows of the
same model and identical schema and writes them, split by their ``__log_date``
column. Rows are written exactly as given: the log adds no column.

Guarantees:

* Whole files only: a file is written under a hidden temporary name in its
  folder, fsynced, then renamed, so a reader (or a crash) sees a whole file or
  none. :func:`framework.logs.reader.read_log` reads only whole files.
* No silent drop: rows accepted by ``append`` stay in memory until written.
  A failed write (disk full, read-only folder) is counted, leaves no visible
  file and is retried with backoff, so no row is written twice.
* Killed processes lose nothing accepted: ``append`` also writes the rows to a
  journal (:mod:`serving.log.journal`) before it returns; a new log on the same
  root writes the rows of a dead process's journal that no part holds yet,
  exactly once. If the journal itself cannot be written (disk full), rows are
  still accepted into memory (counted in ``journal_errors``): they survive the
  outage but not a crash during it.
* Bounded memory: at most ``max_pending_rows`` rows wait to be written. When
  full, ``append`` waits ``put_timeout`` seconds for room, then raises
  :class:`LogFull` and the rows are not accepted (the caller answers with an error).
* :meth:`PredictionLog.flush` returns once everything appended before it is on
  disk; :meth:`PredictionLog.close` (what the server calls on SIGTERM) flushes and
  stops the writer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from framework.errors import DataError, ParityError
from framework.logs import layout
from framework.logs.rows import LogRows
from serving.log import journal as log_journal
from serving.log.journal import JOURNAL_DIR, Journal

log = logging.getLogger(__name__)

__all__ = [
    "LogClosed",
    "LogFull",
    "PredictionLog",
]

DATE = layout.LOG_DATE
_BACKOFF_MIN, _BACKOFF_MAX = 0.05, 2.0
_IDLE_WAKE = 0.5  # seconds; the writer notices an exited main thread this often
#: seq, rows, journal segment (None: not journaled)
_Chunk = tuple[int, pa.Table | LogRows, str | None]
_Batch = tuple[tuple[str, bytes], int, list[_Chunk]]  # (model, schema), first seq, chunks


class LogFull(ParityError):
    """The prediction log is behind: the rows were not accepted."""


class LogClosed(ParityError):
    """``append`` on a prediction log that was closed."""


@dataclass
class _Buffer:
    """Tables of one (model, schema) waiting to be written; exists only while non-empty."""

    chunks: deque[_Chunk] = field(default_factory=deque)
    rows: int = 0
    since: float = 0.0  # monotonic time the oldest chunk arrived


class PredictionLog:
    """Batches prediction rows in memory and writes them as Parquet under ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        batch_rows: int = 5_000,
        flush_interval: float = 1.0,
        max_pending_rows: int = 200_000,
        put_timeout: float = 1.0,
        on_write: Callable[[int, float], None] | None = None,
        journal: bool = True,
        journal_fsync: bool = False,
    ) -> None:
        if batch_rows < 1 or max_pending_rows < 1 or flush_interval <= 0 or put_timeout < 0:
            raise ValueError("batch_rows, max_pending_rows and flush_interval must be positive")
        self.root = Path(root)
        self.batch_rows, self.flush_interval = batch_rows, flush_interval
        self.max_pending_rows, self.put_timeout = max_pending_rows, put_timeout
        self._on_write = on_write
        # Batching and backpressure are written by hand: pyarrow's dataset writer
        # has no hook to bound what waits in memory, to block the producer, or to
        # fsync and rename each file, so it can neither push back nor promise
        # whole files. Everything below the lock is bookkeeping; I/O runs outside it.
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits here
        self._room = threading.Condition(self._lock)  # appenders and flushers wait here
        self._buffers: dict[tuple[str, bytes], _Buffer] = {}
        self._seq = 0  # number of accepted appends
        self._inflight: int | None = None  # lowest seq of the batch being written
        self._flush_upto = 0
        self._closing = self._abandon = False
        self._retry_at, self._backoff = 0.0, _BACKOFF_MIN
        self._pending = self._written_rows = self._written_files = 0
        self._write_errors = self._backpressure_waits = self._rejected_rows = 0
        self._last_error: str | None = None
        self._known_dirs: set[Path] = set()
        self._checked: set[tuple[str, bytes]] = set()  # (model, LogRows.key) known good
        self._journal = Journal(self.root / JOURNAL_DIR, fsync=journal_fsync) if journal else None
        self.recovered_rows = self._recover() if journal else 0
        # Not a daemon: rows still pending when the interpreter exits get written.
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=False)
        self._thread.start()

    # -- producer side -------------------------------------------------------

    def append(self, table: pa.Table | LogRows, *, model: str) -> None:
        """Accept ``table``'s rows for ``model`` or raise :class:`LogFull` (rows not
        accepted). :class:`LogRows` (what the server appends) become a table on the
        writer's thread, many requests' rows at a time."""
        key = (
            model,
            table.key if isinstance(table, LogRows) else table.schema.serialize().to_pybytes(),
        )
        if key not in self._checked:
            _check_layout(model, table.schema)
            if isinstance(table, LogRows):  # the server's: a few schemas, checked once each
                self._checked.add(key)
        if _has_null_dates(table):
            raise DataError(f"A prediction log table has null values in {DATE!r}")
        rows = table.num_rows
        if rows > self.max_pending_rows:
            raise DataError(f"{rows} rows exceed max_pending_rows={self.max_pending_rows}")
        if rows == 0:
            return
        body = log_journal.encode(model, table) if self._journal is not None else None
        with self._lock:
            self._check_open()
            if self._pending + rows > self.max_pending_rows:
                self._backpressure_waits += 1
                deadline = time.monotonic() + self.put_timeout
                while self._pending + rows > self.max_pending_rows:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self._rejected_rows += rows
                        raise LogFull(
                            f"The prediction log is behind: {self._pending} rows pending "
                            f"(max {self.max_pending_rows}), {rows} more rejected after "
                            f"{self.put_timeout}s; writing to {self.root}"
                            + (f" (last error: {self._last_error})" if self._last_error else "")
                        )
                    self._room.wait(left)
                    self._check_open()
            self._seq += 1
            segment = self._journaled(self._seq, body)
            buffer = self._buffers.setdefault(key, _Buffer(since=time.monotonic()))
            buffer.chunks.append((self._seq, table, segment))
            buffer.rows += rows
            self._pending += rows
            if buffer.rows >= self.batch_rows:
                self._work.notify()

    def _journaled(self, seq: int, body: tuple[bytes, int] | None) -> str | None:
        """Write the rows to the journal (lock held); None when they could not be."""
        if self._journal is None or body is None:
            return None
        try:
            return self._journal.append(seq, *body)
        except OSError as exc:
            if self._journal.errors == 1 or self._journal.errors % 1000 == 0:
                log.warning(
                    "Prediction log journal not written (%d times; rows kept in memory "
                    "only): %s", self._journal.errors, exc,
                )  # fmt: skip
            return None

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every row appended before the call is on disk; False on timeout."""
        with self._lock:
            target = self._seq
            self._flush_upto = max(self._flush_upto, target)
            self._work.notify()
            return self._room.wait_for(lambda: self._oldest() > target, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Write everything, stop the writer; False if ``timeout`` ran out first.

        After a timeout the writer stops after its current attempt; the rows it
        could not write are reported (``pending_rows``, an error log line). Safe in
        a SIGTERM handler as long as the main thread itself does not append (the
        server appends from its gRPC worker threads).
        """
        with self._lock:
            self._closing = True
            self._work.notify()
            self._room.notify_all()  # appenders waiting for room give up
        self._thread.join(timeout)
        if not self._thread.is_alive():
            if self._journal is not None:
                # Rows the writer could not write stay journaled for the next start.
                self._journal.close(everything_written=self._pending == 0)
            return True
        with self._lock:
            self._abandon = True
            self._work.notify()
            log.error(
                "Prediction log closed with %d rows not written to %s (last error: %s)",
                self._pending, self.root, self._last_error,
            )  # fmt: skip
        return False

    # -- observability (a single attribute read needs no lock) ----------------

    @property
    def pending_rows(self) -> int:
        """Rows accepted and not yet written (memory in use; what backpressure counts)."""
        return self._pending

    @property
    def written_rows(self) -> int:
        return self._written_rows

    @property
    def written_files(self) -> int:
        return self._written_files

    @property
    def write_errors(self) -> int:
        """Failed file writes; each one's rows were kept and retried."""
        return self._write_errors

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def journal_errors(self) -> int:
        """Appends whose rows could not be journaled (accepted into memory only)."""
        return self._journal.errors if self._journal is not None else 0

    @property
    def backpressure_waits(self) -> int:
        """Appends that found the log full and waited for room."""
        return self._backpressure_waits

    @property
    def rejected_rows(self) -> int:
        """Rows refused with :class:`LogFull`."""
        return self._rejected_rows

    # -- writer side (the lock is held in the underscore helpers unless noted) --

    def _check_open(self) -> None:
        if self._closing:
            raise LogClosed(f"The prediction log writing to {self.root} is closed")

    def _oldest(self) -> int:
        """The lowest seq not yet on disk (past the last one if everything is)."""
        seqs = [b.chunks[0][0] for b in self._buffers.values()]
        if self._inflight is not None:
            seqs.append(self._inflight)
        return min(seqs, default=self._seq + 1)

    def _stopping(self) -> bool:
        return self._closing or not threading.main_thread().is_alive()

    def _next_batch(self) -> _Batch | None:
        """Wait for a batch that is due and take it; None when the writer should stop."""
        while True:
            if self._abandon:
                return None
            now, stopping = time.monotonic(), self._stopping()
            if not self._buffers and stopping:
                return None
            due = [
                (key, b)
                for key, b in self._buffers.items()
                if stopping
                or b.rows >= self.batch_rows
                or now - b.since >= self.flush_interval
                or b.chunks[0][0] <= self._flush_upto
            ]
            if due and now >= self._retry_at:  # oldest first, so no buffer starves
                return self._take(*min(due, key=lambda kb: kb[1].chunks[0][0]))
            wake = [b.since + self.flush_interval for b in self._buffers.values()]
            until = max(self._retry_at, min(wake, default=now + _IDLE_WAKE))
            self._work.wait(min(max(until - now, 0.001), _IDLE_WAKE))

    def _take(self, key: tuple[str, bytes], buffer: _Buffer) -> _Batch:
        first, chunks, rows = buffer.chunks[0][0], [], 0
        while buffer.chunks and rows < self.batch_rows:
            chunk = buffer.chunks.popleft()
            chunks.append(chunk)
            rows += chunk[1].num_rows
        buffer.rows -= rows
        buffer.since = time.monotonic()
        if not buffer.chunks:
            del self._buffers[key]
        self._inflight = first
        return key, first, chunks

    def _run(self) -> None:
        while True:
            with self._lock:
                batch = self._next_batch()
            if batch is None:
                return
            key, first, chunks = batch
            model = key[0]
            # One chunk per request: the Parquet writer's cost grows with chunks x columns
            # (50 one-row chunks take twice as long as one 50-row chunk).
            table = _as_one_table([chunk[1] for chunk in chunks])
            journaled = _journaled_seqs(chunks)
            dates = pc.unique(table.column(DATE)).to_pylist()
            for i, day in enumerate(dates):  # one file per date; each is its own commit
                part = (
                    table
                    if len(dates) == 1
                    else table.filter(pc.equal(table.column(DATE), pa.scalar(day, pa.date32())))
                )
                start = time.monotonic()
                try:
                    self._write(part, self._folder(model, day), journaled)
                except Exception as exc:  # disk full, read-only, permissions, ...
                    self._failed(key, chunks, dates[i:], exc)
                    break
                seconds = time.monotonic() - start
                with self._lock:
                    self._pending -= part.num_rows
                    self._written_rows += part.num_rows
                    self._written_files += 1
                    self._backoff, self._retry_at = _BACKOFF_MIN, 0.0
                    self._room.notify_all()
                if self._on_write is not None:
                    try:
                        self._on_write(part.num_rows, seconds)
                    except Exception:
                        log.exception("Prediction log on_write callback failed")
            with self._lock:
                self._inflight = None
                if self._journal is not None:
                    self._journal.release(self._oldest())
                self._room.notify_all()

    def _folder(self, model: str, day: Any) -> Path:
        return layout.date_dir(self.root, model, day)

    def _failed(
        self, key: tuple[str, bytes], chunks: list[_Chunk], dates: list[Any], exc: Exception
    ) -> None:
        """Put the unwritten rows back at the front of their buffer and back off (no lock)."""
        wanted = pa.array(dates, pa.date32())
        rest: list[_Chunk] = []
        for seq, rows, segment in chunks:
            table = _as_one_table([rows])
            rest.append(
                (seq, table.filter(pc.is_in(table.column(DATE), value_set=wanted)), segment)
            )
        rest = [chunk for chunk in rest if chunk[1].num_rows]
        with self._lock:
            buffer = self._buffers.setdefault(key, _Buffer())
            buffer.chunks.extendleft(reversed(rest))
            buffer.rows += sum(chunk[1].num_rows for chunk in rest)
            buffer.since = 0.0  # overdue: written again as soon as the backoff allows
            self._write_errors += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX)
        log.warning("Prediction log write failed (rows kept, retrying): %s", exc)

    def _write(self, table: pa.Table, folder: Path, journaled: dict[str, list[int]]) -> None:
        """Write one whole file into ``folder``: temporary name, fsync, rename (no lock).

        The file's metadata names the journal frames whose rows (of this date) it holds."""
        if journaled:
            meta = {**(table.schema.metadata or {})}
            meta[log_journal.META_KEY] = log_journal.part_metadata(journaled)
            table = table.replace_schema_metadata(meta)
        if folder not in self._known_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            for d in (folder.parent, self.root):
                _fsync_dir(d)
            self._known_dirs.add(folder)
        name = layout.part_name(time.time_ns(), uuid.uuid4().hex[:12])
        tmp = folder / layout.temporary_name(name)
        try:
            with open(tmp, "wb") as f:
                pq.write_table(table, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, folder / name)
        except BaseException:
            self._known_dirs.discard(folder)  # it may have been removed
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        # The rows are visible now: a failure from here on must not cause a retry
        # (that would write them twice).
        try:
            _fsync_dir(folder)
        except OSError as exc:
            log.warning("Prediction log could not fsync %s: %s", folder, exc)

    def _recover(self) -> int:
        """Write the rows of dead processes' journals that no part holds; returns how many."""
        recovered = 0
        with log_journal.orphans(self.root / JOURNAL_DIR) as segments:
            for segment in segments:
                done = self._covered(segment)
                groups: dict[tuple[str, bytes, Any], list[tuple[int, pa.Table]]] = {}
                for seq, model, table in log_journal.read_frames(segment):
                    schema = table.schema.serialize().to_pybytes()
                    for day in pc.unique(table.column(DATE)).to_pylist():
                        if (seq, day.isoformat()) in done:
                            continue
                        rows = table.filter(
                            pc.equal(table.column(DATE), pa.scalar(day, pa.date32()))
                        )
                        groups.setdefault((model, schema, day), []).append((seq, rows))
                count = 0
                for (model, _, day), parts in groups.items():
                    rows = pa.concat_tables([t for _, t in parts])
                    self._write(
                        rows, self._folder(model, day), {segment.name: [s for s, _ in parts]}
                    )
                    count += rows.num_rows
                segment.unlink()
                recovered += count
                log.warning(
                    "Prediction log recovered %d rows from %s (a process that stopped "
                    "without writing them)", count, segment,
                )  # fmt: skip
        self._written_rows += recovered
        return recovered

    def _covered(self, segment: Path) -> set[tuple[int, str]]:
        """(seq, date) pairs of ``segment``'s frames already in parts (written after it began)."""
        since = log_journal.created_ns(segment) - 60 * 10**9  # clock-step margin
        done: set[tuple[int, str]] = set()
        for part in self.root.glob(layout.parts_pattern()):
            if layout.written_ns(part) < since:
                continue
            metadata = pq.read_schema(part).metadata
            day = layout.date_of(part.parent)
            done.update((seq, day) for seq in log_journal.covered(metadata, segment.name))
        return done


def _as_one_table(parts: list[pa.Table | LogRows]) -> pa.Table:
    """The parts' rows as one table, in order: consecutive :class:`LogRows` are merged
    and converted together (the per-column cost of a table, paid once per batch)."""
    tables: list[pa.Table] = []
    run: list[LogRows] = []
    for part in parts:
        if isinstance(part, LogRows):
            run.append(part)
            continue
        if run:
            tables.append(LogRows.merge(run).to_table())
            run = []
        tables.append(part)
    if run:
        tables.append(LogRows.merge(run).to_table())
    if len(tables) == 1:
        return tables[0].combine_chunks()
    return pa.concat_tables(tables, promote_options="permissive").combine_chunks()


def _check_layout(model: str, schema: pa.Schema) -> None:
    """A valid model name, a date32 date column, no column named like a partition."""
    layout.check_model_name(model)
    names = set(schema.names)
    if DATE not in names or schema.field(DATE).type != pa.date32():
        raise DataError(f"A prediction log table needs a {DATE!r} column of type date32")
    if clash := [c for c in layout.PARTITIONS if c in names]:
        raise DataError(f"Columns {clash} are reserved for the prediction log's partitions")


def _has_null_dates(rows: pa.Table | LogRows) -> bool:
    if isinstance(rows, LogRows):
        return any(v is None for v in rows.columns[rows.schema.get_field_index(DATE)])
    return bool(rows.column(DATE).null_count)


def _journaled_seqs(chunks: list[_Chunk]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for seq, _, segment in chunks:
        if segment is not None:
            out.setdefault(segment, []).append(seq)
    return out


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
