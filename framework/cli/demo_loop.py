"""The demo's closing loop: ground truth -> retraining -> hot reload -> recovery.

After ``parity demo`` has replayed the clean and the drifted period through the
running server and monitoring has flagged the drift, :func:`close_the_loop`:

1. **feedback** — writes the drifted period's ground truth (the sample's labels,
   by request id and row, observed when each label arrived) to an outcome file
   and ingests it as ``parity feedback`` does; the champion's live quality on
   the drifted period comes from the join;
2. **retrain** — ``parity retrain --reason drift --promote``: the drift alert on
   those requests triggers it; a challenger trained on the labels known by the
   end of the sample is gated against the champion on the same latest holdout
   and promoted if it passes;
3. **reload** — the running server picks the new champion up without a restart;
   the time until its first answer from the new version is measured;
4. **after** — the latest transactions of the challenger's holdout (which neither
   version trained on) are replayed through the server twice, to the old version
   by number and to the new champion, their outcomes ingested, and the live
   quality of both versions on the same transactions compared.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from framework.logs.outcomes import OutcomeStore
from framework.loop.feedback import FeedbackReport, feedback_report, ingest
from framework.models.manifest import Manifest

KEYS = ["user_id", "merchant_id"]


def outcome_file(data: Path, name: str, entities: pa.Table, prefix: str, rows: int) -> Path:
    """The sample's labels of ``entities`` (replayed ``rows`` a request, ids ``prefix`` + n)
    as an outcome file: request_id, row_index, label, observed_at."""
    con = duckdb.connect()
    try:
        con.register("e", entities.select(["transaction_id"]))
        order = con.execute(
            """SELECT l.is_fraud::DOUBLE AS label, l.label_timestamp AS observed_at
               FROM (SELECT transaction_id, row_number() OVER () - 1 AS i FROM e) AS e
               JOIN read_parquet(?) AS l USING (transaction_id) ORDER BY e.i""",
            [str(data / "raw" / "labels.parquet")],
        ).to_arrow_table()
    finally:
        con.close()
    n = order.num_rows
    table = pa.table(
        {
            "request_id": [f"{prefix}{i // rows}" for i in range(n)],
            "row_index": pa.array([i % rows for i in range(n)], pa.int64()),
            "label": order.column("label"),
            "observed_at": order.column("observed_at"),
        }
    )
    path = data / "feedback" / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _quality(report: FeedbackReport, version: int | None) -> dict[str, Any]:
    v = next((v for v in report.to_dict()["versions"] if v["version"] == str(version)), None)
    live = (v or {}).get("live") or {}
    return {
        "labelled": (v or {}).get("labelled", 0),
        **{k: live.get(k) for k in ("roc_auc", "pr_auc", "log_loss", "brier")},
    }


def close_the_loop(
    repo: Path,
    store: Any,
    registry: Any,
    target: str,
    data: Path,
    periods: dict[str, dict[str, Any]],
    champion: int,
    *,
    replay: Callable[..., None],
    rows_per_request: int,
    flush: Callable[[], None],
    step: Callable[[str, str, float], None],
) -> dict[str, Any]:
    """Steps 1-4 of the module docstring; their numbers."""
    model = "fraud_model"
    out: dict[str, Any] = {}
    drift = periods["drift"]
    out["feedback"] = _feedback(data, registry, drift, champion, rows_per_request, step)

    result = _retrain(repo, store, registry, data, drift, champion, step)
    out["retrain"] = result.to_dict()
    if not result.passed:
        return out

    t = time.perf_counter()
    seconds = _reload_seconds(target, model, result.challenger, data)
    out["reload_seconds"] = seconds
    step("reload", f"the running server answered with {model}:{result.challenger} "
         f"{seconds * 1000:.0f} ms after the promotion, without a restart", t)  # fmt: skip

    out["after"] = _after(
        store, registry, target, data, drift["rows"], champion, result,
        replay=replay, rows_per_request=rows_per_request, flush=flush, step=step,
    )  # fmt: skip
    return out


def _feedback(
    data: Path,
    registry: Any,
    drift: dict[str, Any],
    champion: int,
    rows_per_request: int,
    step: Callable[[str, str, float], None],
) -> dict[str, Any]:
    """Step 1: the drifted period's ground truth ingested; the champion's live quality."""
    model = "fraud_model"
    t = time.perf_counter()
    path = outcome_file(data, "drift", drift["entities"], drift["request_prefix"],
                        rows_per_request)  # fmt: skip
    stored = ingest(path, OutcomeStore(data / "outcomes"), KEYS)
    report = feedback_report(data / "predictions", data / "outcomes", registry, model, data=data,
                             request_id_prefix=drift["request_prefix"])  # fmt: skip
    before = _quality(report, champion)
    step("feedback", f"{stored:,} outcomes for the later period ({path.name}): "
         f"{model}:{champion} live ROC-AUC {_f(before['roc_auc'])}, PR-AUC "
         f"{_f(before['pr_auc'])} on {before['labelled']:,} labelled predictions", t)  # fmt: skip
    return {"stored": stored, "counts": dict(report.counts), "champion": before}


def _retrain(
    repo: Path,
    store: Any,
    registry: Any,
    data: Path,
    drift: dict[str, Any],
    champion: int,
    step: Callable[[str, str, float], None],
) -> Any:
    """Step 2: ``parity retrain --reason drift --promote`` on the drift alert."""
    from framework.loop.retrain import check_trigger, retrain
    from framework.models.spec import find_spec, load_spec

    model = "fraud_model"
    t = time.perf_counter()
    trigger = check_trigger("drift", data / "predictions", registry, model,
                            request_id_prefix=drift["request_prefix"])  # fmt: skip
    spec_path = find_spec(repo, None)
    result = retrain(repo, load_spec(spec_path), store=store, registry=registry, trigger=trigger,
                     spec_path=spec_path, promote_now=True, by="parity demo")  # fmt: skip
    if not result.passed:
        step("retrain", result.message, t)
        return result
    m = result.metrics
    step("retrain", f"triggered by {', '.join(sorted(set(trigger['alerts'])))}; challenger "
         f"{model}:{result.challenger} vs champion {model}:{champion} on the same "
         f"{result.holdout['rows']:,} latest transactions: PR-AUC "
         f"{m['challenger']['pr_auc']:.3f} vs {m['champion']['pr_auc']:.3f}, ROC-AUC "
         f"{m['challenger']['roc_auc']:.3f} vs {m['champion']['roc_auc']:.3f} -> promoted",
         t)  # fmt: skip
    return result


def _after(
    store: Any,
    registry: Any,
    target: str,
    data: Path,
    rows: int,
    champion: int,
    result: Any,
    *,
    replay: Callable[..., None],
    rows_per_request: int,
    flush: Callable[[], None],
    step: Callable[[str, str, float], None],
) -> dict[str, Any]:
    """Step 4: the same latest transactions scored by both versions, outcomes ingested,
    live quality compared."""
    from framework.features.training_set import build_training_set

    model = "fraud_model"
    t = time.perf_counter()
    entities = latest_transactions(data, datetime.fromisoformat(result.holdout["start"]), rows)
    features = build_training_set(store, "fraud_model_v1", entities)
    run = uuid.uuid4().hex[:8]
    prefix = f"demo-after-{run}-"
    manifest = Manifest.read(registry, registry.resolve(f"{model}:{result.challenger}"))
    outcomes = OutcomeStore(data / "outcomes")
    for version, sent in ((champion, str(champion)), (result.challenger, "")):
        replay(target, model, manifest, features, f"{prefix}v{version}-", version=sent)
        path = outcome_file(data, f"after-v{version}", entities, f"{prefix}v{version}-",
                            rows_per_request)  # fmt: skip
        ingest(path, outcomes, KEYS)
    flush()
    report = feedback_report(data / "predictions", data / "outcomes", registry, model,
                             data=data, request_id_prefix=prefix)  # fmt: skip
    old, new = _quality(report, champion), _quality(report, result.challenger)
    step("after", f"the same {entities.num_rows:,} later transactions scored by both "
         f"versions: live PR-AUC {_f(old['pr_auc'])} ({model}:{champion}) -> "
         f"{_f(new['pr_auc'])} ({model}:{result.challenger}), ROC-AUC {_f(old['roc_auc'])} -> "
         f"{_f(new['roc_auc'])}", t)  # fmt: skip
    return {"transactions": entities.num_rows, "old": old, "new": new,
            "old_version": champion, "new_version": result.challenger}  # fmt: skip


def _f(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def _reload_seconds(target: str, model: str, version: int | None, data: Path) -> float:
    """Seconds until the server answers a champion request with ``version``."""
    from serving.grpc.client import PredictionClient

    row = latest_transactions(data, None, 1).to_pylist()[0]
    request = [
        {
            "entity_keys": {k: row[k] for k in KEYS},
            "request_data": {"amount": row["amount"], "hour_of_day": row["hour_of_day"]},
        }
    ]
    started = time.perf_counter()
    with PredictionClient(target) as client:
        while time.perf_counter() - started < 10:
            if client.predict(model, request)[0]["model_version"] == str(version):
                return time.perf_counter() - started
            time.sleep(0.01)
    raise TimeoutError(f"the server did not serve {model}:{version} within 10 s")


def latest_transactions(data: Path, since: datetime | None, n: int) -> pa.Table:
    """The ``n`` latest transactions (from ``since`` on) as entity rows for the point-in-time
    join just before each, with their transaction ids, oldest first."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(
            """SELECT * FROM (
                   SELECT transaction_id, user_id, merchant_id, amount,
                          hour(transaction_timestamp AT TIME ZONE 'UTC')::BIGINT AS hour_of_day,
                          transaction_timestamp - INTERVAL 1 MICROSECOND AS event_timestamp
                   FROM read_parquet(?)
                   WHERE transaction_timestamp >= coalesce(?::TIMESTAMPTZ, '-infinity')
                   ORDER BY transaction_timestamp DESC, transaction_id DESC LIMIT ?)
               ORDER BY event_timestamp, transaction_id""",
            [str(data / "raw" / "transactions.parquet"), since, n],
        ).to_arrow_table()
    finally:
        con.close()
