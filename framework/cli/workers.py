"""``parity serve --workers N``: N single-process servers on one port.

Each worker is a ``parity serve --workers 1`` child process given the same settings
as flags; the port is shared through SO_REUSEPORT (gRPC sets it), so the kernel
spreads connections across them. SIGTERM and SIGINT are forwarded to every worker;
the command reports listening only once every worker listens with its models loaded.
Under ``--cpu-affinity spread`` (the default) worker ``i`` is pinned to the ``i``-th
core the command may use (:mod:`framework.cli.cpu_affinity`).
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

from framework.cli import cpu_affinity
from framework.cli.serve_flags import settings_argv
from framework.errors import ConfigError
from serving.grpc.settings import ServeSettings


def serve_processes(args: argparse.Namespace, settings: ServeSettings) -> None:
    """Run ``settings.workers`` single-process servers on one port (SO_REUSEPORT: the
    kernel spreads connections across them); forward SIGTERM/SIGINT and wait."""
    port = settings.port or _free_port(settings.host)
    # One HTTP port for every worker too (SO_REUSEPORT), picked here when "any".
    if settings.http_port == 0:
        settings = settings.model_copy(update={"http_port": _free_port(settings.host)})
    common = _worker_argv(args, settings, port)
    children: list[subprocess.Popen[str]] = []
    # Before the first worker starts: a signal from here on reaches every worker started.
    forwarded: set[int] = set()

    def forward(signum: int, frame: Any) -> None:
        forwarded.add(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    unpinned: list[str] = []
    for i in range(settings.workers):
        extra = (
            []
            if settings.metrics_port is None
            else ["--metrics-port", str(settings.metrics_port + i)]
        )
        child = subprocess.Popen(
            [sys.executable, "-m", "framework.cli", "serve", *common, *extra],
            stdout=subprocess.PIPE,
            text=True,
        )
        children.append(child)
        if settings.cpu_affinity == "spread":
            # Pinned at once, while the child is one thread starting Python: the threads
            # it starts later inherit the core (framework.cli.cpu_affinity).
            _, why = cpu_affinity.place(child.pid, i)
            if why is not None:
                unpinned.append(why)
    if unpinned:
        print(f"parity serve: warning: workers not pinned to cores: {unpinned[0]}", file=sys.stderr)
    pids = ", ".join(str(c.pid) for c in children)
    print(
        f"parity serve: starting {settings.workers} worker processes (pids {pids}) on "
        f"{settings.host}:{port}",
        flush=True,
    )
    failed = _first_not_listening(children, forwarded)
    if failed is not None:
        forward(signal.SIGTERM, None)
        codes = [child.wait() for child in children]
        raise ConfigError(
            f"worker process {failed.pid} exited with {failed.returncode} before listening "
            f"(its messages are above); the others were stopped ({codes})"
        )
    if not forwarded:
        print(
            f"parity serve: listening on {settings.host}:{port} (http: "
            f"{settings.http_port or 'off'}) with {settings.workers} worker processes "
            f"(pids {pids})",
            flush=True,
        )
    _wait(children, forwarded)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _worker_argv(args: argparse.Namespace, settings: ServeSettings, port: int) -> list[str]:
    """A worker's flags: this command's settings on the chosen port, one process each
    (``--metrics-port`` is added per worker)."""
    argv = ["--port", str(port), "--workers", "1", "--cpu-affinity", "off"]  # pinned here
    argv += settings_argv(settings, leave_out={"port", "workers", "metrics_port", "cpu_affinity"})
    for flag, value in (("--repo", args.repo), ("--registry", args.registry)):
        if value is not None:
            argv += [flag, str(value)]
    return [*argv, "--profile", args.profile.value]


def _first_not_listening(
    children: list[subprocess.Popen[str]], forwarded: set[int]
) -> subprocess.Popen[str] | None:
    """The first worker whose output ended (it exited) before it said it listens."""
    # "Listening" only once every worker listens with its models loaded: until then the
    # kernel would hand every connection to the workers that are up (SO_REUSEPORT).
    for child in children:
        assert child.stdout is not None
        if not any("listening on" in line for line in child.stdout) and not forwarded:
            return child
        threading.Thread(target=child.stdout.read, daemon=True).start()  # later lines
    return None


def _wait(children: list[subprocess.Popen[str]], forwarded: set[int]) -> None:
    codes = [child.wait() for child in children]
    # A worker still starting (imports, model loading) has no handler yet and dies of the
    # forwarded signal itself: it had accepted nothing, so that is a clean stop too.
    if any(code != 0 and -code not in forwarded for code in codes):
        raise ConfigError(f"worker processes exited with {codes}")
    print("parity serve: stopped; prediction logs flushed", flush=True)
