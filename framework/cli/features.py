"""``parity training-set`` and ``parity apply``: the Feast repository's definitions and
point-in-time training sets (:mod:`framework.features`).

Added to ``parity``'s parser by :func:`register` (like :mod:`framework.cli.monitor`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from framework.cli.monitor import Handler
from framework.errors import ConfigError
from framework.features.repository import default_repo

Helpers = Mapping[str, Callable[..., Any]]


def register(commands: Any, helpers: Helpers) -> dict[tuple[str, str | None], Handler]:
    """Add ``training-set`` and ``apply`` to ``commands`` (argparse subparsers)."""
    ts = commands.add_parser(
        "training-set",
        help="build a point-in-time-correct training set (DuckDB, or Spark) to Parquet",
        description="Join features to every row of an entity file as of each row's "
        "event_timestamp (latest feature row at or before it, within the view's TTL), "
        "keeping every row in order, and write Parquet with a dataset fingerprint. On "
        "the spark profile the join runs on Spark and OUT is a folder of Parquet parts "
        "in row order (the fingerprint in its _parity_training_set.json).",
    )
    helpers["repo_args"](ts)
    which = ts.add_mutually_exclusive_group(required=True)
    which.add_argument("--feature-service", metavar="NAME", help="a registered feature service")
    which.add_argument("--features", metavar="REFS", help="comma-separated view:feature references")
    ts.add_argument(
        "--entities",
        type=Path,
        required=True,
        help="Parquet file: join keys, event_timestamp (or one timestamp column), request data",
    )
    ts.add_argument(
        "--out", type=Path, required=True, help="Parquet file to write (spark: a folder)"
    )
    ts.add_argument("--full-feature-names", action="store_true", help="name columns view__feature")
    helpers["duckdb_args"](ts)
    helpers["json_arg"](ts)

    apply = commands.add_parser(
        "apply",
        help="register the feature definitions",
        description="Register the Feast repository's definitions (feast apply semantics: "
        "objects removed from the repository are removed from the registry).",
    )
    helpers["repo_args"](apply)
    helpers["json_arg"](apply)

    return {
        ("training-set", None): partial(_cmd_training_set, helpers=helpers),
        ("apply", None): partial(_cmd_apply, helpers=helpers),
    }


def _cmd_apply(args: argparse.Namespace, helpers: Helpers) -> None:
    from framework.features.repository import apply

    repo = args.repo or default_repo()
    s = apply(repo, args.profile)
    payload = asdict(s)
    payload.pop("feast_output")
    helpers["emit"](
        args,
        payload,
        f"applied {repo} ({s.profile} profile, project {s.project}): {s.entities} entities, "
        f"{s.feature_views} feature views, {s.on_demand_feature_views} on-demand feature views, "
        f"{s.feature_services} feature services",
    )


def _cmd_training_set(args: argparse.Namespace, helpers: Helpers) -> None:
    from framework.features.training_set import write_training_set
    from framework.progress import for_stream

    repo = args.repo or default_repo()
    if args.features:
        features: Any = [r.strip() for r in args.features.split(",") if r.strip()]
    else:
        features = args.feature_service
    if args.entities.suffix.lower() not in (".parquet", ".pq") and not args.entities.is_dir():
        raise ConfigError(f"The '--entities' file must be Parquet. Got {args.entities}.")
    from framework.features.repository import open_store
    from framework.spark.session import uses_spark

    t = time.perf_counter()
    with open_store(repo, args.profile) as store:
        if uses_spark(store):
            from framework.spark.training_set import write_training_set as on_spark

            info = on_spark(
                store,
                features,
                args.entities,
                args.out,
                full_feature_names=args.full_feature_names,
                temp_directory=args.temp_dir,
                progress=for_stream(sys.stderr),
            )
        else:
            info = write_training_set(
                store,
                features,
                args.entities,
                args.out,
                full_feature_names=args.full_feature_names,
                memory_limit=args.memory_limit,
                temp_directory=args.temp_dir,
                threads=args.threads,
                progress=for_stream(sys.stderr),
            )
    seconds = round(time.perf_counter() - t, 2)
    payload = {"out": str(args.out), "seconds": seconds, **asdict(info)}
    helpers["emit"](
        args,
        payload,
        f"wrote {info.entity_rows:,} rows x {len(info.features)} features to {args.out} in "
        f"{seconds}s ({info.engine}: {info.engine_reason}); fingerprint {info.fingerprint[:16]}",
    )
