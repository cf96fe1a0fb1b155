"""Synthetic prediction logs of a toy model, for the monitor and the stages that read it.

``toy_manifest`` is a registered version's manifest (features, serving thresholds and a
reference profile); ``toy_rows`` are logged predictions in the server's layout (Feast's
feature-logging columns, per-feature statuses, score, decision); ``write_log`` writes
them with the real :class:`serving.log.writer.PredictionLog`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from framework.logs.outcomes import OutcomeStore
from framework.logs.rows import LogRows
from framework.models.reference_stats import categorical_profile, numeric_profile
from serving.log.writer import PredictionLog

#: The toy model's name, and the time its logs start.
MODEL = "toy_model"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
CATEGORIES = ["grocery", "travel", "online", "fuel"]
DAY = 86_400.0


def toy_features(
    rng: np.random.Generator, n: int, *, inflate: float = 1.0, new: float = 0.0
) -> Any:
    """Amount, category and count of ``n`` transactions: ``inflate`` scales the amounts,
    ``new`` is the share of a category the reference never saw."""
    amount = rng.lognormal(3.5, 0.8, n) * inflate
    category = rng.choice(CATEGORIES, p=[0.4, 0.3, 0.2, 0.1], size=n).astype(object)
    category[rng.random(n) < new] = "crypto_exchange"
    count = rng.poisson(4, n).astype(float)
    return amount, category, count


def calibrated_holdout(score: np.ndarray) -> dict[str, float]:
    """Holdout metrics a calibrated model with these scores has: labels drawn from them
    (a generator of its own, so the caller's draws stay as they were)."""
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    y = (np.random.default_rng(1).random(len(score)) < score).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
        "brier": float(brier_score_loss(y, score)),
        "log_loss": float(log_loss(y, score)),
    }


def toy_manifest(rng: np.random.Generator) -> dict[str, Any]:
    """The toy model's manifest, with a reference profile of 8,000 clean rows."""
    amount, category, count = toy_features(rng, 8_000)
    score = rng.beta(1, 12, 8_000)
    holdout = calibrated_holdout(score)
    return {
        "created_at": "2026-03-01T00:00:00.000+00:00",
        "task": "classification",
        "feature_service": "toy_v1",
        "definitions_digest": "toy",
        "features": [
            {"name": "amount", "dtype": "Float64", "view": "request"},
            {"name": "category", "dtype": "String", "view": "merchant"},
            {"name": "count", "dtype": "Int64", "view": "user"},
        ],
        "join_keys": ["user_id"],
        "request_data": {"amount": "DOUBLE"},
        "serving": {"threshold": 0.5, "accept": 0.85, "review_below": 0.6},
        "metrics": {"holdout": holdout, "uncalibrated": holdout, "baseline": holdout},
        "artifact": {"file": "model.skops", "format": "skops", "sha256": "0" * 64, "bytes": 0},
        "reference": {
            "features": {
                "amount": numeric_profile(amount),
                "category": categorical_profile(category),
                "count": numeric_profile(count),
            },
            "score": numeric_profile(score),
            "confidence": numeric_profile(np.maximum(score, 1 - score)),
        },
        # Ages in training (seconds): counts are updated hourly-ish, merchants monthly.
        "freshness": {
            "unit": "seconds",
            "features": {
                "category": {
                    "view": "merchant",
                    "rows": 8_000,
                    "p50": 15 * DAY,
                    "p90": 27 * DAY,
                    "p99": 29.7 * DAY,
                    "max": 30 * DAY,
                },
                "count": {
                    "view": "user",
                    "rows": 7_900,
                    "p50": 1_386.0,
                    "p90": 4_605.0,
                    "p99": 9_210.0,
                    "max": 20_000.0,
                },
            },
            "without_age": ["amount"],
        },  # fmt: skip
    }


