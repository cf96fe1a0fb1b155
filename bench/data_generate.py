"""Time and peak memory of `parity data generate` at a given scale.

Runs the real command in a child process (raw tables, then the DuckDB feature
pipeline) and samples the child's resident memory, so the figures are what a
user sees. Prints a table.

    .venv/bin/python bench/data_generate.py --scale 10M [--memory-limit 4GB]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


def run(scale: str, out: Path, memory_limit: str | None) -> dict[str, float]:
    cmd = [sys.executable, "-m", "framework.cli", "data", "generate", "--scale", scale,
           "--out", str(out), "--json"]  # fmt: skip
    if memory_limit:
        cmd += ["--memory-limit", memory_limit, "--temp-dir", str(out / "duckdb_tmp")]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    ps = psutil.Process(proc.pid)

    def sample() -> None:
        nonlocal peak
        while proc.poll() is None:
            try:
                peak = max(peak, ps.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"generate failed: {stderr.strip()}")
    summary = json.loads(stdout)
    size = sum(f.stat().st_size for f in out.rglob("*.parquet"))
    return {
        "transactions": summary["raw"]["transactions"],
        "raw_s": summary["raw_seconds"],
        "features_s": summary["offline_seconds"],
        "wall_s": wall,
        "peak_rss_mb": peak / 2**20,
        "parquet_mb": size / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="10M")
    parser.add_argument("--memory-limit", default=None)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="parity-bench-"))
    try:
        r = run(args.scale, out, args.memory_limit)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    cpu = platform.processor() or platform.machine()
    print(f"parity data generate --scale {args.scale}  ({psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {cpu}, "
          f"DuckDB memory limit {args.memory_limit or 'default'})")  # fmt: skip
    print("| transactions | raw tables (s) | feature pipeline (s) | total wall (s) "
          "| peak RSS (MiB) | Parquet written (MiB) |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {r['transactions']:,.0f} | {r['raw_s']:.1f} | {r['features_s']:.1f} "
          f"| {r['wall_s']:.1f} | {r['peak_rss_mb']:,.0f} | {r['parquet_mb']:,.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
