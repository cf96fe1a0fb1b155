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
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

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
            help="embedded (file registry, SQLite) or production (PostgreSQL registry, "
            "Redis); default: %(default)s",
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


def _name_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _registry_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        type=Path,
        help="model registry folder (default: models/ in the repository's state folder, "
        "<repo>/.parity or where its parity.toml says)",
    )


def build_parser() -> argparse.ArgumentParser:
    from framework.sample.data import DRIFT_SCENARIOS

    parser = _Parser(
        prog="parity",
        description="Define features once. Train on them and serve them in parity.",
        epilog="Run 'parity COMMAND --help' for a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    helpers: dict[str, Callable[..., Any]] = {
        "repo_args": _repo_args, "registry_arg": _registry_arg, "json_arg": _json_arg,
        "timestamp": _timestamp, "registry": _registry, "emit": _emit, "fmt": _fmt,
        "default_model": default_model,
    }  # fmt: skip

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

    data = commands.add_parser(
        "data",
        help="sample data: generate it, rebuild its offline features",
        description="The deterministic card-fraud sample data.",
    )
    data_commands = data.add_subparsers(
        dest="data_command", metavar="SUBCOMMAND", parser_class=_Parser
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
    _duckdb_args(gen)
    _json_arg(gen)

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
    _duckdb_args(feats)
    _json_arg(feats)

    ts = commands.add_parser(
        "training-set",
        help="build a point-in-time-correct training set (DuckDB) to Parquet",
        description="Join features to every row of an entity file as of each row's "
        "event_timestamp (latest feature row at or before it, within the view's TTL), "
        "keeping every row in order, and write Parquet with a dataset fingerprint.",
    )
    _repo_args(ts)
    which = ts.add_mutually_exclusive_group(required=True)
    which.add_argument("--feature-service", metavar="NAME", help="a registered feature service")
    which.add_argument("--features", metavar="REFS", help="comma-separated view:feature references")
    ts.add_argument(
        "--entities",
        type=Path,
        required=True,
        help="Parquet file: join keys, event_timestamp (or one timestamp column), request data",
    )
    ts.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    ts.add_argument("--full-feature-names", action="store_true", help="name columns view__feature")
    _duckdb_args(ts)
    _json_arg(ts)

    apply = commands.add_parser(
        "apply",
        help="register the feature definitions",
        description="Register the Feast repository's definitions (feast apply semantics: "
        "objects removed from the repository are removed from the registry).",
    )
    _repo_args(apply)
    _json_arg(apply)

    from framework.cli.models import register as register_models

    _COMMANDS.update(register_models(commands, helpers))

    serve = commands.add_parser(
        "serve",
        help="the gRPC prediction server",
        description="Serve parity.v1.PredictionService, the Open Inference Protocol (KServe "
        "V2), gRPC health checking and reflection; features come from the online store "
        "through the model's pinned feature service. Stops gracefully on SIGTERM/SIGINT "
        "(drains calls, flushes the prediction log). Every setting can also be given as "
        "PARITY_SERVE_<NAME>.",
    )
    _repo_args(serve)
    _registry_arg(serve)
    serve.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="gRPC port (default: 50051; 0: any free port)")
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port via SO_REUSEPORT (default: 1)",
    )
    serve.add_argument(
        "--threads", type=int, help="threads answering calls per process (default: 8)"
    )
    serve.add_argument("--metrics-port", type=int, help="Prometheus metrics port (default: off)")
    serve.add_argument(
        "--now",
        type=_timestamp,
        help="serve as if the time were this (ISO 8601): TTLs are judged against it, for "
        "replaying the sample, whose data ends in the past (default: the wall clock)",
    )
    serve.add_argument(
        "--canary-share",
        type=float,
        help="share of entities the challenger serves, by a stable hash of the entity keys "
        "(default: 0)",
    )
    serve.add_argument(
        "--shadow-alias",
        help="an alias that scores a copy of every request off the hot path (logged only)",
    )
    serve.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="JSON logs to stderr; DEBUG logs every call (default: INFO)",
    )
    serve.add_argument(
        "--model",
        action="append",
        metavar="NAME[@ALIAS|:VERSION]",
        help="load before reporting ready; repeatable (default: every model with a champion)",
    )
    serve.add_argument("--tls-cert", help="PEM server certificate: serve TLS (default: plain TCP)")
    serve.add_argument("--tls-key", help="PEM private key of --tls-cert")
    serve.add_argument(
        "--tls-client-ca", help="PEM CA: require client certificates it signed (mutual TLS)"
    )
    serve.add_argument(
        "--auth-tokens",
        metavar="PATH",
        help="TOML file of token hashes and scopes (see serve-token); every call but health "
        "checks then needs 'authorization: Bearer <token>' (default: open)",
    )
    serve.add_argument(
        "--rate-limit",
        help="calls per client (token name, else peer IP), e.g. 100/second (default: none)",
    )
    serve.add_argument(
        "--rate-limit-storage",
        metavar="URI",
        help="memory:// (per process, the default) or redis://HOST:PORT/DB (shared by workers)",
    )
    serve.add_argument(
        "--log-hash",
        metavar="FIELD,...",
        type=_name_list,
        help="entity keys, request fields or features logged as FIELD__hmac, an HMAC-SHA256 "
        "under the secret in PARITY_LOG_HASH_KEY, instead of their values",
    )
    serve.add_argument(
        "--log-fsync",
        action="store_true",
        default=None,
        help="flush each answered prediction's journal entry to the device before answering "
        "(survives power loss; without it, a killed process still loses nothing)",
    )
    serve.add_argument(
        "--log-drop",
        metavar="FIELD,...",
        type=_name_list,
        help="entity keys, request fields or features left out of the prediction log",
    )

    predict = commands.add_parser(
        "predict",
        help="ask a running server for one prediction",
        description="Send one row (entity keys and request data) to a parity server and "
        "print the decision.",
    )
    predict.add_argument(
        "--target", default="127.0.0.1:50051", help="server (default: %(default)s)"
    )
    predict.add_argument(
        "--model",
        help="model name (default: the only model in the repository's registry; with "
        "several, the command lists them)",
    )
    _repo_args(predict, profile=False)
    _registry_arg(predict)
    pick = predict.add_mutually_exclusive_group()
    pick.add_argument("--version", help="an exact model version")
    pick.add_argument("--alias", help="a model alias (default: champion)")
    predict.add_argument(
        "--entity", action="append", default=[], metavar="KEY=VALUE", help="an entity key"
    )
    predict.add_argument(
        "--request", action="append", default=[], metavar="FIELD=VALUE", help="request data"
    )
    predict.add_argument("--features", action="store_true", help="show the feature vector used")
    predict.add_argument(
        "--explain",
        action="store_true",
        help="show each feature's signed contribution to the score (they add up to the score "
        "from the model's base value)",
    )
    predict.add_argument(
        "--top", type=int, default=0, metavar="K", help="with --explain: the K largest only"
    )
    predict.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    predict.add_argument("--tls-ca", help="PEM CA of the server's certificate: connect with TLS")
    predict.add_argument("--tls-cert", help="PEM client certificate (mutual TLS)")
    predict.add_argument("--tls-key", help="PEM private key of --tls-cert")
    predict.add_argument(
        "--token", help="bearer token (default: $PARITY_TOKEN, which ps does not show)"
    )
    _json_arg(predict)

    token = commands.add_parser(
        "serve-token",
        help="make a token for parity serve --auth-tokens",
        description="Print a fresh random token once, and the [[token]] entry to add to the "
        "tokens file: the client's name, the token's SHA-256 (never the token), its scopes "
        "and rate limit.",
    )
    token.add_argument("--name", required=True, help="the client's name")
    token.add_argument(
        "--scopes",
        default="predict",
        help="comma-separated: predict (Predict, Open Inference Protocol), admin "
        "(GetModelInfo, ReportOutcome, reflection) (default: %(default)s)",
    )
    token.add_argument("--rate-limit", help="this client's own limit, e.g. 100/second")
    token.add_argument("--append", metavar="PATH", help="also append the entry to this file")

    review = commands.add_parser(
        "review",
        help="the review queue: list, resolve",
        description="Predictions the server routed to REVIEW, kept in review/queue.db in the "
        "repository's state folder.",
    )
    review_commands = review.add_subparsers(
        dest="review_command", metavar="SUBCOMMAND", parser_class=_Parser
    )
    review_commands.required = True
    rlist = review_commands.add_parser("list", help="items awaiting review (or resolved)")
    _repo_args(rlist, profile=False)
    rlist.add_argument("--status", choices=["open", "resolved", "all"], default="open")
    rlist.add_argument("--limit", type=int, default=50)
    _json_arg(rlist)
    resolve = review_commands.add_parser("resolve", help="close an item with a label")
    _repo_args(resolve, profile=False)
    resolve.add_argument("id", type=int, metavar="ID")
    resolve.add_argument("--label", required=True, help="the reviewer's answer, e.g. 0 or 1")
    resolve.add_argument("--note", default="", help="why")
    resolve.add_argument("--by", help="who (default: user@host)")
    _json_arg(resolve)

    mat = commands.add_parser(
        "materialize",
        help="offline -> online: write the latest feature values to the online store",
        description="For each feature view, write the latest row per entity with an event time "
        "in [--start, --end] (both inclusive) to the online store (SQLite or Redis), exactly as "
        "Feast's materialize writes it, and record the interval in the Feast registry once the "
        "view is fully written. Safe to interrupt and run again. --incremental starts each view "
        "where its last recorded interval ended.",
    )
    _repo_args(mat)
    when = mat.add_mutually_exclusive_group()
    when.add_argument("--start", type=_timestamp, help="first event time (ISO 8601; naive = UTC)")
    when.add_argument(
        "--incremental", action="store_true", help="per view, from the end of its last interval"
    )
    when.add_argument(
        "--status",
        action="store_true",
        help="show per view the last interval and the age of the newest online value",
    )
    mat.add_argument("--end", type=_timestamp, help="last event time, inclusive (default: now)")
    mat.add_argument(
        "--views", metavar="NAMES", help="comma-separated feature views (default: every online one)"
    )
    mat.add_argument(
        "--batch-size", type=int, default=50_000, help="entities per write (default: %(default)s)"
    )
    _duckdb_args(mat)
    _json_arg(mat)

    score = commands.add_parser(
        "score",
        help="score a table of entities offline with a registered model",
        description="Join point-in-time features to every row of an entity file (as of its "
        "event_timestamp) and score it with the model version's own pipeline, as the server "
        "does; write Parquet with the entity columns, score, label, confidence, model name and "
        "version.",
    )
    _repo_args(score)
    _registry_arg(score)
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
    _duckdb_args(score)
    _json_arg(score)
    from framework.cli.feedback import register as register_feedback
    from framework.cli.init import register as register_init
    from framework.cli.monitor import register as register_monitoring
    from framework.cli.retrain import register as register_retrain

    _COMMANDS.update(register_monitoring(commands, helpers))
    _COMMANDS.update(register_feedback(commands, helpers))
    _COMMANDS.update(register_retrain(commands, helpers))
    _COMMANDS.update(register_init(commands, helpers))
    return parser


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


