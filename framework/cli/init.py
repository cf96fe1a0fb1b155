"""``parity init``: a model spec for your repository, or a new repository and a spec.

In a Feast repository (a folder with ``feature_store.yaml``) it reads the
definitions, as ``feast apply`` would, without registering anything; lists the
feature services with the entity keys and request data each needs; and writes
``models/<name>.toml``: a commented spec with the task's defaults
(:data:`TASK_DEFAULTS`) and no rules of any particular dataset. In an empty
folder it first creates a repository from Feast's own template
(``feast.repo_operations.init_repo``, what ``feast init`` runs).

Every choice can be given as a flag, so it runs unattended. A choice it cannot
make alone (which feature service, which task, which query column is the
label) stops it with the options listed and exit status 2; nothing is asked
interactively. A label query given with ``--label-query`` is checked against
the data (``DESCRIBE``, relative paths resolved against the repository) before
the spec is written.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from framework.cli.spec_template import TASK_DEFAULTS, TASKS, render_spec
from framework.errors import ConfigError, DataError

Handler = Callable[[argparse.Namespace], None]


@dataclass
class ServiceInfo:
    """A feature service as a spec needs it."""

    name: str
    keys: list[str]
    request_data: list[str]
    features: int


@dataclass
class InitResult:
    repo: str
    created_repository: bool
    spec: str
    name: str
    task: str
    feature_service: str
    keys: list[str]
    label: str
    event_timestamp: str
    label_query_given: bool
    feature_services: list[dict[str, Any]] = field(default_factory=list)
    entities: list[dict[str, Any]] = field(default_factory=list)


def register(commands: Any, helpers: Mapping[str, Callable[..., Any]]) -> dict[Any, Handler]:
    """Add ``init`` to ``commands`` (argparse subparsers)."""
    init = commands.add_parser(
        "init",
        help="a model spec for your Feast repository (or a new repository and a spec)",
        description="In a Feast repository: list its feature services and entities and write "
        "a commented model spec, models/NAME.toml, with the task's defaults. In an empty "
        "folder: create a repository from Feast's template first (FOLDER/feature_repo). A "
        "choice it cannot make alone is listed and exits 2; flags make every choice.",
    )
    init.add_argument(
        "--repo",
        type=Path,
        help="the repository, or an empty folder for a new one (default: $PARITY_REPO, else "
        "the current folder, or its ./feature_repo)",
    )
    init.add_argument("--feature-service", metavar="NAME", help="what the model reads")
    init.add_argument("--task", choices=TASKS, help="what it predicts")
    init.add_argument(
        "--label-query",
        metavar="SQL",
        help="DuckDB SQL returning one row per labelled event: keys, label, event time, "
        "request data (relative paths: against the repository). Default: a placeholder to edit",
    )
    init.add_argument("--label", metavar="COLUMN", help="the label column of the query")
    init.add_argument("--event-timestamp", metavar="COLUMN", help="the query's event-time column")
    init.add_argument(
        "--label-timestamp", metavar="COLUMN", help="when each label became known (optional)"
    )
    init.add_argument(
        "--keys",
        metavar="COL,...",
        help="entity key columns (default: the feature service's join keys)",
    )
    init.add_argument("--name", help="the model's name (default: the feature service's)")
    init.add_argument("--force", action="store_true", help="overwrite an existing spec")
    helpers["json_arg"](init)
    return {("init", None): cmd_init}


def cmd_init(args: argparse.Namespace) -> None:
    repo, created = _repository(args.repo)
    try:
        result = _init_spec_from(args, repo, created)
    except ConfigError as exc:
        if created:  # the repository stays: say so, so the next run goes into it
            raise ConfigError(f"created a Feast repository in {repo}; {exc}") from exc
        raise
    if args.json:
        print(json.dumps(asdict(result), indent=2))
        return
    print(_text(result))


def _init_spec_from(args: argparse.Namespace, repo: Path, created: bool) -> InitResult:
    return init_spec(
        repo,
        created_repository=created,
        feature_service=args.feature_service,
        task=args.task,
        label_query=args.label_query,
        label=args.label,
        event_timestamp=args.event_timestamp,
        label_timestamp=args.label_timestamp,
        keys=[k.strip() for k in args.keys.split(",") if k.strip()] if args.keys else None,
        name=args.name,
        force=args.force,
    )


def _repository(given: Path | None) -> tuple[Path, bool]:
    """The repository to write into, creating one from Feast's template in an empty folder."""
    folder = given or (Path(os.environ["PARITY_REPO"]) if os.environ.get("PARITY_REPO") else None)
    folder = folder or Path.cwd()
    for candidate in (folder, folder / "feature_repo"):
        if (candidate / "feature_store.yaml").is_file():
            return candidate, False
    if folder.exists() and any(p.name != ".git" for p in folder.iterdir()):
        raise ConfigError(
            f"{folder} is not a Feast repository (no feature_store.yaml in it or in its "
            "feature_repo/) and not empty; run parity init in your repository, name it with "
            "--repo DIR, or in an empty folder for a new one."
        )
    return _new_repository(folder), True


