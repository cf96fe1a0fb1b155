"""``parity serve``, ``parity serve-token`` and ``parity predict``: the command-line
side of serving.

``framework.cli.main`` defines the flags and calls these lazily, so the library
never imports gRPC unless a serving command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import grpc

from framework.errors import ConfigError


def serve(args: argparse.Namespace) -> None:
    from framework.features.repository import data_dir, default_repo, open_store
    from framework.registry.model_registry import ModelRegistry
    from serving.grpc.server import JsonFormatter, ServeSettings, serve_forever, start_server

    given = {
        k: v
        for k, v in {
            "host": args.host,
            "port": args.port,
            "workers": args.workers,
            "threads": args.threads,
            "metrics_port": args.metrics_port,
            "models": args.model or None,
            "log_level": args.log_level,
            "canary_share": args.canary_share,
            "shadow_alias": args.shadow_alias,
            "now": args.now,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "tls_client_ca": args.tls_client_ca,
            "auth_tokens": args.auth_tokens,
            "rate_limit": args.rate_limit,
            "rate_limit_storage": args.rate_limit_storage,
            "log_hash": args.log_hash,
            "log_drop": args.log_drop,
            "log_fsync": args.log_fsync,
        }.items()
        if v is not None
    }
    try:
        settings = ServeSettings(**given)
    except Exception as exc:
        raise ConfigError(f"serve settings: {' '.join(str(exc).split())}") from exc
    from serving.grpc.metrics import ServerMetrics
    from serving.grpc.security import Guard, server_credentials

    # A bad security setting stops here, before the store opens or workers start.
    server_credentials(settings)
    Guard.from_settings(settings, ServerMetrics())
    if settings.workers > 1:
        _serve_processes(args, settings)
        return
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
                f"(metrics: {running.metrics_port or 'off'}); models: {models}",
                flush=True,
            ),
        )
        print("parity serve: stopped; prediction log flushed", flush=True)


def _serve_processes(args: argparse.Namespace, settings: Any) -> None:
    """Run ``settings.workers`` single-process servers on one port (SO_REUSEPORT: the
    kernel spreads connections across them); forward SIGTERM/SIGINT and wait."""
    import signal
    import socket
    import subprocess
    import threading

    port = settings.port
    if port == 0:
        with socket.socket() as s:
            s.bind((settings.host, 0))
            port = int(s.getsockname()[1])
    common = ["--host", settings.host, "--port", str(port), "--workers", "1",
              "--threads", str(settings.threads), "--log-level", settings.log_level]  # fmt: skip
    for flag, value in (
        ("--repo", args.repo), ("--registry", args.registry),
        ("--canary-share", args.canary_share), ("--shadow-alias", args.shadow_alias),
        ("--now", args.now.isoformat() if args.now else None),
    ):  # fmt: skip
        if value is not None:
            common += [flag, str(value)]
    for flag, setting in (
        ("--tls-cert", settings.tls_cert), ("--tls-key", settings.tls_key),
        ("--tls-client-ca", settings.tls_client_ca), ("--auth-tokens", settings.auth_tokens),
        ("--rate-limit", settings.rate_limit),
        ("--rate-limit-storage", settings.rate_limit_storage),
    ):  # fmt: skip
        if setting is not None:
            common += [flag, str(setting)]
    for flag, names in (("--log-hash", settings.log_hash), ("--log-drop", settings.log_drop)):
        if names:
            common += [flag, ",".join(names)]
    if settings.log_fsync:
        common.append("--log-fsync")
    common += ["--profile", args.profile.value]
    for model in settings.models:
        common += ["--model", model]
    children: list[subprocess.Popen[str]] = []
    # Before the first worker starts: a signal from here on reaches every worker started.
    forwarded: set[int] = set()

    def forward(signum: int, frame: Any) -> None:
        forwarded.add(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for i in range(settings.workers):
        extra = (
            []
            if settings.metrics_port is None
            else ["--metrics-port", str(settings.metrics_port + i)]
        )
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "framework.cli", "serve", *common, *extra],
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    pids = ", ".join(str(c.pid) for c in children)
    print(
        f"parity serve: starting {settings.workers} worker processes (pids {pids}) on "
        f"{settings.host}:{port}",
        flush=True,
    )

    # "Listening" only once every worker listens with its models loaded: until then the
    # kernel would hand every connection to the workers that are up (SO_REUSEPORT).
    failed = None
    for child in children:
        assert child.stdout is not None
        if not any("listening on" in line for line in child.stdout) and not forwarded:
            failed = child  # its output ended (it exited) before it listened
            break
        threading.Thread(target=child.stdout.read, daemon=True).start()  # later lines
    if failed is not None:
        forward(signal.SIGTERM, None)
        codes = [child.wait() for child in children]
        raise ConfigError(
            f"worker process {failed.pid} exited with {failed.returncode} before listening "
            f"(its messages are above); the others were stopped ({codes})"
        )
    if not forwarded:
        print(
            f"parity serve: listening on {settings.host}:{port} with {settings.workers} "
            f"worker processes (pids {pids})",
            flush=True,
        )
    codes = [child.wait() for child in children]
    # A worker still starting (imports, model loading) has no handler yet and dies of the
    # forwarded signal itself: it had accepted nothing, so that is a clean stop too.
    if any(code != 0 and -code not in forwarded for code in codes):
        raise ConfigError(f"worker processes exited with {codes}")
    print("parity serve: stopped; prediction logs flushed", flush=True)


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
