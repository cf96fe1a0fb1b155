"""Relative file paths in user-written DuckDB SQL, resolved against the repository.

A model spec's label query reads files (``read_parquet('data/labels.parquet')``,
``FROM 'labels.csv'``). DuckDB resolves a relative path against the working
directory first and only then against ``file_search_path`` (measured with DuckDB
1.5: a plain file in the working directory wins, a glob does not), so the same
spec would read different files depending on where the command runs. Feast
resolves its own relative paths against the repository folder
(``FileSource.get_uri_for_file_path``); :func:`resolve_sql_paths` does the same
for SQL: it rewrites each relative path literal to an absolute path in the
first of ``bases`` where it names something, else in the first base (so an
error names the repository's path, never a file elsewhere).

Which string literals are paths is read from DuckDB's own tokenizer, not a
regular expression: the first argument of a file-reading table function
(one path or a list of them) and a string in ``FROM``/``JOIN`` position
(DuckDB's replacement scan). Other strings (``WHERE category = 'food'``, named
parameters such as ``delim = ','``) are left alone.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

#: DuckDB table functions whose first argument is a path, a glob or a list of them.
FILE_FUNCTIONS = frozenset(
    {
        "read_parquet", "parquet_scan", "parquet_metadata", "parquet_schema",
        "parquet_file_metadata", "parquet_kv_metadata", "read_csv", "read_csv_auto",
        "sniff_csv", "read_json", "read_json_auto", "read_ndjson", "read_ndjson_auto",
        "read_json_objects", "read_ndjson_objects", "read_text", "read_blob", "read_xlsx",
        "delta_scan", "iceberg_scan", "glob",
    }
)  # fmt: skip


@dataclass
class _Bracket:
    kind: str  # "(" or "["
    function: str | None  # the identifier before "(", lower-cased
    first_argument: bool = True


def resolve_sql_paths(sql: str, bases: Sequence[Path]) -> str:
    """``sql`` with every relative file path made absolute against ``bases``.

    Examples
    --------
    >>> resolve_sql_paths("SELECT * FROM read_parquet('x.parquet') WHERE c = 'x.parquet'",
    ...                   [Path("/repo")])
    "SELECT * FROM read_parquet('/repo/x.parquet') WHERE c = 'x.parquet'"
    """
    tokens = duckdb.tokenize(sql)
    stack: list[_Bracket] = []
    edits: list[tuple[int, int, str]] = []
    previous = ""
    for i, (offset, kind) in enumerate(tokens):
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(sql)
        text = sql[offset:end].strip()
        if kind == duckdb.token_type.string_const:
            close = _string_end(sql, offset)
            if close is not None and _is_path(previous, stack):
                value = sql[offset + 1 : close].replace("''", "'")
                resolved = _resolve(value, bases)
                if resolved != value:
                    edits.append((offset, close + 1, "'" + resolved.replace("'", "''") + "'"))
            previous = "'"
            continue
        if kind == duckdb.token_type.operator:
            text = text[:1]
            if text == "(":
                name = previous.lower() if previous[:1].isalpha() else None
                stack.append(_Bracket("(", name))
            elif text == "[":
                stack.append(_Bracket("[", None))
            elif text in ")]" and stack:
                stack.pop()
            elif text == "," and stack:
                stack[-1].first_argument = False
        previous = text.split()[0] if text.split() else text
    for start, stop, literal in reversed(edits):
        sql = sql[:start] + literal + sql[stop:]
    return sql


def _string_end(sql: str, offset: int) -> int | None:
    """The index of the quote closing the string literal at ``offset``."""
    if sql[offset] != "'":
        return None  # E'...' and other prefixed forms: left alone
    i = offset + 1
    while (i := sql.find("'", i)) != -1:
        if sql[i + 1 : i + 2] == "'":
            i += 2
            continue
        return i
    return None


def _is_path(previous: str, stack: list[_Bracket]) -> bool:
    if previous.upper() in ("FROM", "JOIN"):
        return True
    if not stack:
        return False
    top = stack[-1]
    if top.kind == "[" and len(stack) > 1:
        call = stack[-2]
        return call.function in FILE_FUNCTIONS and call.first_argument
    return (
        top.kind == "("
        and top.function in FILE_FUNCTIONS
        and top.first_argument
        and previous == "("
    )


def _resolve(value: str, bases: Sequence[Path]) -> str:
    if not value or "://" in value or os.path.isabs(value) or value.startswith("~"):
        return value
    candidates = [Path(base).resolve() / value for base in bases]
    for candidate in candidates:
        if glob.has_magic(value) and glob.glob(str(candidate), recursive=True):
            return str(candidate)
        if candidate.exists():
            return str(candidate)
    return str(candidates[0]) if candidates else value
