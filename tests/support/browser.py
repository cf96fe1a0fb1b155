"""Headless Chromium for the tests that open parity's HTML report in a real browser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.services import missing


def chromium() -> str:
    """The Chromium binary; a test without one skips with the reason (fails under CI)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    missing("headless Chromium is not installed (Debian: apt-get install chromium)")
    raise AssertionError("unreachable")


def dump_dom(page: Path, profile: Path) -> tuple[str, str]:
    """The DOM Chromium built from ``page`` after loading it, and its log (stderr)."""
    proc = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr
