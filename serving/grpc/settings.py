"""``parity serve``'s settings: one pydantic-settings model, read from flags and from
``PARITY_SERVE_*`` environment variables.

A field annotated with a :class:`Flag` is also a ``parity serve`` flag: its name
(``--field-name`` unless the flag names another), type, default and help come from
the field, and ``framework.cli.serve`` generates the flag from it. The fields are in
the order ``parity serve --help`` lists their flags. This module imports no gRPC, so
the command line can build its parser without loading the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True)
class Flag:
    """How a setting appears on ``parity serve``'s command line.

    ``help`` is the flag's help text; ``name`` overrides ``--field-name``;
    ``choices`` and ``metavar`` are argparse's; ``repeat`` makes a list setting a
    flag given once per item (otherwise a list is given comma-separated).
    """

    help: str
    name: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    repeat: bool = False


class ServeSettings(BaseSettings):
    """Server settings; each can be set by flag or by environment (``PARITY_SERVE_*``)."""

    model_config = SettingsConfigDict(env_prefix="PARITY_SERVE_")

    # Where it listens, and with how many processes and threads.
    host: Annotated[str, Flag("address to listen on (default: 127.0.0.1)")] = Field(
        default="127.0.0.1", description="Address to listen on."
    )
    port: Annotated[int, Flag("gRPC port (default: 50051; 0: any free port)")] = Field(
        default=50051, ge=0, le=65535, description="gRPC port; 0 picks a free one."
    )
    workers: Annotated[
        int, Flag("server processes sharing the port via SO_REUSEPORT (default: 1)")
    ] = Field(
        default=1, ge=1, le=64,
        description="Server processes sharing the port (SO_REUSEPORT), each loading its models.",
    )  # fmt: skip
    # 32: a run scores the requests that wait for it together (serving.dataplane.predictor),
    # and a request waits inside the process only on a thread of its own. One process at
    # 64 in flight here: 1,640-1,680 requests/s with 8 threads, 1,870-2,640 with 32.
    threads: Annotated[int, Flag("threads answering calls per process (default: 32)")] = Field(
        default=32, ge=1, le=256, description="Threads answering calls, per process."
    )
    http_port: Annotated[
        int | None,
        Flag(
            "Open Inference Protocol over HTTP/REST (KServe V2 paths under /v2) on this port, "
            "beside gRPC; workers share it (default: off; 0: any free port)"
        ),
    ] = Field(
        default=None, ge=0, le=65535,
        description="HTTP/REST port of the Open Inference Protocol; unset: gRPC only.",
    )  # fmt: skip
    metrics_port: Annotated[int | None, Flag("Prometheus metrics port (default: off)")] = Field(
        default=None, ge=0, le=65535, description="Prometheus port; unset: no metrics endpoint."
    )
    # What it serves, and when.
    now: Annotated[
        datetime | None,
        Flag(
            "serve as if the time were this (ISO 8601): TTLs are judged against it, for "
            "replaying the sample, whose data ends in the past (default: the wall clock)"
        ),
    ] = Field(
        default=None,
        description="Serve as if the time were this (TTLs are judged against it): replaying "
        "the sample, whose data ends in the past. Unset: the wall clock.",
    )
    max_rows: int = Field(default=1_000, ge=1, description="Most rows one request may carry.")
    canary_share: Annotated[
        float,
        Flag(
            "share of entities the challenger serves, by a stable hash of the entity keys "
            "(default: 0)"
        ),
    ] = Field(
        default=0.0, ge=0, le=1,
        description="Share of entities (stable hash of the entity keys) the canary alias "
        "serves when a request names no version or alias.",
    )  # fmt: skip
    canary_alias: str = Field(default="challenger", description="The alias a canary serves.")
    shadow_alias: Annotated[
        str | None,
        Flag("an alias that scores a copy of every request off the hot path (logged only)"),
    ] = Field(
        default=None,
        description="An alias that scores a copy of every request off the hot path "
        "(logged with role=shadow under the same request id, never returned).",
    )
    direct_reads: bool = Field(
        default=True,
        description="Read SQLite and single-server Redis online stores directly: Feast's own "
        "layout, one query or one round trip per read, the answers of get_online_features "
        "(false: every read through Feast's get_online_features).",
    )
    micro_batching: bool = Field(
        default=True, description="Merge concurrent requests into one model call."
    )
    compiled_models: bool = Field(
        default=True,
        description="Score each model version with its compiled form: the same numbers as "
        "scikit-learn's (checked when it loads; otherwise scikit-learn scores), without its "
        "per-call overhead (0.65 vs 18 ms for one row of the sample model, in-process here).",
    )
    cpu_affinity: Annotated[
        str,
        Flag(
            "spread: each server process and all its threads on one core (worker i on "
            "the i-th core this command may use); off: the OS places threads "
            "(default: spread)",
            choices=("spread", "off"),
        ),
    ] = Field(
        default="spread", pattern="^(spread|off)$",
        description="spread: each server process, all its threads, on one core (its "
        "threads then hand the GIL over on one core, not across cores); off: the OS "
        "places them.",
    )  # fmt: skip
    inference_threads: int = Field(
        default=1, ge=1,
        description="Threads each model call may use (OpenMP/BLAS); 1 keeps tail latency "
        "low when many calls run at once.",
    )  # fmt: skip
    feature_timeout_seconds: float = Field(
        default=1.0, gt=0, description="Online-store budget; beyond it the fallback answers."
    )
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    grace_seconds: float = Field(default=10.0, ge=0, description="Drain time on shutdown.")
    log_level: Annotated[
        str,
        Flag(
            "JSON logs to stderr; DEBUG logs every call (default: INFO)",
            choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        ),
    ] = Field(
        default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$",
        description="DEBUG also logs every successful call (one JSON line each).",
    )  # fmt: skip
    models: Annotated[
        list[str],
        Flag(
            "load before reporting ready; repeatable (default: every model with a champion)",
            name="--model",
            metavar="NAME[@ALIAS|:VERSION]",
            repeat=True,
        ),
    ] = Field(
        default_factory=list,
        description="Models to load before reporting ready (NAME, NAME@ALIAS, NAME:VERSION); "
        "default: every model with a champion.",
    )
    # Security (serving.grpc.security). Unset: plain TCP, no tokens, no rate limit.
    tls_cert: Annotated[
        Path | None, Flag("PEM server certificate: serve TLS (default: plain TCP)")
    ] = Field(default=None, description="PEM server certificate (TLS).")
    tls_key: Annotated[Path | None, Flag("PEM private key of --tls-cert")] = Field(
        default=None, description="PEM private key of tls_cert."
    )
    tls_client_ca: Annotated[
        Path | None, Flag("PEM CA: require client certificates it signed (mutual TLS)")
    ] = Field(
        default=None,
        description="PEM CA whose client certificates are required (mutual TLS).",
    )
    auth_tokens: Annotated[
        Path | None,
        Flag(
            "TOML file of token hashes and scopes (see serve-token); every call but health "
            "checks then needs 'authorization: Bearer <token>' (default: open)",
            metavar="PATH",
        ),
    ] = Field(
        default=None,
        description="TOML file of token hashes, scopes and rate limits (parity serve-token); "
        "set: every call but health checks needs 'authorization: Bearer <token>'.",
    )
    rate_limit: Annotated[
        str | None,
        Flag("calls per client (token name, else peer IP), e.g. 100/second (default: none)"),
    ] = Field(
        default=None,
        description="Calls per client (token name, else peer IP), like '100/second' or "
        "'20/second;1000/hour'; a token's own rate_limit overrides it.",
    )
    rate_limit_storage: Annotated[
        str,
        Flag(
            "memory:// (per process, the default) or redis://HOST:PORT/DB (shared by workers)",
            metavar="URI",
        ),
    ] = Field(
        default="memory://",
        description="Where limits count: memory:// (each worker process alone) or "
        "redis://HOST:PORT/DB (shared by every worker process).",
    )
    # The prediction log (serving.log.writer).
    log_batch_rows: int = Field(default=5_000, ge=1)
    log_flush_seconds: float = Field(
        default=5.0, gt=0,
        description="Most seconds rows wait for their Parquet file (each row is in the journal "
        "before it is answered); each file costs the writer ~10-20 ms of CPU, so fewer, "
        "larger files leave more of it to requests.",
    )  # fmt: skip
    log_max_pending_rows: int = Field(default=200_000, ge=1)
    log_hash: Annotated[
        list[str],
        Flag(
            "entity keys, request fields or features logged as FIELD__hmac, an HMAC-SHA256 "
            "under the secret in PARITY_LOG_HASH_KEY, instead of their values",
            metavar="FIELD,...",
        ),
    ] = Field(
        default_factory=list,
        description="Fields logged as FIELD__hmac (HMAC-SHA256 under PARITY_LOG_HASH_KEY) "
        "instead of their values: personal data out of the prediction log.",
    )
    log_fsync: Annotated[
        bool,
        Flag(
            "flush each answered prediction's journal entry to the device before answering "
            "(survives power loss; without it, a killed process still loses nothing)"
        ),
    ] = Field(
        default=False,
        description="Flush every accepted prediction's journal frame to the device before "
        "answering (survives power loss; off: survives the process being killed).",
    )
    log_drop: Annotated[
        list[str],
        Flag(
            "entity keys, request fields or features left out of the prediction log",
            metavar="FIELD,...",
        ),
    ] = Field(default_factory=list, description="Fields left out of the prediction log.")
