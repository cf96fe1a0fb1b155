"""The server's start-up and stop release everything they acquire, over real sockets:
a port already taken leaves no thread, file or port behind, a metrics port already
taken stops the gRPC server that had started, and a stopped server frees its metrics
port."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from framework.features.repository import open_store
from framework.registry.model_registry import ModelRegistry
from serving.grpc.server import start_server
from serving.grpc.settings import ServeSettings
from tests.support.workspaces import Trained, Workspace

pytestmark = pytest.mark.integration


@pytest.fixture
def ws(trained: Trained, tmp_path: Path) -> Workspace:
    """A private copy of the trained workspace (the server writes its logs into it)."""
    shutil.copytree(trained.workspace.root, tmp_path, dirs_exist_ok=True)
    return Workspace(tmp_path)


def _settings(trained: Trained, **given: Any) -> ServeSettings:
    return ServeSettings(models=[f"fraud_model:{trained.version}"], **given)


@contextmanager
def _held_port() -> Iterator[int]:
    """A port on 127.0.0.1 held by a listening socket of this test."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield int(held.getsockname()[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    """True if a new listener can take ``port`` (SO_REUSEADDR: connections of a closed
    listener still in TIME_WAIT do not count, a listener still open does)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
        return True


def _other_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t is not threading.current_thread()}


def _left_behind(before: set[threading.Thread]) -> list[str]:
    """Non-daemon threads started since ``before`` that do not end (a pool shut down lets
    its idle threads end on their own; one never shut down keeps them waiting)."""
    new = [t for t in _other_threads() - before if not t.daemon]
    for thread in new:
        thread.join(timeout=30)
    return [t.name for t in new if t.is_alive()]


def _open_files(under: Path) -> list[str]:
    """Files under ``under`` this process holds open (Linux: /proc/self/fd)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(under.resolve())):
            found.append(target)
    return found


def _state(ws: Workspace) -> list[str]:
    """What the server holds open in the workspace: prediction logs, review queue."""
    return _open_files(ws.data / "predictions") + _open_files(ws.data / "review")


def test_a_taken_port_releases_pools_logs_and_review_queue(ws: Workspace, trained: Trained) -> None:
    registry = ModelRegistry(ws.data / "models")
    before = _other_threads()
    with open_store(ws.repo) as store, _held_port() as port:
        settings = _settings(trained, port=port, metrics_port=0)
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            start_server(store, registry, ws.data, settings)
    assert (ws.data / "review" / "queue.db").exists()  # it got as far as the review queue
    assert _left_behind(before) == []
    assert _state(ws) == []


def test_a_taken_metrics_port_stops_the_started_grpc_server(
    ws: Workspace, trained: Trained
) -> None:
    registry = ModelRegistry(ws.data / "models")
    grpc_port = _free_port()
    before = _other_threads()
    with open_store(ws.repo) as store, _held_port() as metrics_port:
        settings = _settings(trained, port=grpc_port, metrics_port=metrics_port)
        with pytest.raises(OSError):
            start_server(store, registry, ws.data, settings)
    assert _bindable(grpc_port)
    assert _left_behind(before) == []
    assert _state(ws) == []


def test_stopping_a_server_frees_its_metrics_port(ws: Workspace, trained: Trained) -> None:
    registry = ModelRegistry(ws.data / "models")
    before = _other_threads()
    with open_store(ws.repo) as store:
        running = start_server(store, registry, ws.data, _settings(trained, port=0, metrics_port=0))
        try:
            assert running.metrics_port is not None
            assert not _bindable(running.metrics_port)
            url = f"http://127.0.0.1:{running.metrics_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert b"parity_requests_total" in response.read()
        finally:
            running.stop(0)
    assert _bindable(running.metrics_port)
    assert _bindable(running.port)
    assert _left_behind(before) == []
    assert _state(ws) == []
