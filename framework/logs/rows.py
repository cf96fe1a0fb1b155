"""Prediction-log rows as Python values, made into Arrow tables off the request path.

Building an Arrow table for one request costs far more than the values in it:
about 8 µs per column, so some 0.6 ms for the sample model's seventy log columns,
most of a request's work once the feature lookup is direct. So the request thread
hands the log :class:`LogRows` — each column's Python values and the Arrow schema
they will have — and the log's writer thread makes one table of many requests'
rows at a time (:meth:`LogRows.merge`, :meth:`LogRows.to_table`), where the
per-column cost is shared by every row of the batch.

The journal still holds every accepted row before the server answers: a frame
holds :meth:`LogRows.encode`, the schema (Arrow's own serialisation) and the
columns in ``marshal``'s format, about 2 µs for a request. ``marshal`` is
Python's own serialiser for its built-in types; unlike ``pickle`` it cannot
construct arbitrary objects, so a journal file cannot run code when it is read
back. Columns holding anything else (a ``datetime`` in request data, say) make
:meth:`encode` return None and the caller journals an Arrow table instead.

Types: a column gets its schema type when its values fit it (the request path
has checked every value the model reads), else the type Arrow infers (an
on-demand feature whose transformation returned ints for a Float64, say), else
its values' text: rows accepted are never refused off the request path.
"""

from __future__ import annotations

import marshal
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

_ROWS_MAGIC = b"PLR1"


class LogRows:
    """Rows of one schema: ``columns[i]`` holds the values of ``schema[i]``."""

    __slots__ = ("schema", "columns", "key")

    def __init__(
        self, schema: pa.Schema, columns: list[list[Any]], key: bytes | None = None
    ) -> None:
        if len(columns) != len(schema):
            raise ValueError(f"{len(columns)} columns for a schema of {len(schema)} fields")
        self.schema = schema
        self.columns = columns
        #: The schema's serialisation: what rows must share to be written together.
        self.key = key if key is not None else schema.serialize().to_pybytes()

    @property
    def num_rows(self) -> int:
        return len(self.columns[0]) if self.columns else 0

    @staticmethod
    def merge(parts: Sequence[LogRows]) -> LogRows:
        """One batch of the parts' rows, in order (the parts share a schema)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        columns: list[list[Any]] = [[] for _ in first.columns]
        for part in parts:
            for out, values in zip(columns, part.columns, strict=True):
                out.extend(values)
        return LogRows(first.schema, columns, first.key)

    def to_table(self) -> pa.Table:
        arrays = [
            _array(values, f.type) for f, values in zip(self.schema, self.columns, strict=True)
        ]
        fields = [pa.field(f.name, a.type) for f, a in zip(self.schema, arrays, strict=True)]
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields, self.schema.metadata))

    def encode(self) -> bytes | None:
        """The rows as a journal frame's payload; None if a value is not one of
        ``marshal``'s built-in types (the caller journals :meth:`to_table` instead)."""
        try:
            body = marshal.dumps((self.key, self.columns))
        except ValueError:
            return None
        return _ROWS_MAGIC + body

    @staticmethod
    def decode(payload: bytes) -> LogRows | None:
        """Rows from :meth:`encode`'s payload; None if ``payload`` is not one."""
        if not payload.startswith(_ROWS_MAGIC):
            return None
        key, columns = marshal.loads(payload[len(_ROWS_MAGIC) :])
        schema = pa.ipc.read_schema(pa.py_buffer(key))
        return LogRows(schema, columns, key)


_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)


#: Python types a column of each kind takes without converting them: Arrow would
#: silently truncate 0.5 into an int64 column, so a float there is inferred instead.
_TAKES: list[tuple[Any, tuple[type, ...]]] = [
    (pa.types.is_integer, (int,)),
    (pa.types.is_floating, (float, int)),
    (pa.types.is_boolean, (bool,)),
    (pa.types.is_string, (str,)),
    (pa.types.is_large_string, (str,)),
    (pa.types.is_binary, (bytes,)),
    (pa.types.is_timestamp, (int,)),
    (pa.types.is_date, (int,)),
]


def _fits(values: list[Any], declared: pa.DataType) -> bool:
    for test, kinds in _TAKES:
        if test(declared):
            return all(v is None or (type(v) in kinds) for v in values)
    return True  # nested and other types: Arrow's conversion judges


def _array(values: list[Any], declared: pa.DataType) -> pa.Array:
    if _fits(values, declared):
        try:
            return pa.array(values, type=declared)
        except _ARROW_ERRORS:
            pass
    try:
        inferred = pa.array(values)
        if not pa.types.is_null(inferred.type):
            return inferred
    except _ARROW_ERRORS:
        pass
    return pa.array([None if v is None else str(v) for v in values], pa.string())
