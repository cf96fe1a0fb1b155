"""``parity serve`` as a process: started on a free port, ready once it answers health,
stopped with SIGTERM (then killed) however the test ends.

Its stdout and stderr go to files (no pipe to fill up or to read line by line), so a
test reads what the server said at any time, and a server that fails to start or a
test that fails while it runs shows the end of its stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.services import free_port, wait_until

#: ``parity`` as this interpreter runs it (the installed console script would do too).
PARITY = (sys.executable, "-m", "framework.cli")
#: Seconds a server gets to load its models and answer health, and to stop.
START_SECONDS = 180.0
STOP_SECONDS = 60.0


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a file (empty if there is none)."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@dataclass
class ServeProcess:
    """A running ``parity serve``: ``target`` is ``host:port`` from its 'listening on' line
    (``line``); ``stdout``/``stderr`` are the files it writes."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    tls_ca: Path | None = None
    line: str = ""
    target: str = ""
    stopped: bool = False  # by :meth:`stop` (else an exit is a crash)

    @classmethod
    def start(
        cls,
        *args: str,
        logs: Path,
        name: str = "serve",
        command: Sequence[str] = PARITY,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        tls_ca: Path | None = None,
        ready: bool = True,
    ) -> ServeProcess:
        """Start ``command serve *args`` (``--port`` a free one unless given), writing
        ``logs/<name>.out`` and ``logs/<name>.err``. With ``ready``, return once it printed
        'listening on' and answers gRPC health (over TLS with ``tls_ca``); stopped again,
        with its stderr in the error, if it exits or the deadline passes first."""
        argv = [*command, "serve", *args]
        if "--port" not in args:
            argv += ["--port", str(free_port())]
        logs.mkdir(parents=True, exist_ok=True)
        out, err = logs / f"{name}.out", logs / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                argv, stdout=stdout, stderr=stderr, cwd=cwd, env=env or dict(os.environ)
            )
        server = cls(proc, out, err, tls_ca)
        if ready:
            try:
                server.wait_for_output("listening on")
                server.line = next(x for x in server.output().splitlines() if "listening on" in x)
                server.target = server.line.split("listening on ")[1].split(" ")[0]
                wait_until(
                    server.healthy, deadline=START_SECONDS, what=server.describe(),
                    gave_up=server.exited,
                )  # fmt: skip
            except BaseException:
                server.stop()
                raise
        return server

    # ------------------------------------------------------------ reading it

    def output(self) -> str:
        """Everything it printed on stdout so far."""
        return self.stdout.read_text(errors="replace")

    def errors(self) -> str:
        """Everything it printed on stderr so far."""
        return self.stderr.read_text(errors="replace")

    def describe(self) -> str:
        return f"`parity serve` (pid {self.proc.pid}; stderr ends: {tail(self.stderr)!r})"

    def exited(self) -> str | None:
        """Why waiting for it is pointless (it exited), else None."""
        code = self.proc.poll()
        return None if code is None else f"exited with {code}"

    def wait_for_output(self, text: str, deadline: float = START_SECONDS) -> None:
        """Poll its stdout until it contains ``text``."""
        wait_until(
            lambda: text in self.output(),
            deadline=deadline,
            what=f"{self.describe()} never printed {text!r}",
            gave_up=self.exited,
        )

    def records(self) -> list[dict[str, Any]]:
        """Its structured log: the JSON records on stderr (other lines skipped)."""
        out = []
        for line in self.errors().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
        return out

    @property
    def metrics_port(self) -> int:
        """The metrics port its 'listening on' line names."""
        return int(self.line.split(" metrics: ")[1].split(")")[0])

    @property
    def http_port(self) -> int:
        """The HTTP/REST port its 'listening on' line names."""
        import re

        found = re.search(r"\(http: (\d+)", self.line)
        assert found is not None, f"no HTTP port in {self.line!r}"
        return int(found.group(1))

    def metric(self, name: str) -> float:
        """One unlabelled sample from its Prometheus endpoint."""
        import urllib.request

        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        values = [line.split()[1] for line in text.splitlines() if line.split(" ")[0] == name]
        assert len(values) == 1, (name, [x for x in text.splitlines() if name in x])
        return float(values[0])

    def healthy(self) -> bool:
        """True if it answers the gRPC health check with SERVING."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from serving.grpc.client import channel as open_channel

        channel = open_channel(self.target, tls_ca=self.tls_ca)
        with channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=5
                )
            except grpc.RpcError:
                return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    # ------------------------------------------------------------ stopping it

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_SECONDS) -> int:
        """Send ``signum`` if it still runs and wait; killed if it does not exit within
        ``timeout`` seconds. Its exit code."""
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@contextlib.contextmanager
def parity_serve(
    *args: str,
    logs: Path,
    name: str = "serve",
    command: Sequence[str] = PARITY,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    tls_ca: Path | None = None,
    ready: bool = True,
) -> Iterator[ServeProcess]:
    """:meth:`ServeProcess.start` for the ``with`` block; stopped (SIGTERM, then kill) when
    it ends, and a failure inside it carries the end of the server's stderr."""
    server = ServeProcess.start(
        *args, logs=logs, name=name, command=command, cwd=cwd, env=env, tls_ca=tls_ca,
        ready=ready,
    )  # fmt: skip
    try:
        yield server
        assert server.stopped or server.exited() is None, f"it died: {server.describe()}"
    except BaseException as exc:
        exc.add_note(server.describe())
        raise
    finally:
        server.stop()