def toy_rows(
    rng: np.random.Generator,
    n: int,
    *,
    version: str = "1",
    start: datetime = T0,
    prefix: str = "r",
    inflate: float = 1.0,
    new: float = 0.0,
    score_scale: float = 1.0,
    missing: float = 0.0,
    stale: float = 0.0,
) -> pa.Table:
    """``n`` logged predictions of ``version`` within 2 h of ``start``, request ids
    ``{prefix}-{version}-{i}``; ``score_scale`` shifts the scores, ``missing`` is the share
    of rows whose ``count`` feature was not found, ``stale`` the share whose ``count`` is
    a day older than usual (the usual: ages as in :func:`toy_manifest`'s training)."""
    amount, category, count = toy_features(rng, n, inflate=inflate, new=new)
    score = np.clip(rng.beta(1, 12, n) * score_scale, 0, 1)
    confidence = np.maximum(score, 1 - score)
    decision = np.where(confidence >= 0.85, "ACCEPT", np.where(confidence >= 0.6, "VALIDATE",
                        "REVIEW")).astype(object)  # fmt: skip
    status = np.where(rng.random(n) < missing, "NOT_FOUND", "PRESENT").astype(object)
    status[(status == "PRESENT") & (rng.random(n) < 0.05)] = "OUTSIDE_MAX_AGE"
    count_values = [None if s != "PRESENT" else c for s, c in zip(status, count, strict=True)]
    times = [start + timedelta(seconds=int(s)) for s in np.sort(rng.integers(0, 7_200, n))]
    ts = pa.timestamp("us", tz="UTC")
    # The values' event times, drawn apart (the draws above stay as they were): a count's
    # age exponential with a 2,000 s mean as in training, a merchant's uniform over 30 days;
    # none without a value (the server logs 0), a value past its TTL keeps its old time.
    ages = np.random.default_rng([n, int(start.timestamp()), int(stale * 1e6)])
    count_age = ages.exponential(2_000.0, n) + (ages.random(n) < stale) * DAY
    count_age[status == "OUTSIDE_MAX_AGE"] = 30 * DAY
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    count_times = [
        epoch if s == "NOT_FOUND" else t - timedelta(seconds=float(a))
        for s, t, a in zip(status, times, count_age, strict=True)
    ]
    category_times = [
        t - timedelta(seconds=float(a))
        for t, a in zip(times, ages.uniform(0, 29 * DAY, n), strict=True)
    ]
    return pa.table(
        {
            "__request_id": [f"{prefix}-{version}-{i}" for i in range(n)],
            "__row_index": pa.array([0] * n, pa.int32()),
            "__timestamp": pa.array(times, ts),
            "__log_timestamp": pa.array(times, ts),
            "__log_date": pa.array([t.date() for t in times], pa.date32()),
            "model_name": [MODEL] * n,
            "model_version": [version] * n,
            "user_id": pa.array(rng.integers(1, 500, n), pa.int64()),
            "amount": amount,
            "amount__status": ["PRESENT"] * n,
            "category": pa.array(category.tolist(), pa.string()),
            "category__timestamp": pa.array(category_times, ts),
            "category__status": ["PRESENT"] * n,
            "count": pa.array(count_values, pa.float64()),
            "count__timestamp": pa.array(count_times, ts),
            "count__status": pa.array(status.tolist(), pa.string()),
            "score": score,
            "label": pa.array([str(int(s >= 0.5)) for s in score], pa.string()),
            "confidence": confidence,
            "decision": pa.array(decision.tolist(), pa.string()),
            "reasons": [""] * n,
            "latency_seconds": rng.gamma(2.0, 0.002, n),
            "cpu_seconds": rng.gamma(2.0, 0.001, n),
        }
    )


def write_log(root: Path, *tables: pa.Table, model: str = MODEL) -> Path:
    """Write ``tables`` as ``model``'s (the toy model's) prediction log under ``root``; its
    folder."""
    log = PredictionLog(root / "predictions", batch_rows=100_000)
    for t in tables:
        log.append(t, model=model)
    assert log.close(30)
    return root / "predictions"


def as_log_rows(table: pa.Table) -> LogRows:
    """``table``'s rows as the server hands them to the log: Python values (times as µs
    and dates as days since the epoch, as the server gives them), the table's schema."""
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        if pa.types.is_timestamp(field.type) or pa.types.is_date(field.type):
            storage = pa.int64() if pa.types.is_timestamp(field.type) else pa.int32()
            columns.append(column.cast(storage).to_pylist())
        else:
            columns.append(column.to_pylist())
    return LogRows(table.schema, columns)


def scored_rows(
    frame: Any,
    scores: np.ndarray,
    *,
    model: str,
    version: str = "1",
    start: datetime = T0,
    prefix: str = "s",
    times: list[datetime] | None = None,
) -> pa.Table:
    """Logged predictions of real feature vectors (``frame``: one column per feature, as
    :func:`framework.models.estimator.feature_frame` makes them) and their scores, at
    ``times`` (default: one a second from ``start``), every feature PRESENT (null where
    the frame holds NaN)."""
    n = len(frame)
    scores = np.asarray(scores, dtype=np.float64)
    confidence = np.maximum(scores, 1 - scores)
    times = times if times is not None else [start + timedelta(seconds=i) for i in range(n)]
    ts = pa.timestamp("us", tz="UTC")
    columns: dict[str, Any] = {
        "__request_id": [f"{prefix}-{version}-{i}" for i in range(n)],
        "__row_index": pa.array([0] * n, pa.int32()),
        "__timestamp": pa.array(times, ts),
        "__log_timestamp": pa.array(times, ts),
        "__log_date": pa.array([t.date() for t in times], pa.date32()),
        "model_name": [model] * n,
        "model_version": [version] * n,
    }
    for name in frame.columns:
        values = frame[name].to_numpy()
        if values.dtype == object:
            column = pa.array([None if v is None or v != v else str(v) for v in values])
        else:
            column = pa.array(values.astype(np.float64), pa.float64(), mask=np.isnan(values))
        columns[name] = column
        columns[f"{name}__status"] = ["PRESENT"] * n
    decision = np.where(confidence >= 0.85, "ACCEPT", np.where(confidence >= 0.6, "VALIDATE",
                        "REVIEW")).astype(object)  # fmt: skip
    columns |= {
        "score": scores,
        "label": pa.array([str(int(s >= 0.5)) for s in scores], pa.string()),
        "confidence": confidence,
        "decision": pa.array(decision.tolist(), pa.string()),
        "reasons": [""] * n,
        "latency_seconds": np.full(n, 0.002),
        "cpu_seconds": np.full(n, 0.001),
    }
    return pa.table(columns)


def record_outcomes(root: Path, rows: pa.Table, truth: Any, every: int = 1) -> OutcomeStore:
    """Report ground truth ``truth`` (one per row) for every ``every``-th of the toy's
    logged ``rows``, by request id and user, to the outcome store under ``root``."""
    store = OutcomeStore(root / "outcomes")
    ids, users = rows["__request_id"].to_pylist(), rows["user_id"].to_pylist()
    for i in range(0, rows.num_rows, every):
        store.record(ids[i], entity_keys={"user_id": users[i]}, event_time=None,
                     label=float(truth[i]))  # fmt: skip
    return store
