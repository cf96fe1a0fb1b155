"""Labels as entities, and time-based splits.

A supervised training set starts from labels: each row says, for some entity
keys, what happened (the label) and when the prediction would have been made
(the event time). :func:`entity_frame_from_labels` turns such a table into the
entity frame :func:`framework.build_training_set` takes, using only labels that
had *arrived* by an ``as_of`` time when the table records arrival times.

:func:`time_split` cuts a frame into consecutive train / validation / test
periods. A timestamp never appears in two parts, so no part sees the future of
another; it is never a random split.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from framework.errors import ConfigError, DataError


def _as_table(frame: Any, what: str) -> pa.Table:
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pd.DataFrame):
        return pa.Table.from_pandas(frame, preserve_index=False)
    raise ConfigError(
        f"The {what!r} parameter must be a pandas DataFrame or a pyarrow Table. "
        f"Got {type(frame).__name__}."
    )


def _utc(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    if not pa.types.is_timestamp(column.type):
        raise DataError(f"The column {name!r} must hold timestamps. Got {column.type}.")
    if column.type.tz is None:
        return column.cast(pa.timestamp(column.type.unit, tz="UTC"))
    return column


def entity_frame_from_labels(
    labels: Any,
    *,
    keys: Sequence[str],
    label: str,
    event_timestamp: str,
    label_timestamp: str | None = None,
    as_of: datetime | None = None,
    offset: timedelta = timedelta(0),
    extra: Sequence[str] = (),
) -> pa.Table:
    """An entity frame (keys, ``event_timestamp``, label, extras) from a label table.

    Parameters
    ----------
    labels
        The label table.
    keys
        Entity join-key columns.
    label
        The label column.
    event_timestamp
        When the prediction is made; becomes ``event_timestamp``.
    label_timestamp, as_of
        When set, only labels with ``label_timestamp <= as_of`` are kept: a
        label that had not arrived by ``as_of`` cannot be trained on.
    offset
        Added to the event time, e.g. ``-timedelta(microseconds=1)`` to join
        the features known just *before* the event.
    extra
        Other columns to carry along (request data for on-demand features).

    Examples
    --------
    >>> import pandas as pd
    >>> labels = pd.DataFrame({"user_id": [1, 2], "is_fraud": [0, 1],
    ...     "ts": pd.to_datetime(["2026-01-02", "2026-01-03"], utc=True),
    ...     "arrived": pd.to_datetime(["2026-02-01", "2026-03-01"], utc=True)})
    >>> entity_frame_from_labels(labels, keys=["user_id"], label="is_fraud",
    ...     event_timestamp="ts", label_timestamp="arrived",
    ...     as_of=pd.Timestamp("2026-02-15", tz="UTC")).num_rows
    1
    """
    table = _as_table(labels, "labels")
    needed = [*keys, label, event_timestamp, *extra]
    if label_timestamp is not None:
        needed.append(label_timestamp)
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise DataError(
            f"The label table has no column {missing[0]!r} "
            f"(it has: {', '.join(table.column_names)})."
        )
    if (as_of is None) != (label_timestamp is None):
        raise ConfigError("'label_timestamp' and 'as_of' go together: give both or neither.")
    if label_timestamp is not None and as_of is not None:
        # Compared in the column's own unit: nanosecond arrival times stay exact.
        arrived = _utc(table[label_timestamp], label_timestamp)
        limit = _utc_units(as_of, arrived.type.unit)
        table = table.filter(pc.less_equal(arrived.cast(pa.int64()), limit))
    ts = _utc(table[event_timestamp], event_timestamp)
    if offset:
        ts = pc.add(ts, pa.scalar(offset, pa.duration(ts.type.unit)))
    columns = {k: table[k] for k in keys}
    columns["event_timestamp"] = ts
    columns[label] = table[label]
    for name in extra:
        columns[name] = table[name]
    return pa.table(columns)


def time_split(
    frame: Any,
    *,
    timestamp: str = "event_timestamp",
    fractions: Sequence[float] | None = None,
    cutoffs: Sequence[datetime] | None = None,
) -> list[pa.Table]:
    """Split ``frame`` into consecutive periods: ``[start, c1), [c1, c2), ..., [ck, end]``.

    Give either explicit ``cutoffs`` or ``fractions`` of the rows (e.g. ``(0.7,
    0.15, 0.15)``); with fractions, cutoffs are the timestamps at those
    quantiles, so rows with equal timestamps always land in the same part and
    part sizes are approximate. Row order within a part is kept.
    """
    table = _as_table(frame, "frame")
    if timestamp not in table.column_names:
        raise DataError(f"The frame has no timestamp column {timestamp!r}.")
    ts = _utc(table[timestamp], timestamp)
    if ts.null_count:
        raise DataError(f"The timestamp column {timestamp!r} has {ts.null_count} null values.")
    # Integers in the column's own unit (nanoseconds stay exact); cutoffs rounded up to
    # it, so ``t < cutoff`` holds exactly when ``t < bound``.
    unit = ts.type.unit
    times = ts.cast(pa.int64()).to_numpy()
    if (fractions is None) == (cutoffs is None):
        raise ConfigError("Give exactly one of 'fractions' and 'cutoffs'.")
    if fractions is not None:
        if len(fractions) < 2 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
            raise ConfigError(
                "The 'fractions' must be two or more positive numbers summing to 1. "
                f"Got {list(fractions)}."
            )
        if table.num_rows == 0:
            raise DataError("Cannot split an empty frame.")
        ordered = np.sort(times)
        positions = np.round(np.cumsum(fractions[:-1]) * len(ordered)).astype(int)
        bounds = ordered[np.minimum(positions, len(ordered) - 1)]
    else:
        assert cutoffs is not None
        bounds = np.array([_utc_units(c, unit, up=True) for c in cutoffs], dtype=np.int64)
        if np.any(np.diff(bounds) < 0):
            raise ConfigError(f"The 'cutoffs' must be increasing. Got {list(cutoffs)}.")
    # Part i holds bounds[i-1] <= t < bounds[i]: equal timestamps never straddle a cut.
    part = np.searchsorted(bounds, times, side="right")
    return [table.filter(pa.array(part == i)) for i in range(len(bounds) + 1)]


_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def _utc_units(value: datetime, unit: str, *, up: bool = False) -> int:
    """``value`` (naive means UTC) in whole ``unit``s since the epoch, rounded down
    (``up``: rounded up)."""
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    per = _PER_UNIT[unit]
    return int(-(-stamp.value // per) if up else stamp.value // per)
