"""``parity serve``: the gRPC prediction server.

One process serves ``parity.v1.PredictionService``, the Open Inference Protocol
(``inference.GRPCInferenceService``), ``grpc.health.v1.Health`` (overall and
per service) and server reflection, with Prometheus metrics on a second port.
Predictions are logged off the hot path by :class:`PredictionLog`.

Shutdown (SIGTERM or SIGINT): health turns ``NOT_SERVING``, new calls are
refused, in-flight calls get ``grace`` seconds to finish, then the prediction
log is flushed and closed — every accepted prediction is on disk before exit.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from framework.errors import ConfigError, ParityError
from framework.logs.failed_requests import ERRORS_DIR
from framework.logs.failed_requests import PARTITION as ERRORS_PARTITION
from framework.logs.outcomes import OutcomeStore
from framework.logs.privacy import LogPrivacy, hash_key_from_env
from framework.logs.review_queue import ReviewQueue
from framework.registry.model_registry import ModelRegistry
from serving.dataplane.predictor import Predictor
from serving.grpc import security
from serving.grpc.metrics import ServerMetrics
from serving.grpc.servicers import InferenceServicer, PredictionServicer, add_to_server
from serving.log.writer import PredictionLog
from serving.stubs.inference import grpc_predict_v2_pb2 as v2
from serving.stubs.parity.v1 import prediction_pb2 as pb

log = logging.getLogger("parity.serving")
SERVICES = (
    pb.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)


class ServeSettings(BaseSettings):
    """Server settings; each can be set by flag or by environment (``PARITY_SERVE_*``)."""

    model_config = SettingsConfigDict(env_prefix="PARITY_SERVE_")

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    workers: int = Field(
        default=1, ge=1, le=64,
        description="Server processes sharing the port (SO_REUSEPORT), each loading its models.",
    )  # fmt: skip
    threads: int = Field(
        default=8, ge=1, le=256, description="Threads answering calls, per process."
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Prometheus port; unset: no metrics endpoint."
    )
    models: list[str] = Field(
        default_factory=list,
        description="Models to load before reporting ready (NAME, NAME@ALIAS, NAME:VERSION); "
        "default: every model with a champion.",
    )
    max_rows: int = Field(default=1_000, ge=1, description="Most rows one request may carry.")
    canary_share: float = Field(
        default=0.0, ge=0, le=1,
        description="Share of entities (stable hash of the entity keys) the canary alias "
        "serves when a request names no version or alias.",
    )  # fmt: skip
    canary_alias: str = Field(default="challenger", description="The alias a canary serves.")
    shadow_alias: str | None = Field(
        default=None,
        description="An alias that scores a copy of every request off the hot path "
        "(logged with role=shadow under the same request id, never returned).",
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
    inference_threads: int = Field(
        default=1, ge=1,
        description="Threads each model call may use (OpenMP/BLAS); 1 keeps tail latency "
        "low when many calls run at once.",
    )  # fmt: skip
    now: datetime | None = Field(
        default=None,
        description="Serve as if the time were this (TTLs are judged against it): replaying "
        "the sample, whose data ends in the past. Unset: the wall clock.",
    )
    feature_timeout_seconds: float = Field(
        default=1.0, gt=0, description="Online-store budget; beyond it the fallback answers."
    )
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    grace_seconds: float = Field(default=10.0, ge=0, description="Drain time on shutdown.")
    log_level: str = Field(
        default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$",
        description="DEBUG also logs every successful call (one JSON line each).",
    )  # fmt: skip
    log_batch_rows: int = Field(default=5_000, ge=1)
    log_flush_seconds: float = Field(
        default=5.0, gt=0,
        description="Most seconds rows wait for their Parquet file (each row is in the journal "
        "before it is answered); each file costs the writer ~10-20 ms of CPU, so fewer, "
        "larger files leave more of it to requests.",
    )  # fmt: skip
    log_max_pending_rows: int = Field(default=200_000, ge=1)
    log_hash: list[str] = Field(
        default_factory=list,
        description="Fields logged as FIELD__hmac (HMAC-SHA256 under PARITY_LOG_HASH_KEY) "
        "instead of their values: personal data out of the prediction log.",
    )
    log_drop: list[str] = Field(
        default_factory=list, description="Fields left out of the prediction log."
    )
    log_fsync: bool = Field(
        default=False,
        description="Flush every accepted prediction's journal frame to the device before "
        "answering (survives power loss; off: survives the process being killed).",
    )
    # Security (serving.grpc.security). Unset: plain TCP, no tokens, no rate limit.
    tls_cert: Path | None = Field(default=None, description="PEM server certificate (TLS).")
    tls_key: Path | None = Field(default=None, description="PEM private key of tls_cert.")
    tls_client_ca: Path | None = Field(
        default=None,
        description="PEM CA whose client certificates are required (mutual TLS).",
    )
    auth_tokens: Path | None = Field(
        default=None,
        description="TOML file of token hashes, scopes and rate limits (parity serve-token); "
        "set: every call but health checks needs 'authorization: Bearer <token>'.",
    )
    rate_limit: str | None = Field(
        default=None,
        description="Calls per client (token name, else peer IP), like '100/second' or "
        "'20/second;1000/hour'; a token's own rate_limit overrides it.",
    )
    rate_limit_storage: str = Field(
        default="memory://",
        description="Where limits count: memory:// (each worker process alone) or "
        "redis://HOST:PORT/DB (shared by every worker process).",
    )


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    metrics_port: int | None
    predictor: Predictor
    failed: dict[str, str]
    review_queue: ReviewQueue
    prediction_log: PredictionLog
    error_log: PredictionLog
    health: health.HealthServicer
    metrics: ServerMetrics

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, drain in-flight ones, then flush the prediction log."""
        for name in ("", *SERVICES):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.stop(grace).wait()
        self.predictor.close()
        self.prediction_log.close()
        self.error_log.close()
        self.review_queue.close()


