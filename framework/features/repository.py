"""The Feast repository: where it is, where parity keeps its state, which profile it
runs under, loading and applying it.

parity works on a plain Feast repository: the folder holding
``feature_store.yaml``. Which one a command uses (:func:`default_repo`) is
never a guess: ``--repo``, else ``$PARITY_REPO``, else the current folder if it
is a repository, else ``./feature_repo`` if that is one; otherwise the command
stops and says how to name one.

A repository owns its state. Relative paths resolve against the repository
folder, as Feast resolves its own (``FileSource.get_uri_for_file_path``, the
registry and SQLite paths of ``feature_store.yaml``), never against the working
directory. parity's own state (model registry, prediction log, outcomes,
review queue, reports) lives in :func:`data_dir`: ``<repo>/.parity/``, or the
folder an optional ``parity.toml`` next to ``feature_store.yaml`` names::

    # parity.toml
    state = "../data"   # relative to this folder

This module opens the repository as a :class:`feast.FeatureStore` under a *profile*:

``embedded`` (default)
    ``feature_store.yaml``: file registry, DuckDB offline store, SQLite online
    store, at the paths its ``feature_store.yaml`` gives.
``production``
    ``feature_store.production.yaml``: Feast's SQL registry on PostgreSQL and
    Feast's Redis online store. Connection settings come from
    ``PARITY_REGISTRY_URL`` and ``PARITY_REDIS``, defaulting to the local
    servers.
``spark``
    ``feature_store.spark.yaml``: as production, with Feast's Spark offline store
    (its ``spark_conf``): training sets, materialisation and batch scoring run on
    Spark (:mod:`framework.spark`). Needs PySpark (``pip install 'parity[spark]'``)
    and a Java runtime.

Applying reuses Feast's own parsing and diffing (``feast apply`` semantics:
objects removed from the repository are removed from the registry).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from framework import feast_private
from framework.errors import ConfigError, FeatureStoreError
from framework.registry import cache as registry_cache

PRODUCTION_DEFAULTS = {
    "PARITY_REDIS": "127.0.0.1:6379",
    "PARITY_REGISTRY_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/parity",
}


class Profile(StrEnum):
    """Which set of Feast infrastructure a command runs against."""

    EMBEDDED = "embedded"
    PRODUCTION = "production"
    SPARK = "spark"

    @property
    def shared(self) -> bool:
        """Whether the profile runs on shared servers (SQL registry, Redis)."""
        return self is not Profile.EMBEDDED

    @property
    def yaml_name(self) -> str:
        if self is Profile.EMBEDDED:
            return "feature_store.yaml"
        return f"feature_store.{self.value}.yaml"


#: The optional per-repository settings file, next to ``feature_store.yaml``.
SETTINGS_FILE = "parity.toml"
#: Where parity keeps a repository's state when ``parity.toml`` does not say.
DEFAULT_STATE = ".parity"
_NAME_ONE = "name one with --repo DIR or PARITY_REPO=DIR"


def default_repo() -> Path:
    """The repository a command without ``--repo`` works on.

    ``$PARITY_REPO``, else the current folder if it holds a ``feature_store.yaml``,
    else ``./feature_repo`` if that does; otherwise a :class:`ConfigError` saying
    how to name one. Never a repository elsewhere (the sample shipped with parity
    included): a command run from an unrelated folder must not touch another
    project's state.
    """
    if env := os.environ.get("PARITY_REPO"):
        return Path(env)
    here = Path.cwd()
    for candidate in (here, here / "feature_repo"):
        if (candidate / "feature_store.yaml").is_file():
            return candidate
    raise ConfigError(
        f"No Feast repository here (no feature_store.yaml in {here} or "
        f"{here / 'feature_repo'}); {_NAME_ONE}."
    )


def settings(repo: Path) -> dict[str, Any]:
    """The repository's ``parity.toml`` (empty without one); unknown keys are errors."""
    import tomllib

    path = repo / SETTINGS_FILE
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({_one_line(exc)}).") from exc
    unknown = sorted(set(raw) - {"state"})
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r} (known: state).")
    state = raw.get("state", DEFAULT_STATE)
    if not isinstance(state, str) or not state.strip():
        raise ConfigError(f"{path}: 'state' must be a folder path. Got {state!r}.")
    return raw


def data_dir(repo: Path) -> Path:
    """Where parity keeps the repository's state: registry, prediction log, outcomes,
    review queue, reports (absolute).

    ``<repo>/.parity/`` unless the repository's ``parity.toml`` sets ``state``
    (resolved against the repository, e.g. ``"../data"`` for the sample). Each
    repository has its own: sibling repositories never share a registry or a log.

    Not ``<repo>/data/``: that is where ``feast init``'s template keeps Feast's own
    ``registry.db``, ``online_store.db``, its source Parquet files and, through
    ``FileLoggingDestination(path="data")``, Feast's feature logs. A ``models/`` or
    ``predictions/`` folder of parity's there would share a folder with the user's
    data and with Feast's writes; a dot-folder of parity's own cannot collide.
    """
    state = settings(repo).get("state", DEFAULT_STATE)
    return resolve_path(repo, state)


def resolve_path(repo: Path, path: str | Path) -> Path:
    """``path`` as the repository means it: relative paths against the repository
    folder, as Feast's ``FileSource.get_uri_for_file_path`` resolves them."""
    path = Path(os.path.expanduser(path))
    return Path(os.path.normpath(repo.resolve() / path))


