"""Training sets compared as the tests compare them: column by column, timestamps as
UTC microseconds, floats to 1e-9; the sample's edge-case entity frame; a throw-away
Feast repository for a generated case (:mod:`tests.strategies`).

Shared by the DuckDB parity tests (``tests/features/test_training_set_parity.py``) and
the Spark ones (``tests/spark/``).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from framework.features.repository import close_store
from tests.strategies import TS_ENTITIES, TrainingCase
from tests.support.workspaces import embedded_store

ROW_IDX = "row_idx"


def values(column: pa.ChunkedArray) -> list[Any]:
    """Python values; timestamps as integer microseconds of the UTC instant (naive = UTC)."""
    if pa.types.is_timestamp(column.type):
        # A safe cast: anything below a microsecond would raise, not round.
        column = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return column.to_pylist()


def same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def assert_same_columns(
    actual: dict[str, list[Any]], expected: dict[str, list[Any]], what: str
) -> None:
    """Same column names in the same order, then equal values column by column."""
    assert list(actual) == list(expected), f"{what}: column names or order differ"
    for name in expected:
        got, want = actual[name], expected[name]
        assert len(got) == len(want), (
            f"{what}: column {name!r} has {len(got)} rows, not {len(want)}"
        )
        bad = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if not same(g, w)]
        assert not bad, (
            f"{what}: column {name!r} differs in {len(bad)} row(s), first at row {bad[0]}: "
            f"got {got[bad[0]]!r}, expected {want[bad[0]]!r}"
        )


def as_columns(table: pa.Table) -> dict[str, list[Any]]:
    return {name: values(table.column(name)) for name in table.column_names}


def assert_same_table(actual: pa.Table, expected: pa.Table, what: str) -> None:
    """Names, order, Arrow types (time zones aside) and values of two tables."""

    def kind(t: pa.DataType) -> pa.DataType:
        return pa.timestamp(t.unit) if pa.types.is_timestamp(t) else t

    assert actual.column_names == expected.column_names, f"{what}: column names or order differ"
    assert [kind(f.type) for f in actual.schema] == [kind(f.type) for f in expected.schema], (
        f"{what}: column types differ:\n{actual.schema}\nvs\n{expected.schema}"
    )
    assert_same_columns(as_columns(actual), as_columns(expected), what)


def sample_entity_frame(data: Path) -> pd.DataFrame:
    """Every sample transaction, plus shifted copies: before any feature row, far in the
    future, exactly on and 1 µs past the 1 h / 24 h / 7 d TTLs, past the 2 d merchant
    TTL, for unknown users; some rows twice; all shuffled (the index is left shuffled)."""
    tx = pd.read_parquet(data / "raw" / "transactions.parquet")
    base = pd.DataFrame(
        {
            "user_id": tx["user_id"].astype("int64"),
            "merchant_id": tx["merchant_id"].astype("int64"),
            "amount": tx["amount"].astype("float64"),
            "hour_of_day": tx["transaction_timestamp"].dt.hour.astype("int64"),
            "event_timestamp": tx["transaction_timestamp"],
        }
    )

    def shifted(start: int, delta: pd.Timedelta, n: int = 60) -> pd.DataFrame:
        part = base.iloc[start : start + n].copy()
        part["event_timestamp"] = part["event_timestamp"] + delta
        return part

    us = pd.Timedelta(microseconds=1)
    parts = [
        base,
        shifted(0, -pd.Timedelta(days=3_650)),  # before every feature row (2016)
        shifted(100, pd.Timedelta(days=36_500)),  # far in the future (2126)
        shifted(200, pd.Timedelta(hours=1)),  # exactly on the 1 h TTL
        shifted(300, pd.Timedelta(hours=1) + us),
        shifted(400, pd.Timedelta(hours=24)),
        shifted(500, pd.Timedelta(hours=24) + us),
        shifted(600, pd.Timedelta(days=3)),  # past the merchant snapshots' 2 d TTL
        shifted(700, pd.Timedelta(days=7)),
        shifted(800, pd.Timedelta(days=7) + us),
        shifted(900, pd.Timedelta(days=8)),
        shifted(1_000, -us),
        base.iloc[1_100:1_200],  # duplicated rows
        base.iloc[1_150:1_160],  # ... some three times
    ]
    unknown = base.iloc[1_300:1_320].copy()
    unknown["user_id"] = 10**9
    unknown["merchant_id"] = 10**9
    parts.append(unknown)
    df = pd.concat(parts).sample(frac=1.0, random_state=20260101)
    df[ROW_IDX] = range(len(df))
    return df


def feast_objects(case: TrainingCase, directory: Path) -> list[Any]:
    """Write each view's Parquet source; return the Feast definitions to apply."""
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Float64, Int64, String
    from feast.value_type import ValueType

    entities = {
        key: Entity(name=name, join_keys=[key], value_type=ValueType.INT64)
        for key, name in TS_ENTITIES.items()
    }
    objects: list[Any] = []
    used: set[str] = set()
    for view in case.views:
        path = directory / f"{view.name}.parquet"
        pq.write_table(view.table(), path)
        source = FileSource(
            name=f"{view.name}_source",
            path=str(path),
            timestamp_field=view.timestamp_field,
            created_timestamp_column=view.created_field or "",
        )
        kinds = (Int64, Int64, Float64, String)
        objects += [
            source,
            FeatureView(
                name=view.name,
                entities=[entities[k] for k in view.keys],
                ttl=None if view.ttl is None else timedelta(microseconds=view.ttl),
                schema=[Field(name=k, dtype=Int64) for k in view.keys]
                + [Field(name=f, dtype=t) for f, t in zip(view.features, kinds, strict=True)],
                source=source,
            ),
        ]
        used.update(view.keys)
    return [entities[k] for k in TS_ENTITIES if k in used] + objects


@contextlib.contextmanager
def generated_store(case: TrainingCase) -> Iterator[Any]:
    """A fresh Feast repository for ``case`` in its own temporary directory."""
    with tempfile.TemporaryDirectory(prefix="parity-prop-") as tmp:
        directory = Path(tmp)
        store = embedded_store(directory, "prop")
        try:
            store.apply(feast_objects(case, directory))
            yield store
        finally:
            close_store(store)


def parity_entity_df(case: TrainingCase) -> pd.DataFrame | pa.Table:
    frame = case.entity_frame()
    return pa.Table.from_pandas(frame, preserve_index=False) if case.as_arrow else frame
