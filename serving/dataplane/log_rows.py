"""The prediction log's rows: one per answered row, in Feast's feature-logging layout.

Built here as :class:`~serving.log.rows.LogRows` (Python values and their schema:
the Arrow table is made on the log's writer thread, many requests at a time),
appended by :mod:`serving.log.writer`; the layout is :mod:`framework.logs.layout`.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from framework.features.online import PRESENT, OnlineVectors
from framework.logs import layout
from framework.logs.rows import LogRows
from framework.models.spec import Task
from serving.dataplane.messages import PredictInput, PredictionOut
from serving.dataplane.versions import LoadedModel

_TIME = pa.timestamp("us", tz="UTC")
_DAY_US = 86_400 * 1_000_000


def log_rows(
    loaded: LoadedModel,
    request: PredictInput | None,
    vectors: OnlineVectors,
    outs: list[PredictionOut],
    received: list[float],
    latency: list[float],
    cpu: list[float],
    role: str = "primary",
) -> LogRows:
    """One row per prediction, in Feast's feature-logging layout where it fits:
    ``__request_id``, ``__timestamp``, ``__log_timestamp``, ``__log_date``, and per
    feature the value, ``<feature>__timestamp`` and ``<feature>__status``. Per row:
    its request's arrival (seconds since the epoch), latency and share of its CPU."""
    n = len(outs)
    now_us = time.time_ns() // 1_000
    present = set(vectors.column_names)
    # Absent when the client sent the features itself (no lookup).
    inputs = tuple(k for k in (*loaded.key_types, *loaded.request_types) if k in present)
    schema, key = _schema(loaded, request is not None, inputs, vectors)
    columns: list[list[Any]] = [
        [o.request_id for o in outs],
        [o.row_index for o in outs],
        [int(t * 1e6) for t in received],
        [now_us] * n,
        [now_us // _DAY_US] * n,
        [o.model_name for o in outs],
        [o.model_version for o in outs],
        [role] * n,
    ]
    columns += [vectors.values(name) for name in inputs]
    for f in loaded.fields:
        columns.append(vectors.values(f.name))
        columns.append(vectors.event_time_us.get(f.name) or [0] * n)
        columns.append(vectors.status.get(f.name) or [PRESENT] * n)
    # A regression has no confidence: logged as null, not as a number that could drift.
    regression = loaded.task is Task.REGRESSION
    columns += [
        [o.score for o in outs],
        [o.label for o in outs],
        [None if regression else o.confidence for o in outs],
        [o.decision for o in outs],
        ["; ".join(o.reasons) for o in outs],
        latency,
        cpu,
    ]
    return LogRows(schema, columns, key)


def _schema(
    loaded: LoadedModel, looked_up: bool, inputs: tuple[str, ...], vectors: OnlineVectors
) -> tuple[pa.Schema, bytes]:
    """The log's schema for this version's rows (worked out once per shape): each input
    and feature of the type Feast declares for it (an on-demand feature: its view's)."""
    cache_key = (looked_up, inputs)
    cached = loaded.log_schemas.get(cache_key)
    if cached is None:

        def kind(name: str) -> pa.DataType:
            found = vectors.types.get(name) or loaded.online.declared.get(name)
            return found if found is not None else pa.null()

        fields = [
            pa.field(layout.REQUEST_ID, pa.string()),
            pa.field(layout.ROW_INDEX, pa.int32()),
            pa.field(layout.TIMESTAMP, _TIME),
            pa.field(layout.LOG_TIMESTAMP, _TIME),
            pa.field(layout.LOG_DATE, pa.date32()),
            pa.field("model_name", pa.string()),
            pa.field(layout.MODEL_VERSION, pa.string()),
            pa.field("role", pa.string()),
        ]
        fields += [pa.field(name, kind(name)) for name in inputs]
        for f in loaded.fields:
            fields += [
                pa.field(f.name, kind(f.name)),
                pa.field(f"{f.name}__timestamp", _TIME),
                pa.field(f"{f.name}__status", pa.string()),
            ]
        fields += [
            pa.field("score", pa.float64()),
            pa.field("label", pa.string()),
            pa.field("confidence", pa.float64()),
            pa.field("decision", pa.string()),
            pa.field("reasons", pa.string()),
            pa.field("latency_seconds", pa.float64()),
            pa.field("cpu_seconds", pa.float64()),
        ]
        schema = pa.schema(fields)
        cached = loaded.log_schemas[cache_key] = (schema, schema.serialize().to_pybytes())
    return cached
