"""``parity materialize``: offline to online, and each view's freshness
(:mod:`framework.materialize`).

Added to ``parity``'s parser by :func:`register` (like :mod:`framework.cli.monitor`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict
from functools import partial
from typing import Any

from framework.cli.monitor import Handler
from framework.features.repository import default_repo

Helpers = Mapping[str, Callable[..., Any]]


def register(commands: Any, helpers: Helpers) -> dict[tuple[str, str | None], Handler]:
    """Add ``materialize`` to ``commands`` (argparse subparsers)."""
    mat = commands.add_parser(
        "materialize",
        help="offline -> online: write the latest feature values to the online store",
        description="For each feature view, write the latest row per entity with an event time "
        "in [--start, --end] (both inclusive) to the online store (SQLite or Redis), exactly as "
        "Feast's materialize writes it, and record the interval in the Feast registry once the "
        "view is fully written. Safe to interrupt and run again. --incremental starts each view "
        "where its last recorded interval ended. A profile whose offline store is Spark (--profile "
        "spark) computes and writes on Spark's executors.",
    )
    helpers["repo_args"](mat)
    when = mat.add_mutually_exclusive_group()
    when.add_argument(
        "--start", type=helpers["timestamp"], help="first event time (ISO 8601; naive = UTC)"
    )
    when.add_argument(
        "--incremental", action="store_true", help="per view, from the end of its last interval"
    )
    when.add_argument(
        "--status",
        action="store_true",
        help="show per view the last interval and the age of the newest online value",
    )
    mat.add_argument(
        "--end", type=helpers["timestamp"], help="last event time, inclusive (default: now)"
    )
    mat.add_argument(
        "--views", metavar="NAMES", help="comma-separated feature views (default: every online one)"
    )
    mat.add_argument(
        "--batch-size", type=int, default=50_000, help="entities per write (default: %(default)s)"
    )
    helpers["duckdb_args"](mat)
    helpers["json_arg"](mat)

    return {("materialize", None): partial(_cmd_materialize, helpers=helpers)}


def _cmd_materialize(args: argparse.Namespace, helpers: Helpers) -> None:
    from framework.features.repository import open_store
    from framework.materialize.freshness import status
    from framework.materialize.job import materialize
    from framework.progress import for_stream
    from framework.spark.session import uses_spark

    repo = args.repo or default_repo()
    views = [v.strip() for v in args.views.split(",") if v.strip()] if args.views else None
    with open_store(repo, args.profile) as store:
        if args.status:
            rows = [r for r in status(store) if not views or r.view in views]
            helpers["emit"](args, {"views": [asdict(r) for r in rows]}, _status_text(rows))
            return
        if uses_spark(store):  # the profile's offline store is Spark: so is the job
            from framework.spark.materialize import materialize as on_spark

            summary = on_spark(
                store,
                start=args.start,
                end=args.end,
                incremental=args.incremental,
                views=views,
                batch_rows=args.batch_size,
                progress=for_stream(sys.stderr),
                yaml_path=repo / args.profile.yaml_name,
            )
        else:
            summary = materialize(
                store,
                start=args.start,
                end=args.end,
                incremental=args.incremental,
                views=views,
                batch_rows=args.batch_size,
                progress=for_stream(sys.stderr),
                memory_limit=args.memory_limit,
                temp_directory=args.temp_dir,
                threads=args.threads,
            )
    rate = summary.entities / summary.seconds if summary.seconds else 0.0
    helpers["emit"](
        args,
        summary.to_dict(),
        f"materialized {len(summary.views)} feature views into {summary.online_store} "
        f"({args.profile.value} profile): {summary.entities:,} entities in {summary.seconds}s "
        f"({rate:,.0f}/s)",
    )


def _status_text(rows: list[Any]) -> str:
    def age(seconds: float | None) -> str:
        if seconds is None:
            return "unknown"
        days, rest = divmod(int(seconds), 86_400)
        return f"{days}d {rest // 3600}h" if days else f"{rest // 3600}h {rest % 3600 // 60}m"

    lines = [f"{'view':<22} {'last interval (UTC)':<43} {'newest online value':<21} age"]
    for r in rows:
        interval = (
            f"{r.last_start[:19]} -> {r.last_end[:19]}" if r.last_end else "never materialised"
        )
        newest = r.newest_event[:19] if r.newest_event else "unknown"
        lines.append(f"{r.view:<22} {interval:<43} {newest:<21} {age(r.age_seconds)}")
    return "\n".join(lines)
