"""The prediction log on real files: every accepted row written exactly once, in
hive partitions, durable on flush, bounded with backpressure, surviving write
failures, SIGKILL and SIGTERM."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.errors import DataError
from framework.logs.reader import read_log
from serving.log import journal as log_journal
from serving.log.journal import JOURNAL_DIR, Journal
from serving.log.writer import LogClosed, LogFull, PredictionLog
from tests.support.workspaces import ROOT

MODEL = "fraud_model"
DAY = date(2024, 3, 1)
DAY2 = DAY + timedelta(days=1)
NOW = datetime(2024, 3, 1, 12, tzinfo=UTC)


def rows(ids: list[str], day: date = DAY, version: str = "1", extra: bool = False) -> pa.Table:
    """A table shaped like the server's prediction rows (``extra``: a new model version's)."""
    n = len(ids)
    ts = pa.array([NOW] * n, pa.timestamp("us", tz="UTC"))
    columns = {
        "__request_id": pa.array(ids, pa.string()),
        "__timestamp": ts,
        "__log_timestamp": ts,
        "__log_date": pa.array([day] * n, pa.date32()),
        "model_version": pa.array([version] * n, pa.string()),
        "user_id": pa.array(range(n), pa.int64()),
        "score": pa.array([0.5] * n, pa.float64()),
        "amount_mean_7d": pa.array([12.5] * n, pa.float64()),
        "amount_mean_7d__status": pa.array(["PRESENT"] * n, pa.string()),
    }
    if extra:
        columns["merchant_risk"] = pa.array([0.25] * n, pa.float64())
    return pa.table(columns)


def ids_of(table: pa.Table) -> list[str]:
    return table.column("__request_id").to_pylist() if table.num_rows else []


def tmp_files(root: Path) -> list[Path]:
    return list(root.rglob("*.tmp")) if root.exists() else []


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` (bounded, generous: a hang fails instead of blocking the run)."""
    deadline = time.monotonic() + 60
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_concurrent_appends_are_written_exactly_once(tmp_path: Path) -> None:
    written: list[int] = []
    log = PredictionLog(
        tmp_path, batch_rows=500, flush_interval=0.02, on_write=lambda n, _s: written.append(n)
    )
    expected: list[str] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(200):
            ids = [f"{t}-{i}-{j}" for j in range(1 + (t * 7 + i) % 20)]
            log.append(rows(ids), model=MODEL)
            with lock:
                expected.extend(ids)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.close()
    got = ids_of(read_log(tmp_path, MODEL))
    assert len(got) == len(set(got)) and sorted(got) == sorted(expected)
    assert log.written_rows == sum(written) == len(expected) and log.pending_rows == 0
    assert log.written_files == len(written) == len(list(tmp_path.rglob("part-*.parquet")))
    assert (log.write_errors, log.rejected_rows, tmp_files(tmp_path)) == (0, 0, [])


