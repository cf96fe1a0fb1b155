"""Monitoring at scale: ``parity monitor`` vs Evidently's data-drift preset.

One run builds a reference of ``--reference`` rows and, per scenario, a
prediction log of ``--current`` rows of the same ten features (seven
numerical, three categorical, shaped like the sample's), then measures on
the same data, each in a fresh child process:

* ``parity``    — :func:`framework.monitoring.summary.monitor_summary` over the prediction log
  (Parquet, read by DuckDB) against the version's stored reference statistics:
  drift of every feature, score and confidence, decision mix, latency, missing
  and stale rates, cost, the timeline — reading the log included;
* ``evidently`` — Evidently's ``Report([DataDriftPreset()]).run(current, reference)``
  on pandas frames already in memory (loading them not timed), run from its own
  environment because Evidently 0.7 does not import with pandas 3.

Scenarios: ``clean`` (the reference's distribution again), ``amount_inflation``
(every amount 60 % higher) and ``new_merchant_category`` (8 % of transactions
at a category the reference never saw). Prints a Markdown table: wall time of
the call, peak RSS, and which features each flagged.

    .venv/bin/python bench/monitoring.py --setup-evidently        # once: its own venv
    .venv/bin/python bench/monitoring.py --current 1M --reference 200k
    .venv/bin/python bench/monitoring.py --estimation     # and parity vs NannyML's CBPE
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EVIDENTLY_VENV = Path.home() / ".cache" / "parity" / "evidently-venv"
EVIDENTLY_PINS = ["evidently==0.7.23", "pandas<3", "pyarrow", "psutil"]
NUMERICAL = ["amount", "hour_of_day", "txn_count_24h", "txn_count_7d", "amount_mean_7d",
             "credit_limit", "merchant_fraud_rate_30d"]  # fmt: skip
CATEGORICAL = ["category", "country", "card_type"]
SCENARIOS = {
    "clean": [],
    "amount_inflation": ["amount"],
    "new_merchant_category": ["category"],
}
MODEL = "bench_model"

PARITY_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import psutil
from pathlib import Path
from framework.monitoring.summary import monitor_summary
from framework.registry.model_registry import ModelRegistry
base = psutil.Process().memory_info().rss / 2**20
t = time.perf_counter()
summary = monitor_summary(Path(sys.argv[2]), ModelRegistry(Path(sys.argv[3])), "bench_model")
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
v = summary.to_dict()["versions"][0]
flagged = sorted(f["feature"] for f in v["drift"]["features"] if f["status"] == "drift")
print(json.dumps({"seconds": seconds, "peak_mib": peak, "base_mib": base, "flagged": flagged,
                  "rows": v["rows"]}))
"""

EVIDENTLY_CHILD = r"""
import json, resource, sys, time
import pandas as pd
import psutil
from evidently import Report
from evidently.presets import DataDriftPreset
reference = pd.read_parquet(sys.argv[1])
current = pd.read_parquet(sys.argv[2])
base = psutil.Process().memory_info().rss / 2**20
t = time.perf_counter()
snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
result = snapshot.dict()
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
flagged = []
for m in result["metrics"]:
    config = m.get("config") or {}
    if config.get("type", "").endswith("ValueDrift"):
        method = str(config.get("method") or "")
        value, threshold = m["value"], config.get("threshold")
        p_value = "p_value" in method
        if (value < threshold) if p_value else (value >= threshold):
            flagged.append(config["column"])
print(json.dumps({"seconds": seconds, "peak_mib": peak, "base_mib": base,
                  "flagged": sorted(flagged)}))
"""


