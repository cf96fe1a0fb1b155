"""Point-in-time training sets: parity vs Feast vs a hand-written DuckDB ASOF JOIN.

One run measures, side by side on the same data and entity frame:

* ``parity``   — ``framework.build_training_set`` (DuckDB ASOF joins, fingerprint)
* ``feast``    — Feast 0.67 ``get_historical_features(...).to_arrow()``, DuckDB offline store
* ``floor``    — one hand-written DuckDB query (ASOF LEFT JOIN per view, TTL, input
  order) fetched to Arrow: what the join costs with nothing around it

Each measurement runs in a fresh child process (so peak RSS is its own) after
the imports; wall time covers the call only. Prints a Markdown table of
medians and spreads over ``--repeat`` runs, and ratios to parity.

    .venv/bin/python bench/training_set.py --entities 1M --transactions 2M [--repeat 3]
    .venv/bin/python bench/training_set.py --stream 10M   # 10M rows to Parquet, peak RSS
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VIEWS_ONLY = [
    "user_profile:home_country",
    "user_profile:card_type",
    "user_profile:credit_limit",
    "merchant_profile:category",
    "merchant_profile:country",
    "user_txn_1h:txn_count_1h",
    "user_txn_24h:txn_count_24h",
    "user_txn_7d:txn_count_7d",
    "user_txn_7d:amount_mean_7d",
    "user_txn_7d:amount_std_7d",
    "user_txn_7d:distinct_merchants_7d",
    "merchant_risk_30d:merchant_txn_count_30d",
    "merchant_risk_30d:merchant_chargeback_count_30d",
    "merchant_risk_30d:merchant_fraud_rate_30d",
]

FLOOR_SQL = """
WITH e AS (SELECT * FROM entity_arrow)
SELECT e.user_id, e.merchant_id, e.amount, e.hour_of_day, e.event_timestamp,
       up.home_country, up.card_type, up.credit_limit, mp.category, mp.country,
       CASE WHEN u.event_timestamp >= e.event_timestamp - INTERVAL 1 HOUR THEN u.txn_count_1h END,
       CASE WHEN u.event_timestamp >= e.event_timestamp - INTERVAL 24 HOUR THEN u.txn_count_24h END,
       CASE WHEN u.event_timestamp >= e.event_timestamp - INTERVAL 7 DAY THEN u.txn_count_7d END,
       CASE WHEN u.event_timestamp >= e.event_timestamp - INTERVAL 7 DAY THEN u.amount_mean_7d END,
       CASE WHEN u.event_timestamp >= e.event_timestamp - INTERVAL 7 DAY THEN u.amount_std_7d END,
       CASE WHEN u.event_timestamp >= e.event_timestamp - INTERVAL 7 DAY
            THEN u.distinct_merchants_7d END,
       CASE WHEN m.event_timestamp >= e.event_timestamp - INTERVAL 2 DAY
            THEN m.merchant_txn_count_30d END,
       CASE WHEN m.event_timestamp >= e.event_timestamp - INTERVAL 2 DAY
            THEN m.merchant_chargeback_count_30d END,
       CASE WHEN m.event_timestamp >= e.event_timestamp - INTERVAL 2 DAY
            THEN m.merchant_fraud_rate_30d END
FROM e
ASOF LEFT JOIN read_parquet('{offline}/user_profile.parquet') up
  ON e.user_id = up.user_id AND e.event_timestamp >= up.event_timestamp
ASOF LEFT JOIN read_parquet('{offline}/merchant_profile.parquet') mp
  ON e.merchant_id = mp.merchant_id AND e.event_timestamp >= mp.event_timestamp
ASOF LEFT JOIN read_parquet('{offline}/user_transaction_features.parquet') u
  ON e.user_id = u.user_id AND e.event_timestamp >= u.event_timestamp
ASOF LEFT JOIN read_parquet('{offline}/merchant_risk_features.parquet') m
  ON e.merchant_id = m.merchant_id AND e.event_timestamp >= m.event_timestamp
ORDER BY e.rn
"""

# The child: import everything first, then time exactly one call.
CHILD = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
mode, repo, entities, features = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
import duckdb, pandas as pd, pyarrow.parquet as pq
from framework.features.repository import load_store
from framework.features.training_set import build_training_set, write_training_set
from pathlib import Path
sys.path.insert(0, sys.argv[6])
from bench.training_set import FLOOR_SQL
store = load_store(Path(repo))
feats = store.get_feature_service("fraud_model_v1") if features == "service" else json.loads(features)
table = pq.read_table(entities)
frame = table.to_pandas()
if mode == "floor":
    import pyarrow as pa
    entity_arrow = table.append_column("rn", pa.array(range(table.num_rows)))
import psutil
base = psutil.Process().memory_info().rss / 2**20
t = time.perf_counter()
if mode == "parity":
    rows = build_training_set(store, feats, frame).num_rows
elif mode == "feast":
    rows = store.get_historical_features(entity_df=frame, features=feats).to_arrow().num_rows
elif mode == "floor":
    con = duckdb.connect(); con.execute("SET TimeZone='UTC'")
    # Without this DuckDB plans ASOF over a registered Arrow table as a nested loop
    # (its row estimate is 0): minutes instead of seconds at 1M rows.
    con.execute("SET asof_loop_join_threshold = 0")
    con.register("entity_arrow", entity_arrow)
    sql = FLOOR_SQL.format(offline=str(Path(repo).parent / "data" / "offline"))
    rows = con.execute(sql).to_arrow_table().num_rows
elif mode == "stream":
    rows = write_training_set(store, feats, entities, Path(sys.argv[5]),
                              memory_limit="2GB", temp_directory=Path(sys.argv[5]).parent / "spill").entity_rows
wall = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"wall": wall, "rows": rows, "rss_mb": peak, "delta_mb": peak - base}))
"""