@settings(max_examples=25, deadline=None)
@given(
    appends=st.lists(
        st.tuples(st.integers(0, 12), st.integers(0, 2), st.booleans(), st.booleans()),
        max_size=12,
    ),
    batch_rows=st.integers(1, 30),
)
def test_rows_in_equal_rows_out_in_any_batching(
    appends: list[tuple[int, int, bool, bool]], batch_rows: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        log = PredictionLog(root, batch_rows=batch_rows, flush_interval=3600)
        expected: dict[str, tuple[date, bool]] = {}
        for i, (n, day_offset, extra, flush) in enumerate(appends):
            ids = [f"{i}-{j}" for j in range(n)]
            day = DAY + timedelta(days=day_offset)
            log.append(rows(ids, day=day, extra=extra), model=MODEL)
            expected.update({r: (day, extra) for r in ids})
            if flush:
                assert log.flush()
        assert log.close()
        table = read_log(root)
        assert Counter(ids_of(table)) == Counter(expected.keys())
        if "merchant_risk" in table.schema.names:
            has_extra = [x is not None for x in table.column("merchant_risk").to_pylist()]
        else:
            has_extra = [False] * table.num_rows
        days = table.column("date").to_pylist() if table.num_rows else []
        assert list(zip(days, has_extra, strict=True)) == [expected[r] for r in ids_of(table)]
        assert tmp_files(root) == []


def test_partitions_by_model_and_date_one_schema_per_file(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_interval=3600)
    two_days = pa.concat_tables([rows(["a1", "a2"]), rows(["b1"], day=DAY + timedelta(days=1))])
    log.append(two_days, model=MODEL)
    log.append(rows(["c1"]), model="other_model")
    log.append(rows(["d1", "d2"], version="2", extra=True), model=MODEL)
    assert log.close()
    folders = sorted(str(p.parent.relative_to(tmp_path)) for p in tmp_path.rglob("part-*.parquet"))
    assert folders == [
        f"model={MODEL}/date=2024-03-01",
        f"model={MODEL}/date=2024-03-01",  # version 2's schema: a file of its own
        f"model={MODEL}/date=2024-03-02",
        "model=other_model/date=2024-03-01",
    ]
    for path in tmp_path.rglob("part-*.parquet"):
        table = pq.read_table(path, partitioning=None)
        assert table.schema.names == rows(["x"], extra="d1" in ids_of(table)).schema.names
        assert len(set(table.column("model_version").to_pylist())) == 1
    mine = read_log(tmp_path, MODEL)
    got = dict(zip(ids_of(mine), mine.column("merchant_risk").to_pylist(), strict=True))
    assert got == {"a1": None, "a2": None, "b1": None, "d1": 0.25, "d2": 0.25}
    assert set(mine.column("model").to_pylist()) == {MODEL}
    assert dict(zip(ids_of(mine), mine.column("date").to_pylist(), strict=True))["b1"] == date(
        2024, 3, 2
    )
    assert sorted(ids_of(read_log(tmp_path))) == ["a1", "a2", "b1", "c1", "d1", "d2"]
    assert read_log(tmp_path / "nothing").num_rows == 0


def test_flush_makes_rows_durable_without_close(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_interval=3600)
    try:
        assert read_log(tmp_path).num_rows == 0
        log.append(rows(["r1", "r2"]), model=MODEL)
        assert log.flush(timeout=30)
        assert sorted(ids_of(read_log(tmp_path))) == ["r1", "r2"]
        assert log.pending_rows == 0 and tmp_files(tmp_path) == []
        assert log.flush(timeout=30)  # nothing pending: returns at once
    finally:
        assert log.close()


def test_batch_rows_and_interval_trigger_writes(tmp_path: Path) -> None:
    by_size = PredictionLog(tmp_path / "size", batch_rows=5, flush_interval=3600)
    by_size.append(rows([f"s{i}" for i in range(5)]), model=MODEL)
    wait_until(lambda: by_size.written_rows == 5, "a full batch to be written")
    by_time = PredictionLog(tmp_path / "time", batch_rows=10_000, flush_interval=0.01)
    by_time.append(rows(["t1"]), model=MODEL)
    wait_until(lambda: by_time.written_rows == 1, "the flush interval to write")
    assert by_size.close() and by_time.close()


def test_backpressure_rejects_then_writes_everything_once_the_disk_recovers(
    tmp_path: Path,
) -> None:
    # A regular file where a folder should be: mkdir fails, also for root (chmod would not).
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    root = blocker / "log"
    log = PredictionLog(
        root, batch_rows=10, flush_interval=0.01, max_pending_rows=50, put_timeout=0.05
    )
    accepted = [f"ok{i}" for i in range(50)]
    for i in range(0, 50, 10):
        log.append(rows(accepted[i : i + 10]), model=MODEL)
    wait_until(lambda: log.write_errors >= 2, "the writer to fail and retry")
    assert log.last_error and "Error" in log.last_error
    with pytest.raises(LogFull, match=rf"behind: 50 rows pending.*{root}"):
        log.append(rows(["rejected1", "rejected2"]), model=MODEL)
    assert (log.rejected_rows, log.backpressure_waits, log.pending_rows) == (2, 1, 50)
    assert log.flush(timeout=0.05) is False
    blocker.unlink()
    blocker.mkdir()  # the writer creates the rest
    assert log.close(timeout=60)
    assert Counter(ids_of(read_log(root))) == Counter(accepted)
    assert (log.written_rows, log.pending_rows, tmp_files(root)) == (50, 0, [])


def test_a_failure_after_some_dates_are_written_writes_no_row_twice(tmp_path: Path) -> None:
    next_day = DAY + timedelta(days=1)
    blocked = tmp_path / f"model={MODEL}" / f"date={next_day.isoformat()}"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("")  # the second date's folder cannot be created
    log = PredictionLog(tmp_path, flush_interval=0.01)
    log.append(pa.concat_tables([rows(["d1a", "d1b"]), rows(["d2"], day=next_day)]), model=MODEL)
    wait_until(lambda: log.write_errors >= 2 and log.written_rows == 2, "a partial write")
    assert ids_of(read_log(tmp_path)) and log.pending_rows == 1
    blocked.unlink()
    assert log.close(timeout=60)
    assert Counter(ids_of(read_log(tmp_path))) == Counter(["d1a", "d1b", "d2"])


def test_append_after_close_and_invalid_tables_raise(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    with pytest.raises(DataError, match="__log_date"):
        log.append(rows(["x"]).drop_columns(["__log_date"]), model=MODEL)
    with pytest.raises(DataError, match="model name"):
        log.append(rows(["x"]), model="../escape")
    with pytest.raises(DataError, match="reserved"):
        log.append(rows(["x"]).append_column("date", pa.array([1])), model=MODEL)
    log.append(rows(["x"]), model=MODEL)
    assert log.flush(timeout=30) and log.close(timeout=30) and log.close()
    with pytest.raises(LogClosed):
        log.append(rows(["y"]), model=MODEL)
    assert ids_of(read_log(tmp_path)) == ["x"]


CHILD = """
import signal, sys
from pathlib import Path
import pyarrow as pa
from tests.serving.log.test_prediction_log import DAY2, MODEL, rows
from serving.log.writer import PredictionLog

mode, root = sys.argv[1], Path(sys.argv[2])
if mode in ("writing", "buffered"):
    # "writing": files are written all the time; "buffered": nothing is written before
    # the kill, every accepted row is in memory and the journal only.
    writing = mode == "writing"
    log = PredictionLog(
        root, batch_rows=40 if writing else 10**6, flush_interval=0.001 if writing else 3600
    )
    n = 0
    while True:  # every append spans two dates, so one append ends up in two files
        ids = [f"r{n + j}" for j in range(25)]
        table = pa.concat_tables([rows(ids[:15]), rows(ids[15:], day=DAY2)])
        log.append(table, model=MODEL)
        n += 25
        print(n, log.written_rows, flush=True)  # accepted, written
else:
    log = PredictionLog(root, flush_interval=3600)

    def stop(signum, frame):
        print("closed", log.close(), flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    for i in range(10):
        log.append(rows([f"r{i}-{j}" for j in range(30)]), model=MODEL)
    print("ready", 300, log.written_rows, flush=True)
    while True:
        signal.pause()
"""


def spawn(mode: str, root: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, str(root)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "kill_after"), [("writing", 500), ("writing", 2525), ("buffered", 1000)]
)
def test_sigkill_loses_no_accepted_row(tmp_path: Path, mode: str, kill_after: int) -> None:
    """``kill -9`` of a process appending (and, in "writing" mode, writing files) at full
    speed: every row ``append`` accepted is in the log exactly once after the next start
    recovers the dead process's journal, and every visible file is whole."""
    child = spawn(mode, tmp_path)
    assert child.stdout is not None
    accepted = written = 0  # what the child had been told when it was last heard from
    try:
        for line in child.stdout:
            accepted, written = map(int, line.split())
            if accepted >= kill_after and (mode == "buffered" or written > 0):
                break
    finally:
        child.kill()  # SIGKILL: appends and writes are running
        _out, err = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL and accepted >= kill_after, err
    if mode == "buffered":
        assert written == 0 and not list(tmp_path.rglob("part-*.parquet"))
    for path in tmp_path.rglob("part-*.parquet"):
        pq.read_table(path, partitioning=None)  # every visible file is whole
    before = ids_of(read_log(tmp_path))
    assert len(before) == len(set(before))  # no row written twice, even before recovery

    log = PredictionLog(tmp_path)  # a new start finds the dead process's journal
    assert log.close(timeout=60)
    got = Counter(ids_of(read_log(tmp_path)))
    assert set(got.values()) == {1}  # exactly once
    # Every row accepted before the kill (the child may have gone further than the last
    # line read here): the rows form one unbroken run from the first, no gap.
    numbers = sorted(int(i.removeprefix("r")) for i in got)
    assert numbers == list(range(len(numbers))) and len(numbers) >= accepted, (accepted, written)
    assert log.recovered_rows == len(got) - len(before)
    assert not list((tmp_path / "_journal").glob("*"))  # recovered segments are removed


@pytest.mark.slow
def test_sigterm_closes_the_log_and_writes_every_accepted_row(tmp_path: Path) -> None:
    child = spawn("term", tmp_path)
    assert child.stdout is not None
    try:
        ready = child.stdout.readline().split()
        if ready == ["ready", "300", "0"]:  # 300 rows accepted, none written yet
            child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()  # a no-op once it has exited
    assert (ready, child.returncode, out) == (["ready", "300", "0"], 0, "closed True\n"), err
    got = ids_of(read_log(tmp_path))
    assert Counter(got) == Counter(f"r{i}-{j}" for i in range(10) for j in range(30))


def _dead_journal(root: Path, tables: list[pa.Table]) -> Path:
    """A journal segment as a killed process leaves it: frames written, lock released."""
    journal = Journal(root / JOURNAL_DIR)
    for seq, table in enumerate(tables, start=1):
        name = journal.append(seq, *log_journal.encode(MODEL, table))
    journal.close(everything_written=False)  # the kernel drops a dead process's lock
    return root / JOURNAL_DIR / name


def test_recovery_skips_rows_a_part_already_holds(tmp_path: Path) -> None:
    """Killed between writing a file and deleting its journal: the file's metadata says
    which frames (and for which date) it holds, so recovery writes only the rest."""
    first = pa.concat_tables([rows(["a1", "a2"]), rows(["a3"], day=DAY2)])
    segment = _dead_journal(tmp_path, [first, rows(["b1", "b2"])])
    writer = PredictionLog(tmp_path, journal=False)
    # Frame 1's rows of DAY made it into a file; its DAY2 row and frame 2 did not.
    writer._write(rows(["a1", "a2"]), writer._folder(MODEL, DAY), {segment.name: [1]})
    assert writer.close()
    log = PredictionLog(tmp_path)
    assert log.close() and log.recovered_rows == 3
    assert Counter(ids_of(read_log(tmp_path))) == Counter(["a1", "a2", "a3", "b1", "b2"])
    assert not segment.exists()
    assert PredictionLog(tmp_path).recovered_rows == 0  # nothing left to recover


def test_recovery_stops_at_a_torn_frame_and_leaves_live_journals_alone(tmp_path: Path) -> None:
    segment = _dead_journal(tmp_path, [rows(["a"]), rows(["b"])])
    torn = _dead_journal(tmp_path / "elsewhere", [rows(["c"])]).read_bytes()
    with segment.open("ab") as f:  # the frame being written when the process died
        f.write(torn[: len(torn) // 2])
    live = PredictionLog(tmp_path, flush_interval=3600)  # holds its own segment's lock
    live.append(rows(["live"]), model=MODEL)
    other = PredictionLog(tmp_path / ".", flush_interval=3600)  # a second process, say
    assert other.recovered_rows == 0  # live's journal is locked: not an orphan
    assert other.close() and live.close()
    assert Counter(ids_of(read_log(tmp_path))) == Counter(["a", "b", "live"])
    assert live.recovered_rows == 2


def test_disk_full_keeps_accepted_rows_and_pushes_back(tmp_path: Path) -> None:
    """A real full file system (a 512 KiB tmpfs): the journal and the writer fail, rows
    already accepted stay in memory, new rows are refused once the log is full (a clear
    error naming the folder and the cause), and when space returns every accepted row
    is written exactly once."""
    mount = tmp_path / "small"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs (a real full disk)")
    try:
        with open(mount / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:  # fill it
                f.write(b"\0" * 4096)
        log = PredictionLog(
            mount / "log", batch_rows=50, flush_interval=0.01, max_pending_rows=400,
            put_timeout=0.05,
        )  # fmt: skip
        accepted: list[str] = []
        with pytest.raises(LogFull, match=r"behind: .*No space left on device"):
            for i in range(1000):
                batch = [f"r{i}-{j}" for j in range(20)]
                log.append(rows(batch), model=MODEL)
                accepted += batch
        assert log.journal_errors > 0 and log.write_errors > 0
        assert len(accepted) == log.pending_rows == 400 and log.written_rows == 0
        (mount / "filler").unlink()  # space returns
        assert log.close(timeout=60)
        assert Counter(ids_of(read_log(mount / "log"))) == Counter(accepted)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
