"""How Spark reads a feature view's offline source.

Feast's Spark offline store reads only ``SparkSource``; a repository written for
the embedded default has ``FileSource`` Parquet. Spark reads both here, so one
repository runs under either profile unchanged:

- ``FileSource`` (Parquet): the files :func:`framework.features.view_sources.local_files`
  finds (single file, glob, folder; relative to the repository, as Feast resolves
  it), or a remote URI (``s3a://...``) as given; a folder is read as a folder, so
  Spark discovers hive partitions as DuckDB does;
- ``SparkSource``: its table, query, or path in its file format.

:func:`scan` gives one source group (:func:`framework.features.view_sources.group_views`)
with the same normalised columns as the DuckDB scan
(:func:`framework.features.view_sources.scan_sql`): ``k{g}_{j}`` join keys,
``__ts``, ``__created`` and ``f{g}_{j}`` features, field mappings applied.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from framework.errors import ConfigError
from framework.features import view_sources
from framework.features.view_sources import View, local_files


def col(name: str) -> Any:
    """A column by its exact name (dots and backticks are not syntax here)."""
    from pyspark.sql import functions as F

    return F.col(col_sql(name))


def col_sql(name: str) -> str:
    """``name`` quoted for Spark SQL."""
    return "`" + name.replace("`", "``") + "`"


# Spark refuses Parquet's nanosecond timestamps (PARQUET_TYPE_ILLEGAL; pandas writes
# them, feast init's sample among others) unless told to read them as longs, which
# parity's sessions are (spark.sql.legacy.parquet.nanosAsLong, framework.spark.session);
# scan() turns them back into timestamps.


def nanosecond_columns(view: View) -> frozenset[str] | None:
    """The columns of ``view``'s local Parquet files that hold nanosecond timestamps
    (read from the first file's schema); None for a source read by name or URI, whose
    long-typed event and created timestamp columns are then taken as nanoseconds (a
    Feast timestamp field is a timestamp, never a number)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    local = [f for f in view.files if os.path.exists(f)]
    if not local:
        return None
    schema = pq.read_schema(local[0])
    return frozenset(
        f.name for f in schema if pa.types.is_timestamp(f.type) and f.type.unit == "ns"
    )


def identify(view: View, repo_path: Path) -> None:
    """Set ``view.files``: its local Parquet files, or one ``spark:`` identity of a
    source Spark reads by name (what groups views reading the same rows)."""
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    source = view.source
    if isinstance(source, SparkSource):
        what = source.table or source.query or source.path
        view.files = [f"spark:{source.file_format or ''}:{what}"]
        return
    files = local_files(view, repo_path)
    if files is None:
        path = getattr(source, "path", "") or ""
        if "://" in path and not path.startswith("file://"):
            view.files = [path]
            return
        raise ConfigError(
            f"Feature view {view.name!r} reads a {type(source).__name__}, which the spark "
            "profile does not read (it reads FileSource Parquet and SparkSource)."
        )
    view.files = files


def sources_of(views: list[View]) -> list[tuple[str, list[str]]]:
    """(view, local files) for the fingerprint; a source read by name has no files."""
    return [(v.name, [f for f in v.files if os.path.exists(f)]) for v in views]


def read(spark: Any, view: View, repo_path: Path) -> Any:
    """The raw rows of ``view``'s source as a Spark DataFrame."""
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    source = view.source
    if isinstance(source, SparkSource):
        if source.table:
            return spark.table(source.table)
        if source.query:
            return spark.sql(source.query)
        return spark.read.format(source.file_format or "parquet").load(source.path)
    path = source.path.removeprefix("file://")
    if "://" not in path:
        path = str(Path(repo_path).resolve() / path) if not os.path.isabs(path) else path
        if not os.path.isdir(path):
            return spark.read.parquet(*view.files)
    return spark.read.parquet(path)


def scan(spark: Any, scan_view: View, g: int, repo_path: Path) -> Any:
    """Group ``g``'s source, normalised: join keys ``k{g}_{j}``, ``__ts`` (UTC),
    ``__created`` (when the view has one) and features ``f{g}_{j}``; rows without a
    key or an event time dropped (no entity row can match them)."""
    from pyspark.sql import functions as F

    raw = read(spark, scan_view, repo_path)
    available = raw.columns
    mapping = dict(scan_view.source.field_mapping or {})
    nanos = nanosecond_columns(scan_view)
    times = {scan_view.timestamp_field, scan_view.created_field}

    def source_column(name: str) -> Any:
        column = view_sources.source_column(scan_view.name, mapping, available, name)
        if (
            (column in nanos)
            if nanos is not None
            else (name in times and raw.schema[column].dataType.typeName() == "long")
        ):
            # Read as nanoseconds since the epoch (see NANOS_AS_LONG); to microseconds
            # truncated toward zero, as DuckDB casts TIMESTAMP_NS.
            return F.timestamp_micros(F.expr(f"{col_sql(column)} div 1000")).alias(column)
        return col(column)

    keys = [source_column(k).alias(f"k{g}_{j}") for j, k in enumerate(scan_view.join_keys)]
    select = [*keys, source_column(scan_view.timestamp_field).cast("timestamp").alias("__ts")]
    if scan_view.created_field:
        select.append(source_column(scan_view.created_field).cast("timestamp").alias("__created"))
    else:
        select.append(F.lit(None).cast("timestamp").alias("__created"))
    select += [source_column(f).alias(f"f{g}_{j}") for j, f in enumerate(scan_view.features)]
    present = F.col("__ts").isNotNull()
    for j in range(len(scan_view.join_keys)):
        present = present & F.col(f"k{g}_{j}").isNotNull()
    return raw.select(*select).where(present)
