"""Shared fixtures: workspaces with a copy of the feature repository, sample data,
and real PostgreSQL and Redis servers for the production profile.

A test that needs a server it cannot reach is skipped with the reason, except
under CI (``CI=true``), where a missing server is a failure.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Imported here, before any test runs: Feast calls warnings.simplefilter("once", ...)
# at import time, which would otherwise override `filterwarnings = error` inside
# whichever test happened to import Feast first.
import feast  # noqa: F401
import pytest
from hypothesis import settings

from framework.sample.data import GenerationSummary, generate
from framework.sample.pipeline import build_offline_sources
from tests.support.services import IN_CI, free_port, missing, reachable, start_redis
from tests.support.workspaces import (
    SAMPLE,
    TRAIN_SAMPLE,
    Champion,
    Served,
    Trained,
    Workspace,
    champion_workspace,
    copy_of,
    make_workspace,
    serve_workspace,
)

# Locally Hypothesis explores new examples on every run; under CI it replays a
# fixed sequence, so a landing never depends on the luck of the draw.
settings.register_profile("ci", derandomize=True, print_blob=True)
if IN_CI:
    settings.load_profile("ci")


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """An empty workspace: the feature repository, no data yet."""
    return make_workspace(tmp_path)


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    """Raw sample plus offline sources at test scale, generated once per session."""
    data = tmp_path_factory.mktemp("sample") / "data"
    summary = generate(SAMPLE, data)
    build_offline_sources(data / "raw", data / "offline")
    return data, summary


@pytest.fixture
def sample_workspace(
    workspace: Workspace, sample_data: tuple[Path, GenerationSummary]
) -> Workspace:
    """A workspace whose data/ holds the session's sample (raw + offline)."""
    data, _ = sample_data
    shutil.copytree(data, workspace.data)
    return workspace


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Trains the shipped fraud spec once per session (read-only for tests: copy to change)."""
    from framework.features.repository import apply
    from framework.models.spec import load_spec
    from framework.models.training import train_model
    from framework.registry.model_registry import ModelRegistry

    ws = make_workspace(tmp_path_factory.mktemp("trained"))
    generate(TRAIN_SAMPLE, ws.data)
    build_offline_sources(ws.data / "raw", ws.data / "offline")
    apply(ws.repo)
    spec_path = ws.repo / "models" / "fraud_model.toml"
    registry = ModelRegistry(ws.data / "models")
    result = train_model(ws.repo, load_spec(spec_path), registry=registry, spec_path=spec_path)
    return Trained(ws, registry.root, result.ref.version, result.manifest.as_dict())


@pytest.fixture
def registry_copy(trained: Trained, tmp_path: Path) -> Any:
    """A private copy of the trained registry (same Feast workspace, read-only)."""
    from framework.registry.model_registry import ModelRegistry

    root = tmp_path / "models"
    shutil.copytree(trained.registry_root, root)
    for path in root.rglob("*"):
        if path.is_file():
            path.chmod(0o644)  # copies of read-only files; tests may tamper with them
    return ModelRegistry(root)


@pytest.fixture
def trained_store(trained: Trained) -> Iterator[Any]:
    """The Feast store of the trained workspace."""
    from framework.features.repository import open_store

    with open_store(trained.workspace.repo) as store:
        yield store


# ----------------------------------------------------------------- real servers


@pytest.fixture
def redis_address(redis_server: str) -> str:
    """``host:port`` of an empty Redis: the session's server, flushed for this test."""
    import redis

    host_port, _, options = redis_server.partition(",")
    host, port = host_port.split(":")
    db = int(options.removeprefix("db=")) if options else 0
    client = redis.Redis(host=host, port=int(port), db=db)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Redis server of this test session's own.

    Starts ``redis-server`` on a free port when the binary exists; otherwise
    uses a database of the machine's Redis on 6379, flushed before use.
    """
    if shutil.which("redis-server"):
        port = free_port()
        try:
            proc = start_redis(port, tmp_path_factory.mktemp("redis"))
        except AssertionError as exc:
            missing(str(exc))
        try:
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        return
    if not reachable("127.0.0.1", 6379):
        missing("Redis is not reachable on 127.0.0.1:6379 and redis-server is not installed")
    yield "127.0.0.1:6379,db=13"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL database, dropped after the test."""
    if not reachable("127.0.0.1", 5432):
        missing("PostgreSQL is not reachable on 127.0.0.1:5432")
    import sqlalchemy as sa

    admin = sa.create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    name = f"parity_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as con:
            con.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        missing(f"cannot create a PostgreSQL database as user postgres: {exc}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as con:
            con.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ----------------------------------------------------------------- a running server


@pytest.fixture(scope="module")
def champion(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Champion]:
    """A copy of the trained workspace, ready to serve (no server): for the data plane."""
    with champion_workspace(
        copy_of(trained, tmp_path_factory.mktemp("champion")), trained.version
    ) as ready:
        yield ready


@pytest.fixture(scope="module")
def served(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ws = copy_of(trained, tmp_path_factory.mktemp("served"))
    with serve_workspace(ws, trained.version) as served:
        yield served
