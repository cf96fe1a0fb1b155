"""The test clients' own environment: independent clients (tritonclient) run by the tests.

A client that nobody here wrote checks parity's transports from outside, so it must not
share parity's environment: tritonclient needs protobuf < 7 (parity runs on 7), and its
``inference.*`` messages clash with parity's stubs of the same package in one process. The
tests run it as a child process of :func:`client_python`, the interpreter of a virtual
environment installed exactly from ``tests/clients/requirements.txt`` (hash-locked by
scripts/lock from ``tests/clients/requirements.in``), as the benchmark anchors have their
own environments (``bench/serving.py --setup-anchors``).

The environment is made once per version of the requirements file, under
``~/.cache/parity/test-clients-<hash>`` (``$XDG_CACHE_HOME`` if set), behind a file lock
so that pytest processes started together make it once. Without it (no network on a
first run) a test skips with the reason, except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import IN_CI

REQUIREMENTS = Path(__file__).resolve().parents[1] / "clients" / "requirements.txt"
_DONE = ".parity-complete"  # written last: an environment without it is half made


def client_python() -> Path:
    """The interpreter of the test-client environment, made on first use."""
    python = _environment(REQUIREMENTS)
    if isinstance(python, Path):
        return python
    message = f"the test-client environment could not be made: {python}"
    if IN_CI:
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


@functools.cache
def _environment(requirements: Path) -> Path | str:
    """The environment's interpreter, or why it could not be made (said once per run)."""
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "parity"
    venv = cache / f"test-clients-{digest}"
    python = venv / "bin" / "python"
    if (venv / _DONE).exists() and python.exists():  # not if its base Python went away
        return python
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"test-clients-{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest process may be making it
        if (venv / _DONE).exists() and python.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)  # what a killed attempt left
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
             "--require-hashes", "--no-deps", "-r", str(requirements)],
        ]  # fmt: skip
        for step in steps:
            try:  # within pytest's timeout of 600 s per test, which would say less
                done = subprocess.run(step, capture_output=True, text=True, timeout=420)
            except subprocess.TimeoutExpired:
                shutil.rmtree(venv, ignore_errors=True)
                return f"{' '.join(step[:4])} ... took over 420 s"
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                lines = [line for line in done.stderr.splitlines() if "is ignored" not in line]
                return f"{' '.join(step[:4])} ... exited {done.returncode}: " + " | ".join(
                    lines[-3:]
                )
        (venv / _DONE).write_text(requirements.read_text(encoding="utf-8"), encoding="utf-8")
    return python
