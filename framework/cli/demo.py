"""``parity demo``: the loop, as far as it exists, on the embedded defaults.

Today that is: generate the sample, build the offline sources, register the
feature definitions, materialise them into the online store with Feast, read
a few online feature vectors back for recent transactions, and build a
point-in-time-correct training set from the labels that had arrived by the
end of the sample, train the shipped model spec (calibrated, evaluated on a
time-based holdout) into the model registry and promote it to ``champion``
through the promotion gate, then start the gRPC prediction server, score the
latest transactions through it, and monitor it.

The sample carries two drift scenarios by default (:data:`DEMO_DRIFT`:
amounts 60 % higher and a new merchant category from 75 % of the period on;
``drift=()`` switches them off). The model trains on the labelled
transactions before a clean period that ends at the drift start. The monitor
step replays two periods of real transactions through the running server —
the clean period just before the drift start and the drifted period just
after it, each transaction's features computed by the point-in-time join just
before it happened and sent to the Open Inference Protocol's ``ModelInfer``
with every feature as a tensor (plain model serving, logged like any
prediction) — then runs :func:`framework.monitoring.summary.monitor_summary` on each
period's requests and writes the HTML reports. Then the loop closes
(:mod:`framework.cli.demo_loop`): the drifted period's ground truth is ingested,
drift triggers ``parity retrain``, the challenger beats the champion on the same
latest holdout and is promoted, the running server hot-reloads it, and the
latest transactions scored by both versions show live quality recovering.
"""

from __future__ import annotations

import contextlib
import io
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.compute as pc
import pyarrow.parquet as pq

from framework.cli.demo_loop import close_the_loop
from framework.cli.demo_monitor import (
    INFER_ROWS,
    MONITOR_ROWS,
    monitor,
    monitor_line,
    periods,
    replay,
)
from framework.errors import ConfigError, FeatureStoreError
from framework.features import repository
from framework.features.repository import Profile
from framework.features.training_file import read_info
from framework.features.training_set import build_training_set
from framework.loop.promotion import promote
from framework.models.labels import entity_frame_from_labels
from framework.models.spec import find_spec, load_spec
from framework.models.training import default_registry, train_model
from framework.sample.data import generate
from framework.sample.pipeline import build_offline_sources
from framework.sample.scenario import GenerationConfig
from framework.spark.session import uses_spark

#: The sample repository shipped with parity: the demo's own scenario, so its default.
SAMPLE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"
FEATURE_SERVICE = "fraud_model_v1"
#: The drift scenarios of the demo's sample (``parity demo --drift none`` switches them off).
DEMO_DRIFT = ("amount_inflation", "new_merchant_category")


@dataclass
class DemoStep:
    name: str
    seconds: float
    detail: str


@dataclass
class DemoResult:
    profile: str
    data_dir: str
    steps: list[DemoStep] = field(default_factory=list)
    online_vectors: list[dict[str, Any]] = field(default_factory=list)
    training_set: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    monitoring: dict[str, Any] = field(default_factory=dict)
    #: Ground truth, retraining, hot reload and recovery (:mod:`framework.cli.demo_loop`).
    loop: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def demo_repo() -> Path:
    """The repository ``parity demo`` runs on without ``--repo``: ``./feature_repo`` if it
    holds a ``feature_store.yaml`` (a copy of the sample), else :data:`SAMPLE_REPO`.

    Only the demo defaults to the sample: it is the sample's scenario (its data
    generator, feature pipeline and model spec are the fraud sample's), and runs
    nowhere else. Every other command needs a repository named or found here.
    """
    here = Path.cwd() / "feature_repo"
    if (here / "feature_store.yaml").is_file():
        return here
    if not (SAMPLE_REPO / "feature_store.yaml").is_file():
        raise ConfigError(
            f"The sample repository is not at {SAMPLE_REPO} (parity installed without it); "
            "name a copy of it with --repo DIR."
        )
    return SAMPLE_REPO


