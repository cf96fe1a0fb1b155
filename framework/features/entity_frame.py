"""The entity frame of a training set: read, checked, and normalised in DuckDB.

It owns what parity accepts as entity rows: a pandas DataFrame, a pyarrow
Table or a Parquet file; the timestamp column by Feast's rule
(``event_timestamp``, else the only timestamp column); timestamps as UTC
(naive means UTC) at microsecond precision; every join key and request-data
column present. The result is the DuckDB table ``entities`` with a row index
column (:data:`ROW`) that keeps the input order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from framework.errors import ConfigError, DataError

#: The row-index column added to the entity frame.
ROW = "__parity_row"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Entities:
    columns: list[str]
    timestamp: str
    rows: int


def register_entities(
    con: duckdb.DuckDBPyConnection,
    entity_df: Any,
    join_keys: dict[str, list[str]],
    request_data: dict[str, list[str]],
) -> Entities:
    """Register the entity frame as view ``entities`` with a row index and UTC timestamps."""
    _register_input(con, entity_df)
    described = con.execute("DESCRIBE SELECT * FROM entity_input").fetchall()
    types = {name: str(kind) for name, kind, *_ in described}
    columns = [name for name in types if name != ROW]
    (rows,) = con.execute("SELECT count(*) FROM entity_input").fetchone() or (0,)
    if rows == 0:
        raise DataError("The entity frame is empty: there is nothing to join features to.")

    timestamp = timestamp_column(types, columns)
    kind = types[timestamp]
    if not (kind.startswith("TIMESTAMP") or kind in ("DATE", "VARCHAR")):
        raise DataError(
            f"The entity timestamp column {timestamp!r} has type {kind}, which cannot be "
            "compared with feature timestamps; use a timestamp (naive means UTC) or a date."
        )
    _check_columns(types, columns, join_keys, request_data)
    check_microseconds(entity_df, timestamp)
    _create_entities(con, columns, timestamp)
    return Entities(columns=columns, timestamp=timestamp, rows=int(rows))


def _register_input(con: duckdb.DuckDBPyConnection, entity_df: Any) -> None:
    """The entity frame as view ``entity_input``, with the row index :data:`ROW`."""
    if isinstance(entity_df, str | os.PathLike):
        path = str(entity_df).replace("'", "''")
        if not os.path.exists(entity_df):
            raise DataError(f"The entity file {entity_df} does not exist.")
        try:
            con.execute(
                f"CREATE VIEW entity_input AS SELECT * EXCLUDE (file_row_number), "
                f"file_row_number AS {ROW} FROM read_parquet('{path}', file_row_number = true)"
            )
        except duckdb.Error as exc:
            raise DataError(f"Cannot read the entity file {entity_df}: {exc}") from exc
        return
    if isinstance(entity_df, pd.DataFrame):
        table = pa.Table.from_pandas(entity_df, preserve_index=False)
    elif isinstance(entity_df, pa.Table):
        table = entity_df
    else:
        raise ConfigError(
            "The 'entity_df' parameter must be a pandas DataFrame, a pyarrow Table or a "
            f"Parquet path. Got {type(entity_df).__name__}."
        )
    if ROW in table.column_names:
        raise DataError(f"The entity frame may not have a column named {ROW!r}.")
    table = table.append_column(ROW, pa.array(range(table.num_rows), pa.int64()))
    con.register("entity_arrow", table)
    con.execute("CREATE VIEW entity_input AS SELECT * FROM entity_arrow")


def _check_columns(
    types: dict[str, str],
    columns: list[str],
    join_keys: dict[str, list[str]],
    request_data: dict[str, list[str]],
) -> None:
    """Every join key and request-data field the views need is a column."""
    for view, keys in join_keys.items():
        missing = [k for k in keys if k not in types]
        if missing:
            raise DataError(
                f"The entity frame has no join-key column {missing[0]!r}, needed by feature "
                f"view {view!r} (entity frame columns: {', '.join(columns)})."
            )
    for odfv, names in request_data.items():
        for name in names:
            if name not in types:
                raise DataError(
                    f"The entity frame has no column {name!r}: it is request data of the "
                    f"on-demand feature view {odfv!r}."
                )


def _create_entities(con: duckdb.DuckDBPyConnection, columns: list[str], timestamp: str) -> None:
    """Table ``entities``: the input with its timestamp as TIMESTAMPTZ, none missing."""
    ts = _q(timestamp)
    select = [f"CAST({ts} AS TIMESTAMPTZ) AS {ts}" if c == timestamp else _q(c) for c in columns]
    try:
        con.execute(f"CREATE TABLE entities AS SELECT {', '.join(select)}, {ROW} FROM entity_input")
    except duckdb.Error as exc:
        raise DataError(
            f"The entity timestamp column {timestamp!r} holds values that are not "
            f"timestamps: {' '.join(str(exc).split())}"
        ) from exc
    (missing_at,) = con.execute(
        f"SELECT min({ROW}) FROM entities WHERE {ts} IS NULL"
    ).fetchone() or (None,)
    if missing_at is not None:
        # A row without a time has no point in time to join at (DuckDB's joins would still
        # match it on the keys alone): refused, not guessed.
        raise DataError(
            f"The entity timestamp column {timestamp!r} is missing (null) in row "
            f"{missing_at}: every entity row needs the time its features are wanted at."
        )


def check_microseconds(entity_df: Any, column: str) -> None:
    """Refuse entity timestamps finer than a microsecond, as Feast does.

    Feature timestamps are microseconds; casting a nanosecond entity time would
    silently move it (truncation) across a TTL or event-time boundary. Nanosecond
    columns whose values are whole microseconds (pandas' default unit) are
    accepted: the cast to microseconds is exact. Missing times (NaT) are not
    sub-microsecond values.
    """
    if isinstance(entity_df, pd.DataFrame):
        values = entity_df[column]
        if not pd.api.types.is_datetime64_any_dtype(values):
            return
        times = values.to_numpy(dtype="datetime64[ns]").view("i8")
        chunks: Iterator[np.ndarray] = iter([np.where(values.isna().to_numpy(), 0, times)])
    elif isinstance(entity_df, pa.Table):
        arr = entity_df.column(column)
        if not (pa.types.is_timestamp(arr.type) and arr.type.unit == "ns"):
            return
        chunks = iter([arr.cast(pa.int64()).fill_null(0).to_numpy()])
    else:
        # A Parquet file or a folder of them (the same inputs DuckDB's read_parquet takes).
        dataset = pads.dataset(entity_df, format="parquet")
        kind = dataset.schema.field(column).type
        if not (pa.types.is_timestamp(kind) and kind.unit == "ns"):
            return
        chunks = (
            b.column(0).cast(pa.int64()).fill_null(0).to_numpy()
            for b in dataset.to_batches(columns=[column], batch_size=1_000_000)
        )
    offset = 0
    for ns in chunks:
        bad = np.flatnonzero(ns % 1000 != 0)
        if len(bad):
            raise DataError(
                f"The entity timestamp column {column!r} has values finer than a microsecond "
                f"(row {offset + int(bad[0])}: {pd.Timestamp(int(ns[bad[0]]), tz='UTC')}); "
                "feature timestamps are microseconds, so round the entity times first."
            )
        offset += len(ns)


def timestamp_column(types: dict[str, str], columns: list[str]) -> str:
    """Feast's rule: ``event_timestamp`` if present, else the only timestamp column."""
    if "event_timestamp" in types:
        return "event_timestamp"
    candidates = [c for c in columns if types[c].startswith("TIMESTAMP") or types[c] == "DATE"]
    if len(candidates) == 1:
        return candidates[0]
    raise DataError(
        "The entity frame needs an 'event_timestamp' column (or exactly one timestamp "
        f"column); it has {', '.join(f'{c} ({types[c]})' for c in columns)}."
    )
