"""The Feast repository: where it is, which profile it runs under, loading and applying it.

parity keeps features in a plain Feast repository (``feature_repo/``). This
module opens it as a :class:`feast.FeatureStore` under a *profile*:

``embedded`` (default)
    ``feature_store.yaml``: file registry, DuckDB offline store, SQLite online
    store, all under ``data/feast/``.
``production``
    ``feature_store.production.yaml``: Feast's SQL registry on PostgreSQL and
    Feast's Redis online store. Connection settings come from
    ``PARITY_REGISTRY_URL`` and ``PARITY_REDIS``, defaulting to the local
    servers.

Applying reuses Feast's own parsing and diffing (``feast apply`` semantics:
objects removed from the repository are removed from the registry).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from framework.errors import ConfigError, FeatureStoreError

PRODUCTION_DEFAULTS = {
    "PARITY_REDIS": "127.0.0.1:6379",
    "PARITY_REGISTRY_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/parity",
}


class Profile(StrEnum):
    """Which set of Feast infrastructure a command runs against."""

    EMBEDDED = "embedded"
    PRODUCTION = "production"

    @property
    def yaml_name(self) -> str:
        if self is Profile.EMBEDDED:
            return "feature_store.yaml"
        return f"feature_store.{self.value}.yaml"


def default_repo() -> Path:
    """``$PARITY_REPO``, else ``./feature_repo``, else the checkout's ``feature_repo/``."""
    if env := os.environ.get("PARITY_REPO"):
        return Path(env)
    here = Path.cwd() / "feature_repo"
    if (here / "feature_store.yaml").exists():
        return here
    return Path(__file__).resolve().parent.parent / "feature_repo"


def data_dir(repo: Path) -> Path:
    """The data folder the repository's definitions and configs point at."""
    return repo.resolve().parent / "data"


def _check_repo(repo: Path, profile: Profile) -> Path:
    yaml_path = repo / profile.yaml_name
    if not repo.is_dir():
        raise ConfigError(f"The '--repo' folder {repo} does not exist.")
    if not yaml_path.exists():
        raise ConfigError(
            f"The '--repo' folder {repo} has no {profile.yaml_name} "
            f"(needed by profile {profile.value!r})."
        )
    return yaml_path


def load_store(repo: Path, profile: Profile = Profile.EMBEDDED) -> Any:
    """Open the repository as a Feast ``FeatureStore`` under ``profile``."""
    from feast import FeatureStore
    from feast.repo_config import load_repo_config

    yaml_path = _check_repo(repo, profile)
    if profile is Profile.PRODUCTION:
        for key, value in PRODUCTION_DEFAULTS.items():
            os.environ.setdefault(key, value)
    try:
        load_repo_config(repo.resolve(), yaml_path.resolve())  # validate first: clear errors
    except Exception as exc:  # Feast raises pydantic and YAML errors alike
        raise ConfigError(f"{yaml_path}: {_one_line(exc)}") from exc
    (data_dir(repo) / "feast").mkdir(parents=True, exist_ok=True)
    try:
        # repo_path matters: Feast resolves relative registry and SQLite paths against it.
        return FeatureStore(repo_path=str(repo.resolve()), fs_yaml_file=yaml_path.resolve())
    except Exception as exc:
        raise FeatureStoreError(
            f"Could not open the Feast registry for profile {profile.value!r}: {_one_line(exc)}"
        ) from exc


@contextlib.contextmanager
def _importable(repo: Path) -> Iterator[None]:
    """Make ``repo``'s modules importable afresh, as ``feast apply`` does.

    Feast's parser names modules relative to the working directory and imports
    them, so we chdir and put the repository on ``sys.path`` for the duration,
    and forget its modules before and after so that two repositories (or two
    copies of one) never share a cached module.
    """
    root = repo.resolve()

    def forget() -> None:
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if file and Path(file).resolve().is_relative_to(root):
                del sys.modules[name]

    cwd = os.getcwd()
    forget()
    sys.path.insert(0, str(root))
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path.remove(str(root))
        forget()


def parse_definitions(repo: Path) -> Any:
    """Every Feast object defined in the repository's Python files (a ``RepoContents``)."""
    from feast.project import Project
    from feast.repo_operations import parse_repo

    root = repo.resolve()  # before _importable changes the working directory
    with _importable(root):
        try:
            contents = parse_repo(root)
        except Exception as exc:
            raise FeatureStoreError(
                f"Could not load the definitions in {repo}: {_one_line(exc)}"
            ) from exc
    if not contents.projects:
        contents.projects.append(Project(name="parity"))
    return contents


@dataclass
class ApplySummary:
    """What ``apply`` registered."""

    profile: str
    project: str
    entities: int
    feature_views: int
    on_demand_feature_views: int
    feature_services: int
    feast_output: str


def apply(repo: Path, profile: Profile = Profile.EMBEDDED) -> ApplySummary:
    """Register the repository's definitions (``feast apply`` semantics)."""
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.repo_operations import apply_total_with_repo_instance

    store = load_store(repo, profile)
    contents = parse_definitions(repo)
    project = store.config.project
    if contents.projects[0].name != project:
        contents.projects[0].name = project
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            apply_total_with_repo_instance(
                store, project, store.registry, contents, skip_source_validation=False
            )
    except Exception as exc:
        raise FeatureStoreError(f"feast apply failed: {_one_line(exc)}") from exc
    return ApplySummary(
        profile=profile.value,
        project=project,
        entities=sum(e.name != DUMMY_ENTITY_NAME for e in contents.entities),
        feature_views=len(contents.feature_views),
        on_demand_feature_views=len(contents.on_demand_feature_views),
        feature_services=len(contents.feature_services),
        feast_output=out.getvalue(),
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."