def _cmd_data_generate(args: argparse.Namespace) -> None:
    from framework.features.repository import data_dir
    from framework.sample.data import GenerationConfig, drift_names, generate, parse_scale
    from framework.sample.pipeline import build_offline_sources

    cfg = GenerationConfig(
        seed=args.seed,
        transactions=parse_scale(args.scale),
        days=args.days,
        drift=drift_names(args.drift),
        drift_start_fraction=args.drift_start,
    )
    out = args.out or data_dir(default_repo())
    t = time.perf_counter()
    summary = generate(cfg, out)
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
        )
        payload["offline"] = asdict(result)
        payload["offline_seconds"] = round(time.perf_counter() - t, 2)
        lines.append(_pipeline_line(result.rows, out / "offline", payload["offline_seconds"]))
    _emit(args, payload, "\n".join(lines))


def _pipeline_line(rows: dict[str, int], where: Path, seconds: float) -> str:
    counts = ", ".join(f"{name} {n:,}" for name, n in rows.items())
    return f"built offline sources ({counts} rows) -> {where} in {seconds}s"


def _cmd_data_features(args: argparse.Namespace) -> None:
    from framework.features.repository import data_dir
    from framework.sample.pipeline import build_offline_sources

    data = args.data or data_dir(default_repo())
    t = time.perf_counter()
    result = build_offline_sources(
        data / "raw",
        data / "offline",
        memory_limit=args.memory_limit,
        temp_directory=args.temp_dir,
        threads=args.threads,
    )
    seconds = round(time.perf_counter() - t, 2)
    _emit(
        args,
        {**asdict(result), "seconds": seconds},
        _pipeline_line(result.rows, data / "offline", seconds),
    )


