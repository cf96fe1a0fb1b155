"""``parity score``: score a table of entities offline with a registered model
(:mod:`framework.models.batch_score`).

Added to ``parity``'s parser by :func:`register` (like :mod:`framework.cli.monitor`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from framework.cli.monitor import Handler
from framework.features.repository import default_repo

Helpers = Mapping[str, Callable[..., Any]]


def register(commands: Any, helpers: Helpers) -> dict[tuple[str, str | None], Handler]:
    """Add ``score`` to ``commands`` (argparse subparsers)."""
    score = commands.add_parser(
        "score",
        help="score a table of entities offline with a registered model",
        description="Join point-in-time features to every row of an entity file (as of its "
        "event_timestamp) and score it with the model version's own pipeline, as the server "
        "does; write Parquet with the entity columns, score, label, confidence, model name and "
        "version.",
    )
    helpers["repo_args"](score)
    helpers["registry_arg"](score)
    score.add_argument(
        "--entities",
        type=Path,
        required=True,
        help="Parquet file: join keys, event_timestamp (or one timestamp column), request data",
    )
    score.add_argument(
        "--model",
        metavar="NAME[@ALIAS|:VERSION]",
        help="the model version (default: the champion, else latest version, of the only "
        "model in the registry)",
    )
    score.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    score.add_argument(
        "--batch-size",
        type=int,
        default=65_536,
        help="rows scored at a time (default: %(default)s)",
    )
    helpers["duckdb_args"](score)
    helpers["json_arg"](score)
    return {("score", None): partial(_cmd_score, helpers=helpers)}


def _cmd_score(args: argparse.Namespace, helpers: Helpers) -> None:
    from framework.features.repository import open_store
    from framework.models.batch_score import score_entities
    from framework.progress import for_stream

    repo = args.repo or default_repo()
    with open_store(repo, args.profile) as store:
        s = score_entities(
            store,
            helpers["registry"](args),
            helpers["default_model"](args),
            args.entities,
            args.out,
            batch_rows=args.batch_size,
            memory_limit=args.memory_limit,
            temp_directory=args.temp_dir,
            threads=args.threads,
            progress=for_stream(sys.stderr),
        )
    helpers["emit"](
        args, s.to_dict(), f"scored {s.rows:,} rows with {s.model} -> {s.out} in {s.seconds}s"
    )