def start_server(
    store: Any,
    registry: ModelRegistry,
    data: Path,
    settings: ServeSettings,
    *,
    clock: Callable[[], float] | None = None,
) -> RunningServer:
    """Build and start the server; returns once it is listening and its models are loaded."""
    from sklearn.utils import _openmp_helpers  # noqa: F401  (loads the OpenMP runtime now)
    from threadpoolctl import threadpool_limits

    # HistGradientBoosting's OpenMP threads on every call fight each other and the gRPC
    # workers (single-row p99 of ~14 ms on 2 cores); one thread per call scales better.
    # OpenMP keeps this limit per thread, so every thread that may run a model sets it as
    # it starts (the executors' initializer), not just this one.
    def limit_threads() -> None:
        threadpool_limits(limits=settings.inference_threads)

    limit_threads()
    metrics = ServerMetrics()
    # Checked before anything starts: a bad setting stops here, naming it.
    credentials = security.server_credentials(settings)
    guard = security.Guard.from_settings(settings, metrics)
    if guard is not None and guard.tokens is not None and credentials is None:
        log.warning("auth_tokens without TLS: tokens cross the network in clear text")

    def on_write(rows: int, seconds: float) -> None:
        metrics.log_written.inc(rows)
        metrics.log_write_seconds.observe(seconds)

    plog = PredictionLog(
        data / "predictions",
        batch_rows=settings.log_batch_rows,
        flush_interval=settings.log_flush_seconds,
        max_pending_rows=settings.log_max_pending_rows,
        on_write=on_write,
        journal_fsync=settings.log_fsync,
    )
    if plog.recovered_rows:
        log.warning("prediction log: %d rows recovered from a stopped process's journal",
                    plog.recovered_rows)  # fmt: skip

    privacy = LogPrivacy.build(settings.log_hash, settings.log_drop, hash_key_from_env())

    def log_rows(model: str, table: Any) -> None:
        try:
            plog.append(privacy.apply(table), model=model)
        except Exception:
            metrics.log_rejected.inc()
            raise
        finally:
            metrics.log_pending.set(plog.pending_rows)
            metrics.log_journal_errors.set(plog.journal_errors)

    # Failed prediction calls, for ``parity monitor``'s error rates. Never blocks a call:
    # when this log is full the row is dropped and counted as rejected.
    elog = PredictionLog(
        data / "predictions" / ERRORS_DIR,
        flush_interval=settings.log_flush_seconds,
        max_pending_rows=settings.log_max_pending_rows,
        put_timeout=0,
        on_write=on_write,
        journal_fsync=settings.log_fsync,
    )

    def log_error(table: Any) -> None:
        try:
            elog.append(table, model=ERRORS_PARTITION)
        except ParityError as exc:
            metrics.log_rejected.inc()
            log.warning("failed request not logged: %s", exc)

    queue = ReviewQueue(data / "review" / "queue.db")
    metrics.review_queue_depth.set(queue.depth())

    def add_review(items: list[dict[str, Any]]) -> None:
        queue.add(items)
        metrics.review_queue_depth.set(queue.depth())

    predictor = Predictor(
        registry,
        store,
        max_rows=settings.max_rows,
        log=log_rows,
        clock=clock or (settings.now.timestamp if settings.now else time.time),
        observe=lambda stage, s: metrics.latency.labels(stage).observe(s),
        feature_status=metrics.count_feature_status,
        cpu=lambda model, version, s: metrics.cpu_seconds.labels(model, version).inc(s),
        review=add_review,
        on_fallback=lambda cause: metrics.fallbacks.labels(cause).inc(),
        on_issue=lambda kind, feature: metrics.input_issues.labels(kind, feature).inc(),
        on_error=lambda model, stage: metrics.internal_errors.labels(model, stage).inc(),
        feature_timeout=settings.feature_timeout_seconds,
        canary_share=settings.canary_share,
        canary_alias=settings.canary_alias,
        shadow_alias=settings.shadow_alias,
        micro_batching=settings.micro_batching,
        compile_models=settings.compiled_models,
        lookup_threads=settings.threads,
        thread_init=limit_threads,
    )
    metrics.watch_freshness(store, predictor.clock)
    models = settings.models or [
        f"{n}@champion" for n in registry.names() if "champion" in registry.aliases(n)
    ]
    refs, failed = predictor.warm_up(models)
    for address, reason in failed.items():
        log.error("model %s cannot be served: %s", address, reason)
    if privacy.active and refs:
        try:
            privacy.check(predictor.logged_fields())
        except ConfigError:
            predictor.close()
            plog.close()
            elog.close()
            queue.close()
            raise
    for ref in refs:
        metrics.model_info.labels(
            ref.name, str(ref.version), ",".join(predictor.aliases_of(ref))
        ).set(1)

    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.threads, thread_name_prefix="rpc", initializer=limit_threads
        ),
        options=options,
        interceptors=[guard] if guard else [],
    )
    add_to_server(  # unparseable request bytes: INVALID_ARGUMENT, not grpcio's INTERNAL
        server,
        PredictionServicer(predictor, OutcomeStore(data / "outcomes"), metrics, log_error),
        InferenceServicer(predictor, metrics, _version(), log_error),
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.port}"
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpcio raises "Failed to bind" where it used to return 0
        port = 0
    if port == 0:
        plog.close()
        elog.close()
        raise OSError(
            f"cannot listen on {settings.host}:{settings.port} (the port is taken by another "
            "program, or the host is not an address of this machine)"
        )
    server.start()
    for name in ("", *SERVICES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    metrics_port = None
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        http, _ = start_http_server(
            settings.metrics_port, addr=settings.host, registry=metrics.registry
        )
        metrics_port = int(http.server_port)
    return RunningServer(
        server, port, metrics_port, predictor, failed, queue, plog, elog, health_servicer, metrics
    )


def serve_forever(
    running: RunningServer, grace: float, on_ready: Callable[[], None] | None = None
) -> None:
    """Block until SIGTERM or SIGINT, then shut down gracefully. ``on_ready`` runs once the
    signal handlers are in place (a supervisor that signals as soon as it is told the
    server is up must not find the default handler, which would exit without flushing)."""
    stop = threading.Event()

    def handle(signum: int, frame: Any) -> None:
        log.info("signal %s: draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    if on_ready is not None:
        on_ready()
    stop.wait()
    running.stop(grace)


def _version() -> str:
    try:
        return metadata.version("parity")
    except metadata.PackageNotFoundError:
        return "unknown"


class JsonFormatter(logging.Formatter):
    """One JSON object per log line (time, level, logger, message, and extras)."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["error"] = self.formatException(record.exc_info)
        return json.dumps(payload)
