"""DuckDB connections configured the way parity's batch work needs them.

One place decides the session settings every DuckDB job shares: UTC as the
session time zone (timestamps are tz-aware UTC end to end), a memory limit and
a spill directory so work larger than memory streams through disk instead of
failing, and the thread count.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from framework.errors import ConfigError


def connect(
    *,
    memory_limit: str | None = None,
    temp_directory: Path | None = None,
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with parity's session settings.

    Parameters
    ----------
    memory_limit
        DuckDB memory limit such as ``"2GB"``; ``None`` keeps DuckDB's default
        (80 % of RAM).
    temp_directory
        Where DuckDB spills when the memory limit is reached.
    threads
        Worker threads; ``None`` keeps DuckDB's default (all cores).
    """
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        # Progress bars would go to stdout and corrupt --json output.
        con.execute("SET enable_progress_bar = false")
        if memory_limit is not None:
            con.execute("SET memory_limit = ?", [memory_limit])
        if temp_directory is not None:
            temp_directory.mkdir(parents=True, exist_ok=True)
            con.execute("SET temp_directory = ?", [str(temp_directory)])
        if threads is not None:
            con.execute("SET threads = ?", [threads])
    except duckdb.Error as exc:
        con.close()
        raise ConfigError(f"Invalid DuckDB setting: {exc}") from exc
    return con
