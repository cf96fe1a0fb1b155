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

import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from framework.errors import ParityError
from framework.logs.failed_requests import ERRORS_DIR
from framework.logs.failed_requests import PARTITION as ERRORS_PARTITION
from framework.logs.outcomes import OutcomeStore
from framework.logs.privacy import LogPrivacy, hash_key_from_env
from framework.logs.review_queue import ReviewQueue
from framework.registry import cache as registry_cache
from framework.registry.model_registry import ModelRegistry
from serving.dataplane.predictor import Predictor
from serving.grpc import security
from serving.grpc.metrics import ServerMetrics
from serving.grpc.servicers import InferenceServicer, PredictionServicer, add_to_server
from serving.grpc.settings import ServeSettings
from serving.http.server import HttpListener
from serving.log.writer import PredictionLog
from serving.stubs.inference import grpc_predict_v2_pb2 as v2
from serving.stubs.parity.v1 import prediction_pb2 as pb

log = logging.getLogger("parity.serving")
SERVICES = (
    pb.DESCRIPTOR.services_by_name["PredictionService"].full_name,
    v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
)


@dataclass
class RunningServer:
    """A started server. :meth:`stop` drains it, then releases everything
    :func:`start_server` acquired (``resources``, closed last acquired first)."""

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
    http: HttpListener | None = None
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    @property
    def http_port(self) -> int | None:
        return None if self.http is None else self.http.port

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls (gRPC and HTTP), drain in-flight ones, then flush the prediction
        log and release the thread pools, the review queue and the metrics endpoint."""
        for name in ("", *SERVICES):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.http is not None:
            self.http.begin_stop()
        self.server.stop(grace).wait()
        if self.http is not None:
            self.http.stop()
        self.resources.close()


def start_server(
    store: Any,
    registry: ModelRegistry,
    data: Path,
    settings: ServeSettings,
    *,
    clock: Callable[[], float] | None = None,
) -> RunningServer:
    """Build and start the server; returns once it is listening and its models are loaded.

    Everything it acquires (prediction logs, review queue, the predictor's and gRPC's
    thread pools, the metrics endpoint) enters one :class:`contextlib.ExitStack`: when a
    step fails (a privacy rule a model cannot meet, a port taken), what was acquired is
    released before the error propagates; once started, the stack moves into the returned
    :class:`RunningServer`, whose :meth:`~RunningServer.stop` releases it.
    """
    limit_threads = _thread_limiter(settings.inference_threads)
    limit_threads()
    metrics = ServerMetrics()
    # Checked before anything starts: a bad setting stops here, naming it.
    credentials = security.server_credentials(settings)
    guard = security.Guard.from_settings(settings, metrics)
    if guard is not None and guard.tokens is not None and credentials is None:
        log.warning("auth_tokens without TLS: tokens cross the network in clear text")
    with contextlib.ExitStack() as stack:
        logs = _open_logs(stack, data, settings, metrics)
        queue = stack.enter_context(contextlib.closing(ReviewQueue(data / "review" / "queue.db")))
        metrics.review_queue_depth.set(queue.depth())
        stack.callback(registry_cache.keep_fresh(store))
        predictor = _predictor(
            stack, store, registry, settings, metrics, logs, queue,
            clock or (settings.now.timestamp if settings.now else time.time), limit_threads,
        )  # fmt: skip
        failed = _warm_up(predictor, registry, settings, logs.privacy)
        server, health_servicer, inference = _grpc_server(
            stack, predictor, data, settings, metrics, guard, logs, limit_threads
        )
        port = _bind(server, settings, credentials)
        http = _http(stack, inference, guard, settings, limit_threads)
        _settle_heap()
        server.start()
        if http is not None:
            http.start()
        for name in ("", *SERVICES):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        metrics_port = _serve_metrics(stack, settings, metrics)
        return RunningServer(
            server, port, metrics_port, predictor, failed, queue, logs.predictions,
            logs.errors, health_servicer, metrics, http, stack.pop_all(),
        )  # fmt: skip


def _settle_heap() -> None:
    """Move everything start-up made (Feast's registry, the models, the libraries' own
    objects: some 300,000) out of the garbage collector's sight, once, before serving.

    A full collection walks every tracked object; on a serving process that is a pause
    of hundreds of milliseconds in which no request moves, and it came back every few
    seconds under load (the p99 at 64 requests in flight was 3.5x the p50).
    ``gc.freeze`` is CPython's tool for exactly this (long-lived objects made before
    serving); what requests allocate is still collected.

    The youngest generation is collected after 20,000 new container objects instead
    of CPython's 700: a ``Predict`` makes a few hundred, so the default ran a
    collection every other request (some 5 % of a request's CPU, measured in-process);
    what a collection then finds is at most a few MB of request garbage."""
    import gc

    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(20_000, older, oldest)


def _thread_limiter(threads: int) -> Callable[[], None]:
    """A function that limits the calling thread's OpenMP/BLAS threads to ``threads``."""
    from sklearn.utils import _openmp_helpers  # noqa: F401  (loads the OpenMP runtime now)
    from threadpoolctl import threadpool_limits

    # HistGradientBoosting's OpenMP threads on every call fight each other and the gRPC
    # workers (single-row p99 of ~14 ms on 2 cores); one thread per call scales better.
    # OpenMP keeps this limit per thread, so every thread that may run a model sets it as
    # it starts (the executors' initializer), not just this one.
    def limit_threads() -> None:
        threadpool_limits(limits=threads)

    return limit_threads


@dataclass
class _Logs:
    """The prediction log, the failed-request log and the privacy rules of the first, with
    the two callbacks the predictor and the servicers write through."""

    predictions: PredictionLog
    errors: PredictionLog
    privacy: LogPrivacy
    metrics: ServerMetrics

    def log_rows(self, model: str, table: Any) -> None:
        try:
            self.predictions.append(self.privacy.apply(table), model=model)
        except Exception:
            self.metrics.log_rejected.inc()
            raise
        finally:
            self.metrics.log_pending.set(self.predictions.pending_rows)
            self.metrics.log_journal_errors.set(self.predictions.journal_errors)

    def log_error(self, table: Any) -> None:
        try:
            self.errors.append(table, model=ERRORS_PARTITION)
        except ParityError as exc:
            self.metrics.log_rejected.inc()
            log.warning("failed request not logged: %s", exc)


def _open_logs(
    stack: contextlib.ExitStack, data: Path, settings: ServeSettings, metrics: ServerMetrics
) -> _Logs:
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
    stack.callback(plog.close)
    if plog.recovered_rows:
        log.warning("prediction log: %d rows recovered from a stopped process's journal",
                    plog.recovered_rows)  # fmt: skip
    privacy = LogPrivacy.build(settings.log_hash, settings.log_drop, hash_key_from_env())
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
    stack.callback(elog.close)
    return _Logs(plog, elog, privacy, metrics)


def _predictor(
    stack: contextlib.ExitStack,
    store: Any,
    registry: ModelRegistry,
    settings: ServeSettings,
    metrics: ServerMetrics,
    logs: _Logs,
    queue: ReviewQueue,
    clock: Callable[[], float],
    limit_threads: Callable[[], None],
) -> Predictor:
    def add_review(items: list[dict[str, Any]]) -> None:
        queue.add(items)
        metrics.review_queue_depth.set(queue.depth())

    predictor = Predictor(
        registry,
        store,
        max_rows=settings.max_rows,
        log=logs.log_rows,
        clock=clock,
        observe=lambda ref, stage, s: metrics.child(
            metrics.latency, ref.name, str(ref.version), stage
        ).observe(s),
        feature_status=lambda ref, status: metrics.count_feature_status(
            ref.name, str(ref.version), status
        ),
        cpu=lambda model, version, s: metrics.child(metrics.cpu_seconds, model, version).inc(s),
        review=add_review,
        on_fallback=lambda ref, cause: metrics.child(
            metrics.fallbacks, ref.name, str(ref.version), cause
        ).inc(),
        on_issue=lambda ref, kind, feature: metrics.child(
            metrics.input_issues, ref.name, str(ref.version), kind, feature
        ).inc(),
        on_error=lambda model, stage: metrics.internal_errors.labels(model, stage).inc(),
        on_old_values=lambda ref, feature, count: metrics.child(
            metrics.old_features, ref.name, str(ref.version), feature
        ).inc(count),
        feature_timeout=settings.feature_timeout_seconds,
        canary_share=settings.canary_share,
        canary_alias=settings.canary_alias,
        shadow_alias=settings.shadow_alias,
        micro_batching=settings.micro_batching,
        compile_models=settings.compiled_models,
        direct_reads=settings.direct_reads,
        lookup_threads=settings.threads,
        thread_init=limit_threads,
    )
    stack.callback(predictor.close)
    metrics.watch_freshness(store, predictor.clock)
    metrics.watch_models(
        lambda: [
            (ref.name, str(ref.version), predictor.aliases_of(ref))
            for ref in predictor.versions.loaded()
        ]
    )
    return predictor


def _warm_up(
    predictor: Predictor,
    registry: ModelRegistry,
    settings: ServeSettings,
    privacy: LogPrivacy,
) -> dict[str, str]:
    """Load the served models; returns those that cannot be served, with the reason."""
    models = settings.models or [
        f"{n}@champion" for n in registry.names() if "champion" in registry.aliases(n)
    ]
    refs, failed = predictor.warm_up(models)
    for address, reason in failed.items():
        log.error("model %s cannot be served: %s", address, reason)
    if privacy.active and refs:
        privacy.check(predictor.logged_fields())
    return failed


def _grpc_server(
    stack: contextlib.ExitStack,
    predictor: Predictor,
    data: Path,
    settings: ServeSettings,
    metrics: ServerMetrics,
    guard: security.Guard | None,
    logs: _Logs,
    limit_threads: Callable[[], None],
) -> tuple[grpc.Server, health.HealthServicer, InferenceServicer]:
    """The gRPC server with every service added, not yet bound or started, and its Open
    Inference Protocol servicer (which the HTTP binding answers through too)."""
    rpc_threads = futures.ThreadPoolExecutor(
        max_workers=settings.threads, thread_name_prefix="rpc", initializer=limit_threads
    )
    stack.callback(rpc_threads.shutdown)  # grpcio's stop leaves its executor running
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]
    server = grpc.server(rpc_threads, options=options, interceptors=[guard] if guard else [])
    stack.callback(server.stop, None)
    inference = InferenceServicer(predictor, metrics, _version(), logs.log_error)
    add_to_server(  # unparseable request bytes: INVALID_ARGUMENT, not grpcio's INTERNAL
        server,
        PredictionServicer(predictor, OutcomeStore(data / "outcomes"), metrics, logs.log_error),
        inference,
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    return server, health_servicer, inference


def _http(
    stack: contextlib.ExitStack,
    inference: InferenceServicer,
    guard: security.Guard | None,
    settings: ServeSettings,
    limit_threads: Callable[[], None],
) -> HttpListener | None:
    """The Open Inference Protocol's HTTP/REST listener (``http_port``), bound, not started."""
    if settings.http_port is None:
        return None
    threads = futures.ThreadPoolExecutor(
        max_workers=settings.threads, thread_name_prefix="http", initializer=limit_threads
    )
    stack.callback(threads.shutdown)
    listener = HttpListener.serving(inference, guard, threads, settings)
    stack.callback(listener.stop)
    return listener


def _bind(
    server: grpc.Server, settings: ServeSettings, credentials: grpc.ServerCredentials | None
) -> int:
    """Bind the server's port; returns it (``settings.port`` 0: the free port picked)."""
    address = f"{settings.host}:{settings.port}"
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpcio raises "Failed to bind" where it used to return 0
        port = 0
    if port == 0:
        raise OSError(
            f"cannot listen on {settings.host}:{settings.port} (the port is taken by another "
            "program, or the host is not an address of this machine)"
        )
    return int(port)


def _serve_metrics(
    stack: contextlib.ExitStack, settings: ServeSettings, metrics: ServerMetrics
) -> int | None:
    """Start the Prometheus endpoint, if ``metrics_port`` is set; returns its port."""
    if settings.metrics_port is None:
        return None
    from prometheus_client import start_http_server

    http, thread = start_http_server(
        settings.metrics_port, addr=settings.host, registry=metrics.registry
    )
    stack.callback(thread.join)
    stack.callback(http.server_close)
    stack.callback(http.shutdown)
    return int(http.server_port)


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
