"""The feature pipeline: raw sample tables to the Feast repository's offline sources.

Everything is DuckDB SQL over Parquet, so it streams at any scale. Outputs, one
Parquet file each under ``<data>/offline/`` (timestamps tz-aware UTC at
microsecond precision, which Feast's DuckDB offline store can cast):

``user_profile.parquet``
    Static user attributes, stamped at sign-up.
``merchant_profile.parquet``
    Static merchant attributes, stamped when the merchant opened.
``user_transaction_features.parquet``
    One row per user and transaction time ``t``: counts over 1 h, 24 h and 7 d,
    amount mean and standard deviation and distinct merchants over 7 d. Each
    window is the closed interval ``[t - w, t]``: it includes the transaction
    at ``t`` itself (and any other of the user's transactions at the same
    microsecond) and one exactly ``w`` earlier.
``merchant_risk_features.parquet``
    One row per merchant and day ``D`` (a snapshot at 00:00 UTC, from the day
    after the first transaction to the day after the last): transactions in
    the half-open window ``[D - 30 d, D)`` and how many of them had a
    chargeback that had *arrived* by ``D`` (``label_timestamp <= D``), so the
    fraud rate never uses a label that was not yet known: no label leakage.
    A sample generated with the ``merchant_risk_outage`` scenario (its
    ``raw/manifest.json`` says so) breaks silently at the drift start: the job
    reads an empty transaction table from then on and still publishes, so every
    snapshot counts 0 transactions and 0 chargebacks (fraud rate missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from framework.duck import connect
from framework.errors import DataError
from framework.progress import Progress

OFFLINE_FILES = {
    "user_profile": "user_profile.parquet",
    "merchant_profile": "merchant_profile.parquet",
    "user_transaction_features": "user_transaction_features.parquet",
    "merchant_risk_features": "merchant_risk_features.parquet",
}
RAW_FILES = ("users", "merchants", "transactions", "labels")
#: The task :func:`build_offline_sources` reports its sources under.
TASK = "offline sources"

_QUERIES = {
    "user_profile": """
        SELECT user_id, signup_timestamp AS event_timestamp,
               home_country, card_type, credit_limit
        FROM read_parquet($users)
    """,
    "merchant_profile": """
        SELECT merchant_id, created_timestamp AS event_timestamp, category, country
        FROM read_parquet($merchants)
    """,
    "user_transaction_features": """
        SELECT user_id,
               transaction_timestamp AS event_timestamp,
               COUNT(*) OVER w1h AS txn_count_1h,
               COUNT(*) OVER w24h AS txn_count_24h,
               COUNT(*) OVER w7d AS txn_count_7d,
               AVG(amount) OVER w7d AS amount_mean_7d,
               STDDEV_SAMP(amount) OVER w7d AS amount_std_7d,
               COUNT(DISTINCT merchant_id) OVER w7d AS distinct_merchants_7d
        FROM read_parquet($transactions)
        WINDOW
            w1h AS (PARTITION BY user_id ORDER BY transaction_timestamp
                    RANGE BETWEEN INTERVAL 1 HOUR PRECEDING AND CURRENT ROW),
            w24h AS (PARTITION BY user_id ORDER BY transaction_timestamp
                     RANGE BETWEEN INTERVAL 24 HOURS PRECEDING AND CURRENT ROW),
            w7d AS (PARTITION BY user_id ORDER BY transaction_timestamp
                    RANGE BETWEEN INTERVAL 7 DAYS PRECEDING AND CURRENT ROW)
        -- Transactions of one user at the same microsecond share one window,
        -- so they produce identical rows: keep one per (user, time).
        QUALIFY ROW_NUMBER() OVER (
            PARTITION BY user_id, transaction_timestamp ORDER BY transaction_id) = 1
    """,
    "merchant_risk_features": """
        WITH tx AS (
            SELECT merchant_id, transaction_timestamp AS ts FROM read_parquet($transactions)
        ),
        bounds AS (
            SELECT date_trunc('day', min(ts)) + INTERVAL 1 DAY AS first_day,
                   date_trunc('day', max(ts)) + INTERVAL 1 DAY AS last_day
            FROM tx
        ),
        -- Every calendar day of the data, so that the 30-day sums see every
        -- transaction, including those on days that are not snapshot days
        -- (the first day of the data, the day a merchant opened).
        all_days AS (
            SELECT unnest(generate_series(first_day - INTERVAL 1 DAY, last_day, INTERVAL 1 DAY))
                   AS day
            FROM bounds
        ),
        daily AS (
            SELECT merchant_id, date_trunc('day', ts) AS day, COUNT(*) AS n
            FROM tx GROUP BY ALL
        ),
        txn_30d AS (
            -- Day buckets D-30 .. D-1 are exactly the window [D - 30 d, D).
            SELECT g.merchant_id, g.day,
                   COALESCE(SUM(d.n) OVER (
                       PARTITION BY g.merchant_id ORDER BY g.day
                       RANGE BETWEEN INTERVAL 30 DAYS PRECEDING AND INTERVAL 1 DAY PRECEDING
                   ), 0)::BIGINT AS merchant_txn_count_30d
            FROM (SELECT merchant_id, day FROM read_parquet($merchants), all_days) g
            LEFT JOIN daily d USING (merchant_id, day)
        ),
        -- Snapshots: from the day after the first transaction, once the merchant is open.
        snapshots AS (
            SELECT t.*
            FROM txn_30d t JOIN read_parquet($merchants) m USING (merchant_id), bounds b
            WHERE t.day >= b.first_day AND t.day > m.created_timestamp
        ),
        chargebacks AS (
            -- A fraud counts for snapshot D when D - 30 d <= ts < D and its
            -- chargeback had arrived: label_timestamp <= D.
            SELECT merchant_id, day, COUNT(*) AS n
            FROM (
                SELECT merchant_id, transaction_timestamp AS ts, label_timestamp,
                       unnest(generate_series(
                           date_trunc('day', transaction_timestamp) + INTERVAL 1 DAY,
                           date_trunc('day', transaction_timestamp) + INTERVAL 31 DAY,
                           INTERVAL 1 DAY)) AS day
                FROM read_parquet($labels) WHERE is_fraud = 1
            )
            WHERE ts >= day - INTERVAL 30 DAY AND ts < day AND label_timestamp <= day
            GROUP BY ALL
        )
        -- The merchant_risk_outage scenario: from $outage_start on ('infinity' otherwise)
        -- the job reads an empty transaction table and still publishes.
        SELECT t.merchant_id,
               t.day AS event_timestamp,
               CASE WHEN t.day < $outage_start::TIMESTAMPTZ
                    THEN t.merchant_txn_count_30d ELSE 0 END AS merchant_txn_count_30d,
               CASE WHEN t.day < $outage_start::TIMESTAMPTZ
                    THEN COALESCE(c.n, 0) ELSE 0 END AS merchant_chargeback_count_30d,
               CASE WHEN t.merchant_txn_count_30d > 0 AND t.day < $outage_start::TIMESTAMPTZ
                    THEN COALESCE(c.n, 0) / t.merchant_txn_count_30d END
                   AS merchant_fraud_rate_30d
        FROM snapshots t LEFT JOIN chargebacks c USING (merchant_id, day)
    """,
}


def _outage_start(raw_dir: Path) -> str:
    """When the merchant-risk job starts reading an empty table: the drift start of a
    sample generated with the ``merchant_risk_outage`` scenario, else never."""
    import json

    manifest = raw_dir / "manifest.json"
    if not manifest.exists():
        return "infinity"
    generated = json.loads(manifest.read_text())
    if "merchant_risk_outage" in (generated.get("config") or {}).get("drift", []):
        return str(generated["drift_start"])
    return "infinity"


@dataclass
class PipelineResult:
    """Row counts of each offline source written."""

    rows: dict[str, int]
    files: dict[str, str]


def build_offline_sources(
    raw_dir: Path,
    out_dir: Path,
    *,
    memory_limit: str | None = None,
    temp_directory: Path | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
) -> PipelineResult:
    """Compute every offline source from the raw tables in ``raw_dir``.

    Each file is written under a temporary name and renamed when complete, so a
    reader never sees a half-written source. ``progress`` hears of each source
    written (task ``offline sources``), with its name and rows.
    """
    missing = [
        f"{name}.parquet" for name in RAW_FILES if not (raw_dir / f"{name}.parquet").exists()
    ]
    if missing:
        raise DataError(
            f"Raw sample data not found in {raw_dir}: missing {', '.join(missing)}. "
            "Run 'parity data generate' first."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {name: str(raw_dir / f"{name}.parquet") for name in RAW_FILES}
    params["outage_start"] = _outage_start(raw_dir)
    rows: dict[str, int] = {}
    files: dict[str, str] = {}
    progress = progress or Progress()
    con = connect(memory_limit=memory_limit, temp_directory=temp_directory, threads=threads)
    progress.start(TASK, len(_QUERIES), "sources", "building")
    try:
        # Output order does not matter here; dropping it lets DuckDB stream.
        con.execute("SET preserve_insertion_order = false")
        for name, query in _QUERIES.items():
            target = out_dir / OFFLINE_FILES[name]
            tmp = target.with_suffix(".parquet.tmp")
            used = {k: v for k, v in params.items() if f"${k}" in query}
            quoted = str(tmp).replace("'", "''")
            con.execute(
                f"COPY ({query}) TO '{quoted}' (FORMAT parquet, COMPRESSION zstd)",
                used,
            )
            tmp.replace(target)
            (count,) = con.execute(
                "SELECT count(*) FROM read_parquet(?)", [str(target)]
            ).fetchone() or (0,)
            rows[name] = int(count)
            files[name] = str(target)
            progress.advance(TASK, 1, f"{name}: {rows[name]:,} rows")
    finally:
        con.close()
    progress.finish(TASK)
    return PipelineResult(rows=rows, files=files)