def parse_count(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def sample(n: int, seed: int, shifted: list[str]) -> Any:
    """Ten features shaped like the sample's, with the named ones shifted."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    categories = ["grocery", "restaurants", "fuel", "online_retail", "travel", "electronics",
                  "entertainment", "health"]  # fmt: skip
    frame = pd.DataFrame(
        {
            "amount": np.round(rng.lognormal(3.4, 1.0, n), 2),
            "hour_of_day": rng.choice(
                24, n, p=np.roll(np.hanning(26)[1:-1], 8) / np.hanning(26)[1:-1].sum()
            ),
            "txn_count_24h": rng.poisson(2.5, n),
            "txn_count_7d": rng.poisson(12, n),
            "amount_mean_7d": np.round(rng.lognormal(3.4, 0.5, n), 2),
            "credit_limit": rng.choice([500.0, 1000.0, 2500.0, 5000.0, 10000.0], n),
            "merchant_fraud_rate_30d": rng.beta(1, 60, n),
            "category": rng.choice(
                categories, n, p=[0.25, 0.18, 0.12, 0.15, 0.08, 0.08, 0.08, 0.06]
            ),
            "country": rng.choice(
                ["DE", "FR", "NL", "ES", "IT", "PL"], n, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.05]
            ),  # fmt: skip
            "card_type": rng.choice(["debit", "credit", "prepaid"], n, p=[0.6, 0.35, 0.05]),
        }
    )
    if "amount" in shifted:
        frame["amount"] = np.round(frame["amount"] * 1.6, 2)
    if "category" in shifted:
        new = rng.random(n) < 0.08
        frame.loc[new, "category"] = "crypto_exchange"
    return frame


def build(workdir: Path, reference_rows: int, current_rows: int) -> None:
    """Reference Parquet + registry version with its statistics; per scenario the current
    rows as Parquet (for Evidently) and as a prediction log (for parity)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from framework.features.fields import FeatureField
    from framework.models.reference_stats import feature_profiles, numeric_profile
    from framework.registry.model_registry import ARTIFACT, ModelRegistry

    fields = [FeatureField(n, "Float64", "bench") for n in NUMERICAL] + [
        FeatureField(n, "String", "bench") for n in CATEGORICAL
    ]
    reference = sample(reference_rows, 1, [])
    reference.to_parquet(workdir / "reference.parquet")
    rng = np.random.default_rng(2)
    ref_score = rng.beta(1, 40, reference_rows)
    # A calibrated model's holdout: labels drawn from its scores.
    from sklearn.metrics import average_precision_score, roc_auc_score

    drawn = (rng.random(reference_rows) < ref_score).astype(int)
    holdout = {"roc_auc": float(roc_auc_score(drawn, ref_score)),
               "pr_auc": float(average_precision_score(drawn, ref_score))}  # fmt: skip
    registry = ModelRegistry(workdir / "models")
    registry.register(
        MODEL,
        {ARTIFACT: b"bench"},
        {
            "created_at": "2026-03-01T00:00:00.000+00:00",
            "feature_service": "bench_v1",
            "definitions_digest": "bench",
            "artifact": {"file": ARTIFACT, "format": "skops", "sha256": "0" * 64, "bytes": 5},
            "metrics": {"holdout": holdout, "uncalibrated": holdout, "baseline": holdout},
            "task": "classification",
            "features": [{"name": f.name, "dtype": f.dtype, "view": f.view} for f in fields],
            "join_keys": [],
            "request_data": {},
            "serving": {"threshold": 0.5, "accept": 0.85, "review_below": 0.6},
            "reference": {
                "features": feature_profiles(reference, fields),
                "score": numeric_profile(ref_score),
                "confidence": numeric_profile(np.maximum(ref_score, 1 - ref_score)),
            },
        },
    )
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for i, (name, shifted) in enumerate(SCENARIOS.items()):
        current = sample(current_rows, 10 + i, shifted)
        current.to_parquet(workdir / f"{name}.parquet")
        score = rng.beta(1, 40, current_rows)
        confidence = np.maximum(score, 1 - score)
        ts = pa.timestamp("us", tz="UTC")
        times = pa.array(
            (np.datetime64(start.replace(tzinfo=None), "us")
             + (np.arange(current_rows) * (86_400_000_000 // current_rows)).astype("timedelta64[us]")),
            ts,
        )  # fmt: skip
        table = pa.Table.from_pandas(current, preserve_index=False)
        for f in [*NUMERICAL, *CATEGORICAL]:
            table = table.append_column(f"{f}__status", pa.array(["PRESENT"] * current_rows))
        extra = {
            "__request_id": pa.array([f"r{j}" for j in range(current_rows)]),
            "__row_index": pa.array(np.zeros(current_rows, np.int32)),
            "__timestamp": times,
            "__log_timestamp": times,
            "model_name": pa.array([MODEL] * current_rows),
            "model_version": pa.array(["1"] * current_rows),
            "score": pa.array(score),
            "label": pa.array(np.where(score >= 0.5, "1", "0")),
            "confidence": pa.array(confidence),
            "decision": pa.array(
                np.where(
                    confidence >= 0.85, "ACCEPT", np.where(confidence >= 0.6, "VALIDATE", "REVIEW")
                )
            ),  # fmt: skip
            "reasons": pa.array([""] * current_rows),
            "latency_seconds": pa.array(rng.gamma(2.0, 0.002, current_rows)),
            "cpu_seconds": pa.array(rng.gamma(2.0, 0.001, current_rows)),
        }
        for k, v in extra.items():
            table = table.append_column(k, v)
        folder = workdir / f"log-{name}" / f"model={MODEL}" / "date=2026-03-01"
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "part-0.parquet", compression="zstd")


def _paths(workdir: Path) -> dict[str, Path]:
    paths = {"reference": workdir / "reference.parquet", "registry": workdir / "models"}
    for name in SCENARIOS:
        paths[name] = workdir / f"{name}.parquet"
        paths[f"log-{name}"] = workdir / f"log-{name}"
    return paths


def run(cmd: list[str]) -> dict[str, Any]:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def setup_evidently(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *EVIDENTLY_PINS], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--current", default="1M", help="logged predictions per scenario")
    parser.add_argument("--reference", default="200k", help="reference (training) rows")
    parser.add_argument("--evidently-venv", type=Path, default=EVIDENTLY_VENV)
    parser.add_argument("--setup-evidently", action="store_true",
                        help=f"create the Evidently environment ({', '.join(EVIDENTLY_PINS)})")  # fmt: skip
    parser.add_argument("--skip-evidently", action="store_true")
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS))
    parser.add_argument("--workdir", type=Path, help="keep the generated data here")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--estimation", action="store_true",
        help="then also the label-free performance estimate against NannyML's CBPE on 1M "
        "scored rows (bench/performance_estimation.py, its own venv: --setup-nannyml there)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.build_only:
        build(args.workdir, parse_count(args.reference), parse_count(args.current))
        return
    if args.setup_evidently:
        setup_evidently(args.evidently_venv)
        return
    evidently_python = args.evidently_venv / "bin" / "python"
    if not args.skip_evidently and not evidently_python.exists():
        raise SystemExit(
            f"No Evidently environment at {args.evidently_venv}: run with --setup-evidently "
            "first (or --skip-evidently)."
        )
    current, reference = parse_count(args.current), parse_count(args.reference)
    scenarios = args.scenario or list(SCENARIOS)
    with tempfile.TemporaryDirectory(prefix="parity-bench-monitoring-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        # Built in a child: ru_maxrss survives fork and exec on Linux, so a parent grown by
        # the data would inflate every measuring child's peak.
        subprocess.run(
            [sys.executable, __file__, "--build-only", "--workdir", str(workdir),
             "--current", str(current), "--reference", str(reference)],
            check=True,
        )  # fmt: skip
        paths = _paths(workdir)
        results: list[tuple[str, str, dict[str, Any]]] = []
        for name in scenarios:
            results.append((name, "parity", run([sys.executable, "-c", PARITY_CHILD, str(ROOT),
                            str(paths[f"log-{name}"]), str(paths["registry"])])))  # fmt: skip
            if not args.skip_evidently:
                results.append((name, "evidently", run([str(evidently_python), "-c",
                                EVIDENTLY_CHILD, str(paths["reference"]), str(paths[name])])))  # fmt: skip
    print(
        f"\nMonitoring: {current:,} logged predictions x {reference:,} reference rows, "
        f"{len(NUMERICAL) + len(CATEGORICAL)} features ({len(NUMERICAL)} numerical, "
        f"{len(CATEGORICAL)} categorical); {platform.machine()}, "
        f"{_cores()} cores, Python {platform.python_version()}\n"
    )
    print(
        "| scenario | shifted | tool | wall s | peak RSS MiB | above baseline MiB | flagged | wall vs parity |"
    )
    print("|---|---|---|---:|---:|---:|---|---:|")
    parity_seconds = {n: r["seconds"] for n, tool, r in results if tool == "parity"}
    for name, tool, r in results:
        print(
            f"| {name} | {', '.join(SCENARIOS[name]) or '–'} | {tool} | {r['seconds']:.2f} | "
            f"{r['peak_mib']:,.0f} | {r['peak_mib'] - r['base_mib']:,.0f} | "
            f"{', '.join(r['flagged']) or 'none'} | {r['seconds'] / parity_seconds[name]:.1f}× |"
        )
    verdicts = {}
    for name, tool, r in results:
        verdicts.setdefault(name, {})[tool] = r["flagged"]
    print()
    for name, by_tool in verdicts.items():
        expected = sorted(SCENARIOS[name])
        line = ", ".join(
            f"{t}: {'as expected' if f == expected else f}" for t, f in by_tool.items()
        )
        print(f"{name}: expected {expected or 'none'} -> {line}")
    if args.estimation:
        # The same machine, the same run: the label-free estimate against NannyML.
        subprocess.run([sys.executable, str(ROOT / "bench" / "performance_estimation.py")],
                       check=True)  # fmt: skip


def _cores() -> int:
    import os

    return os.cpu_count() or 1


if __name__ == "__main__":
    main()
