"""A model spec's labels: the label query, the joined feedback, the training window,
and the checks a label must pass before any join.

The label query runs in DuckDB with relative file paths resolved against the
repository (:mod:`framework.features.sql_paths`); with ``labels.feedback`` the
outcomes joined to earlier predictions (:func:`framework.logs.outcomes.label_source`)
are added where the query has no row for the same keys and event time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from framework.duck import connect
from framework.errors import DataError
from framework.models.labels import entity_frame_from_labels
from framework.models.spec import ModelSpec, Task


def load_labels(spec: ModelSpec, data: Path, repo: Path | None = None) -> pa.Table:
    """Run the spec's label query in DuckDB. Its relative file paths resolve against
    ``repo``, else (not found there) ``data``: never the working directory
    (:mod:`framework.features.sql_paths`)."""
    from framework.features.sql_paths import resolve_sql_paths

    bases = [p for p in (repo, data) if p is not None]
    query = resolve_sql_paths(spec.labels.query, bases)
    con = connect()
    try:
        con.execute("SET file_search_path = ?", [",".join(str(p.resolve()) for p in bases)])
        try:
            table = con.execute(query).to_arrow_table()
        except Exception as exc:
            raise DataError(f"labels.query failed: {' '.join(str(exc).split())}") from exc
    finally:
        con.close()
    if spec.labels.feedback:
        table = _with_feedback(spec, data, table)
    if table.num_rows == 0:
        raise DataError("labels.query returned no rows.")
    return table


def _with_feedback(spec: ModelSpec, data: Path, table: pa.Table) -> pa.Table:
    """``table`` plus the joined outcomes of :mod:`framework.loop.feedback` it has no row for
    (same keys and event time), in its column names and types."""
    from framework.logs.outcomes import label_source

    path = label_source(data, spec.name)
    if not path.is_file():
        return table
    lab = spec.labels
    names = {"label": lab.column, "event_timestamp": lab.event_timestamp}
    if lab.label_timestamp:
        names["label_timestamp"] = lab.label_timestamp
    fed = pq.read_table(path)
    fed = fed.rename_columns([names.get(c, c) for c in fed.column_names])
    missing = [c for c in table.column_names if c not in fed.column_names]
    if missing:
        raise DataError(
            f"labels.feedback: {path} has no column {missing[0]!r} that labels.query returns."
        )
    fed = fed.select(table.column_names).cast(table.schema)
    con = connect()
    try:
        con.register("q", table)
        con.register("f", fed)
        on = " AND ".join(f'f."{c}" = q."{c}"' for c in [*lab.keys, lab.event_timestamp])
        extra = (
            con.execute(f"SELECT f.* FROM f ANTI JOIN q ON {on}")
            .to_arrow_table()
            .cast(table.schema)
        )
    finally:
        con.close()
    return pa.concat_tables([table, extra])


def _utc(value: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def entity_frame(
    spec: ModelSpec,
    labels: pa.Table,
    *,
    as_of: datetime | None,
    start: datetime | None,
    end: datetime | None,
) -> tuple[pa.Table, dict[str, Any]]:
    """Labels known by ``as_of`` with events in the window, as an entity frame."""
    lab = spec.labels
    used = {*lab.keys, lab.column, lab.event_timestamp, lab.label_timestamp}
    extra = [c for c in labels.column_names if c not in used]
    if as_of is None:
        column = lab.label_timestamp or lab.event_timestamp
        if column not in labels.column_names:
            raise DataError(f"labels.query returned no column {column!r}.")
        as_of = pc.max(labels.column(column)).as_py()
    frame = entity_frame_from_labels(
        labels,
        keys=lab.keys,
        label=lab.column,
        event_timestamp=lab.event_timestamp,
        label_timestamp=lab.label_timestamp,
        as_of=as_of if lab.label_timestamp else None,
        offset=timedelta(microseconds=lab.offset_microseconds),
        extra=extra,
    )
    if not lab.label_timestamp:
        frame = frame.filter(pc.less_equal(frame["event_timestamp"], pa.scalar(_utc(as_of))))
    end = end or spec.window.end
    start = start or spec.window.start
    if start is None and spec.window.lookback_days and frame.num_rows:
        last = _utc(end) if end else pd.Timestamp(pc.max(frame["event_timestamp"]).as_py())
        start = (last - pd.Timedelta(days=spec.window.lookback_days)).to_pydatetime()
    ts = frame["event_timestamp"]
    if start is not None:
        frame = frame.filter(pc.greater_equal(ts, pa.scalar(_utc(start))))
        ts = frame["event_timestamp"]
    if end is not None:
        frame = frame.filter(pc.less(ts, pa.scalar(_utc(end))))
    window = {
        "as_of": str(_utc(as_of)),
        "start": str(_utc(start)) if start else None,
        "end": str(_utc(end)) if end else None,
    }
    if frame.num_rows:
        window["first_event"] = str(pc.min(frame["event_timestamp"]).as_py())
        window["last_event"] = str(pc.max(frame["event_timestamp"]).as_py())
    return frame, window


def check_labels(table: pa.Table, column: str, task: Task) -> None:
    """Refuse, before the join, a label the task cannot learn: nulls; for classification
    anything but two classes 0/1 or true/false; for regression anything but numbers."""
    col = table.column(column)
    if col.null_count:
        raise DataError(f"The label column {column!r} has {col.null_count} null values.")
    kind = col.type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
    if task is Task.REGRESSION:
        if not numeric:
            raise DataError(
                f"A regression label must be a number; {column!r} has type {kind}. Cast it "
                "in labels.query."
            )
        return
    values = pc.unique(col).to_pylist()
    if numeric and all(v in (0, 1) for v in values):
        return
    shown = ", ".join(repr(v) for v in sorted(values)[:5])
    more = f" and {len(values) - 5} more" if len(values) > 5 else ""
    raise DataError(
        f"The label column {column!r} has the values {shown}{more}: parity's classification "
        'is binary (0/1 or true/false); use task = "regression" for a numeric target, or '
        "a binary label (one class against the rest) in labels.query."
    )


def labels_array(table: pa.Table, column: str, task: Task) -> np.ndarray:
    col = table.column(column)
    if col.null_count:
        raise DataError(f"The label column {column!r} has {col.null_count} null values.")
    y = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if task is Task.CLASSIFICATION:
        values = set(np.unique(y).tolist())
        if not values <= {0.0, 1.0}:
            raise DataError(
                f"A classification label must be 0/1 or boolean; {column!r} has "
                f"{sorted(values)[:5]}."
            )
        return np.asarray(y, dtype=np.int64)
    return np.asarray(y, dtype=np.float64)
