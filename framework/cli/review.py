"""``parity review list|resolve``: the queue of predictions the server routed to REVIEW
(:mod:`framework.logs.review_queue`).

Added to ``parity``'s parser by :func:`register` (like :mod:`framework.cli.monitor`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import asdict
from functools import partial
from typing import Any

from framework.cli.monitor import Handler
from framework.errors import ConfigError
from framework.features.repository import default_repo

Helpers = Mapping[str, Callable[..., Any]]


def register(commands: Any, helpers: Helpers) -> dict[tuple[str, str | None], Handler]:
    """Add ``review`` and its subcommands to ``commands`` (argparse subparsers)."""
    review = commands.add_parser(
        "review",
        help="the review queue: list, resolve",
        description="Predictions the server routed to REVIEW, kept in review/queue.db in the "
        "repository's state folder.",
    )
    review_commands = review.add_subparsers(
        dest="review_command", metavar="SUBCOMMAND", parser_class=type(review)
    )
    review_commands.required = True
    rlist = review_commands.add_parser("list", help="items awaiting review (or resolved)")
    helpers["repo_args"](rlist, profile=False)
    rlist.add_argument("--status", choices=["open", "resolved", "all"], default="open")
    rlist.add_argument("--limit", type=int, default=50)
    helpers["json_arg"](rlist)
    resolve = review_commands.add_parser("resolve", help="close an item with a label")
    helpers["repo_args"](resolve, profile=False)
    resolve.add_argument("id", type=int, metavar="ID")
    resolve.add_argument("--label", required=True, help="the reviewer's answer, e.g. 0 or 1")
    resolve.add_argument("--note", default="", help="why")
    resolve.add_argument("--by", help="who (default: user@host)")
    helpers["json_arg"](resolve)

    return {
        ("review", "list"): partial(_review, helpers=helpers),
        ("review", "resolve"): partial(_review, helpers=helpers),
    }


def _why(explanation: dict[str, Any] | None, top: int = 3) -> str:
    if not explanation:
        return ""
    parts = [f"{a['feature']} {a['contribution']:+.4f}" for a in explanation["attributions"][:top]]
    return "\n        why: " + ", ".join(parts)


def _review(args: argparse.Namespace, helpers: Helpers) -> None:
    from framework.features.repository import data_dir
    from framework.logs.review_queue import ReviewQueue
    from framework.registry.model_registry import default_actor

    path = data_dir(args.repo or default_repo()) / "review" / "queue.db"
    if not path.exists():
        raise ConfigError(f"No review queue at {path} (the server creates it).")
    queue = ReviewQueue(path)
    try:
        if args.review_command == "resolve":
            item = queue.resolve(args.id, label=args.label, by=args.by or default_actor(),
                                 note=args.note)  # fmt: skip
            helpers["emit"](args, asdict(item), f"resolved review item {item.id} as {item.label}")
            return
        status = None if args.status == "all" else args.status
        items = queue.list(status=status, limit=args.limit)
        lines = [
            f"{i.id:>5} {i.created_at[:19]} {i.model}:{i.version} {i.request_id}#{i.row_index} "
            f"score {'—' if i.score is None else f'{i.score:.3f}'} {i.status}"
            + (f" -> {i.label}" if i.label else "")
            + f"  {'; '.join(i.reasons[:2])}"
            + _why(i.explanation)
            for i in items
        ]
        helpers["emit"](
            args,
            {"depth": queue.depth(), "items": [asdict(i) for i in items]},
            "\n".join(lines) or f"no {args.status} review items",
        )
    finally:
        queue.close()
