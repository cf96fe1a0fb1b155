"""The server's prediction-log rows (LogRows): the table they become is the table the
server used to build per request, their journal frame reads back the same, privacy
treats them as it treats a table, and no value is refused off the request path."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.logs.privacy import LogPrivacy
from framework.logs.reader import read_log
from framework.logs.rows import LogRows
from serving.log import journal as log_journal
from serving.log.journal import JOURNAL_DIR, Journal
from serving.log.writer import PredictionLog
from tests.support.prediction_logs import as_log_rows

TIME = pa.timestamp("us", tz="UTC")
KEY = b"k" * 32

row = st.fixed_dictionaries(
    {
        "__request_id": st.text(max_size=8),
        "__timestamp": st.integers(0, 2**50),
        "__log_date": st.integers(0, 40_000),
        "user_id": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        "country": st.one_of(st.none(), st.text(max_size=4)),
        "amount": st.one_of(st.none(), st.floats(allow_nan=False)),
        "flag": st.one_of(st.none(), st.booleans()),
        "raw": st.one_of(st.none(), st.binary(max_size=4)),
    }
)
SCHEMA = pa.schema(
    [
        ("__request_id", pa.string()),
        ("__timestamp", TIME),
        ("__log_date", pa.date32()),
        ("user_id", pa.int64()),
        ("country", pa.string()),
        ("amount", pa.float64()),
        ("flag", pa.bool_()),
        ("raw", pa.binary()),
    ]
)


def _rows(items: list[dict[str, object]]) -> LogRows:
    return LogRows(SCHEMA, [[r[f.name] for r in items] for f in SCHEMA])


def _table(items: list[dict[str, object]]) -> pa.Table:
    return pa.table({f.name: pa.array([r[f.name] for r in items], f.type) for f in SCHEMA})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(row, min_size=1, max_size=4), min_size=1, max_size=4))
def test_merged_rows_become_the_table_and_survive_their_journal_frame(
    requests: list[list[dict[str, object]]],
) -> None:
    parts = [_rows(items) for items in requests]
    want = _table([r for items in requests for r in items])
    assert LogRows.merge(parts).to_table().equals(want)
    for part, items in zip(parts, requests, strict=True):
        payload = part.encode()
        assert payload is not None  # built-in types only: the compact frame
        decoded = LogRows.decode(payload)
        assert decoded is not None and decoded.to_table().equals(_table(items))


def test_values_that_do_not_fit_their_type_are_kept_not_refused() -> None:
    schema = pa.schema([("__log_date", pa.date32()), ("ratio", pa.int64()), ("odd", pa.int64())])
    rows = LogRows(schema, [[1, 1], [1, 0.5], [object(), None]])
    table = rows.to_table()
    assert table.column("ratio").type == pa.float64()  # inferred: an int and a float
    assert table.column("ratio").to_pylist() == [1.0, 0.5]
    assert table.column("odd").type == pa.string() and table.column("odd")[1].as_py() is None


def test_a_value_marshal_cannot_take_is_journaled_as_a_table(tmp_path: Path) -> None:
    """A datetime in request data: the frame falls back to Arrow's IPC form, and a new
    log recovers the row from it."""
    schema = pa.schema([("__request_id", pa.string()), ("__log_date", pa.date32()),
                        ("seen", TIME)])  # fmt: skip
    seen = dt.datetime(2026, 1, 2, 3, tzinfo=dt.UTC)
    rows = LogRows(schema, [["r1"], [20_000], [seen]])
    assert rows.encode() is None
    journal = Journal(tmp_path / JOURNAL_DIR)
    journal.append(1, *log_journal.encode("m", rows))
    journal.close(everything_written=False)
    log = PredictionLog(tmp_path)
    assert log.close() and log.recovered_rows == 1
    got = read_log(tmp_path)
    assert got.column("seen").to_pylist() == [seen]


def test_rows_frames_are_recovered_after_a_crash(tmp_path: Path) -> None:
    items = [{"__request_id": f"r{i}", "__timestamp": 10**15, "__log_date": 20_000,
              "user_id": i, "country": "US", "amount": 1.5, "flag": True, "raw": b"x"}
             for i in range(3)]  # fmt: skip
    journal = Journal(tmp_path / JOURNAL_DIR)
    journal.append(1, *log_journal.encode("m", _rows(items[:2])))
    journal.append(2, *log_journal.encode("m", _rows(items[2:])))
    journal.close(everything_written=False)  # the kernel drops a dead process's lock
    log = PredictionLog(tmp_path)
    assert log.close() and log.recovered_rows == 3
    got = read_log(tmp_path)
    assert sorted(got.column("__request_id").to_pylist()) == ["r0", "r1", "r2"]


@pytest.mark.parametrize(("hash_", "drop"), [(["user_id"], []), ([], ["country"]),
                                             (["user_id", "amount"], ["flag"])])  # fmt: skip
def test_privacy_treats_rows_as_it_treats_the_table(hash_: list[str], drop: list[str]) -> None:
    items = [{"__request_id": "a", "__timestamp": 5, "__log_date": 3, "user_id": 7,
              "country": "US", "amount": 2, "flag": None, "raw": None}]  # fmt: skip
    privacy = LogPrivacy.build(hash_, drop, KEY)
    rows = privacy.apply(as_log_rows(_table(items)))
    assert isinstance(rows, LogRows)
    # amount 2 (an int) hashes as the float64 its column holds, as in a table
    assert rows.to_table().equals(privacy.apply(_table(items)))
