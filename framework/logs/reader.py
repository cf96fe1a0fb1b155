"""Reading the prediction log back: a DuckDB view over its Parquet files.

:func:`open_log` gives a connection with a view ``log`` over one model's whole
files (:func:`framework.logs.layout.parts_pattern`), selected by request time,
without pulling them into pandas; monitoring, skew, feedback and retraining
all query that view. :func:`read_log` reads every row into Arrow (tests, the
demo, the soak benchmark). Files being written have hidden temporary names that
no pattern here matches, so a reader sees whole files only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from framework.duck import connect
from framework.errors import ConfigError, DataError
from framework.logs import layout


def sql_name(name: str) -> str:
    """``name`` quoted as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'


def sql_literal(text: str) -> str:
    """``text`` quoted as a DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def utc(value: datetime) -> datetime:
    """``value`` in UTC (a naive time is taken as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def log_models(log_root: Path) -> list[str]:
    """Models that have rows in the prediction log."""
    root = Path(log_root)
    prefix = f"{layout.MODEL_PARTITION}="
    names = (p.name.removeprefix(prefix) for p in root.glob(prefix + "*"))
    return sorted(name for name in names if any(root.glob(layout.parts_pattern(name))))


def pick_model(log_root: Path, model: str | None) -> str:
    """``model``, or the log's only model when it is not given."""
    if model:
        return model
    models = log_models(log_root)
    if not models:
        raise DataError(f"The prediction log {log_root} has no rows.")
    if len(models) > 1:
        raise ConfigError(f"--model: the log holds several models ({', '.join(models)}); pick one.")
    return models[0]


def _read_parquet(pattern: str) -> str:
    return (
        f"read_parquet({sql_literal(pattern)}, hive_partitioning = true, "
        f"union_by_name = true, hive_types = {layout.HIVE_TYPES_SQL})"
    )


def open_log(
    log_root: Path,
    model: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    request_id_prefix: str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with a view ``log``: the model's logged rows in
    ``[since, until)`` by request time (``__timestamp``)."""
    if not any(Path(log_root).glob(layout.parts_pattern(model))):
        raise DataError(f"The prediction log {log_root} has no rows for model {model!r}.")
    con = con or connect()
    stamp, date = layout.TIMESTAMP, layout.DATE_PARTITION
    where = ["TRUE"]
    if since is not None:
        where.append(f"{stamp} >= {sql_literal(utc(since).isoformat())}::TIMESTAMPTZ")
        # Rows are logged after they are requested: no row of the window is in an earlier
        # date partition, so DuckDB skips those files.
        where.append(f"{date} >= {sql_literal(utc(since).date().isoformat())}::DATE")
    if until is not None:
        where.append(f"{stamp} < {sql_literal(utc(until).isoformat())}::TIMESTAMPTZ")
    if request_id_prefix:
        where.append(f"starts_with({layout.REQUEST_ID}, {sql_literal(request_id_prefix)})")
    pattern = str(Path(log_root) / layout.parts_pattern(model))
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW log AS SELECT * FROM {_read_parquet(pattern)} "
        f"WHERE {' AND '.join(where)}"
    )
    return con


def log_columns(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The columns of the view ``log``."""
    return {row[0] for row in con.execute("DESCRIBE log").fetchall()}


def log_versions(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The model versions in the view ``log``, in version order."""
    column = layout.MODEL_VERSION
    rows = con.execute(
        f"SELECT DISTINCT {column} FROM log ORDER BY try_cast({column} AS INT)"
    ).fetchall()
    return [str(row[0]) for row in rows]


def read_log(root: Path, model: str | None = None) -> pa.Table:
    """Every logged row under ``root`` (one model's, if given), with ``model`` and ``date``.

    Files of different schemas are unioned by column name (missing values are
    null); files being written (hidden ``.tmp`` names) are not read.
    """
    if model is not None:
        layout.check_model_name(model)
    pattern = layout.parts_pattern(model or "*")
    if not any(Path(root).glob(pattern)):
        return pa.table({})
    con = connect()
    try:
        query = f"SELECT * FROM {_read_parquet(str(Path(root) / pattern))}"
        return con.execute(query).to_arrow_table()
    finally:
        con.close()
