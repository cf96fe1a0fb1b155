"""The prediction log's write-ahead journal: accepted rows survive ``kill -9``.

:class:`~serving.log.writer.PredictionLog` keeps rows in memory until a
batch is due. Before ``append`` returns (so before the server answers), the
rows are also appended to a journal segment under ``<log root>/_journal/``:
one ``os.write`` of the rows (:class:`~serving.log.rows.LogRows` in their own
compact form, a table in Arrow's IPC format), framed with its sequence number,
model and a CRC. Once the write returns the bytes are the kernel's, so a killed
process loses nothing; with ``fsync`` each frame is also flushed to
the device (power loss), at the cost of a disk flush per call.

A segment belongs to one process, which holds an exclusive ``flock`` on it
while it lives (the kernel drops it when the process dies, however it dies).
Segments are deleted once every row in them is in a Parquet part. At start,
:func:`orphans` finds segments whose owner is gone (the lock can be taken);
the log writes their rows again, skipping those a part already holds: each part
records, in its schema metadata, the journal frames whose rows it contains.

Written by hand: no library journals Arrow tables with per-frame recovery; the
format is a few lines of ``struct`` and Arrow's own IPC serialisation.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from framework.logs.rows import LogRows

JOURNAL_DIR = "_journal"
META_KEY = b"parity.journal"  # part metadata: {segment name: [[first seq, last seq], ...]}
_MAGIC = b"PLJ1"
_HEAD = struct.Struct("<4sIQIH")  # magic, crc32 of the body, seq, body length, model length
_SUFFIX = ".journal"


def encode(model: str, rows: pa.Table | LogRows) -> tuple[bytes, int]:
    """A frame's body (model name, then the rows: :meth:`LogRows.encode`'s payload, or a
    table as an Arrow IPC stream) and the name's length; done before the log's lock is
    taken."""
    name = model.encode()
    if isinstance(rows, LogRows):
        payload = rows.encode()
        if payload is not None:
            return name + payload, len(name)
        rows = rows.to_table()  # a value marshal does not take: the table, as ever
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    return name + sink.getvalue().to_pybytes(), len(name)


def read_frames(path: Path) -> Iterator[tuple[int, str, pa.Table]]:
    """Every whole frame in a segment, in order; stops at the first torn or corrupt one
    (the tail a killed process was writing when it died, never acknowledged)."""
    data = path.read_bytes()
    at = 0
    while at + _HEAD.size <= len(data):
        magic, crc, seq, length, name_length = _HEAD.unpack_from(data, at)
        body = data[at + _HEAD.size : at + _HEAD.size + length]
        if magic != _MAGIC or len(body) != length or zlib.crc32(body) != crc:
            return
        model = body[:name_length].decode()
        rows = LogRows.decode(body[name_length:])
        if rows is not None:
            table = rows.to_table()
        else:
            with pa.ipc.open_stream(body[name_length:]) as reader:
                table = reader.read_all()
        yield seq, model, table
        at += _HEAD.size + length


@dataclass
class Segment:
    path: Path
    fd: int
    first: int = 0  # lowest seq in the segment; 0 while empty
    last: int = 0
    size: int = 0

    @property
    def name(self) -> str:
        return self.path.name


class Journal:
    """This process's segments of one log's journal (not thread-safe: the log's lock)."""

    def __init__(self, folder: Path, *, fsync: bool = False, segment_bytes: int = 64 << 20):
        self.folder, self.fsync, self.segment_bytes = folder, fsync, segment_bytes
        self.segments: list[Segment] = []  # oldest first; the last one takes appends
        self.errors = 0
        self.last_error: str | None = None

    def append(self, seq: int, body: bytes, name_length: int) -> str:
        """Write one frame; returns its segment's name. On failure (disk full) the
        segment is cut back to its last whole frame and the error is raised."""
        frame = _HEAD.pack(_MAGIC, zlib.crc32(body), seq, len(body), name_length) + body
        try:
            segment = self._current()
            written = os.write(segment.fd, frame)
            if written != len(frame):
                raise OSError(f"short write to {segment.path} ({written} of {len(frame)} bytes)")
            if self.fsync:
                os.fdatasync(segment.fd)
        except OSError as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if self.segments:
                with contextlib.suppress(OSError):
                    os.ftruncate(self.segments[-1].fd, self.segments[-1].size)
            raise
        segment.first = segment.first or seq
        segment.last, segment.size = seq, segment.size + len(frame)
        return segment.name

    def release(self, oldest_unwritten: int) -> None:
        """Delete the segments whose every row is in a part (seq < ``oldest_unwritten``);
        the current one is emptied in place instead."""
        keep: list[Segment] = []
        for i, segment in enumerate(self.segments):
            if segment.size and segment.last >= oldest_unwritten:
                keep.append(segment)
            elif i == len(self.segments) - 1 and segment.size < self.segment_bytes:
                if segment.size:
                    with contextlib.suppress(OSError):
                        os.ftruncate(segment.fd, 0)
                    os.lseek(segment.fd, 0, os.SEEK_SET)
                    segment.first = segment.last = segment.size = 0
                keep.append(segment)
            else:
                _remove(segment)
        self.segments = keep

    def close(self, everything_written: bool) -> None:
        """Release the segments; delete them only if every row is in a part (otherwise
        the next start recovers them)."""
        for segment in self.segments:
            if everything_written:
                _remove(segment)
            else:
                os.close(segment.fd)
        self.segments = []

    def _current(self) -> Segment:
        if not self.segments or self.segments[-1].size >= self.segment_bytes:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            path = path.with_suffix(_SUFFIX)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.segments.append(Segment(path, fd))
        return self.segments[-1]


def _remove(segment: Segment) -> None:
    with contextlib.suppress(OSError):
        segment.path.unlink()
    os.close(segment.fd)


@contextlib.contextmanager
def orphans(folder: Path) -> Iterator[list[Path]]:
    """The segments whose owner process is gone, locked for the caller while it
    recovers them (another process starting at the same time skips them)."""
    held: list[tuple[Path, int]] = []
    try:
        for path in sorted(folder.glob(f"*{_SUFFIX}")) if folder.is_dir() else []:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_ino != os.stat(path).st_ino:  # recovered and removed
                    raise FileNotFoundError(path)
            except OSError:
                os.close(fd)
                continue
            held.append((path, fd))
        yield [path for path, _ in held]
    finally:
        for _, fd in held:
            os.close(fd)


def created_ns(segment: Path) -> int:
    return int(segment.name.split("-", 1)[0])


def part_metadata(frames: dict[str, list[int]]) -> bytes:
    """``{segment: seqs}`` as ``{segment: [[first, last], ...]}`` (runs of seqs)."""
    runs: dict[str, list[list[int]]] = {}
    for segment, seqs in frames.items():
        out: list[list[int]] = []
        for seq in sorted(seqs):
            if out and seq == out[-1][1] + 1:
                out[-1][1] = seq
            else:
                out.append([seq, seq])
        runs[segment] = out
    return json.dumps(runs, separators=(",", ":")).encode()


def covered(metadata: dict[bytes, bytes] | None, segment: str) -> Iterator[int]:
    """The seqs of ``segment`` a part's metadata says it holds."""
    raw = (metadata or {}).get(META_KEY)
    if raw is None:
        return
    for first, last in json.loads(raw).get(segment, []):
        yield from range(first, last + 1)
