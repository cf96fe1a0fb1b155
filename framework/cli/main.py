"""The ``parity`` command line.

Every command has ``--help``; on failure it prints one line naming what is
wrong to stderr and exits non-zero (2 for a wrong argument or setting, 3 for
bad data, 4 for a Feast failure); where it prints results it offers ``--json``.

Every command that reads a repository takes ``--repo``; without it the
repository is ``$PARITY_REPO``, else the current folder or ``./feature_repo``
(:func:`framework.features.repository.default_repo`), never the sample shipped with
parity (only ``parity demo``, the sample's own scenario, runs on it by default).
No command defaults a model name: with one model in the repository's registry it
is the default, with several the command lists them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from framework.cli import (
    completion,
    data,
    features,
    feedback,
    init,
    materialize,
    models,
    monitor,
    retrain,
    review,
    score,
    serve,
)
from framework.errors import ConfigError, ParityError
from framework.features.repository import Profile, default_repo


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _repo_args(parser: argparse.ArgumentParser, *, profile: bool = True) -> None:
    parser.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="the Feast repository (default: $PARITY_REPO, else the current folder or "
        "./feature_repo, whichever holds a feature_store.yaml)",
    )
    if profile:
        parser.add_argument(
            "--profile",
            type=Profile,
            choices=list(Profile),
            default=Profile.EMBEDDED,
            help="embedded (file registry, SQLite), production (PostgreSQL registry, "
            "Redis) or spark (production with Spark for the offline work); "
            "default: %(default)s",
        )


def _json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of text")


def _duckdb_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory-limit", help="DuckDB memory limit, e.g. 4GB (default: 80%% of RAM)"
    )
    parser.add_argument("--temp-dir", type=Path, help="where DuckDB spills beyond the memory limit")
    parser.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _registry_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        type=Path,
        help="model registry folder (default: models/ in the repository's state folder, "
        "<repo>/.parity or where its parity.toml says)",
    )


#: Each command's handler by (command, subcommand), filled by :func:`build_parser`.
_COMMANDS: dict[tuple[str, str | None], Callable[[argparse.Namespace], None]] = {}


def build_parser() -> argparse.ArgumentParser:
    """``parity``'s parser; every command group adds itself, in the order of ``--help``."""
    parser = _Parser(
        prog="parity",
        description="Define features once. Train on them and serve them in parity.",
        epilog="Run 'parity COMMAND --help' for a command's options.",
    )
    parser.add_argument(
        "--version", action="version", version=f"parity {_version()}",
        help="print parity's version and exit",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    helpers: dict[str, Callable[..., Any]] = {
        "repo_args": _repo_args, "registry_arg": _registry_arg, "json_arg": _json_arg,
        "duckdb_args": _duckdb_args, "timestamp": _timestamp, "registry": _registry,
        "emit": _emit, "fmt": _fmt, "default_model": default_model,
        "build_parser": build_parser,
    }  # fmt: skip
    _add_demo(commands)
    _COMMANDS[("demo", None)] = _cmd_demo
    for module in (data, features, models, serve, review, materialize, score, monitor,
                   feedback, retrain, init, completion):  # fmt: skip
        _COMMANDS.update(module.register(commands, helpers))
    return parser


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the whole loop (what exists of it) on embedded defaults",
        description="Generate sample data (with drift from 75%% of the period on), build "
        "offline features, register the Feast definitions, materialise them online, train "
        "and promote a model, serve it over gRPC, replay a clean and a drifted period "
        "through the server and monitor both (report: monitor.html in the state folder). "
        "It is the sample's scenario: without --repo it runs on ./feature_repo if that "
        "holds a feature_store.yaml (a copy of the sample), else on the sample repository "
        "shipped with parity.",
    )
    _repo_args(demo)
    demo.add_argument("--seed", type=int, default=7, help="sample data seed (default: %(default)s)")
    demo.add_argument(
        "--scale", default="50k", help="sample size in transactions (default: %(default)s)"
    )
    demo.add_argument(
        "--drift",
        metavar="NAME[,NAME]|none",
        help="drift scenarios of the sample from 75%% of its period on, which the monitor "
        "step should flag ('none': a clean sample; default: "
        "amount_inflation,new_merchant_category)",
    )
    _json_arg(demo)


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload, indent=2, default=str) if args.json else text)