def _cmd_apply(args: argparse.Namespace) -> None:
    from framework.features.repository import apply

    repo = args.repo or default_repo()
    s = apply(repo, args.profile)
    payload = asdict(s)
    payload.pop("feast_output")
    _emit(
        args,
        payload,
        f"applied {repo} ({s.profile} profile, project {s.project}): {s.entities} entities, "
        f"{s.feature_views} feature views, {s.on_demand_feature_views} on-demand feature views, "
        f"{s.feature_services} feature services",
    )


def _cmd_training_set(args: argparse.Namespace) -> None:
    from framework.features.training_set import write_training_set

    repo = args.repo or default_repo()
    if args.features:
        features: Any = [r.strip() for r in args.features.split(",") if r.strip()]
    else:
        features = args.feature_service
    if args.entities.suffix.lower() not in (".parquet", ".pq") and not args.entities.is_dir():
        raise ConfigError(f"The '--entities' file must be Parquet. Got {args.entities}.")
    from framework.features.repository import open_store

    t = time.perf_counter()
    with open_store(repo, args.profile) as store:
        info = write_training_set(
            store,
            features,
            args.entities,
            args.out,
            full_feature_names=args.full_feature_names,
            memory_limit=args.memory_limit,
            temp_directory=args.temp_dir,
            threads=args.threads,
        )
    seconds = round(time.perf_counter() - t, 2)
    payload = {"out": str(args.out), "seconds": seconds, **asdict(info)}
    _emit(
        args,
        payload,
        f"wrote {info.entity_rows:,} rows x {len(info.features)} features to {args.out} in "
        f"{seconds}s ({info.engine}: {info.engine_reason}); fingerprint {info.fingerprint[:16]}",
    )


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


