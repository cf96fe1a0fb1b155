"""The HTTP/REST listener of ``parity serve --http-port``: uvicorn on a thread of the
serving process, beside gRPC, answering through the same servicer.

The socket is bound here with ``SO_REUSEPORT``, as grpcio binds its own, so the worker
processes of ``--workers N`` share the port and the kernel spreads connections across
them. TLS (and mutual TLS) uses the settings gRPC uses, already checked by
:func:`serving.grpc.security.server_credentials`.
"""

from __future__ import annotations

import socket
import ssl
import threading
from concurrent.futures import Executor
from typing import Any

import uvicorn

from serving.grpc.settings import ServeSettings


class _Server(uvicorn.Server):
    """uvicorn's server, saying when it is listening (or that it stopped before)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


class HttpListener:
    """uvicorn serving ``app`` on ``sock`` in a thread; :meth:`stop` drains it."""

    def __init__(self, app: Any, sock: socket.socket, settings: ServeSettings) -> None:
        self.sock = sock
        self.port = int(sock.getsockname()[1])
        tls: dict[str, Any] = {}
        if settings.tls_cert is not None:
            tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
            if settings.tls_client_ca is not None:
                tls.update(
                    ssl_ca_certs=str(settings.tls_client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED
                )
        config = uvicorn.Config(
            app,
            log_config=None,  # records go to the server's own handler (JSON lines)
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=max(int(settings.grace_seconds), 1),
            **tls,
        )
        self._server = _Server(config)
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._error: BaseException | None = None

    @classmethod
    def serving(
        cls, servicer: Any, guard: Any, executor: Executor, settings: ServeSettings
    ) -> HttpListener:
        """The REST binding of ``servicer`` (an ``InferenceServicer``, behind ``guard`` when
        set), its calls run on ``executor``, bound to ``http_port`` (not yet started)."""
        from serving.http.app import RestBinding

        binding = RestBinding(servicer, guard, executor, settings.max_message_bytes)
        assert settings.http_port is not None
        return cls(binding.app(), bind(settings.host, settings.http_port), settings)

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self.sock])
        except BaseException as exc:  # reported by start(); the thread ends either way
            self._error = exc
        finally:
            self._server.listening.set()

    def start(self) -> None:
        self._thread.start()
        self._server.listening.wait()
        if self._error is not None or not self._server.started:
            raise OSError(f"the HTTP listener on port {self.port} did not start: {self._error}")

    def begin_stop(self) -> None:
        """Stop accepting; calls in flight go on (:meth:`stop` waits for them)."""
        self._server.should_exit = True

    def stop(self) -> None:
        self.begin_stop()
        if self._thread.is_alive():
            self._thread.join()
        self.sock.close()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` shared with other processes (SO_REUSEPORT)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise OSError(
            f"cannot listen for HTTP on {host}:{port} ({exc.strerror}: the port is taken by "
            "another program, or the host is not an address of this machine)"
        ) from exc
    return sock
