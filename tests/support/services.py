"""Servers a test needs: free ports, reachability, and the skip-or-fail rule.

A test that needs a server it cannot reach is skipped with the reason, except under CI
(``CI=true``), where a missing server is a failure (:func:`missing`).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> None:
    """Skip the test because ``what`` is not available; under CI, fail it instead."""
    message = f"{what} (set up by .ci/run via scripts/ensure-services)"
    if IN_CI:
        pytest.fail(f"CI=true but {message}")
    pytest.skip(message)


def reachable(host: str, port: int) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    ready: Callable[[], bool],
    *,
    deadline: float,
    what: str,
    gave_up: Callable[[], str | None] = lambda: None,
    poll: float = 0.05,
) -> None:
    """Poll ``ready()`` until it is true or ``deadline`` seconds pass.

    ``gave_up()`` returns a reason to stop early (a process that exited), else None.
    Raises AssertionError naming ``what`` and the reason.
    """
    end = time.monotonic() + deadline
    while not ready():
        reason = gave_up()
        if reason is None and time.monotonic() > end:
            reason = f"not ready after {deadline:g} s"
        if reason is not None:
            raise AssertionError(f"{what}: {reason}")
        time.sleep(poll)


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """A ``redis-server`` of the caller's own on ``port`` (no persistence), once it accepts
    connections; skips (or fails under CI) when the binary is not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server is not installed")
    assert binary is not None
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(
            lambda: reachable("127.0.0.1", port),
            deadline=10,
            what=f"redis-server on port {port}",
            gave_up=lambda: None if proc.poll() is None else f"exited {proc.returncode}",
        )
    except AssertionError:
        proc.kill()
        proc.wait()
        raise
    return proc
