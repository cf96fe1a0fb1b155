"""The prediction log's rows: one per answered row, in Feast's feature-logging layout.

Built here, appended by :mod:`serving.log.writer`; the layout is
:mod:`framework.logs.layout`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from framework.features.online import PRESENT, OnlineVectors
from framework.logs import layout
from framework.models.spec import Task
from serving.dataplane.messages import PredictInput, PredictionOut
from serving.dataplane.versions import LoadedModel


def log_table(
    loaded: LoadedModel,
    request: PredictInput | None,
    vectors: OnlineVectors,
    outs: list[PredictionOut],
    received: float,
    latency: float,
    cpu: float,
    role: str = "primary",
) -> pa.Table:
    """One row per prediction, in Feast's feature-logging layout where it fits:
    ``__request_id``, ``__timestamp``, ``__log_timestamp``, ``__log_date``, and per
    feature the value, ``<feature>__timestamp`` and ``<feature>__status``."""
    n = len(outs)
    now = datetime.now(UTC)
    ts_type = pa.timestamp("us", tz="UTC")
    cols: dict[str, pa.Array] = {
        layout.REQUEST_ID: pa.array([o.request_id for o in outs], pa.string()),
        layout.ROW_INDEX: pa.array([o.row_index for o in outs], pa.int32()),
        layout.TIMESTAMP: pa.array([int(received * 1e6)] * n, ts_type),
        layout.LOG_TIMESTAMP: pa.array([now] * n, ts_type),
        layout.LOG_DATE: pa.array([now.date()] * n, pa.date32()),
        "model_name": pa.array([o.model_name for o in outs], pa.string()),
        layout.MODEL_VERSION: pa.array([o.model_version for o in outs], pa.string()),
        "role": pa.array([role] * n, pa.string()),
    }
    table = vectors.table
    for name in (*loaded.key_types, *loaded.request_types):
        if name in table.column_names:  # absent when the client sent the features itself
            cols[name] = table.column(name).combine_chunks()
    # Each feature's times and statuses: one Arrow array for all features, sliced (a pair
    # of arrays per feature cost ~0.2 ms a request, most of this table's cost).
    times = pa.array(
        [t for f in loaded.fields for t in vectors.event_time_us.get(f.name, [0] * n)], ts_type
    )
    states = pa.array(
        [s for f in loaded.fields for s in vectors.status.get(f.name, [PRESENT] * n)], pa.string()
    )
    for i, f in enumerate(loaded.fields):
        cols[f.name] = table.column(f.name).combine_chunks()
        cols[f"{f.name}__timestamp"] = times.slice(i * n, n)
        cols[f"{f.name}__status"] = states.slice(i * n, n)
    cols["score"] = pa.array([o.score for o in outs], pa.float64())
    cols["label"] = pa.array([o.label for o in outs], pa.string())
    # A regression has no confidence: logged as null, not as a number that could drift.
    regression = loaded.task is Task.REGRESSION
    cols["confidence"] = pa.array(
        [None if regression else o.confidence for o in outs], pa.float64()
    )
    cols["decision"] = pa.array([o.decision for o in outs], pa.string())
    cols["reasons"] = pa.array(["; ".join(o.reasons) for o in outs], pa.string())
    cols["latency_seconds"] = pa.array([latency] * n, pa.float64())
    # Each row's share of the request's CPU time: summed over rows, the CPU spent.
    cols["cpu_seconds"] = pa.array([cpu / n] * n, pa.float64())
    return pa.table(cols)
