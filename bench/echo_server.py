"""The transport's floor: a bare grpcio server that answers ``Predict`` with fixed bytes.

    python bench/echo_server.py --port P --workers W --threads T --reply FILE

What it owns: the least a gRPC server in this Python, with this grpcio, can do per
call. One ``grpc.method_handlers_generic_handler`` for ``parity.v1.PredictionService``
whose unary-unary ``Predict`` ignores the request and returns the bytes in ``--reply``
(a real ``PredictResponse`` parity serialised for the benchmark's first request, see
``bench/serving.py``): identity (de)serialisers, so no protobuf runs on the server; the
client parses the reply into a ``PredictResponse`` exactly as it parses parity's.
Nothing but grpcio is imported, so the process is as light as a server can be.

Configuration, mirroring ``parity serve``: ``--threads`` is the size of
``grpc.server``'s thread pool (parity's ``--threads``); ``--workers W`` runs W such
processes on one port, the kernel spreading connections across them through
SO_REUSEPORT (grpcio sets it on Linux by default; ``parity serve --workers`` relies on
the same), the parent forwarding SIGTERM/SIGINT and waiting; ``--cpu-affinity`` places
the processes on cores as ``parity serve``'s does (spread, its default: worker i and
all its threads on core i). The benchmark starts the echo with each of parity's
configurations (same processes, same threads, same placement), so "Predict ÷ echo"
compares two servers that differ only in the work done per call: on 2 cores a
single-process echo would be GIL-bound where a two-process parity is not, and an
echo left to the OS's placement runs some 40 % slower at 64 in flight than a pinned
one; either would flatter parity.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

SERVICE = "parity.v1.PredictionService"
METHOD = "Predict"


def serve(port: int, threads: int, reply: bytes) -> None:
    """One process: ``Predict`` answers ``reply`` until SIGTERM or SIGINT."""
    import grpc

    def predict(request: bytes, context: Any) -> bytes:
        return reply

    # No (de)serialisers: grpcio hands the handler the request bytes and sends the
    # returned bytes as they are.
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(predict)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        raise SystemExit(f"echo server: cannot bind 127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()


def serve_processes(args: argparse.Namespace) -> None:
    """``--workers`` single-process echoes on one port; signals forwarded, then wait."""
    argv = [sys.executable, __file__, "--port", str(args.port), "--threads", str(args.threads),
            "--reply", str(args.reply), "--workers", "1", "--cpu-affinity", "off"]  # fmt: skip
    children = [subprocess.Popen(argv) for _ in range(args.workers)]
    if args.cpu_affinity == "spread":
        for i, child in enumerate(children):
            _pin(child.pid, i)

    def forward(signum: int, frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    raise SystemExit(max(codes, default=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=32, help="thread pool size per process")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    parser.add_argument("--reply", type=Path, required=True, help="the reply's bytes")
    parser.add_argument("--cpu-affinity", choices=("spread", "off"), default="spread",
                        help="as parity serve's: worker i and its threads on core i")  # fmt: skip
    args = parser.parse_args()
    if args.workers > 1:
        serve_processes(args)
    else:
        if args.cpu_affinity == "spread":
            _pin(os.getpid(), 0)
        serve(args.port, args.threads, args.reply.read_bytes())


def _pin(pid: int, index: int) -> None:
    """Place process ``pid`` as ``parity serve --cpu-affinity spread`` places worker
    ``index`` (the same code: framework.cli.cpu_affinity, which imports only ``os``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from framework.cli import cpu_affinity

    _, why = cpu_affinity.place(pid, index)
    if why is not None:
        raise SystemExit(f"echo server: cannot pin to a core as parity serve does: {why}")


if __name__ == "__main__":
    main()
