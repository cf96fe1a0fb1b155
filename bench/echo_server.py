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
the same), the parent forwarding SIGTERM/SIGINT and waiting. The benchmark starts the
echo with each of parity's configurations (same processes, same threads), so "Predict
÷ echo" compares two servers that differ only in the work done per call: on 2 cores a
single-process echo would be GIL-bound where a two-process parity is not, and the
ratio would flatter parity.
"""

from __future__ import annotations

import argparse
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
            "--reply", str(args.reply), "--workers", "1"]  # fmt: skip
    children = [subprocess.Popen(argv) for _ in range(args.workers)]

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
    parser.add_argument("--threads", type=int, default=8, help="thread pool size per process")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    parser.add_argument("--reply", type=Path, required=True, help="the reply's bytes")
    args = parser.parse_args()
    if args.workers > 1:
        serve_processes(args)
    else:
        serve(args.port, args.threads, args.reply.read_bytes())


if __name__ == "__main__":
    main()