def _new_repository(folder: Path) -> Path:
    """``feast init``'s local template in ``folder``; returns ``folder/feature_repo``."""
    from feast.repo_operations import init_repo

    folder = folder.resolve()
    project = re.sub(r"[^\w-]+", "_", folder.name).lstrip("_-") or "feature_repo"
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            init_repo(project, "local", repo_path=str(folder))
    except (Exception, SystemExit) as exc:
        raise ConfigError(f"feast init in {folder} failed: {exc} {out.getvalue()}".strip()) from exc
    return folder / "feature_repo"


def services(contents: Any) -> list[ServiceInfo]:
    """Every feature service with the entity keys and request data it needs."""
    join_key = {e.name: e.join_key for e in contents.entities}
    views = {v.name: v for v in contents.feature_views}
    on_demand = {v.name: v for v in contents.on_demand_feature_views}
    found = []
    for fs in contents.feature_services:
        keys: list[str] = []
        request: list[str] = []

        def add(names: list[str], into: list[str]) -> None:
            into.extend(n for n in names if n not in into)

        for projection in fs.feature_view_projections:
            view_name = projection.name
            if view_name in on_demand:
                odfv = on_demand[view_name]
                for source in odfv.source_request_sources.values():
                    add([f.name for f in source.schema], request)
                for sub in odfv.source_feature_view_projections.values():
                    if sub.name in views:
                        add(_view_keys(views[sub.name], join_key, sub.join_key_map), keys)
            elif view_name in views:
                add(_view_keys(views[view_name], join_key, projection.join_key_map), keys)
        features = sum(len(p.features) for p in fs.feature_view_projections)
        found.append(ServiceInfo(fs.name, keys, request, features))
    return sorted(found, key=lambda s: s.name)


def _view_keys(view: Any, join_key: Mapping[str, str], key_map: Mapping[str, str]) -> list[str]:
    keys = [join_key[e] for e in view.entities if e in join_key and e != "__dummy"]
    return [(key_map or {}).get(k, k) for k in keys]


def init_spec(
    repo: Path,
    *,
    created_repository: bool = False,
    feature_service: str | None = None,
    task: str | None = None,
    label_query: str | None = None,
    label: str | None = None,
    event_timestamp: str | None = None,
    label_timestamp: str | None = None,
    keys: list[str] | None = None,
    name: str | None = None,
    force: bool = False,
) -> InitResult:
    """Write ``<repo>/models/<name>.toml`` and return what was chosen."""
    contents = _definitions(repo)
    found = services(contents)
    service = _pick_service(repo, found, feature_service)
    if task is None:
        raise ConfigError(f"--task: pick one of: {', '.join(TASKS)}.")
    if task not in TASK_DEFAULTS:
        raise ConfigError(f"--task must be one of {', '.join(TASKS)}. Got {task!r}.")
    keys = keys or service.keys
    if not keys:
        raise ConfigError(
            f"--keys: feature service {service.name!r} has no entity keys; name the label "
            "query's key columns."
        )
    placeholder = label_query is None
    if label_query is not None:
        columns = _query_columns(repo, label_query)
        label, event_timestamp = _pick_columns(
            columns, keys, service.request_data, label, event_timestamp, label_timestamp
        )
    else:
        label = label or "label"
        event_timestamp = event_timestamp or "event_timestamp"
        label_query = _placeholder_query(keys, label, event_timestamp, service.request_data)
    name = name or service.name
    spec_path = repo / "models" / f"{name}.toml"
    if spec_path.exists() and not force:
        raise ConfigError(f"{spec_path} exists; pass --force to overwrite it or --name NAME.")
    text = render_spec(
        name=name,
        task=task,
        feature_service=service.name,
        query=label_query,
        keys=keys,
        label=label,
        event_timestamp=event_timestamp,
        label_timestamp=label_timestamp,
        request_data=service.request_data,
        placeholder=placeholder,
    )
    _write_spec(spec_path, text)
    return InitResult(
        repo=str(repo),
        created_repository=created_repository,
        spec=str(spec_path),
        name=name,
        task=task,
        feature_service=service.name,
        keys=keys,
        label=label,
        event_timestamp=event_timestamp,
        label_query_given=not placeholder,
        feature_services=[asdict(s) for s in found],
        entities=[
            {"name": e.name, "join_key": e.join_key, "description": e.description}
            for e in sorted(contents.entities, key=lambda e: e.name)
            if e.name != "__dummy"
        ],
    )


