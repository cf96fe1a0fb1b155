"""``parity data generate|features``: the deterministic card-fraud sample data and its
offline features (:mod:`framework.sample`).

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
from framework.features.repository import default_repo

Helpers = Mapping[str, Callable[..., Any]]


def register(commands: Any, helpers: Helpers) -> dict[tuple[str, str | None], Handler]:
    """Add ``data`` and its subcommands to ``commands`` (argparse subparsers)."""
    from framework.sample.scenario import DRIFT_SCENARIOS

    data = commands.add_parser(
        "data",
        help="sample data: generate it, rebuild its offline features",
        description="The deterministic card-fraud sample data.",
    )
    data_commands = data.add_subparsers(
        dest="data_command", metavar="SUBCOMMAND", parser_class=type(data)
    )
    data_commands.required = True
    gen = data_commands.add_parser(
        "generate",
        help="generate the sample (raw tables + offline feature sources)",
        description="Generate the card-fraud sample: raw users, merchants, transactions and "
        "late-arriving labels under OUT/raw, then the Feast offline sources under OUT/offline. "
        "The same seed and scale always give identical files.",
        epilog="Drift scenarios: "
        + "; ".join(f"{name}: {text}" for name, text in DRIFT_SCENARIOS.items()),
    )
    gen.add_argument("--seed", type=int, default=7, help="random seed (default: %(default)s)")
    gen.add_argument(
        "--scale",
        default="20k",
        help="number of transactions, e.g. 5000, 50k, 10M (default: %(default)s)",
    )
    gen.add_argument(
        "--days", type=int, default=90, help="length of the period (default: %(default)s)"
    )
    gen.add_argument(
        "--drift",
        action="append",
        default=[],
        metavar="NAME",
        help=f"apply a drift scenario from the drift start on; repeatable or comma-separated "
        f"({', '.join(DRIFT_SCENARIOS)})",
    )
    gen.add_argument(
        "--drift-start",
        type=float,
        default=0.75,
        help="share of the period after which drift applies (default: %(default)s)",
    )
    gen.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: the repository's state folder)",
    )
    gen.add_argument(
        "--raw-only", action="store_true", help="write the raw tables only, skip the features"
    )
    helpers["duckdb_args"](gen)
    helpers["json_arg"](gen)

    feats = data_commands.add_parser(
        "features",
        help="rebuild the offline feature sources from the raw tables",
        description="Run the DuckDB feature pipeline: DATA/raw -> DATA/offline.",
    )
    feats.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data folder (default: the repository's state folder)",
    )
    helpers["duckdb_args"](feats)
    helpers["json_arg"](feats)

    return {
        ("data", "generate"): partial(_cmd_data_generate, helpers=helpers),
        ("data", "features"): partial(_cmd_data_features, helpers=helpers),
    }


def _cmd_data_generate(args: argparse.Namespace, helpers: Helpers) -> None:
    from framework.duck import connect
    from framework.features.repository import data_dir
    from framework.progress import for_stream
    from framework.sample.data import drift_names, generate, parse_scale
    from framework.sample.pipeline import build_offline_sources
    from framework.sample.scenario import GenerationConfig

    cfg = GenerationConfig(
        seed=args.seed,
        transactions=parse_scale(args.scale),
        days=args.days,
        drift=drift_names(args.drift),
        drift_start_fraction=args.drift_start,
    )
    out = args.out or data_dir(default_repo())
    if not args.raw_only:  # a wrong DuckDB setting fails before any work, in one line
        connect(memory_limit=args.memory_limit, temp_directory=args.temp_dir,
                threads=args.threads).close()  # fmt: skip
    progress = for_stream(sys.stderr)
    t = time.perf_counter()
    summary = generate(cfg, out, progress)
    payload: dict[str, Any] = {
        "raw": asdict(summary),
        "raw_seconds": round(time.perf_counter() - t, 2),
    }
    lines = [
        f"generated {summary.transactions:,} transactions ({summary.users:,} users, "
        f"{summary.merchants:,} merchants), {summary.fraud_rate:.2%} fraud, "
        f"{summary.start[:10]} to {summary.end[:10]}"
        + (f", drift {', '.join(cfg.drift)} from {summary.drift_start}" if cfg.drift else "")
        + f" -> {out / 'raw'} in {payload['raw_seconds']}s"
    ]
    if not args.raw_only:
        t = time.perf_counter()
        result = build_offline_sources(
            out / "raw",
            out / "offline",
            memory_limit=args.memory_limit,
            temp_directory=args.temp_dir,
            threads=args.threads,
            progress=progress,
        )
        payload["offline"] = asdict(result)
        payload["offline_seconds"] = round(time.perf_counter() - t, 2)
        lines.append(_pipeline_line(result.rows, out / "offline", payload["offline_seconds"]))
    helpers["emit"](args, payload, "\n".join(lines))


def _pipeline_line(rows: dict[str, int], where: Path, seconds: float) -> str:
    counts = ", ".join(f"{name} {n:,}" for name, n in rows.items())
    return f"built offline sources ({counts} rows) -> {where} in {seconds}s"


def _cmd_data_features(args: argparse.Namespace, helpers: Helpers) -> None:
    from framework.features.repository import data_dir
    from framework.progress import for_stream
    from framework.sample.pipeline import build_offline_sources

    data = args.data or data_dir(default_repo())
    t = time.perf_counter()
    result = build_offline_sources(
        data / "raw",
        data / "offline",
        memory_limit=args.memory_limit,
        temp_directory=args.temp_dir,
        threads=args.threads,
        progress=for_stream(sys.stderr),
    )
    seconds = round(time.perf_counter() - t, 2)
    helpers["emit"](
        args,
        {**asdict(result), "seconds": seconds},
        _pipeline_line(result.rows, data / "offline", seconds),
    )
