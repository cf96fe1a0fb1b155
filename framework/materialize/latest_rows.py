"""The latest row per entity key of a feature view, read by DuckDB, encoded batch by batch.

What Feast 0.67's ``materialize`` computes before writing online: the rows of
the view's source with an event time in ``[start, end]`` (both inclusive), one
per entity key — the latest event time, ties going to the latest created time
(a missing created time is older than any). Here DuckDB computes that straight
over the view's Parquet files (:mod:`framework.features.view_sources`) into a temporary
table (spilled to disk beyond its memory limit), optionally sorted the way
SQLite's primary key orders ``serialize_entity_key`` bytes, and the table then
streams out in Arrow record batches that are encoded column by column into
Feast's bytes (:mod:`framework.materialize.online_encoding`). SQLite's ``value_text``
column (Feast's ``str()`` of each value) is computed by DuckDB too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from framework.errors import DataError
from framework.features.view_sources import View, quote, scan_sql
from framework.materialize.online_encoding import (
    can_encode,
    encode_entity_keys,
    encode_values,
    value_type_name,
)
from framework.materialize.writer import Batch

#: From this many rows per entity key on, keep the latest with an aggregate instead of
#: a window (measured crossover: ~4-5 rows per key).
ROWS_PER_KEY_TO_AGGREGATE = 5


@dataclass
class ViewSource:
    """A feature view as this module reads it."""

    name: str
    view: View  # its files, columns, timestamp fields
    keys: list[tuple[str, Any]]  # (join key, Feast ValueType), in the view's order
    types: dict[str, Any] = field(default_factory=dict)  # feature -> Feast ValueType


def key_order(column: str, value_type: Any) -> list[str] | None:
    """SQL sort keys ordering rows like their ``serialize_entity_key`` bytes, or None.

    Integers are serialized little-endian, so their order is that of the byte-swapped
    value read as unsigned (one UBIGINT: half the sort time of a key per byte);
    strings and bytes sort by their length (four bytes, little-endian), then the bytes.
    """

    def swapped(value: str, width: int) -> str:
        return " | ".join(
            f"(((({value}) >> {8 * i}) & 255)::UBIGINT << {8 * (width - 1 - i)})"
            for i in range(width)
        )

    name = value_type_name(value_type)
    c = quote(column)
    if name in ("INT64", "INT32"):
        width = 8 if name == "INT64" else 4
        return [f"({swapped(f'CAST({c} AS BIGINT)', width)})"]
    if name in ("STRING", "BYTES"):
        blob = f"encode({c})" if name == "STRING" else f"CAST({c} AS BLOB)"
        return [f"({swapped(f'octet_length({blob})', 4)})", blob]
    return None


def text_sql(column: str, value_type: Any) -> str | None:
    """SQL for SQLite's ``value_text`` as Feast writes it (``str()`` of the value).

    DuckDB's ``format('{}', double)`` is the shortest round-trip form in Python's
    ``repr`` layout (``1e-05``, ``5.0``, ``1e+16``); tested against ``repr``.
    """
    c = quote(column)
    name = value_type_name(value_type)
    if name in ("INT64", "INT32"):
        return f"CAST({c} AS VARCHAR)"
    if name in ("DOUBLE", "FLOAT"):
        as_double = (
            f"CAST({c} AS DOUBLE)" if name == "DOUBLE" else f"CAST(CAST({c} AS FLOAT) AS DOUBLE)"
        )
        return f"CASE WHEN NOT isnan({as_double}) THEN format('{{}}', {as_double}) END"
    if name == "BOOL":
        return f"CASE WHEN {c} THEN 'True' WHEN NOT {c} THEN 'False' END"
    return None


class LatestRows:
    """The latest rows of one view in ``[start, end]``, as a DuckDB temporary table.

    Parameters
    ----------
    con
        A DuckDB connection (:func:`framework.duck.connect`).
    source
        The view.
    index
        A number unique on ``con`` (names the table and its columns).
    key_ordered
        Store the rows in ``serialize_entity_key`` order (SQLite inserts them fastest
        that way); scans of the table keep it.
    texts
        Also compute SQLite's ``value_text`` column.
    key_version
        The repository's ``entity_key_serialization_version`` (Feast's default 3).

    Raises
    ------
    DataError
        A latest row has a null join key (Feast cannot serialize it either).
    """

    def __init__(
        self,
        con: Any,
        source: ViewSource,
        index: int,
        start: datetime,
        end: datetime,
        *,
        key_ordered: bool,
        texts: bool,
        key_version: int = 3,
    ) -> None:
        self.con, self.source, self.texts = con, source, texts
        self.key_version = key_version
        view = source.view
        scan = scan_sql(view, con, index)
        self.key_columns = [f"k{index}_{i}" for i in range(len(view.join_keys))]
        self.feature_columns = {f: f"f{index}_{i}" for i, f in enumerate(view.features)}
        self.table = f"latest_{index}"
        keys = [quote(k) for k in self.key_columns]
        rows = f"SELECT * FROM ({scan}) s WHERE __ts >= $start AND __ts <= $end"
        interval = {"start": start, "end": end}
        (per_key,) = con.execute(
            f"SELECT count(*) / greatest(approx_count_distinct(({', '.join(keys)})), 1) "
            f"FROM ({rows})",
            interval,
        ).fetchone()
        if per_key >= ROWS_PER_KEY_TO_AGGREGATE:
            # Many rows per key: a hash aggregate keeping each key's latest row is about
            # twice as fast as a window over them all (DuckDB 1.5, 2 cores). A missing
            # created time loses every tie, as in Feast's sort.
            columns = [*self.key_columns, "__ts", *self.feature_columns.values()]
            latest = "__ts"
            if view.created_field:
                columns.append("__created")
                latest = "(__ts, coalesce(__created, '-infinity'::TIMESTAMPTZ))"
            row = "{" + ", ".join(f"'{c}': {quote(c)}" for c in columns) + "}"
            dedup = (
                f"SELECT unnest(arg_max(r, o)) FROM (SELECT {', '.join(keys)}, {row} AS r, "
                f"{latest} AS o FROM ({rows})) GROUP BY {', '.join(keys)}"
            )
        else:
            latest = "__ts DESC" + (", __created DESC NULLS LAST" if view.created_field else "")
            dedup = (
                f"{rows} QUALIFY row_number() OVER (PARTITION BY {', '.join(keys)} "
                f"ORDER BY {latest}) = 1"
            )
        sql = f"CREATE OR REPLACE TEMP TABLE {self.table} AS SELECT * FROM ({dedup})"
        order = self._order() if key_ordered else []
        if order:
            sql += f" ORDER BY {', '.join(order)}"
        con.execute(sql, interval)

        blobs = [f for f in self.feature_columns if value_type_name(source.types[f]) == "BYTES"]
        any_bytes = "".join(
            f", coalesce(bool_or(octet_length({quote(self.feature_columns[f])}) > 0), false)"
            for f in blobs
        )
        null_keys = " OR ".join(f"{k} IS NULL" for k in keys)
        entities, newest, nulls, *has_bytes = con.execute(
            f"SELECT count(*), max(__ts), count(*) FILTER (WHERE {null_keys}){any_bytes} "
            f"FROM {self.table}"
        ).fetchone()
        if nulls:
            raise DataError(
                f"Feature view {source.name!r}: {nulls} latest rows have a null join key "
                f"({', '.join(k for k, _ in source.keys)}); Feast cannot key them online. "
                "Nothing was written."
            )
        self.entities: int = int(entities)
        self.newest: datetime | None = newest
        #: BYTES features: whether any latest value is non-empty (see encode_values).
        self.has_bytes = dict(zip(blobs, has_bytes, strict=True))

    def _order(self) -> list[str]:
        """Join keys in the order serialize_entity_key writes them: sorted by name."""
        order: list[str] = []
        pairs = zip(self.source.keys, self.key_columns, strict=True)
        for (_, value_type), column in sorted(pairs, key=lambda item: item[0][0]):
            parts = key_order(column, value_type)
            if parts is None:
                return []
            order += parts
        return order

    def batches(self, rows: int) -> Iterator[Batch]:
        """The rows, ``rows`` at a time, encoded."""
        select = [quote(c) for c in self.key_columns]
        select.append("epoch_us(__ts) AS __ts_us")
        if self.source.view.created_field:
            select.append("epoch_us(__created) AS __created_us")
        for feature, column in self.feature_columns.items():
            select.append(quote(column))
            text = text_sql(column, self.source.types[feature]) if self.texts else None
            if text is not None:
                select.append(f"{text} AS {quote('t_' + column)}")
        sql = f"SELECT {', '.join(select)} FROM {self.table}"
        for batch in self.con.execute(sql).to_arrow_reader(rows):
            yield self._encode(batch)

    def drop(self) -> None:
        self.con.execute(f"DROP TABLE IF EXISTS {self.table}")

    def _encode(self, batch: pa.RecordBatch) -> Batch:
        keys = encode_entity_keys(
            [
                (name, batch.column(column), value_type)
                for (name, value_type), column in zip(
                    self.source.keys, self.key_columns, strict=True
                )
            ],
            version=self.key_version,
        )
        values: dict[str, pa.Array] = {}
        texts: dict[str, list[Any]] = {}
        for feature, column in self.feature_columns.items():
            data = batch.column(column)
            value_type = self.source.types[feature]
            values[feature] = encode_values(
                data, value_type, column_has_bytes=self.has_bytes.get(feature)
            )
            if self.texts:
                texts[feature] = _texts(data, value_type, values[feature], batch, f"t_{column}")
        names = batch.schema.names
        created = batch.column("__created_us") if "__created_us" in names else None
        return Batch(
            keys=keys,
            values=values,
            texts=texts,
            event_us=batch.column("__ts_us").to_numpy(),
            created_us=None
            if created is None
            else np.asarray(created.to_numpy(zero_copy_only=False), np.int64),
        )


def _texts(
    data: pa.Array, value_type: Any, encoded: pa.Array, batch: pa.RecordBatch, text_column: str
) -> list[Any]:
    """SQLite's ``value_text`` for one feature (Feast's ``extract_text_and_num``)."""
    if not can_encode(data.type, value_type):  # Feast's conversion was used: ask Feast
        from feast.infra.online_stores.helpers import extract_text_and_num
        from feast.protos.feast.types.Value_pb2 import Value

        return [extract_text_and_num(Value.FromString(b), False)[0] for b in encoded.to_pylist()]
    if value_type_name(value_type) == "STRING":
        return data.to_pylist()  # type: ignore[no-any-return]
    if text_column in batch.schema.names:
        return batch.column(text_column).to_pylist()  # type: ignore[no-any-return]
    return [None] * len(data)
