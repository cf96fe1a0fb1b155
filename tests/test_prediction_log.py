"""The prediction log on real files: every accepted row written exactly once, in
hive partitions, durable on flush, bounded with backpressure, surviving write
failures, SIGKILL and SIGTERM."""

from __future__ import annotations

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
from serving.prediction_log import LogClosed, LogFull, PredictionLog, read_log
from tests.conftest import ROOT

MODEL = "fraud_model"
DAY = date(2024, 3, 1)
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
from tests.test_prediction_log import MODEL, rows
from serving.prediction_log import PredictionLog

mode, root = sys.argv[1], Path(sys.argv[2])
if mode == "kill":
    log = PredictionLog(root, batch_rows=40, flush_interval=0.001)
    n = 0
    while True:
        log.append(rows([f"r{n + j}" for j in range(25)]), model=MODEL)
        n += 25
        if n % 500 == 0 and log.flush():
            print(n, flush=True)
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
def test_sigkill_while_writing_leaves_only_whole_files(tmp_path: Path) -> None:
    child = spawn("kill", tmp_path)
    assert child.stdout is not None
    durable = 0  # rows the child had flushed (all on disk) when last heard from
    try:
        for line in child.stdout:
            durable = int(line)
            if durable >= 2500:
                break
    finally:
        child.kill()  # SIGKILL, mid-write: the child appends and writes continuously
        _out, err = child.communicate(timeout=60)
    assert (child.returncode, durable) == (-signal.SIGKILL, 2500), err
    for path in tmp_path.rglob("part-*.parquet"):
        pq.read_table(path, partitioning=None)  # every visible file is whole
    got = ids_of(read_log(tmp_path))
    assert len(got) == len(set(got)) and len(got) >= durable
    assert {f"r{i}" for i in range(durable)} <= set(got)


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
