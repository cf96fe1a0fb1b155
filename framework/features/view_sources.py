"""How DuckDB reads a feature view's offline source.

A :class:`View` is one feature view as the point-in-time join needs it: join
keys, feature columns, timestamp and created-timestamp fields, TTL, and the
local Parquet files behind its FileSource (single file, glob or
hive-partitioned folder; a relative path is relative to the repository, as Feast
resolves it, never to the working directory). Views that read the same files with the same keys
and timestamps are grouped so that one ASOF join serves them all, and each
group becomes one SELECT with normalised column names, UTC timestamps and
ties on event time resolved by the latest created timestamp.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb

from framework.errors import DataError


@dataclass
class View:
    """One feature view, as the join needs it."""

    name: str
    projection_name: str
    join_keys: dict[str, str]  # feature-table column -> entity column
    features: list[str]  # feature columns to read
    output: list[str]  # their output names
    timestamp_field: str
    created_field: str | None
    ttl: timedelta | None
    source: Any  # feast DataSource
    files: list[str] = field(default_factory=list)
    scan: str = ""  # DuckDB table expression over the files


def local_files(view: View, repo_path: Path) -> list[str] | None:
    """The Parquet files behind a view's FileSource, or None when DuckDB cannot read them."""
    from feast import FileSource
    from feast.data_format import ParquetFormat

    source = view.source
    if type(source) is not FileSource:
        return None
    if source.file_format is not None and not isinstance(source.file_format, ParquetFormat):
        return None
    path = source.path
    if "://" in path and not path.startswith("file://"):
        return None
    path = path.removeprefix("file://")
    if not os.path.isabs(path):
        # As Feast resolves it (FileSource.get_uri_for_file_path): against the
        # repository, whether or not anything is there, never the working directory.
        path = str(Path(repo_path).resolve() / path)
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    elif glob.has_magic(path):
        files = sorted(glob.glob(path, recursive=True))
    else:
        files = [path] if os.path.exists(path) else []
    if not files:
        raise DataError(
            f"The source of feature view {view.name!r} has no Parquet files at {source.path!r} "
            f"({path})."
        )
    return files


def group_views(views: list[View]) -> list[tuple[View, list[View]]]:
    """Views reading the same rows the same way, each group with one combined scan view."""
    groups: dict[tuple[Any, ...], tuple[View, list[View]]] = {}
    for view in views:
        key = (
            tuple(view.files),
            tuple(view.join_keys.items()),
            view.timestamp_field,
            view.created_field,
            tuple(sorted((view.source.field_mapping or {}).items())),
        )
        if key not in groups:
            scan = View(
                name=view.name,
                projection_name=view.projection_name,
                join_keys=view.join_keys,
                features=[],
                output=[],
                timestamp_field=view.timestamp_field,
                created_field=view.created_field,
                ttl=None,
                source=view.source,
                files=view.files,
            )
            groups[key] = (scan, [])
        scan, members = groups[key]
        if len(members) == 1:
            scan.name = f"{members[0].name}, {view.name}"
        elif members:
            scan.name += f", {view.name}"
        members.append(view)
        scan.features += [f for f in view.features if f not in scan.features]
    return list(groups.values())


def scan_sql(view: View, con: duckdb.DuckDBPyConnection, index: int) -> str:
    """A SELECT over the view's files with normalised names and UTC timestamps."""
    files = file_list(view.files)
    partitioned = any(os.sep + "=" in f or "=" in Path(f).parent.name for f in view.files)
    table = (
        f"read_parquet([{files}], hive_partitioning = {str(partitioned).lower()}, "
        "union_by_name = true)"
    )
    mapping = dict(view.source.field_mapping or {})
    available = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {table}").fetchall()]

    def col(name: str) -> str:
        return quote(source_column(view.name, mapping, available, name))

    select = [f"{col(k)} AS {quote(f'k{index}_{i}')}" for i, k in enumerate(view.join_keys)]
    select.append(f"CAST({col(view.timestamp_field)} AS TIMESTAMPTZ) AS __ts")
    if view.created_field:
        select.append(f"CAST({col(view.created_field)} AS TIMESTAMPTZ) AS __created")
    select += [f"{col(f)} AS {quote(f'f{index}_{i}')}" for i, f in enumerate(view.features)]
    sql = f"SELECT {', '.join(select)} FROM {table}"
    if view.created_field:
        # Ties on event time go to the latest created timestamp (ASOF would pick any).
        keys = ", ".join(quote(f"k{index}_{i}") for i in range(len(view.join_keys)))
        sql += (
            f" QUALIFY row_number() OVER (PARTITION BY {keys}, __ts"
            " ORDER BY __created DESC NULLS LAST) = 1"
        )
    return sql


def source_column(view: str, mapping: dict[str, str], available: list[str], name: str) -> str:
    """The column of a source that holds field ``name`` of feature view ``view``:
    ``field_mapping`` maps a source column to a field name; else the name itself."""
    for src, dst in mapping.items():
        if dst == name and src in available:
            return src
    if name not in available:
        raise DataError(
            f"The source of feature view {view!r} has no column {name!r} "
            f"(it has: {', '.join(available)})."
        )
    return name


def file_list(files: list[str]) -> str:
    """SQL string literals of ``files``, comma-separated (for ``read_parquet([...])``)."""
    return ", ".join("'" + f.replace("'", "''") + "'" for f in files)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