def _definitions(repo: Path) -> Any:
    """The repository's Feast definitions, read as ``feast apply`` reads them."""
    import feast  # noqa: F401  (first: importing Feast installs warning filters of its own)

    from framework.features.repository import parse_definitions

    with warnings.catch_warnings():
        # Feast's own deprecation notices about the user's definitions (e.g. an Entity
        # without value_type, as in Feast's template): not what init is about.
        warnings.simplefilter("ignore", DeprecationWarning)
        return parse_definitions(repo)


def _pick_service(repo: Path, found: list[ServiceInfo], name: str | None) -> ServiceInfo:
    """The feature service named, else the only one; the options listed when unclear."""
    listing = "; ".join(
        f"{s.name} (keys {', '.join(s.keys) or 'none'}"
        + (f"; request data {', '.join(s.request_data)}" if s.request_data else "")
        + ")"
        for s in found
    )
    if not found:
        raise ConfigError(f"{repo} defines no feature service; a model reads one.")
    by_name = {s.name: s for s in found}
    if name is None:
        if len(found) > 1:
            raise ConfigError(f"--feature-service: pick one of: {listing}.")
        name = found[0].name
    if name not in by_name:
        raise ConfigError(
            f"--feature-service: no feature service {name!r} in {repo} (it has: {listing})."
        )
    return by_name[name]


def _write_spec(spec_path: Path, text: str) -> None:
    """Write the spec through a temporary file, only once ``parity train`` would read it."""
    from framework.models.spec import load_spec

    spec_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = spec_path.with_suffix(".toml.tmp")
    tmp.write_text(text)
    try:
        load_spec(tmp)  # what parity train will read: never leave a spec it refuses
    except Exception:
        tmp.unlink()
        raise
    tmp.replace(spec_path)


def _query_columns(repo: Path, query: str) -> list[str]:
    from framework.duck import connect
    from framework.features.sql_paths import resolve_sql_paths

    con = connect()
    try:
        sql = resolve_sql_paths(query, [repo])
        return [row[0] for row in con.execute(f"DESCRIBE {sql}").fetchall()]
    except Exception as exc:
        raise DataError(f"--label-query failed: {' '.join(str(exc).split())}") from exc
    finally:
        con.close()


def _pick_columns(
    columns: list[str],
    keys: list[str],
    request: list[str],
    label: str | None,
    event_timestamp: str | None,
    label_timestamp: str | None,
) -> tuple[str, str]:
    """The label and event-time columns: as given, else the only candidate in the query."""
    have = ", ".join(columns)
    for flag, col in (("--label", label), ("--event-timestamp", event_timestamp),
                      ("--label-timestamp", label_timestamp)):  # fmt: skip
        if col is not None and col not in columns:
            raise ConfigError(f"{flag}: the label query has no column {col!r} (it has: {have}).")
    missing = [k for k in keys if k not in columns]
    if missing:
        raise ConfigError(
            f"--keys: the label query has no key column {missing[0]!r} (it has: {have}); "
            "return it, or name the key columns with --keys."
        )
    if event_timestamp is None:
        stamps = [c for c in columns if c in ("event_timestamp", "timestamp", "ts")]
        if len(stamps) != 1:
            raise ConfigError(f"--event-timestamp: which column is the event time? ({have})")
        event_timestamp = stamps[0]
    if label is None:
        rest = [c for c in columns if c not in {*keys, *request, event_timestamp, label_timestamp}]
        if len(rest) != 1:
            raise ConfigError(f"--label: which column is the label? ({', '.join(rest) or have})")
        label = rest[0]
    return label, event_timestamp


def _placeholder_query(
    keys: list[str], label: str, event_timestamp: str, request: list[str]
) -> str:
    columns = ", ".join([*keys, label, event_timestamp, *request])
    return f"SELECT {columns}\nFROM read_parquet('labels.parquet')"


def _text(r: InitResult) -> str:
    lines = []
    if r.created_repository:
        lines.append(f"created a Feast repository from Feast's template in {r.repo}")
    lines.append(f"feature services in {r.repo}:")
    for s in r.feature_services:
        mark = "*" if s["name"] == r.feature_service else " "
        extra = f"; request data {', '.join(s['request_data'])}" if s["request_data"] else ""
        lines.append(
            f"  {mark} {s['name']}: {s['features']} features, keys {', '.join(s['keys'])}{extra}"
        )
    lines.append("entities: " + ", ".join(f"{e['name']} ({e['join_key']})" for e in r.entities))
    lines.append(f"wrote {r.spec} ({r.task}, feature service {r.feature_service})")
    where = f" --repo {r.repo}"
    if not r.label_query_given:
        lines.append(f"next: replace the placeholder labels.query in {r.spec}, then")
    lines.append(f"  parity apply{where} && parity materialize{where} && parity train{where}")
    return "\n".join(lines)