def run_demo(
    repo: Path,
    *,
    profile: Profile = Profile.EMBEDDED,
    seed: int = 7,
    transactions: int = 50_000,
    drift: tuple[str, ...] = DEMO_DRIFT,
    show: int = 3,
    progress: Callable[[DemoStep], None] = lambda step: None,
) -> DemoResult:
    """Run every stage that exists, reporting each as it finishes."""
    data = repository.data_dir(repo)
    result = DemoResult(profile=profile.value, data_dir=str(data))

    def step(name: str, detail: str, started: float) -> None:
        s = DemoStep(name=name, seconds=round(time.perf_counter() - started, 2), detail=detail)
        result.steps.append(s)
        progress(s)

    config = GenerationConfig(seed=seed, transactions=transactions, drift=drift)
    summary = _prepare(repo, profile, config, data, step)
    with repository.open_store(repo, profile) as store:
        _materialize_and_read(store, summary.end, data, profile, show, result, step)
        _training_set_step(store, data, summary, result, step)
        replayed = periods(
            data / "raw" / "transactions.parquet",
            config.drift_start,
            max(1, min(MONITOR_ROWS, summary.transactions // 10)),
        )
        trained = _train(repo, store, replayed, result, step)
        registry = _promote(repo, store, trained, result, step)
        _serve_and_monitor(
            repo, store, registry, trained, data, summary, replayed, drift, result, step
        )
    return result


def _prepare(
    repo: Path,
    profile: Profile,
    config: GenerationConfig,
    data: Path,
    step: Callable[[str, str, float], None],
) -> Any:
    """Generate the sample, build its offline sources, apply the definitions."""
    t = time.perf_counter()
    summary = generate(config, data)
    drift = config.drift
    scenarios = (
        f"drift from {config.drift_start:%Y-%m-%d}: {', '.join(drift)}" if drift else "no drift"
    )
    step(
        "generate",
        f"{summary.transactions:,} transactions, {summary.users:,} users, "
        f"{summary.merchants:,} merchants, {summary.fraud_rate:.2%} fraud "
        f"(seed {config.seed}; {scenarios}) -> {data / 'raw'}",
        t,
    )

    t = time.perf_counter()
    pipeline = build_offline_sources(data / "raw", data / "offline")
    step(
        "features",
        f"{len(pipeline.rows)} offline sources, {sum(pipeline.rows.values()):,} rows "
        f"(DuckDB) -> {data / 'offline'}",
        t,
    )

    t = time.perf_counter()
    applied = repository.apply(repo, profile)
    step(
        "apply",
        f"{applied.entities} entities, {applied.feature_views} feature views, "
        f"{applied.on_demand_feature_views} on-demand view, "
        f"{applied.feature_services} feature service registered ({profile.value} profile)",
        t,
    )
    return summary


def _training_set_step(
    store: Any,
    data: Path,
    summary: Any,
    result: DemoResult,
    step: Callable[[str, str, float], None],
) -> None:
    t = time.perf_counter()
    table = _training_set(store, data, datetime.fromisoformat(summary.end))
    info = read_info(table)
    positives = pc.sum(table.column("is_fraud")).as_py() or 0
    result.training_set = {"rows": table.num_rows, "columns": table.num_columns, **asdict(info)}
    step(
        "training-set",
        f"{table.num_rows:,} labelled transactions x {len(info.features)} features, "
        f"{positives / max(table.num_rows, 1):.2%} fraud, point-in-time joined by "
        f"{info.engine} (fingerprint {info.fingerprint[:12]})",
        t,
    )


def _train(
    repo: Path,
    store: Any,
    replayed: dict[str, dict[str, Any]],
    result: DemoResult,
    step: Callable[[str, str, float], None],
) -> Any:
    """Train the shipped spec on what happened before the clean period."""
    t = time.perf_counter()
    # The model knows nothing of the clean period: it trains on what happened before.
    train_end = replayed["clean"]["start"]
    spec_path = find_spec(repo, None)
    trained = train_model(
        repo, load_spec(spec_path), store=store, spec_path=spec_path, end=train_end
    )
    hold = trained.manifest.metrics.holdout
    first = datetime.fromisoformat(trained.manifest.window["first_event"])
    base = trained.manifest.metrics.baseline
    result.model = {
        "model": str(trained.ref),
        "holdout": {k: hold[k] for k in ("rows", "roc_auc", "pr_auc", "log_loss", "brier")},
        "baseline": {k: base[k] for k in ("roc_auc", "pr_auc", "log_loss", "brier")},
        "calibration": trained.manifest.calibration,
        "trained_before": train_end.isoformat(),
    }
    step(
        "train",
        f"{trained.ref}: holdout ROC-AUC {hold['roc_auc']:.3f}, PR-AUC {hold['pr_auc']:.3f} "
        f"(base rate {base['pr_auc']:.3f}), log loss {hold['log_loss']:.4f} "
        f"(baseline {base['log_loss']:.4f}) on {hold['rows']:,} later transactions "
        f"(trained on labelled transactions from {first:%Y-%m-%d} to "
        f"{train_end:%Y-%m-%d %H:%M})",
        t,
    )
    return trained


def _promote(
    repo: Path,
    store: Any,
    trained: Any,
    result: DemoResult,
    step: Callable[[str, str, float], None],
) -> Any:
    """Promote the trained version to ``champion`` through the gate; the registry."""
    t = time.perf_counter()
    registry = default_registry(repo)
    ref = trained.ref
    current = registry.aliases(ref.name).get("champion")
    move = promote(
        registry,
        ref.name,
        ref.version,
        store=store,
        reason="parity demo",
        force=current is not None,
    )
    result.model["champion"] = move.version
    step(
        "promote",
        f"{ref.name}@champion: {move.previous or 'unset'} -> {move.version} "
        f"({', '.join(c.name for c in move.checks)} checks passed)",
        t,
    )
    return registry


def _serve_and_monitor(
    repo: Path,
    store: Any,
    registry: Any,
    trained: Any,
    data: Path,
    summary: Any,
    replayed: dict[str, dict[str, Any]],
    drift: tuple[str, ...],
    result: DemoResult,
    step: Callable[[str, str, float], None],
) -> None:
    """Start the server, score the latest transactions, replay and monitor both periods,
    then close the loop (:mod:`framework.cli.demo_loop`)."""
    ref = trained.ref
    t = time.perf_counter()
    now = datetime.fromisoformat(summary.end)
    running = _start_server(store, registry, data, now)
    try:
        served, logged = _serve(running, data, [v["request"] for v in result.online_vectors])
        result.predictions = served
        decisions = ", ".join(
            f"{d} {sum(p['decision'] == d for p in served)}"
            for d in ("ACCEPT", "VALIDATE", "REVIEW")
        )
        step(
            "serve",
            f"gRPC server on 127.0.0.1:{running.port} scored the {len(served)} latest "
            f"transactions with {ref.name}@champion ({decisions}); {logged} rows in the "
            f"prediction log (server clock at the end of the sample, {now:%Y-%m-%d %H:%M})",
            t,
        )

        t = time.perf_counter()
        run = uuid.uuid4().hex[:8]
        for name, period in replayed.items():
            features = build_training_set(store, trained.manifest.feature_service,
                                          period["entities"])  # fmt: skip
            period["request_prefix"] = f"demo-{name}-{run}-"
            replay(f"127.0.0.1:{running.port}", ref.name, trained.manifest, features,
                    period["request_prefix"])  # fmt: skip
        running.prediction_log.flush(30)
        result.monitoring = monitor(data, registry, ref.name, replayed, drift)
        step("monitor", monitor_line(result.monitoring), t)
        result.loop = close_the_loop(
            repo, store, registry, f"127.0.0.1:{running.port}", data, replayed, ref.version,
            replay=replay, rows_per_request=INFER_ROWS,
            flush=lambda: running.prediction_log.flush(30), step=step,
        )  # fmt: skip
    finally:
        running.stop(2)  # drains the calls, then writes the whole prediction log


def _start_server(store: Any, registry: Any, data: Path, now: datetime) -> Any:
    from serving.grpc.server import start_server
    from serving.grpc.settings import ServeSettings

    return start_server(
        store, registry, data, ServeSettings(port=0, models=[]), clock=now.timestamp
    )


def _serve(
    running: Any, data: Path, requests: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], int]:
    """Score ``requests`` over gRPC through the running server, flush the prediction log
    and count the logged rows."""
    from framework.logs.reader import read_log
    from serving.grpc.client import PredictionClient

    request_id = f"demo-{uuid.uuid4().hex[:12]}"
    rows = [
        {
            "entity_keys": {"user_id": r["user_id"], "merchant_id": r["merchant_id"]},
            "request_data": {"amount": r["amount"], "hour_of_day": r["hour_of_day"]},
        }
        for r in requests
    ]
    with PredictionClient(f"127.0.0.1:{running.port}") as client:
        served = client.predict("fraud_model", rows, request_id=request_id)
    running.prediction_log.flush(30)  # on timeout the count below says so
    logged = read_log(data / "predictions", "fraud_model")
    count = sum(1 for r in logged.column("__request_id").to_pylist() if r == request_id)
    return served, count


def _materialize_and_read(
    store: Any,
    data_end: str,
    data: Path,
    profile: Profile,
    show: int,
    result: DemoResult,
    step: Callable[[str, str, float], None],
) -> None:
    t = time.perf_counter()
    end = datetime.fromisoformat(data_end) + timedelta(days=1)
    # From long before the sample: static profiles (no TTL) date from sign-up.
    start = datetime(2000, 1, 1, tzinfo=UTC)
    online = "SQLite" if profile is Profile.EMBEDDED else "Redis"
    engine = "Feast"
    if uses_spark(store):  # Feast's Spark offline store reads no FileSource: parity's job
        from framework.spark.materialize import materialize

        materialize(store, start=start, end=end)
        engine = "parity on Spark"
    else:
        try:
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                store.materialize(start_date=start, end_date=end)
        except Exception as exc:
            raise FeatureStoreError(f"Feast materialize failed: {exc}") from exc
    step(
        "materialize",
        f"{len(store.list_feature_views())} feature views into {online} with {engine} "
        f"(event times up to {end:%Y-%m-%d})",
        t,
    )

    t = time.perf_counter()
    rows = _latest_transactions(data / "raw" / "transactions.parquet", show)
    service = store.get_feature_service(FEATURE_SERVICE)
    response = store.get_online_features(features=service, entity_rows=rows).to_dict()
    for i, row in enumerate(rows):
        vector = {name: values[i] for name, values in response.items()}
        result.online_vectors.append({"request": row, "features": vector})
    n_features = sum(len(p.features) for p in service.feature_view_projections)
    step(
        "online",
        f"read {len(rows)} feature vectors of {n_features} features from feature service "
        f"{FEATURE_SERVICE!r}",
        t,
    )


def _training_set(store: Any, data: Path, end: datetime) -> Any:
    """Labels known at the end of the sample, joined as of just before each transaction."""
    labels = pq.read_table(data / "raw" / "labels.parquet")
    tx = pq.read_table(data / "raw" / "transactions.parquet", columns=["transaction_id", "amount"])
    labels = labels.join(tx, "transaction_id")
    hours = pc.hour(labels.column("transaction_timestamp")).cast("int64")
    labels = labels.append_column("hour_of_day", hours)
    entities = entity_frame_from_labels(
        labels,
        keys=["user_id", "merchant_id"],
        label="is_fraud",
        event_timestamp="transaction_timestamp",
        label_timestamp="label_timestamp",
        as_of=end,
        # Features as known just before the transaction (its own row includes it).
        offset=-timedelta(microseconds=1),
        extra=["amount", "hour_of_day"],
    )
    if uses_spark(store):
        from framework.spark import training_set as spark_training_set

        return spark_training_set.build_training_set(store, FEATURE_SERVICE, entities, data)
    return build_training_set(store, FEATURE_SERVICE, entities)


def _latest_transactions(path: Path, n: int) -> list[dict[str, Any]]:
    """Entity keys and request data of the ``n`` most recent transactions."""
    con = duckdb.connect()
    try:
        rows = con.execute(
            """
            SELECT user_id, merchant_id, amount,
                   hour(transaction_timestamp AT TIME ZONE 'UTC')::BIGINT AS hour_of_day
            FROM read_parquet(?) ORDER BY transaction_timestamp DESC, transaction_id LIMIT ?
            """,
            [str(path), n],
        ).fetchall()
    finally:
        con.close()
    return [{"user_id": u, "merchant_id": m, "amount": a, "hour_of_day": h} for u, m, a, h in rows]
