"""``parity`` run as a user runs it: a child process, from a folder of the test's choosing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARITY = [sys.executable, "-m", "framework.cli"]


def parity(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "PARITY_REPO"}
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT), base.get("PYTHONPATH", "")])
    return subprocess.run(
        [*PARITY, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**base, **(env or {})},
    )  # fmt: skip
