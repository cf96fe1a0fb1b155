"""The ages a training set records per feature equal a plain Python point-in-time lookup.

The age of a value is its entity row's time minus the event time of the feature row the
join matched; only rows that got a value count (TTL and nulls as the join has them).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.features import repository
from framework.features.training_file import read_info
from framework.features.training_set import build_training_set, write_training_set
from tests.support.workspaces import embedded_store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
TTL = timedelta(hours=48)
HOUR_US = 3_600_000_000


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Views 'stats' (TTL 48 h: trips, rating) and 'profile' (no TTL: level) of drivers;
    each example rewrites their files."""
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Float64, Int64
    from feast.value_type import ValueType

    root = tmp_path_factory.mktemp("ages")
    store = embedded_store(root, "ages")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    views = [
        FeatureView(
            name=name,
            entities=[driver],
            ttl=ttl,
            schema=schema,
            source=FileSource(path=str(root / f"{name}.parquet"), timestamp_field="ts"),
        )
        for name, ttl, schema in (
            ("stats", TTL, [Field(name="trips", dtype=Int64), Field(name="rating", dtype=Float64)]),
            ("profile", None, [Field(name="level", dtype=Int64)]),
        )
    ]
    store.apply([driver, *views])
    store.ages_root = root
    yield store
    repository.close_store(store)


# A feature row: (driver, hour, value is null); hours distinct per driver (a tie on event
# time without a created timestamp may go to either row, and their values differ).
rows_strategy = st.lists(
    st.tuples(st.integers(1, 3), st.integers(0, 240), st.booleans()),
    max_size=30,
    unique_by=lambda r: (r[0], r[1]),
)
entity_strategy = st.lists(
    st.tuples(st.integers(1, 4), st.integers(-24, 300)), min_size=1, max_size=40
)


def _write(path: Path, rows: list[tuple[int, int, bool]], columns: list[str]) -> None:
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array([r[0] for r in rows], pa.int64()),
                "ts": pa.array([T0 + timedelta(hours=r[1]) for r in rows], TS),
                **{
                    c: pa.array(
                        [None if r[2] and c != "trips" else r[1] for r in rows],
                        pa.float64() if c == "rating" else pa.int64(),
                    )
                    for c in columns
                },
            }
        ),
        path,
    )


def _expected(
    rows: list[tuple[int, int, bool]], entities: list[tuple[int, int]], ttl_hours: int | None,
    *, nullable: bool,
) -> list[float]:  # fmt: skip
    """Ages in seconds of the values each entity row gets, by a plain lookup."""
    ages = []
    for driver, hour in entities:
        earlier = [
            r for r in rows
            if r[0] == driver and r[1] <= hour and (ttl_hours is None or r[1] >= hour - ttl_hours)
        ]  # fmt: skip
        if earlier:
            match = max(earlier, key=lambda r: r[1])
            if not (nullable and match[2]):
                ages.append((hour - match[1]) * 3600.0)
    return ages


def _check(record: dict[str, Any], ages: list[float], view: str) -> None:
    assert record["view"] == view
    assert record["rows"] == len(ages)
    if not ages:
        assert record["p50"] is None and record["max"] is None
        return
    expected = np.percentile(ages, [50, 90, 99])
    assert [record["p50"], record["p90"], record["p99"]] == pytest.approx(expected, rel=1e-9)
    assert record["max"] == max(ages)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(stats=rows_strategy, profile=rows_strategy, entities=entity_strategy)
def test_recorded_ages_equal_a_plain_point_in_time_lookup(
    store: Any,
    stats: list[tuple[int, int, bool]],
    profile: list[tuple[int, int, bool]],
    entities: list[tuple[int, int]],
) -> None:
    root = store.ages_root
    _write(root / "stats.parquet", stats, ["trips", "rating"])
    _write(root / "profile.parquet", profile, ["level"])
    frame = pd.DataFrame(
        {
            "driver_id": [e[0] for e in entities],
            "event_timestamp": [T0 + timedelta(hours=e[1]) for e in entities],
        }
    )
    table = build_training_set(store, ["stats:trips", "stats:rating", "profile:level"], frame)
    ages = read_info(table).ages
    assert ages is not None and set(ages) == {"trips", "rating", "level"}
    _check(ages["trips"], _expected(stats, entities, 48, nullable=False), "stats")
    _check(ages["rating"], _expected(stats, entities, 48, nullable=True), "stats")
    _check(ages["level"], _expected(profile, entities, None, nullable=True), "profile")
    # The ages' columns are not part of the training set.
    assert table.column_names == ["driver_id", "event_timestamp", "trips", "rating", "level"]


def test_a_streamed_training_set_records_no_ages(store: Any, tmp_path: Path) -> None:
    root = store.ages_root
    _write(root / "stats.parquet", [(1, 0, False)], ["trips", "rating"])
    _write(root / "profile.parquet", [(1, 0, False)], ["level"])
    frame = pd.DataFrame({"driver_id": [1], "event_timestamp": [T0 + timedelta(hours=5)]})
    info = write_training_set(store, ["stats:trips", "profile:level"], frame, tmp_path / "t.pq")
    assert info.ages is None
    table = build_training_set(store, ["stats:trips", "profile:level"], frame)
    assert read_info(table).ages == {
        "trips": {"view": "stats", "rows": 1, "p50": 5 * 3600.0, "p90": 5 * 3600.0,
                  "p99": 5 * 3600.0, "max": 5 * 3600.0},
        "level": {"view": "profile", "rows": 1, "p50": 5 * 3600.0, "p90": 5 * 3600.0,
                  "p99": 5 * 3600.0, "max": 5 * 3600.0},
    }  # fmt: skip