def _cmd_materialize(args: argparse.Namespace) -> None:
    from framework.features.repository import open_store
    from framework.materialize.freshness import status
    from framework.materialize.job import materialize
    from framework.materialize.progress import for_stream

    repo = args.repo or default_repo()
    views = [v.strip() for v in args.views.split(",") if v.strip()] if args.views else None
    with open_store(repo, args.profile) as store:
        if args.status:
            rows = [r for r in status(store) if not views or r.view in views]
            _emit(args, {"views": [asdict(r) for r in rows]}, _status_text(rows))
            return
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
    _emit(
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


def _cmd_score(args: argparse.Namespace) -> None:
    from framework.features.repository import open_store
    from framework.models.batch_score import score_entities

    repo = args.repo or default_repo()
    with open_store(repo, args.profile) as store:
        s = score_entities(
            store,
            _registry(args),
            default_model(args),
            args.entities,
            args.out,
            batch_rows=args.batch_size,
            memory_limit=args.memory_limit,
            temp_directory=args.temp_dir,
            threads=args.threads,
        )
    _emit(args, s.to_dict(), f"scored {s.rows:,} rows with {s.model} -> {s.out} in {s.seconds}s")


_COMMANDS: dict[tuple[str, str | None], Callable[[argparse.Namespace], None]] = {
    ("demo", None): _cmd_demo,
    ("data", "generate"): _cmd_data_generate,
    ("data", "features"): _cmd_data_features,
    ("apply", None): _cmd_apply,
    ("training-set", None): _cmd_training_set,
    ("serve", None): lambda args: _serving("serve", args),
    ("review", "list"): lambda args: _review(args),
    ("review", "resolve"): lambda args: _review(args),
    ("predict", None): lambda args: _serving("predict", _with_model(args)),
    ("serve-token", None): lambda args: _serving("serve_token", args),
    ("materialize", None): _cmd_materialize,
    ("score", None): _cmd_score,
}


def _why(explanation: dict[str, Any] | None, top: int = 3) -> str:
    if not explanation:
        return ""
    parts = [f"{a['feature']} {a['contribution']:+.4f}" for a in explanation["attributions"][:top]]
    return "\n        why: " + ", ".join(parts)


def _review(args: argparse.Namespace) -> None:
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
            _emit(args, asdict(item), f"resolved review item {item.id} as {item.label}")
            return
        status = None if args.status == "all" else args.status
        items = queue.list(status=status, limit=args.limit)
        lines = [
            f"{i.id:>5} {i.created_at[:19]} {i.model}:{i.version} {i.request_id}#{i.row_index} "
            f"score {i.score:.3f} {i.status}"
            + (f" -> {i.label}" if i.label else "")
            + f"  {'; '.join(i.reasons[:2])}"
            + _why(i.explanation)
            for i in items
        ]
        _emit(
            args,
            {"depth": queue.depth(), "items": [asdict(i) for i in items]},
            "\n".join(lines) or f"no {args.status} review items",
        )
    finally:
        queue.close()


def _with_model(args: argparse.Namespace) -> argparse.Namespace:
    args.model = default_model(args)
    return args


def _serving(command: str, args: argparse.Namespace) -> None:
    """The serving commands live in ``framework.cli.serve`` (the library never imports gRPC)."""
    from framework.cli import serve as commands

    getattr(commands, command)(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``parity`` console script."""
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
