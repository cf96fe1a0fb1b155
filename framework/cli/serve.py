"""``parity serve``, ``parity predict`` and ``parity serve-token``: the command-line
side of serving.

:func:`register` adds the three commands to ``parity``'s parser; ``serve``'s setting
flags are generated from :class:`ServeSettings` (:mod:`framework.cli.serve_flags`).
gRPC is imported only when a serving command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from framework.cli.monitor import Handler
from framework.cli.serve_flags import add_setting_flags, given_settings
from framework.errors import ConfigError

Helpers = Mapping[str, Callable[..., Any]]


def register(commands: Any, helpers: Helpers) -> dict[tuple[str, str | None], Handler]:
    """Add ``serve``, ``predict`` and ``serve-token`` to ``commands`` (argparse subparsers)."""
    _add_serve(commands, helpers)
    _add_predict(commands, helpers)
    _add_serve_token(commands)
    return {
        ("serve", None): serve,
        ("predict", None): partial(_predict_default_model, helpers=helpers),
        ("serve-token", None): serve_token,
    }


def _add_serve(commands: Any, helpers: Helpers) -> None:
    serve = commands.add_parser(
        "serve",
        help="the gRPC prediction server",
        description="Serve parity.v1.PredictionService, the Open Inference Protocol (KServe "
        "V2), gRPC health checking and reflection; features come from the online store "
        "through the model's pinned feature service. Stops gracefully on SIGTERM/SIGINT "
        "(drains calls, flushes the prediction log). Every setting can also be given as "
        "PARITY_SERVE_<NAME>.",
    )
    helpers["repo_args"](serve)
    helpers["registry_arg"](serve)
    add_setting_flags(serve, helpers["timestamp"])


def _add_predict(commands: Any, helpers: Helpers) -> None:
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
    helpers["repo_args"](predict, profile=False)
    helpers["registry_arg"](predict)
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
    helpers["json_arg"](predict)


def _add_serve_token(commands: Any) -> None:
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


def _predict_default_model(args: argparse.Namespace, helpers: Helpers) -> None:
    args.model = helpers["default_model"](args)
    predict(args)


def serve(args: argparse.Namespace) -> None:
    from framework.features.repository import data_dir, default_repo, open_store
    from framework.registry.model_registry import ModelRegistry
    from serving.grpc.server import JsonFormatter, serve_forever, start_server
    from serving.grpc.settings import ServeSettings

    try:
        settings = ServeSettings(**given_settings(args))
    except Exception as exc:
        raise ConfigError(f"serve settings: {' '.join(str(exc).split())}") from exc
    from serving.grpc.metrics import ServerMetrics
    from serving.grpc.security import Guard, server_credentials

    # A bad security setting stops here, before the store opens or workers start.
    server_credentials(settings)
    Guard.from_settings(settings, ServerMetrics())
    if settings.workers > 1:
        from framework.cli.workers import serve_processes

        serve_processes(args, settings)
        return
    placed = _place(settings)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    logging.getLogger("feast").setLevel(logging.WARNING)  # "Registry cache expired" per call
    repo = args.repo or default_repo()
    data = data_dir(repo)
    registry = ModelRegistry(args.registry or data / "models")
    with open_store(repo, args.profile) as store:
        try:
            running = start_server(store, registry, data, settings)
        except OSError as exc:
            raise ConfigError(f"cannot start the server: {exc}") from exc
        models = (
            ", ".join(f"{ref}" for ref in sorted(running.predictor.versions.loaded(), key=str))
            or "none yet (they load on first use)"
        )
        for address, reason in running.failed.items():
            print(f"parity serve: warning: {address} cannot be served: {reason}", file=sys.stderr)
        serve_forever(
            running,
            settings.grace_seconds,
            lambda: print(
                f"parity serve: listening on {settings.host}:{running.port} "
                f"(http: {running.http_port or 'off'}, metrics: {running.metrics_port or 'off'});"
                f" {placed}; models: {models}",
                flush=True,
            ),
        )
        print("parity serve: stopped; prediction log flushed", flush=True)


def _place(settings: Any) -> str:
    """Pin this process to its core under ``--cpu-affinity spread`` (before any server
    thread starts); says where it runs. A worker of ``--workers N`` is pinned by its
    parent and started with ``off``."""
    from framework.cli import cpu_affinity

    if settings.cpu_affinity != "spread":
        cores = cpu_affinity.allowed_cores()
        return f"core {cores[0]}" if len(cores) == 1 else "cores: as the OS places threads"
    core, why = cpu_affinity.place(os.getpid(), 0)
    if why is not None:
        print(f"parity serve: warning: not pinned to a core: {why}", file=sys.stderr)
        return "cores: as the OS places threads"
    return f"core {core}"


#: Parsers of command-line text per Feast value type name (the model's own types, from
#: GetModelInfo): "007" stays the string it is for a STRING key.
_FROM_TEXT: dict[str, Any] = {
    "INT64": int,
    "INT32": int,
    "DOUBLE": float,
    "FLOAT": float,
    "BOOL": lambda text: {"true": True, "false": False}[text.lower()],
    "BYTES": str.encode,
}


def _parse(pairs: list[str], flag: str, types: dict[str, str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs, each value typed as the model declares ``NAME`` (a name the
    model does not take is sent as text, for the server to name)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"{flag} takes NAME=VALUE, got {pair!r}.")
        name, text = pair.split("=", 1)
        kind = types.get(name, "STRING")
        try:
            out[name] = _FROM_TEXT.get(kind, str)(text)
        except (ValueError, KeyError):
            raise ConfigError(f"{flag} {name}: the model takes {kind}, got {text!r}.") from None
    return out


def _types(info: dict[str, Any], field: str) -> dict[str, str]:
    return {spec["name"]: spec["dtype"] for spec in info.get(field, [])}


def predict(args: argparse.Namespace) -> None:
    import grpc

    from serving.grpc.client import PredictionClient

    client = PredictionClient(
        args.target,
        timeout=args.timeout,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=args.token or os.environ.get("PARITY_TOKEN") or None,
    )
    with client:
        try:
            info = client.model_info(args.model, version=args.version, alias=args.alias)
            row = {
                "entity_keys": _parse(args.entity, "--entity", _types(info, "entity_keys")),
                "request_data": _parse(args.request, "--request", _types(info, "request_data")),
            }
            result = client.predict(
                args.model,
                [row],
                version=args.version,
                alias=args.alias,
                return_features=args.features,
                explain=args.explain,
                explain_top_k=args.top,
            )[0]
        except grpc.RpcError as exc:
            code = exc.code()
            raise ConfigError(f"{code.name if code else 'ERROR'}: {exc.details()}") from exc
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return
    print(
        f"{result['model_name']}:{result['model_version']} {result['decision']} "
        f"score {result['score']:.4f} label {result.get('label', '')} "
        f"confidence {result['confidence']:.3f} (request {result['request_id']})"
    )
    for reason in result.get("reasons", []):
        print(f"  {reason}")
    for name, value in sorted(result["features"].items()):
        print(f"  {name} = {value}")
    if result["attributions"]:
        print(f"  why: base value {result['base_value']:.4f}, then")
        for a in result["attributions"]:
            print(f"    {a['contribution']:+.4f}  {a['feature']} = {a['value']}")


def serve_token(args: argparse.Namespace) -> None:
    """Print a fresh token once and the ``[[token]]`` entry (its hash) for the tokens file;
    with ``--append``, add the entry to that file too."""
    from pathlib import Path

    from serving.grpc.security import load_tokens, new_token

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    token, entry = new_token(args.name, scopes, args.rate_limit)
    if args.append:
        path = Path(args.append)
        if path.exists():
            if any(t.name == args.name for t in load_tokens(path)):
                raise ConfigError(f"{path} already has a token named {args.name!r}")
            text = path.read_text()
            entry = ("" if not text else "\n" if text.endswith("\n") else "\n\n") + entry
        with path.open("a") as f:
            f.write(entry)
        load_tokens(path)  # the file still reads
    print(f"token for {args.name} (shown once; parity keeps only its hash):")
    print(f"  {token}")
    where = f"appended to {args.append}" if args.append else "append to the tokens file"
    print(f"{where} (--auth-tokens):")
    print(entry, end="")