#: What the spark profile needs installed.
SPARK_INSTALL_HINT = "pip install 'parity[spark]' (PySpark) and a Java 17+ runtime"


def require_spark() -> None:
    """Fail with how to install them when PySpark or Java is missing (the spark
    profile's needs, checked before Feast imports its Spark offline store)."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("pyspark") is None:
        raise ConfigError(f"The spark profile needs PySpark: {SPARK_INSTALL_HINT}.")
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise ConfigError(
            "The spark profile needs a Java runtime (17 or newer): none on PATH and "
            "JAVA_HOME is unset; scripts/install-java installs one."
        )


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
    if profile.shared:
        for key, value in PRODUCTION_DEFAULTS.items():
            os.environ.setdefault(key, value)
    if profile is Profile.SPARK:
        require_spark()
    try:
        config = load_repo_config(repo.resolve(), yaml_path.resolve())  # validate first
    except Exception as exc:  # Feast raises pydantic and YAML errors alike
        raise ConfigError(f"{yaml_path}: {_one_line(exc)}") from exc
    if getattr(config.registry, "registry_type", "file") == "sql" and profile.shared:
        _check_registry_database(os.environ["PARITY_REGISTRY_URL"])
    _make_local_folders(repo, config)
    try:
        # repo_path matters: Feast resolves relative registry and SQLite paths against it.
        store = FeatureStore(repo_path=str(repo.resolve()), fs_yaml_file=yaml_path.resolve())
        if profile.shared:
            # Feast connects lazily; connect now. Then refresh the SQL registry's cache off
            # the request path and keep the last good snapshot while PostgreSQL is down.
            registry_cache.install(
                store.registry, f"PostgreSQL at {_location(os.environ['PARITY_REGISTRY_URL'])}"
            )
    except Exception as exc:
        raise FeatureStoreError(
            f"Could not open the Feast registry for profile {profile.value!r}: {_one_line(exc)}"
        ) from exc
    return store


def _make_local_folders(repo: Path, config: Any) -> None:
    """Create the folders of a local file registry and SQLite online store (Feast
    creates the files, not the folders they go in), resolved as Feast resolves them."""
    paths = []
    if getattr(config.registry, "registry_type", "file") == "file":
        paths.append(config.registry.path)
    if getattr(config.online_store, "type", None) == "sqlite":
        paths.append(config.online_store.path)
    for path in paths:
        if isinstance(path, str) and "://" not in path:
            resolve_path(repo, path).parent.mkdir(parents=True, exist_ok=True)


def _location(url: str) -> str:
    """``host:port/database`` of a database URL (never its password)."""
    import sqlalchemy as sa

    target = sa.make_url(url)
    return f"{target.host}:{target.port or 5432}/{target.database}"


def _check_registry_database(url: str) -> None:
    """Fail fast and clearly when the SQL registry is unreachable; create a missing database.

    Feast would otherwise fail on first use, deep inside apply or a query, and
    leave connections behind.
    """
    import sqlalchemy as sa

    try:
        target = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"PARITY_REGISTRY_URL is not a valid database URL: {exc}") from exc
    where = _location(url)

    def connect(u: sa.URL) -> None:
        engine = sa.create_engine(u, connect_args={"connect_timeout": 5})
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()

    try:
        connect(target)
        return
    except sa.exc.OperationalError as exc:
        if f'database "{target.database}" does not exist' not in str(exc):
            raise FeatureStoreError(
                f"The production registry (PARITY_REGISTRY_URL, PostgreSQL at {where}) "
                f"is unreachable: {_one_line(exc.orig or exc)}"
            ) from exc
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"PARITY_REGISTRY_URL is not a valid database URL: {exc}") from exc
    engine = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as con:
            con.execute(sa.text(f'CREATE DATABASE "{target.database}"'))
    except sa.exc.SQLAlchemyError as exc:
        raise FeatureStoreError(
            f"The production registry database {where} does not exist and could not be "
            f"created: {_one_line(exc)}"
        ) from exc
    finally:
        engine.dispose()


def close_store(store: Any) -> None:
    """Release the connections a ``FeatureStore`` holds (SQL registry pools, the Redis
    client, the SQLite online store's connection).

    Feast has no synchronous close; without this, pooled PostgreSQL
    connections linger until garbage collection.
    """
    registry_cache.close(store)
    registry = feast_private.store_registry(store)
    for attr in ("write_engine", "read_engine"):  # public attributes of Feast's SqlRegistry
        engine = getattr(registry, attr, None)
        if engine is not None:
            engine.dispose()
    feast_private.close_online_store(store)


@contextlib.contextmanager
def open_store(repo: Path, profile: Profile = Profile.EMBEDDED) -> Iterator[Any]:
    """:func:`load_store` as a context manager that closes the store afterwards."""
    store = load_store(repo, profile)
    try:
        yield store
    finally:
        close_store(store)


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

    _check_repo(repo, profile)
    contents = parse_definitions(repo)
    out = io.StringIO()
    with open_store(repo, profile) as store:
        project = store.config.project
        if contents.projects[0].name != project:
            contents.projects[0].name = project
        try:
            with contextlib.redirect_stdout(out), warnings.catch_warnings():
                # Feast warns on every apply of an on-demand view; nothing a user can act on.
                warnings.filterwarnings(
                    "ignore", message="On demand feature view is an experimental"
                )
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
