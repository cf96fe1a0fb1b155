"""The serving benchmark's online stores: the workspace's SQLite, or a Redis copy of it.

``parity demo`` materialises into SQLite. For Redis, :func:`redis_repository` makes a
sibling copy of the workspace's Feast repository whose ``feature_store.yaml`` differs in
three keys only: ``online_store`` (Feast's ``redis`` type at ``127.0.0.1:6379``, db 0),
``project`` (unique per run, ``bench_serving_<hex>``) and ``registry`` (a file of the
copy's own). Feast's Redis keys end with the project's name, so the unique project is
the benchmark's key namespace: it never meets the test suite's keys (tests use a Redis
of their own, or db 13, and flush it), and on exit every key ending with it is deleted.
The copy shares the workspace's parity state (``parity.toml``: ``../data``), so the
server loads the same model version; the feature definitions are the same, and a
version's pinned digest does not include the project, so the model's pin holds.

The copy is registered with ``parity apply`` and filled with ``parity materialize``
over the interval ``parity demo`` materialises (2000-01-01 to the sample's end + 1 day),
the same rows SQLite holds.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

REDIS = "127.0.0.1:6379"
STORES = ("sqlite", "redis")


@contextlib.contextmanager
def redis_repository(repo: Path, now: str, root: Path, logs: Path
                     ) -> Iterator[tuple[Path, str]]:  # fmt: skip
    """A Redis copy of ``repo`` next to it, applied and materialised (see the module
    docstring); yields its folder and Feast project. ``root`` is the parity checkout
    (``python -m framework.cli`` runs there); the CLI's output goes to ``logs``."""
    import yaml

    project = f"bench_serving_{uuid.uuid4().hex[:10]}"
    copy = repo.parent / f"{repo.name}_redis"
    shutil.rmtree(copy, ignore_errors=True)  # a kept --workdir: last run's copy
    shutil.copytree(repo, copy, ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((copy / "feature_store.yaml").read_text())
    config.update(project=project, registry="registry.db",
                  online_store={"type": "redis", "connection_string": REDIS})  # fmt: skip
    (copy / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    end = (datetime.fromisoformat(now) + timedelta(days=1)).isoformat()
    try:
        _cli(root, logs, "apply", "--repo", str(copy))
        _cli(root, logs, "materialize", "--repo", str(copy), "--start", "2000-01-01",
             "--end", end)  # fmt: skip
        yield copy, project
    finally:
        deleted = delete_keys(project)
        print(f"  redis: deleted {deleted} keys of project {project}", file=sys.stderr)
        shutil.rmtree(copy, ignore_errors=True)


def delete_keys(project: str) -> int:
    """Delete every key of Feast ``project`` (Feast's Redis keys end with its name)."""
    import redis

    host, port = REDIS.split(":")
    client = redis.Redis(host=host, port=int(port))
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=b"*" + project.encode(), count=1000):
            batch.append(key)
            if len(batch) == 1000:
                client.delete(*batch)
                deleted, batch = deleted + len(batch), []
        if batch:
            client.delete(*batch)
            deleted += len(batch)
    finally:
        client.close()
    return deleted


def _cli(root: Path, logs: Path, *args: str) -> None:
    with (logs / "parity-cli-redis.log").open("ab") as out:
        proc = subprocess.run([sys.executable, "-m", "framework.cli", *args], cwd=root,
                              stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    if proc.returncode != 0:
        tail = (logs / "parity-cli-redis.log").read_text()[-3000:]
        raise SystemExit(f"parity {args[0]} (redis copy) failed:\n{tail}")