def child(
    mode: str, repo: Path, entities: Path, features: str, out: Path | None = None
) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(repo), str(entities), features, str(out or ""),
         str(ROOT)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def setup(workdir: Path, transactions: int, entities: int) -> tuple[Path, Path, dict[str, int]]:
    import duckdb

    from framework.features.repository import apply
    from framework.sample.data import generate
    from framework.sample.pipeline import build_offline_sources
    from framework.sample.scenario import GenerationConfig

    shutil.copytree(ROOT / "feature_repo", workdir / "feature_repo",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    data = workdir / "data"
    generate(GenerationConfig(seed=1, transactions=transactions), data)
    rows = build_offline_sources(data / "raw", data / "offline").rows
    apply(workdir / "feature_repo")
    path = workdir / "entities.parquet"
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    # Entity rows: real transactions (some repeated when asking for more than there are),
    # scored 1 µs before they happen, in a shuffled but fixed order.
    con.execute(
        f"""COPY (
            SELECT user_id, merchant_id, amount, hour(transaction_timestamp)::BIGINT AS hour_of_day,
                   transaction_timestamp - INTERVAL 1 MICROSECOND AS event_timestamp
            FROM read_parquet('{data}/raw/transactions.parquet'),
                 range(CAST(ceil({entities} / (SELECT count(*)
                       FROM read_parquet('{data}/raw/transactions.parquet'))) AS BIGINT)) r
            ORDER BY hash(transaction_id, r.range) LIMIT {entities}
        ) TO '{path}' (FORMAT parquet)"""
    )
    return workdir / "feature_repo", path, rows


def parse_count(text: str) -> int:
    from framework.sample.data import parse_scale

    return parse_scale(text)


def stats(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", default="1M")
    parser.add_argument("--transactions", default="2M")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stream", metavar="N", help="instead: N entity rows to Parquet")
    args = parser.parse_args()
    machine = (f"{platform.machine()}, {__import__('os').cpu_count()} cores, "
               f"Python {platform.python_version()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="parity-bench-") as tmp:
        work = Path(tmp)
        if args.stream:
            n = parse_count(args.stream)
            repo, entities, rows = setup(work, n, n)
            r = child("stream", repo, entities, "service", work / "out" / "train.parquet")
            print(f"write_training_set, fraud_model_v1, {r['rows']:,.0f} entity rows -> Parquet "
                  f"(DuckDB memory limit 2GB; {machine})")  # fmt: skip
            print("| entity rows | feature rows | wall (s) | peak RSS (MiB) |")
            print("|---:|---:|---:|---:|")
            print(f"| {r['rows']:,.0f} | {sum(rows.values()):,} | {r['wall']:.1f} "
                  f"| {r['rss_mb']:,.0f} |")  # fmt: skip
            return
        repo, entities, rows = setup(
            work, parse_count(args.transactions), parse_count(args.entities)
        )
        cases = [("6 feature views, 14 features", json.dumps(VIEWS_ONLY), ("parity", "feast", "floor")),
                 ("feature service incl. on-demand view", "service", ("parity", "feast"))]  # fmt: skip
        print(
            f"Training set: {parse_count(args.entities):,} entity rows; feature rows: "
            + ", ".join(f"{k} {v:,}" for k, v in rows.items())
            + f"; {args.repeat} runs each, fresh process per run ({machine})"
        )
        print()
        print("| features | engine | wall s, median (min–max) | peak RSS MiB | above baseline MiB "
              "| wall vs parity | peak RSS vs parity | above baseline vs parity |")  # fmt: skip
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for label, features, engines in cases:
            results: dict[str, list[dict[str, float]]] = {}
            for _ in range(args.repeat):
                for engine in engines:  # interleaved, so drift in the machine hits all alike
                    results.setdefault(engine, []).append(child(engine, repo, entities, features))
            base_wall = statistics.median(r["wall"] for r in results["parity"])
            base_rss = statistics.median(r["rss_mb"] for r in results["parity"])
            base_delta = statistics.median(r["delta_mb"] for r in results["parity"])
            for engine in engines:
                walls = [r["wall"] for r in results[engine]]
                rss = statistics.median(r["rss_mb"] for r in results[engine])
                delta = statistics.median(r["delta_mb"] for r in results[engine])
                print(
                    f"| {label} | {engine} | {stats(walls)} | {rss:,.0f} | {delta:,.0f} "
                    f"| {statistics.median(walls) / base_wall:.2f}× | {rss / base_rss:.2f}× "
                    f"| {delta / base_delta:.2f}× |"
                )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