def _cmd_demo(args: argparse.Namespace) -> None:
    from framework.cli.demo import DEMO_DRIFT, DemoStep, demo_repo, run_demo
    from framework.sample.data import drift_names, parse_scale

    repo = args.repo or demo_repo()
    started = time.perf_counter()

    def progress(step: DemoStep) -> None:
        if not args.json:
            print(f"  {step.name:<12} {step.seconds:>6.1f}s  {step.detail}", flush=True)

    if not args.json:
        print(f"parity demo ({args.profile.value} profile, repository {repo})")
    drift = (
        DEMO_DRIFT
        if args.drift is None
        else ()
        if args.drift.strip().lower() == "none"
        else drift_names([args.drift])
    )
    result = run_demo(
        repo,
        profile=args.profile,
        seed=args.seed,
        transactions=parse_scale(args.scale),
        drift=drift,
        progress=progress,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return
    print("The latest transactions, scored by the running server:")
    for item, p in zip(result.online_vectors, result.predictions, strict=True):
        req, f = item["request"], item["features"]
        print(
            f"  user {req['user_id']} at merchant {req['merchant_id']} ({f['category']}), "
            f"amount {req['amount']:.2f}: {p['decision']}, fraud probability "
            f"{p['score']:.3f} ({p['model_name']}:{p['model_version']}); "
            f"txn_count_24h={f['txn_count_24h']}, amount_to_mean_7d="
            f"{_fmt(f['amount_to_mean_7d'])}"
        )
    m = result.monitoring
    scenarios = ", ".join(m["drift_scenarios"]) or "none"
    print(f"Monitoring, by parity monitor (the sample's drift scenarios: {scenarios}):")
    later = "drifted period" if m["drift_scenarios"] else "later period"
    for name, label in (("clean", "clean period"), ("drift", later)):
        p = m[name]
        start, end = (p["period"][k][5:16].replace("T", " ") for k in ("start", "end"))
        line = f"  {label:<14} {start} to {end}, {p['rows']:,} rows: {p['status']}"
        if p["dataset_drift"] not in (None, "insufficient_data"):
            drifted = p["drifted_features"]
            line += f", {len(drifted)} of {p['evaluated_features']} features drifted" + (
                f" ({', '.join(drifted)})" if drifted else ""
            )
        others = [a for a in p["alerts"] if a not in ("feature_drift", "dataset_drift")]
        if others:
            line += f"; also {', '.join(others)}"
        print(line)
    print(f"  reports: {m['drift']['report']} ({later}), {m['clean']['report']}")
    print("\n".join(_loop_lines(result.loop, later)))
    print(f"Done in {time.perf_counter() - started:.1f}s.")


def _loop_lines(loop: dict[str, Any], period: str) -> list[str]:
    """The closing loop's before/after numbers (framework.cli.demo_loop)."""
    if not loop:
        return []
    r = loop["retrain"]
    lines = ["Closing the loop (parity feedback, parity retrain --reason drift --promote):"]
    fb = loop["feedback"]["champion"]
    lines.append(
        f"  ground truth   {period}, {fb['labelled']:,} predictions: live ROC-AUC "
        f"{_fmt(fb['roc_auc'])}, PR-AUC {_fmt(fb['pr_auc'])}"
    )
    if r["status"] not in ("promoted", "challenger"):
        lines.append(f"  retrain        {r['status']}: {r['message']}")
        return lines
    m = r["metrics"]
    lines.append(
        f"  retrain        same {r['holdout']['rows']:,}-row holdout: PR-AUC champion "
        f"{_fmt(m['champion']['pr_auc'])} -> challenger {_fmt(m['challenger']['pr_auc'])}; "
        f"{r['message']}"
    )
    ms = loop["reload_seconds"] * 1000
    lines.append(f"  hot reload     served by the new version {ms:.0f} ms after the promotion")
    a = loop["after"]
    lines.append(
        f"  after          the same {a['transactions']:,} later transactions: live PR-AUC "
        f"{_fmt(a['old']['pr_auc'])} (v{a['old_version']}) -> {_fmt(a['new']['pr_auc'])} "
        f"(v{a['new_version']}), ROC-AUC {_fmt(a['old']['roc_auc'])} -> "
        f"{_fmt(a['new']['roc_auc'])}"
    )
    return lines


def _fmt(value: Any) -> str:
    return "null" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _registry(args: argparse.Namespace) -> Any:
    from framework.features.repository import data_dir
    from framework.registry.model_registry import ModelRegistry

    if args.registry:
        return ModelRegistry(args.registry)
    return ModelRegistry(data_dir(getattr(args, "repo", None) or default_repo()) / "models")


def default_model(args: argparse.Namespace) -> str:
    """``--model``, else the only model in the repository's registry."""
    if args.model:
        return str(args.model)
    try:
        registry = _registry(args)
    except ConfigError as exc:
        raise ConfigError(
            f"--model: name the model, or the repository to take it from: {exc}"
        ) from None
    names = registry.names()
    if len(names) == 1:
        return str(names[0])
    if not names:
        raise ConfigError(f"--model: no model in the registry {registry.root} (run parity train).")
    raise ConfigError(
        f"--model: the registry {registry.root} holds several models ({', '.join(names)}); "
        "pick one with --model NAME."
    )


def _version() -> str:
    """The installed distribution's version (``pyproject.toml``'s)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("parity")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``parity`` console script. Output piped into a reader that
    stops early (``parity review list --json | head``) ends quietly, as a Unix tool's
    does, with the shell's status for a broken pipe (128 + SIGPIPE)."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The Python documentation's recipe ("Note on SIGPIPE", signal module): point
        # stdout at /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + int(signal.SIGPIPE)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    key = (
        args.command,
        getattr(args, "data_command", None)
        or getattr(args, "models_command", None)
        or getattr(args, "review_command", None),
    )
    handler = _COMMANDS[key]
    name = " ".join(k for k in ("parity", *key) if k)
    try:
        handler(args)
    except ParityError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
