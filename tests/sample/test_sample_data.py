"""The sample data generator: determinism, invariants, drift scenarios, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.errors import ConfigError
from framework.sample.data import NEW_CATEGORY, drift_names, generate, parse_scale
from framework.sample.scenario import DISPUTE_WINDOW_DAYS, GenerationConfig

RAW_FILES = ["users", "merchants", "transactions", "labels"]


def _digests(raw: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((raw / f"{name}.parquet").read_bytes()).hexdigest()
        for name in RAW_FILES
    }


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    cfg = GenerationConfig(seed=3, transactions=3_000, drift=("amount_inflation",))
    generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b")
    assert _digests(tmp_path / "a" / "raw") == _digests(tmp_path / "b" / "raw")


def test_other_seed_gives_other_files(tmp_path: Path) -> None:
    generate(GenerationConfig(seed=3, transactions=3_000), tmp_path / "a")
    generate(GenerationConfig(seed=4, transactions=3_000), tmp_path / "b")
    a, b = _digests(tmp_path / "a" / "raw"), _digests(tmp_path / "b" / "raw")
    assert a["transactions"] != b["transactions"]


def test_deterministic_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Several chunks (bounded memory) still give the same files for the same seed.
    import framework.sample.data as sd

    monkeypatch.setattr(sd, "CHUNK_TRANSACTIONS", 700)
    cfg = GenerationConfig(seed=5, transactions=4_000)
    generate(cfg, tmp_path / "a")
    generate(cfg, tmp_path / "b")
    assert _digests(tmp_path / "a" / "raw") == _digests(tmp_path / "b" / "raw")
    rows = duckdb.sql(
        f"SELECT count(*), count(DISTINCT transaction_id), min(transaction_id), max(transaction_id)"
        f" FROM '{tmp_path / 'a' / 'raw' / 'transactions.parquet'}'"
    ).fetchone()
    assert rows is not None
    n, distinct, lo, hi = rows
    assert n == distinct == hi and lo == 1  # ids 1..n, unique across chunks


def test_manifest_describes_the_files(tmp_path: Path) -> None:
    summary = generate(GenerationConfig(seed=1, transactions=2_000), tmp_path)
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    assert manifest["transactions"] == summary.transactions
    (count,) = duckdb.sql(
        f"SELECT count(*) FROM '{tmp_path / 'raw' / 'transactions.parquet'}'"
    ).fetchone() or (0,)
    assert count == summary.transactions
    assert 1_600 <= count <= 2_400  # the scale is honoured within Poisson noise
    assert not list((tmp_path / "raw").glob("*.tmp"))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_invariants_hold_for_any_seed(seed: int, tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tmp_path_factory.mktemp("inv")
    summary = generate(GenerationConfig(seed=seed, transactions=20_000), out)
    raw = out / "raw"
    assert 0.01 <= summary.fraud_rate <= 0.03, summary.fraud_rate
    labels = f"read_parquet('{raw / 'labels.parquet'}')"
    tx = f"read_parquet('{raw / 'transactions.parquet'}')"
    con = duckdb.connect()
    checks = con.execute(
        f"""
        SELECT
          count(*) FILTER (WHERE label_timestamp <= transaction_timestamp),
          count(*) FILTER (WHERE is_fraud = 1 AND (
              label_timestamp < transaction_timestamp + INTERVAL 2 DAY OR
              label_timestamp > transaction_timestamp + INTERVAL 60 DAY)),
          count(*) FILTER (WHERE is_fraud = 0 AND
              label_timestamp <> transaction_timestamp + INTERVAL {DISPUTE_WINDOW_DAYS} DAY),
          count(*)
        FROM {labels}
        """
    ).fetchone()
    assert checks is not None
    early, fraud_out_of_range, legit_not_final, n = checks
    assert (early, fraud_out_of_range, legit_not_final) == (0, 0, 0)
    assert n == summary.transactions
    # Labels and transactions describe the same transactions.
    (mismatch,) = con.execute(
        f"""SELECT count(*) FROM {tx} t FULL JOIN {labels} l USING (transaction_id)
            WHERE t.user_id IS DISTINCT FROM l.user_id
               OR t.transaction_timestamp IS DISTINCT FROM l.transaction_timestamp"""
    ).fetchone() or (1,)
    assert mismatch == 0
    # Every transaction is inside the period and at an existing, already open merchant.
    (bad,) = con.execute(
        f"""SELECT count(*) FROM {tx} t
            LEFT JOIN read_parquet('{raw / "merchants.parquet"}') m USING (merchant_id)
            LEFT JOIN read_parquet('{raw / "users.parquet"}') u USING (user_id)
            WHERE m.merchant_id IS NULL OR u.user_id IS NULL
               OR t.transaction_timestamp < TIMESTAMPTZ '{summary.start}'
               OR t.transaction_timestamp >= TIMESTAMPTZ '{summary.end}'
               OR m.created_timestamp > t.transaction_timestamp
               OR t.amount <= 0"""
    ).fetchone() or (1,)
    assert bad == 0


def test_fraud_depends_on_behaviour(tmp_path: Path) -> None:
    """The hidden function is learnable: night, risky categories and bursts raise the rate."""
    generate(GenerationConfig(seed=2, transactions=60_000), tmp_path)
    raw = tmp_path / "raw"
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    night, day = con.execute(
        f"""SELECT avg(is_fraud) FILTER (WHERE hour(transaction_timestamp) < 6),
                   avg(is_fraud) FILTER (WHERE hour(transaction_timestamp) >= 6)
            FROM read_parquet('{raw / "labels.parquet"}')"""
    ).fetchone() or (0, 0)
    assert night > 2 * day
    risky, other = con.execute(
        f"""SELECT avg(is_fraud) FILTER (
                     WHERE category IN ('electronics', 'jewelry', 'digital_goods')),
                   avg(is_fraud) FILTER (WHERE category IN ('grocery', 'fuel', 'pharmacy'))
            FROM read_parquet('{raw / "labels.parquet"}') l
            JOIN read_parquet('{raw / "merchants.parquet"}') USING (merchant_id)"""
    ).fetchone() or (0, 0)
    assert risky > 3 * other


def _before_after(
    raw: Path, drift_start: str, expr: str, join_merchants: bool = False
) -> tuple[float, float]:
    join = (
        f"JOIN read_parquet('{raw / 'merchants.parquet'}') m USING (merchant_id) "
        f"JOIN read_parquet('{raw / 'users.parquet'}') u USING (user_id)"
        if join_merchants
        else ""
    )
    row = duckdb.sql(
        f"""SELECT avg({expr}) FILTER (WHERE transaction_timestamp < TIMESTAMPTZ '{drift_start}'),
                   avg({expr}) FILTER (WHERE transaction_timestamp >= TIMESTAMPTZ '{drift_start}')
            FROM read_parquet('{raw / "transactions.parquet"}') t {join}"""
    ).fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


@pytest.mark.parametrize(
    ("scenario", "expr", "join", "check"),
    [
        # Mean amount rises by the inflation factor (1.6) only after the drift start.
        ("amount_inflation", "amount", False, lambda b, a: 1.4 < a / b < 1.8),
        # A category never seen before appears, and only after the drift start.
        ("new_merchant_category", f"(m.category = '{NEW_CATEGORY}')::INT", True,
         lambda b, a: b == 0 and 0.04 < a < 0.15),
        # Shopping abroad becomes several times as common.
        ("country_mix_shift", "(m.country <> u.home_country)::INT", True, lambda b, a: a > 2.5 * b),
    ],
)  # fmt: skip
def test_drift_scenarios_shift_what_they_name(
    tmp_path: Path, scenario: str, expr: str, join: bool, check: object
) -> None:
    cfg = GenerationConfig(seed=9, transactions=40_000, drift=(scenario,))
    summary = generate(cfg, tmp_path / "drift")
    assert summary.drift_start is not None
    before, after = _before_after(tmp_path / "drift" / "raw", summary.drift_start, expr, join)
    assert callable(check) and check(before, after), (before, after)
    # Without the scenario, the same measure does not move like that.
    generate(GenerationConfig(seed=9, transactions=40_000), tmp_path / "plain")
    b0, a0 = _before_after(tmp_path / "plain" / "raw", summary.drift_start, expr, join)
    assert not check(b0, a0), (b0, a0)


def test_bad_configs_name_the_field() -> None:
    with pytest.raises(ConfigError, match="'transactions'"):
        GenerationConfig(transactions=10)
    with pytest.raises(ConfigError, match="'days'"):
        GenerationConfig(days=2)
    with pytest.raises(ConfigError, match="Unknown drift scenario 'inflation'"):
        GenerationConfig(drift=("inflation",))
    with pytest.raises(ConfigError, match="'drift_start_fraction'"):
        GenerationConfig(drift_start_fraction=1.5)
    with pytest.raises(ConfigError, match="'--scale'"):
        parse_scale("lots")


def test_parse_scale_and_drift_names() -> None:
    assert parse_scale("20000") == 20_000
    assert parse_scale("50k") == 50_000
    assert parse_scale("10M") == 10_000_000
    assert parse_scale("1_000") == 1_000
    assert drift_names(["amount_inflation,country_mix_shift", "amount_inflation"]) == (
        "amount_inflation",
        "country_mix_shift",
    )
