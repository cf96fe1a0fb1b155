"""``parity demo``: the loop, as far as it exists, on the embedded defaults.

Today that is: generate the sample, build the offline sources, register the
feature definitions, materialise them into the online store with Feast, read
a few online feature vectors back for recent transactions, and build a
point-in-time-correct training set from the labels that had arrived by the
end of the sample, train the shipped model spec (calibrated, evaluated on a
time-based holdout) into the model registry and promote it to ``champion``
through the promotion gate, then start the gRPC prediction server, score the
latest transactions through it and stop it (flushing the prediction log).
Later stages (monitoring, retraining) join as they land.
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

from framework import repository
from framework.errors import FeatureStoreError
from framework.feature_pipeline import build_offline_sources
from framework.labels import entity_frame_from_labels
from framework.model_spec import find_spec, load_spec
from framework.promotion import promote
from framework.repository import Profile
from framework.sample_data import GenerationConfig, generate
from framework.train import default_registry, train_model
from framework.training_set import build_training_set, read_info

FEATURE_SERVICE = "fraud_model_v1"


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_demo(
    repo: Path,
    *,
    profile: Profile = Profile.EMBEDDED,
    seed: int = 7,
    transactions: int = 50_000,
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

    t = time.perf_counter()
    summary = generate(GenerationConfig(seed=seed, transactions=transactions), data)
    step(
        "generate",
        f"{summary.transactions:,} transactions, {summary.users:,} users, "
        f"{summary.merchants:,} merchants, {summary.fraud_rate:.2%} fraud "
        f"(seed {seed}) -> {data / 'raw'}",
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

    with repository.open_store(repo, profile) as store:
        _materialize_and_read(store, summary.end, data, profile, show, result, step)

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

        t = time.perf_counter()
        spec_path = find_spec(repo, None)
        trained = train_model(repo, load_spec(spec_path), store=store, spec_path=spec_path)
        hold = trained.manifest["metrics"]["holdout"]
        base = trained.manifest["metrics"]["baseline"]
        result.model = {
            "model": str(trained.ref),
            "holdout": {k: hold[k] for k in ("rows", "roc_auc", "pr_auc", "log_loss", "brier")},
            "baseline": {k: base[k] for k in ("roc_auc", "pr_auc", "log_loss", "brier")},
            "calibration": trained.manifest["calibration"],
        }
        step(
            "train",
            f"{trained.ref}: holdout ROC-AUC {hold['roc_auc']:.3f}, PR-AUC {hold['pr_auc']:.3f} "
            f"(base rate {base['pr_auc']:.3f}), log loss {hold['log_loss']:.4f} "
            f"(baseline {base['log_loss']:.4f}) on {hold['rows']:,} later transactions",
            t,
        )

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

        t = time.perf_counter()
        now = datetime.fromisoformat(summary.end)
        served, port, logged = _serve(
            store, registry, data, [v["request"] for v in result.online_vectors], now
        )
        result.predictions = served
        decisions = ", ".join(
            f"{d} {sum(p['decision'] == d for p in served)}"
            for d in ("ACCEPT", "VALIDATE", "REVIEW")
        )
        step(
            "serve",
            f"gRPC server on 127.0.0.1:{port} scored the {len(served)} latest transactions "
            f"with {ref.name}@champion ({decisions}); {logged} rows in the prediction log "
            f"(server clock at the end of the sample, {now:%Y-%m-%d %H:%M})",
            t,
        )
    return result


def _serve(
    store: Any, registry: Any, data: Path, requests: list[dict[str, Any]], now: datetime
) -> tuple[list[dict[str, Any]], int, int]:
    """Start the prediction server on a free port, score ``requests`` over gRPC, stop it
    (which flushes the prediction log) and count the logged rows."""
    from serving.client import PredictionClient
    from serving.prediction_log import read_log
    from serving.server import ServeSettings, start_server

    request_id = f"demo-{uuid.uuid4().hex[:12]}"
    running = start_server(
        store, registry, data, ServeSettings(port=0, models=[]), clock=now.timestamp
    )
    try:
        rows = [
            {
                "entity_keys": {"user_id": r["user_id"], "merchant_id": r["merchant_id"]},
                "request_data": {"amount": r["amount"], "hour_of_day": r["hour_of_day"]},
            }
            for r in requests
        ]
        with PredictionClient(f"127.0.0.1:{running.port}") as client:
            served = client.predict("fraud_model", rows, request_id=request_id)
    finally:
        running.stop(2)
    logged = read_log(data / "predictions", "fraud_model")
    count = sum(1 for r in logged.column("__request_id").to_pylist() if r == request_id)
    return served, running.port, count


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
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            store.materialize(start_date=start, end_date=end)
    except Exception as exc:
        raise FeatureStoreError(f"Feast materialize failed: {exc}") from exc
    online = "SQLite" if profile is Profile.EMBEDDED else "Redis"
    step(
        "materialize",
        f"{len(store.list_feature_views())} feature views into {online} with Feast "
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
