"""The feature pipeline (framework/sample/pipeline.py) against its documented semantics.

Two kinds of tests:

* a tiny hand-checkable dataset per rule, with the expected numbers written out;
* Hypothesis: small random raw datasets (tests/strategies.py) compared row by
  row with a brute-force pure-Python reference written from the module
  docstring.

All times are microseconds since the epoch (UTC); see tests/strategies.py.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings

from framework.errors import DataError
from framework.sample.pipeline import OFFLINE_FILES, RAW_FILES, build_offline_sources
from tests.strategies import (
    DAY,
    HOUR,
    MINUTE,
    US,
    Merchant,
    RawDataset,
    Txn,
    User,
    day,
    floor_day,
    raw_datasets,
)

Row = dict[str, Any]

PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Regression (found by the property tests below): transactions on a day that is not
# itself a snapshot day of the merchant (the first day of the data, the day the
# merchant opened) must still count in the 30-day window.


# ------------------------------------------------------------------- helpers


def _read(path: Path | str) -> list[Row]:
    """Rows of one output file, ``event_timestamp`` as integer microseconds."""
    table = pq.read_table(path)
    i = table.schema.get_field_index("event_timestamp")
    table = table.set_column(i, "event_timestamp", table["event_timestamp"].cast(pa.int64()))
    return table.to_pylist()


def _run(raw: RawDataset, root: Path) -> dict[str, list[Row]]:
    raw.write(root / "raw")
    result = build_offline_sources(root / "raw", root / "offline")
    outputs = {name: _read(root / "offline" / file) for name, file in OFFLINE_FILES.items()}
    assert result.rows == {name: len(rows) for name, rows in outputs.items()}
    return outputs


def _by_key(rows: list[Row], id_column: str) -> dict[tuple[int, int], Row]:
    keyed = {(r[id_column], r["event_timestamp"]): r for r in rows}
    assert len(keyed) == len(rows), f"duplicate ({id_column}, event_timestamp) rows"
    return keyed


def _close(actual: float | None, expected: float | None) -> bool:
    if actual is None or expected is None:
        return actual is expected
    return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9)


def _user(user_id: int) -> User:
    return User(user_id=user_id, signup_ts=day(-400))


def _merchant(merchant_id: int, created_ts: int | None = None) -> Merchant:
    return Merchant(
        merchant_id=merchant_id, created_ts=day(-30) if created_ts is None else created_ts
    )


# ------------------------------------------------- brute-force references


def reference_user_features(raw: RawDataset) -> dict[tuple[int, int], Row]:
    """One row per (user, distinct transaction time t); windows are closed [t - w, t]."""
    out: dict[tuple[int, int], Row] = {}
    for user_id, t in {(x.user_id, x.ts) for x in raw.transactions}:
        mine = [x for x in raw.transactions if x.user_id == user_id]

        def window(w: int, mine: list[Txn] = mine, t: int = t) -> list[Txn]:
            return [x for x in mine if t - w <= x.ts <= t]

        w7d = window(7 * DAY)
        amounts = [x.amount for x in w7d]
        out[(user_id, t)] = {
            "user_id": user_id,
            "event_timestamp": t,
            "txn_count_1h": len(window(HOUR)),
            "txn_count_24h": len(window(24 * HOUR)),
            "txn_count_7d": len(w7d),
            "amount_mean_7d": statistics.fmean(amounts),
            "amount_std_7d": statistics.stdev(amounts) if len(amounts) > 1 else None,
            "distinct_merchants_7d": len({x.merchant_id for x in w7d}),
        }
    return out


def reference_merchant_features(raw: RawDataset) -> dict[tuple[int, int], Row]:
    """One row per merchant and midnight D, from the day after the first transaction to
    the day after the last, for D after the merchant opened: transactions with
    D - 30 d <= ts < D, and those of them that are fraud with label_timestamp <= D."""
    first = floor_day(min(x.ts for x in raw.transactions)) + DAY
    last = floor_day(max(x.ts for x in raw.transactions)) + DAY
    out: dict[tuple[int, int], Row] = {}
    for m in raw.merchants:
        for d in range(first, last + 1, DAY):
            if d <= m.created_ts:
                continue
            in_window = [
                x
                for x in raw.transactions
                if x.merchant_id == m.merchant_id and d - 30 * DAY <= x.ts < d
            ]
            chargebacks = sum(1 for x in in_window if x.is_fraud == 1 and x.label_at <= d)
            out[(m.merchant_id, d)] = {
                "merchant_id": m.merchant_id,
                "event_timestamp": d,
                "merchant_txn_count_30d": len(in_window),
                "merchant_chargeback_count_30d": chargebacks,
                "merchant_fraud_rate_30d": chargebacks / len(in_window) if in_window else None,
            }
    return out


def _assert_rows_match(
    actual: dict[tuple[int, int], Row],
    expected: dict[tuple[int, int], Row],
    columns: list[str],
) -> None:
    assert sorted(actual) == sorted(expected)
    for key, want in expected.items():
        got = actual[key]
        for column in columns:
            assert _close(got[column], want[column]), (key, column, got[column], want[column])


USER_COLUMNS = [
    "txn_count_1h",
    "txn_count_24h",
    "txn_count_7d",
    "amount_mean_7d",
    "amount_std_7d",
    "distinct_merchants_7d",
]
MERCHANT_COLUMNS = [
    "merchant_txn_count_30d",
    "merchant_chargeback_count_30d",
    "merchant_fraud_rate_30d",
]


# ------------------------------------------------------ hand-checked cases

T0 = day(10) + 12 * HOUR  # 11 Jan 2026 12:00 UTC


def test_user_windows_are_closed_intervals(tmp_path: Path) -> None:
    txns = [
        # user 1: the 1 h window.
        Txn(1, 1, 1, T0),
        Txn(2, 1, 1, T0 + 30 * MINUTE),
        Txn(3, 1, 1, T0 + HOUR),  # exactly 1 h after T0: T0 is in its window
        Txn(4, 1, 1, T0 + HOUR + US),  # 1 h + 1 µs after T0: T0 is not
        # user 2: the 24 h window.
        Txn(5, 2, 1, T0),
        Txn(6, 2, 1, T0 + 24 * HOUR),
        Txn(7, 2, 1, T0 + 24 * HOUR + US),
        # user 3: the 7 d window.
        Txn(8, 3, 1, T0),
        Txn(9, 3, 1, T0 + 7 * DAY),
        Txn(10, 3, 1, T0 + 7 * DAY + US),
    ]
    raw = RawDataset((_user(1), _user(2), _user(3)), (_merchant(1),), tuple(txns))
    rows = _by_key(_run(raw, tmp_path)["user_transaction_features"], "user_id")

    def counts(user_id: int, ts: int) -> tuple[int, int, int]:
        r = rows[(user_id, ts)]
        return r["txn_count_1h"], r["txn_count_24h"], r["txn_count_7d"]

    assert len(rows) == 10
    # (1 h, 24 h, 7 d)
    assert counts(1, T0) == (1, 1, 1)
    assert counts(1, T0 + 30 * MINUTE) == (2, 2, 2)
    assert counts(1, T0 + HOUR) == (3, 3, 3)
    assert counts(1, T0 + HOUR + US) == (3, 4, 4)

    assert counts(2, T0) == (1, 1, 1)
    assert counts(2, T0 + 24 * HOUR) == (1, 2, 2)
    assert counts(2, T0 + 24 * HOUR + US) == (2, 2, 3)

    assert counts(3, T0) == (1, 1, 1)
    assert counts(3, T0 + 7 * DAY) == (1, 1, 2)
    assert counts(3, T0 + 7 * DAY + US) == (2, 2, 2)


def test_same_microsecond_transactions_give_one_row(tmp_path: Path) -> None:
    txns = (
        Txn(1, 1, 1, T0 - 2 * HOUR, amount=20.0),
        Txn(2, 1, 1, T0, amount=10.0),
        Txn(3, 1, 2, T0, amount=30.0),
    )
    raw = RawDataset((_user(1),), (_merchant(1), _merchant(2)), txns)
    rows = _run(raw, tmp_path)["user_transaction_features"]

    assert [r["event_timestamp"] for r in sorted(rows, key=lambda r: r["event_timestamp"])] == [
        T0 - 2 * HOUR,
        T0,
    ]
    at_t0 = _by_key(rows, "user_id")[(1, T0)]
    assert at_t0["txn_count_1h"] == 2
    assert at_t0["txn_count_24h"] == 3
    assert at_t0["txn_count_7d"] == 3
    assert at_t0["amount_mean_7d"] == pytest.approx(20.0)  # (20 + 10 + 30) / 3
    assert at_t0["amount_std_7d"] == pytest.approx(10.0)  # sqrt((100 + 0 + 100) / 2)
    assert at_t0["distinct_merchants_7d"] == 2


def test_user_amount_statistics_and_distinct_merchants(tmp_path: Path) -> None:
    txns = (
        Txn(1, 1, 1, T0, amount=10.0),
        Txn(2, 1, 2, T0 + DAY, amount=20.0),
        Txn(3, 1, 1, T0 + 2 * DAY, amount=60.0),
        Txn(4, 1, 3, T0 + 8 * DAY, amount=40.0),  # window [T0 + 1 d, T0 + 8 d]: not T0
    )
    raw = RawDataset((_user(1),), (_merchant(1), _merchant(2), _merchant(3)), txns)
    rows = _by_key(_run(raw, tmp_path)["user_transaction_features"], "user_id")

    def stats(ts: int) -> tuple[int, float, float | None, int]:
        r = rows[(1, ts)]
        return (
            r["txn_count_7d"],
            r["amount_mean_7d"],
            r["amount_std_7d"],
            r["distinct_merchants_7d"],
        )

    # A single transaction: sample standard deviation is null.
    assert stats(T0) == (1, pytest.approx(10.0), None, 1)
    # 10, 20: mean 15, deviations -5, 5: variance 50 / 1.
    assert stats(T0 + DAY) == (2, pytest.approx(15.0), pytest.approx(math.sqrt(50)), 2)
    # 10, 20, 60: mean 30, deviations -20, -10, 30: variance 1400 / 2 = 700.
    assert stats(T0 + 2 * DAY) == (3, pytest.approx(30.0), pytest.approx(math.sqrt(700)), 2)
    # 20, 60, 40 at merchants 2, 1, 3: mean 40, deviations -20, 20, 0: variance 800 / 2.
    assert stats(T0 + 8 * DAY) == (3, pytest.approx(40.0), pytest.approx(20.0), 3)


def _merchant_case() -> RawDataset:
    """Merchant 1 has every interesting transaction; see test_merchant_snapshots."""
    txns = (
        # Merchant 2's transaction is the first of the data, so snapshots start on day 1.
        Txn(1, 1, 2, day(0) + 6 * HOUR),
        # Exactly at midnight of day 1: not in snapshot day 1 ([D - 30 d, D) excludes D),
        # in days 2 .. 31 (day 31 - 30 d is exactly the transaction).
        Txn(2, 1, 1, day(1)),
        # Frauds on day 5 (in snapshots 6 .. 35). The first chargeback arrives exactly at
        # midnight of day 8 (counts from day 8), the second 1 µs after midnight of day 9
        # (counts from day 10 only).
        Txn(3, 1, 1, day(5) + 13 * HOUR, is_fraud=1, label_ts=day(8)),
        Txn(4, 1, 1, day(5) + 18 * HOUR, is_fraud=1, label_ts=day(9) + US),
        # Legitimate, in snapshots 21 .. 41.
        Txn(5, 1, 1, day(20) + 12 * HOUR),
        # The last transaction of the data: the last snapshot is day 41.
        Txn(6, 1, 1, day(40) + 9 * HOUR),
    )
    merchants = (
        _merchant(1),
        _merchant(2),
        _merchant(3, created_ts=day(3)),  # opened exactly at midnight: from day 4
        _merchant(4, created_ts=day(39) + 12 * HOUR),  # from day 40
    )
    return RawDataset((_user(1),), merchants, txns)


def test_merchant_snapshots(tmp_path: Path) -> None:
    rows = _by_key(_run(_merchant_case(), tmp_path)["merchant_risk_features"], "merchant_id")

    def days_of(merchant_id: int) -> list[int]:
        return sorted(d for m, d in rows if m == merchant_id)

    # Snapshots at midnight from day 1 (day after the first transaction) to day 41
    # (day after the last), only after the merchant opened.
    assert days_of(1) == [day(k) for k in range(1, 42)]
    assert days_of(2) == [day(k) for k in range(1, 42)]
    assert days_of(3) == [day(k) for k in range(4, 42)]
    assert days_of(4) == [day(40), day(41)]
    assert len(rows) == 41 + 41 + 38 + 2

    def snapshot(merchant_id: int, k: int) -> tuple[int, int, float | None]:
        r = rows[(merchant_id, day(k))]
        return (
            r["merchant_txn_count_30d"],
            r["merchant_chargeback_count_30d"],
            r["merchant_fraud_rate_30d"],
        )

    # (transactions, chargebacks, rate) of merchant 1 on day k.
    expected = {
        1: (0, 0, None),  # no transaction yet: rate is null
        2: (1, 0, 0.0),  # the midnight transaction of day 1 counts from day 2
        5: (1, 0, 0.0),
        6: (3, 0, 0.0),  # frauds made, chargebacks not arrived
        7: (3, 0, 0.0),
        8: (3, 1, 1 / 3),  # chargeback arriving exactly at D counts
        9: (3, 1, 1 / 3),  # the one arriving 1 µs after D does not
        10: (3, 2, 2 / 3),
        20: (3, 2, 2 / 3),
        21: (4, 2, 0.5),
        31: (4, 2, 0.5),  # the transaction exactly at D - 30 d still counts
        32: (3, 2, 2 / 3),  # ... and not a day later
        35: (3, 2, 2 / 3),
        36: (1, 0, 0.0),  # the frauds left the window, and their chargebacks with them
        40: (1, 0, 0.0),
        41: (2, 0, 0.0),
    }
    for k, (txns, chargebacks, rate) in expected.items():
        got = snapshot(1, k)
        assert got[:2] == (txns, chargebacks), (k, got)
        assert _close(got[2], rate), (k, got)
    # Merchants without transactions: zero counts, null rate.
    for k in range(4, 42):
        assert snapshot(3, k) == (0, 0, None)
    assert snapshot(4, 40) == snapshot(4, 41) == (0, 0, None)


def test_merchant_counts_transactions_of_the_first_day(tmp_path: Path) -> None:
    # One fraud, on day 0 at 10:00, its chargeback immediately: snapshot day 1 covers it.
    txn = Txn(1, 1, 1, day(0) + 10 * HOUR, is_fraud=1, label_ts=day(0) + 10 * HOUR)
    raw = RawDataset((_user(1),), (_merchant(1),), (txn,))
    rows = _by_key(_run(raw, tmp_path)["merchant_risk_features"], "merchant_id")
    row = rows[(1, day(1))]
    # Actual: 0 transactions, 1 chargeback, rate null.
    assert row["merchant_txn_count_30d"] == 1
    assert row["merchant_chargeback_count_30d"] == 1
    assert row["merchant_fraud_rate_30d"] == pytest.approx(1.0)


def test_merchant_counts_transactions_of_its_opening_day(tmp_path: Path) -> None:
    txns = (
        Txn(1, 1, 1, day(0) + 10 * HOUR),  # merchant 1 starts the data (snapshots from day 1)
        Txn(2, 1, 2, day(9) + 15 * HOUR),  # merchant 2 opened at 12:00 that day
    )
    merchants = (_merchant(1), _merchant(2, created_ts=day(9) + 12 * HOUR))
    raw = RawDataset((_user(1),), merchants, txns)
    rows = _by_key(_run(raw, tmp_path)["merchant_risk_features"], "merchant_id")
    # Snapshot day 10 of merchant 2: [day 10 - 30 d, day 10) holds its transaction.
    # Actual: 0.
    assert rows[(2, day(10))]["merchant_txn_count_30d"] == 1


def test_profiles(tmp_path: Path) -> None:
    users = (
        User(7, day(-100) + 5 * HOUR + 3 * US, "GB", "credit", 2500.0),
        User(3, day(-5), "DE", "prepaid", 500.0),
    )
    merchants = (
        Merchant(11, day(-40) + 123 * US, "travel", "FR"),
        Merchant(12, day(-2) + HOUR, "grocery", "US"),
    )
    raw = RawDataset(users, merchants, (Txn(1, 7, 11, T0),))
    out = _run(raw, tmp_path)

    assert pq.read_schema(tmp_path / "offline" / OFFLINE_FILES["user_profile"]).names == [
        "user_id",
        "event_timestamp",
        "home_country",
        "card_type",
        "credit_limit",
    ]
    assert sorted(out["user_profile"], key=lambda r: r["user_id"]) == [
        {
            "user_id": 3,
            "event_timestamp": day(-5),
            "home_country": "DE",
            "card_type": "prepaid",
            "credit_limit": 500.0,
        },
        {
            "user_id": 7,
            "event_timestamp": day(-100) + 5 * HOUR + 3 * US,
            "home_country": "GB",
            "card_type": "credit",
            "credit_limit": 2500.0,
        },
    ]
    assert pq.read_schema(tmp_path / "offline" / OFFLINE_FILES["merchant_profile"]).names == [
        "merchant_id",
        "event_timestamp",
        "category",
        "country",
    ]
    assert sorted(out["merchant_profile"], key=lambda r: r["merchant_id"]) == [
        {
            "merchant_id": 11,
            "event_timestamp": day(-40) + 123 * US,
            "category": "travel",
            "country": "FR",
        },
        {
            "merchant_id": 12,
            "event_timestamp": day(-2) + HOUR,
            "category": "grocery",
            "country": "US",
        },
    ]


def test_feature_output_columns(tmp_path: Path) -> None:
    _run(_merchant_case(), tmp_path)
    offline = tmp_path / "offline"
    names = pq.read_schema(offline / OFFLINE_FILES["user_transaction_features"]).names
    assert names == ["user_id", "event_timestamp", *USER_COLUMNS]
    names = pq.read_schema(offline / OFFLINE_FILES["merchant_risk_features"]).names
    assert names == ["merchant_id", "event_timestamp", *MERCHANT_COLUMNS]


@pytest.mark.parametrize("name", sorted(OFFLINE_FILES))
def test_output_timestamps_are_utc_microseconds(tmp_path: Path, name: str) -> None:
    _run(_merchant_case(), tmp_path)
    path = tmp_path / "offline" / OFFLINE_FILES[name]
    assert pq.read_schema(path).field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    # The Parquet logical type itself (what Feast's DuckDB store reads), not only
    # pyarrow's view of it.
    schema = pq.ParquetFile(path).schema
    column = schema.column(schema.names.index("event_timestamp"))
    logical = json.loads(column.logical_type.to_json())
    assert logical["Type"] == "Timestamp"
    assert logical["isAdjustedToUTC"] is True
    assert logical["timeUnit"] == "microseconds"


@pytest.mark.parametrize("missing", RAW_FILES)
def test_missing_raw_file_raises_data_error(tmp_path: Path, missing: str) -> None:
    raw = _merchant_case()
    raw.write(tmp_path / "raw")
    (tmp_path / "raw" / f"{missing}.parquet").unlink()
    with pytest.raises(DataError) as info:
        build_offline_sources(tmp_path / "raw", tmp_path / "offline")
    message = str(info.value)
    assert f"{missing}.parquet" in message
    for other in RAW_FILES:
        if other != missing:
            assert f"{other}.parquet" not in message
    assert not (tmp_path / "offline").exists()


# --------------------------------------------------------- property-based

#: Minimal reproducer of the first-day regression, run first by Hypothesis.
FIRST_DAY_EXAMPLE = RawDataset(
    (_user(1),), (_merchant(1),), (Txn(1, 1, 1, day(0) + 10 * HOUR, is_fraud=1, label_ts=day(1)),)
)


def _run_in_tempdir(raw: RawDataset) -> dict[str, list[Row]]:
    with tempfile.TemporaryDirectory() as tmp:
        return _run(raw, Path(tmp))


@PROPERTY_SETTINGS
@given(raw=raw_datasets())
def test_user_features_match_reference(raw: RawDataset) -> None:
    rows = _by_key(_run_in_tempdir(raw)["user_transaction_features"], "user_id")
    _assert_rows_match(rows, reference_user_features(raw), USER_COLUMNS)


@PROPERTY_SETTINGS
@given(raw=raw_datasets())
def test_merchant_grid_and_chargebacks_match_reference(raw: RawDataset) -> None:
    """The snapshot grid and the chargeback counts, and no label leakage: no
    chargeback whose label arrived after the snapshot."""
    rows = _by_key(_run_in_tempdir(raw)["merchant_risk_features"], "merchant_id")
    expected = reference_merchant_features(raw)
    _assert_rows_match(rows, expected, ["merchant_chargeback_count_30d"])
    for (merchant_id, d), row in rows.items():
        arrived_frauds = sum(
            1
            for x in raw.transactions
            if x.merchant_id == merchant_id
            and d - 30 * DAY <= x.ts < d
            and x.is_fraud == 1
            and x.label_at <= d
        )
        assert 0 <= row["merchant_chargeback_count_30d"] <= arrived_frauds


@PROPERTY_SETTINGS
@given(raw=raw_datasets())
@example(raw=FIRST_DAY_EXAMPLE)
def test_merchant_features_match_reference(raw: RawDataset) -> None:
    rows = _by_key(_run_in_tempdir(raw)["merchant_risk_features"], "merchant_id")
    _assert_rows_match(rows, reference_merchant_features(raw), MERCHANT_COLUMNS)
    for row in rows.values():
        rate = row["merchant_fraud_rate_30d"]
        assert rate is None or 0.0 <= rate <= 1.0


def test_the_merchant_risk_outage_scenario_breaks_only_the_merchant_risk_job(
    tmp_path: Path,
) -> None:
    """A sample generated with ``merchant_risk_outage``: the raw data is the clean world's,
    the merchant-risk snapshots from the drift start on read 0 transactions, 0 chargebacks
    and no fraud rate, and every other row of every source is unchanged."""
    from framework.sample.data import generate
    from framework.sample.scenario import GenerationConfig

    outputs = {}
    for drift in ((), ("merchant_risk_outage",)):
        config = GenerationConfig(seed=3, transactions=3_000, drift=drift)
        root = tmp_path / (drift[0] if drift else "clean")
        generate(config, root)
        build_offline_sources(root / "raw", root / "offline")
        # The pipeline writes in no set order: compare sorted rows.
        outputs[drift] = {
            name: sorted(pq.read_table(root / "offline" / file).to_pylist(), key=repr)
            for name, file in OFFLINE_FILES.items()
        }
    clean, broken = outputs[()], outputs[("merchant_risk_outage",)]
    start = GenerationConfig(seed=3, transactions=3_000).drift_start
    for name in OFFLINE_FILES:
        if name != "merchant_risk_features":
            assert clean[name] == broken[name], name

    def by_key(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(rows, key=lambda r: (r["merchant_id"], r["event_timestamp"]))

    after = 0
    for was, now in zip(by_key(clean["merchant_risk_features"]),
                        by_key(broken["merchant_risk_features"]), strict=True):  # fmt: skip
        assert (was["merchant_id"], was["event_timestamp"]) == (
            now["merchant_id"], now["event_timestamp"])  # fmt: skip
        if now["event_timestamp"] < start:
            assert now == was
        else:
            after += 1
            assert now["merchant_txn_count_30d"] == 0
            assert now["merchant_chargeback_count_30d"] == 0
            assert now["merchant_fraud_rate_30d"] is None
    assert after > 0
