"""TCP forwarders that reach a server from another loopback source address
(127.0.0.N), so a test can be many clients by address on one machine."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def from_address(source: str, target: tuple[str, int]) -> Iterator[str]:
    """A listening address ``host:port``; each connection to it is forwarded to
    ``target`` from ``source`` (what the server sees as the peer)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    sockets: list[socket.socket] = [listener]

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(target, source_address=(source, 0))
            sockets.extend((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.close()
