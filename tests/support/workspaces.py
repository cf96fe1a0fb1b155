"""Workspaces the tests run in: a copy of the feature repository next to its data, the
sample at test scale, a trained model, and that model ready to serve or served.

The fixtures that build them once per session or module live in ``tests/conftest.py``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.sample.scenario import GenerationConfig

#: The checkout: its ``feature_repo/`` is what every workspace copies.
ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass
class Workspace:
    """A folder laid out like the checkout: ``feature_repo/`` next to ``data/``."""

    root: Path

    @property
    def repo(self) -> Path:
        return self.root / "feature_repo"

    @property
    def data(self) -> Path:
        return self.root / "data"


def make_workspace(root: Path) -> Workspace:
    """A workspace at ``root``: a copy of the checkout's feature repository, no data."""
    shutil.copytree(
        ROOT / "feature_repo",
        root / "feature_repo",
        ignore=shutil.ignore_patterns("__pycache__", "data"),
    )
    return Workspace(root)


#: The sample at test scale.
SAMPLE = GenerationConfig(seed=11, transactions=5_000)
#: Larger than SAMPLE so the holdout has enough fraud cases to measure a model by.
TRAIN_SAMPLE = GenerationConfig(seed=5, transactions=20_000)


@dataclass
class Trained:
    """A workspace with the training sample applied and one registered model version."""

    workspace: Workspace
    registry_root: Path
    version: int
    manifest: dict[str, Any]


def embedded_store(root: Path, project: str) -> Any:
    """A Feast store built in code (no repository files): file registry, SQLite, DuckDB."""
    from feast import FeatureStore, RepoConfig

    return FeatureStore(
        config=RepoConfig(
            project=project,
            provider="local",
            registry=str(root / "registry.db"),
            offline_store={"type": "duckdb"},
            online_store={"type": "sqlite", "path": str(root / "online.db")},
            entity_key_serialization_version=3,
            repo_path=str(root),
        )
    )


@dataclass
class Served:
    """A prediction server on a free port over a copy of the trained workspace, with the
    online store materialised and ``fraud_model`` version 1 as champion. Its clock is
    pinned to ``now`` (just after the sample's last transaction), so TTLs mean the same
    to the server and to ``build_training_set`` at that time."""

    workspace: Workspace
    running: Any
    target: str
    store: Any
    registry: Any
    now: Any


@dataclass
class Champion:
    """A workspace ready to serve: its online store materialised up to just after its
    sample, ``fraud_model`` ``version`` the champion, and ``now`` (30 minutes after the
    sample's last transaction) the time TTLs are enforced against."""

    workspace: Workspace
    store: Any
    registry: Any
    now: Any


@contextmanager
def champion_workspace(ws: Workspace, version: int) -> Iterator[Champion]:
    """Materialise ``ws``'s online store up to just after its sample and make ``version``
    the champion; its Feast store is open for the ``with`` block."""
    import contextlib
    import io
    from datetime import UTC, datetime, timedelta

    import duckdb

    from framework.features.repository import open_store
    from framework.loop.promotion import promote
    from framework.registry.model_registry import ModelRegistry

    registry = ModelRegistry(ws.data / "models")
    last = duckdb.sql(
        f"SELECT max(transaction_timestamp) FROM '{ws.data / 'raw' / 'transactions.parquet'}'"
    ).fetchone()[0]  # type: ignore[index]
    now = last.astimezone(UTC) + timedelta(minutes=30)
    with open_store(ws.repo) as store:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            store.materialize(
                start_date=datetime(2000, 1, 1, tzinfo=UTC), end_date=now + timedelta(days=1)
            )
        promote(registry, "fraud_model", version, store=store, reason="tests")
        yield Champion(ws, store, registry, now)


@contextmanager
def serve_workspace(ws: Workspace, version: int) -> Iterator[Served]:
    """:func:`champion_workspace`, served on a free port with its clock pinned to ``now``."""
    from serving.grpc.server import start_server
    from serving.grpc.settings import ServeSettings

    with champion_workspace(ws, version) as ready:
        settings = ServeSettings(
            port=0, http_port=0, metrics_port=0, log_flush_seconds=0.2, max_rows=500
        )
        running = start_server(
            ready.store, ready.registry, ws.data, settings, clock=ready.now.timestamp
        )
        try:
            yield Served(
                ws, running, f"127.0.0.1:{running.port}", ready.store, ready.registry, ready.now
            )
        finally:
            running.stop(2)


def copy_of(trained: Trained, root: Path) -> Workspace:
    """A writable copy of the trained workspace at ``root``."""
    shutil.copytree(trained.workspace.root, root, dirs_exist_ok=True)
    return Workspace(root)
