"""The monitoring benchmark still runs: a tiny run of ``bench/monitoring.py`` (parity's
side; Evidently needs its own environment) flags exactly the shifted feature of each
scenario. Nothing here reads a time: the benchmark's numbers are for docs/benchmarks.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_monitoring_benchmark_runs_and_flags_the_shifted_features() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "monitoring.py"), "--current", "5k",
         "--reference", "5k", "--skip-evidently"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    verdicts = [line for line in run.stdout.splitlines() if ": expected " in line]
    assert len(verdicts) == 3 and all(v.endswith("parity: as expected") for v in verdicts), (
        run.stdout
    )
