"""Prometheus metrics of the prediction server (one registry per server).

Names follow Prometheus conventions: counters end in ``_total``, durations are
histograms in ``_seconds``. Served by ``prometheus_client`` on
``--metrics-port``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
_CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)


def _in_process_values() -> None:
    """Keep metric values in process memory. Importing Feast sets
    ``PROMETHEUS_MULTIPROC_DIR``, which makes prometheus_client keep every value in an
    mmapped file (a file write and a pid check per increment); the server's worker
    processes each export their own metrics port instead, so they need none of that."""
    from prometheus_client import values

    if values.ValueClass is not values.MutexValue:
        values.ValueClass = values.MutexValue


class ServerMetrics:
    """Every metric of one server, in one registry (exported in the order added here)."""

    def __init__(self) -> None:
        _in_process_values()
        self.registry = CollectorRegistry()
        self._add_call_metrics(self.registry)
        self._add_row_metrics(self.registry)
        self._add_state_metrics(self.registry)
        self._add_security_metrics(self.registry)
        # The process_* and python_* series every Prometheus client exports by default
        # (CPU, resident memory, open file descriptors, start time; GC; Python version):
        # read at scrape time from /proc, as prometheus_client's default registry does.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, looked up once: prometheus_client validates the
        values and takes a lock on every ``labels`` call, eight times a request. The
        label sets are the metrics' own (bounded where they are), so is this cache."""
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def _add_call_metrics(self, r: CollectorRegistry) -> None:
        """Calls answered, rows scored, latency per stage, confidence."""
        self.requests = Counter(
            "parity_requests_total",
            "RPCs answered, by RPC, gRPC status code, model and version.",
            ["rpc", "code", "model", "version"],
            registry=r,
        )
        self.predictions = Counter(
            "parity_predictions_total",
            "Rows scored, by model, version and decision.",
            ["model", "version", "decision"],
            registry=r,
        )
        self.latency = Histogram(
            "parity_latency_seconds",
            "Time per request by model, version and stage: feature_lookup, inference, "
            "explain, total.",
            ["model", "version", "stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.confidence = Histogram(
            "parity_confidence",
            "Confidence of scored rows, by model and version.",
            ["model", "version"],
            buckets=_CONFIDENCE_BUCKETS,
            registry=r,
        )

    def _add_row_metrics(self, r: CollectorRegistry) -> None:
        """What happened to scored rows: missing and stale features, values older than in
        training, CPU, fallbacks, internal errors, failed input checks."""
        self.missing_features = Counter(
            "parity_missing_features_total",
            "Feature values absent online (not found or null), by model, version and feature.",
            ["model", "version", "feature"],
            registry=r,
        )
        self.stale_features = Counter(
            "parity_stale_features_total",
            "Feature values dropped as older than their view's TTL, by model, version and feature.",
            ["model", "version", "feature"],
            registry=r,
        )
        self.old_features = Counter(
            "parity_feature_older_than_training_total",
            "Feature values served older than the 99th percentile of their ages in the "
            "version's training set, by model, version and feature.",
            ["model", "version", "feature"],
            registry=r,
        )
        self.cpu_seconds = Counter(
            "parity_cpu_seconds_total",
            "CPU seconds spent scoring requests (the answering thread's), by model and version.",
            ["model", "version"],
            registry=r,
        )
        self.fallbacks = Counter(
            "parity_fallbacks_total",
            "Rows answered by the fallback, by model, version and cause.",
            ["model", "version", "cause"],
            registry=r,
        )
        self.internal_errors = Counter(
            "parity_internal_errors_total",
            "Requests parity could not answer through its own failure (answered INTERNAL, "
            "never a fallback), by model and stage.",
            ["model", "stage"],
            registry=r,
        )
        self.input_issues = Counter(
            "parity_input_issues_total",
            "Input checks that failed (out_of_range, unseen_category, unexpected_missing), "
            "by model, version, kind and feature.",
            ["model", "version", "kind", "feature"],
            registry=r,
        )

    def _add_state_metrics(self, r: CollectorRegistry) -> None:
        """The review queue, the loaded versions and the prediction log."""
        self.review_queue_depth = Gauge(
            "parity_review_queue_depth",
            "Predictions waiting in the review queue.",
            registry=r,
        )
        self.log_pending = Gauge(
            "parity_prediction_log_pending_rows",
            "Predictions accepted but not yet written to the prediction log.",
            registry=r,
        )
        self.log_rejected = Counter(
            "parity_prediction_log_rejected_total",
            "Requests refused because the prediction log was full (backpressure).",
            registry=r,
        )
        self.log_journal_errors = Gauge(
            "parity_prediction_log_journal_errors",
            "Predictions accepted while the log's journal could not be written (disk full): "
            "kept in memory only, so a crash before they are written would lose them.",
            registry=r,
        )
        self.log_written = Counter(
            "parity_prediction_log_rows_total",
            "Prediction rows written to the prediction log.",
            registry=r,
        )
        self.log_write_seconds = Histogram(
            "parity_prediction_log_write_seconds",
            "Time to write one prediction-log file.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0),
            registry=r,
        )

    def _add_security_metrics(self, r: CollectorRegistry) -> None:
        """Calls refused by authentication, authorisation or a rate limit."""
        self.auth_failures = Counter(
            "parity_auth_failures_total",
            "Calls refused by token authentication (missing, malformed, unknown) or "
            "authorisation (scope), by reason.",
            ["reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "parity_rate_limited_total",
            "Calls refused by a rate limit, by client (token name; anonymous without tokens).",
            ["client"],
            registry=r,
        )

    def count_feature_status(self, model: str, version: str, status: dict[str, list[str]]) -> None:
        """Count values missing online and values dropped as stale, per feature."""
        for feature, states in status.items():
            stale = states.count("OUTSIDE_MAX_AGE")
            missing = states.count("NOT_FOUND") + states.count("NULL_VALUE")
            if stale:
                self.child(self.stale_features, model, version, feature).inc(stale)
            if missing:
                self.child(self.missing_features, model, version, feature).inc(missing)

    def watch_models(self, loaded: Callable[[], list[tuple[str, str, list[str]]]]) -> None:
        """Export ``parity_model_info{model, version, aliases}``: 1 per loaded version
        (``loaded()``: name, version, aliases), read at each scrape, so it follows
        promotions, rollbacks and versions loaded after start-up."""
        self.registry.register(_ModelInfo(loaded))

    def watch_freshness(self, store: Any, clock: Callable[[], float]) -> None:
        """Export ``parity_feature_freshness_seconds{view}``: the age of the newest value
        materialised online per feature view, read from the online store at each scrape
        (:func:`framework.materialize.job.freshness`)."""
        self.registry.register(_Freshness(store, clock))
        self.registry.register(_RegistryHealth(store))


class _ModelInfo:
    def __init__(self, loaded: Callable[[], list[tuple[str, str, list[str]]]]) -> None:
        self.loaded = loaded

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "parity_model_info",
            "1 for each loaded model version, labelled with its aliases.",
            labels=["model", "version", "aliases"],
        )
        for name, version, aliases in sorted(self.loaded()):
            family.add_metric([name, version, ",".join(sorted(aliases))], 1.0)
        yield family


class _RegistryHealth:
    """The Feast SQL registry as the server sees it (:mod:`framework.registry.cache`):
    reachable or not, refresh failures, and the age of the snapshot being served."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def collect(self) -> Iterator[Any]:
        import time

        from framework.registry.cache import health

        h = health(self.store)
        if h is None:  # the embedded file registry: nothing to report
            return
        yield GaugeMetricFamily(
            "parity_registry_up", "1 while the Feast registry answers refreshes.",
            value=float(h.reachable),
        )  # fmt: skip
        failures = CounterMetricFamily(
            "parity_registry_refresh_failures", "Failed Feast registry refreshes."
        )
        failures.add_metric([], float(h.failures))
        yield failures
        if h.snapshot_at is not None:
            yield GaugeMetricFamily(
                "parity_registry_snapshot_age_seconds",
                "Seconds since the registry snapshot in use was read.",
                value=time.time() - h.snapshot_at,
            )


class _Freshness:
    def __init__(self, store: Any, clock: Callable[[], float]) -> None:
        self.store, self.clock = store, clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from framework.materialize.freshness import freshness

        family = GaugeMetricFamily(
            "parity_feature_freshness_seconds",
            "Seconds since the newest event time materialised online, by feature view.",
            labels=["view"],
        )
        try:
            ages = freshness(self.store, datetime.fromtimestamp(self.clock(), UTC))
        except Exception:  # an unreachable store: no samples rather than a failed scrape
            ages = {}
        for view, age in sorted(ages.items()):
            if age is not None:
                family.add_metric([view], age)
        yield family
