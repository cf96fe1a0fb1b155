"""Training sets: parity's DuckDB point-in-time join against Feast and against the semantics.

``framework.features.training_set`` promises (module docstring) that for every entity row
each feature view contributes its row with the latest event timestamp in
``[entity_ts - ttl, entity_ts]`` (both bounds inclusive; TTL unset or 0: no lower
bound), ties on event time going to the latest created timestamp, nulls when
nothing matches; every entity row kept, in input order; and that the result
equals Feast's ``get_historical_features`` (DuckDB offline store) row for row.

Checked here on the sample repository and on small Hypothesis-generated Feast
repositories (built programmatically, one temporary directory per example),
against Feast and against a brute-force reference of the semantics.

Feast and the semantics agree on everything generated here, including:

* TTL ``timedelta(0)``: Feast's ibis join applies a TTL only ``if ttl:``, so 0
  means no limit, as the semantics say.
* A null created timestamp tied with non-null ones on (key, event time): Feast
  sorts ``created DESC`` with DuckDB's default ``NULLS LAST``, so the row with
  a created timestamp wins (e.g. rows (1, t0, created=NULL, x=10) and
  (1, t0, created=t0, x=20) give x=20 at t0). The reference reads "latest
  created timestamp" the same way: a missing one is older than any known one.

Not generated, because Feast's answer there is arbitrary: two rows with the same
key and event time and equal (or both missing) created timestamps. Nor entity
timestamps finer than a microsecond, which Feast refuses ("Casting from
timestamp[ns] to timestamp[us, tz=UTC] would lose data").
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, event, given, settings

from framework.errors import DataError
from framework.features import repository
from framework.features.repository import close_store
from framework.features.training_set import build_training_set, write_training_set
from tests.strategies import (
    BASE,
    DAY,
    SECOND,
    TS_ENTITIES,
    EntityRow,
    FeatureRow,
    TrainingCase,
    ViewSpec,
    training_cases,
)
from tests.support.workspaces import Workspace, embedded_store

pytestmark = pytest.mark.integration

ROW_IDX = "row_idx"

# Each Feast example applies a registry and runs a query (~0.3 s): keep them few.
FEAST_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Parity alone is fast: more examples.
LOCAL_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ------------------------------------------------------------------ comparison


def _values(column: pa.ChunkedArray) -> list[Any]:
    """Python values; timestamps as integer microseconds of the UTC instant (naive = UTC)."""
    if pa.types.is_timestamp(column.type):
        # A safe cast: anything below a microsecond would raise, not round.
        column = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return column.to_pylist()


def _same(a: Any, b: Any) -> bool:
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
        bad = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if not _same(g, w)]
        assert not bad, (
            f"{what}: column {name!r} differs in {len(bad)} row(s), first at row {bad[0]}: "
            f"got {got[bad[0]]!r}, expected {want[bad[0]]!r}"
        )


def as_columns(table: pa.Table) -> dict[str, list[Any]]:
    return {name: _values(table.column(name)) for name in table.column_names}


def assert_same_table(actual: pa.Table, expected: pa.Table, what: str) -> None:
    """Names, order, Arrow types (time zones aside) and values of two tables."""

    def kind(t: pa.DataType) -> pa.DataType:
        return pa.timestamp(t.unit) if pa.types.is_timestamp(t) else t

    assert actual.column_names == expected.column_names, f"{what}: column names or order differ"
    assert [kind(f.type) for f in actual.schema] == [kind(f.type) for f in expected.schema], (
        f"{what}: column types differ:\n{actual.schema}\nvs\n{expected.schema}"
    )
    assert_same_columns(as_columns(actual), as_columns(expected), what)


def feast_training_set(
    store: Any, features: Any, entity_df: pd.DataFrame, *, full_feature_names: bool = False
) -> pa.Table:
    """Feast's answer, put back in input order by the ``row_idx`` column."""
    assert ROW_IDX in entity_df.columns
    job = store.get_historical_features(
        entity_df=entity_df.copy(),  # Feast writes to the frame it is given
        features=features,
        full_feature_names=full_feature_names,
    )
    table = job.to_arrow()
    assert table.num_rows == len(entity_df), "Feast dropped or added entity rows"
    return table.sort_by(ROW_IDX)


def assert_entity_columns_kept(out: pa.Table, entity_df: pd.DataFrame) -> None:
    """The output starts with the entity frame's columns, every row, in input order."""
    columns = list(entity_df.columns)
    assert out.num_rows == len(entity_df)
    assert out.column_names[: len(columns)] == columns
    expected = pa.Table.from_pandas(entity_df, preserve_index=False)
    assert_same_columns(as_columns(out.select(columns)), as_columns(expected), "entity columns")


# ---------------------------------------------------------- sample repository

SAMPLE_REFS = [
    "user_txn_7d:amount_mean_7d",
    "merchant_risk_30d:merchant_fraud_rate_30d",
    "transaction_context:amount_to_mean_7d",
    "user_txn_1h:txn_count_1h",
    "user_profile:card_type",
    "merchant_profile:category",
    "user_txn_24h:txn_count_24h",
]


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


@pytest.mark.parametrize(
    ("features", "full_feature_names"),
    [
        ("fraud_model_v1", False),
        ("fraud_model_v1", True),
        (SAMPLE_REFS, False),
        (SAMPLE_REFS, True),
    ],
    ids=["service", "service-full-names", "refs", "refs-full-names"],
)
def test_sample_repository_matches_feast(
    sample_workspace: Workspace, features: str | list[str], full_feature_names: bool
) -> None:
    repository.apply(sample_workspace.repo)
    entity_df = sample_entity_frame(sample_workspace.data)

    ours = build_training_set(
        sample_workspace.repo, features, entity_df, full_feature_names=full_feature_names
    )
    with repository.open_store(sample_workspace.repo) as store:
        wanted = store.get_feature_service(features) if isinstance(features, str) else features
        theirs = feast_training_set(store, wanted, entity_df, full_feature_names=full_feature_names)

    assert_same_table(ours, theirs, "parity vs Feast")
    assert_entity_columns_kept(ours, entity_df)
    assert ours.column(ROW_IDX).to_pylist() == list(range(len(entity_df)))
    # The frame does reach the cases it is meant to: matches, TTL expiry and no match.
    name = "user_txn_1h__txn_count_1h" if full_feature_names else "txn_count_1h"
    counts = ours.column(name)
    assert 0 < counts.null_count < len(counts) - 1_000


# ----------------------------------------------------- generated repositories


def _feast_objects(case: TrainingCase, directory: Path) -> list[Any]:
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
            store.apply(_feast_objects(case, directory))
            yield store
        finally:
            close_store(store)


def parity_entity_df(case: TrainingCase) -> pd.DataFrame | pa.Table:
    frame = case.entity_frame()
    return pa.Table.from_pandas(frame, preserve_index=False) if case.as_arrow else frame


def ours_for(store: Any, case: TrainingCase, refs: Sequence[str]) -> pa.Table:
    return build_training_set(
        store, list(refs), parity_entity_df(case), full_feature_names=case.full_feature_names
    )


# -------------------------------------------------------- brute-force reference


def reference_row(view: ViewSpec, entity: EntityRow) -> FeatureRow | None:
    """The semantics, by brute force: the latest row of the key in [ts - ttl, ts], ties on
    event time to the latest created timestamp (a missing one is older than any)."""
    key = entity.key(view.keys)
    if None in key:
        return None
    window = view.window
    candidates = [
        r
        for r in view.rows
        if r.keys == key and r.ts <= entity.ts and (window is None or r.ts >= entity.ts - window)
    ]
    if not candidates:
        return None

    def rank(r: FeatureRow) -> tuple[int, bool, int]:
        return (r.ts, r.created is not None, r.created or 0)

    best = max(candidates, key=rank)
    # The generator avoids ties Feast breaks arbitrarily; make sure it did.
    assert [rank(r) for r in candidates].count(rank(best)) == 1
    return best


def reference_columns(case: TrainingCase, refs: Sequence[str]) -> dict[str, list[Any]]:
    """The expected training set (feature columns only), per the semantics."""
    out: dict[str, list[Any]] = {}
    by_view: dict[str, list[str]] = {}
    for ref in refs:
        view, feature = ref.split(":")
        by_view.setdefault(view, []).append(feature)
    # Features come grouped by view in the order views are first named, each view's in
    # the order its features are named (Feast's order).
    for name, features in by_view.items():
        view = case.view(name)
        matched = [reference_row(view, e) for e in case.entities]
        for feature in features:
            i = view.features.index(feature)
            out[case.output_name(name, feature)] = [
                None if r is None else r.values()[i] for r in matched
            ]
    return out


def entity_columns(case: TrainingCase) -> dict[str, list[Any]]:
    frame = case.entity_frame()
    return as_columns(pa.Table.from_pandas(frame, preserve_index=False))


# --------------------------------------------------------------------- tests


@FEAST_SETTINGS
@given(case=training_cases())
def test_generated_repositories_match_feast(case: TrainingCase) -> None:
    # Feast 0.67 cannot join a view whose TTL mixes days with seconds, e.g.
    # timedelta(days=1, seconds=1): ibis raises "Unable to infer interval type from
    # mixed units" inside get_historical_features. parity handles those TTLs (the
    # point-in-time rules test covers them against the brute-force reference); the
    # comparison with Feast skips them.
    assume(all(_feast_can_take(v.ttl) for v in case.views))
    with generated_store(case) as store:
        ours = ours_for(store, case, case.refs)
        theirs = feast_training_set(
            store,
            list(case.refs),
            case.entity_frame(),
            full_feature_names=case.full_feature_names,
        )
    assert_same_table(ours, theirs, "parity vs Feast")
    # Feast agrees with the semantics here too (see the module docstring for the
    # corners where that needs care); so must parity.
    expected = entity_columns(case) | reference_columns(case, case.refs)
    assert_same_columns(as_columns(theirs), expected, "Feast vs the semantics")
    assert_same_columns(as_columns(ours), expected, "parity vs the semantics")


def _feast_can_take(ttl_us: int | None) -> bool:
    """Whether ibis can turn this TTL into one interval (a single unit)."""
    if not ttl_us:
        return True
    days, rest = divmod(ttl_us, DAY)
    return days == 0 or rest == 0


@LOCAL_SETTINGS
@given(case=training_cases())
def test_joined_rows_obey_point_in_time_rules(case: TrainingCase) -> None:
    refs = case.row_id_refs()
    with generated_store(case) as store:
        out = ours_for(store, case, refs)
    columns = as_columns(out)
    for view in case.views:
        by_id = {r.row_id: r for r in view.rows}
        row_ids = columns[case.output_name(view.name, view.features[0])]
        for n, (entity, row_id) in enumerate(zip(case.entities, row_ids, strict=True)):
            where = f"entity row {n} ({entity}), view {view.name} (ttl {view.ttl} µs)"
            expected = reference_row(view, entity)
            if row_id is None:
                assert expected is None, f"{where}: null, but row {expected} is within reach"
                for feature in view.features:
                    name = case.output_name(view.name, feature)
                    if name in columns:
                        assert columns[name][n] is None, f"{where}: {name} set without a match"
                continue
            got = by_id[row_id]
            assert got.keys == entity.key(view.keys), f"{where}: joined {got}, another key"
            assert got.ts <= entity.ts, f"{where}: joined {got}, newer than the entity row"
            if view.window is not None:
                assert got.ts >= entity.ts - view.window, f"{where}: joined {got}, expired"
            assert got == expected, f"{where}: joined {got}, expected {expected}"
            for i, feature in enumerate(view.features):
                name = case.output_name(view.name, feature)
                if name in columns:
                    assert _same(columns[name][n], got.values()[i]), f"{where}: {name}"


@LOCAL_SETTINGS
@given(case=training_cases())
def test_every_entity_row_is_kept_in_input_order(case: TrainingCase) -> None:
    with generated_store(case) as store, tempfile.TemporaryDirectory() as tmp:
        out = ours_for(store, case, case.refs)
        path = Path(tmp) / "training.parquet"
        write_training_set(
            store,
            list(case.refs),
            parity_entity_df(case),
            path,
            full_feature_names=case.full_feature_names,
        )
        written = pq.read_table(path)
    # The streamed Parquet file holds the same rows in the same order.
    assert_same_table(written, out, "write_training_set vs build_training_set")
    assert out.num_rows == len(case.entities)
    assert out.column_names[: len(case.columns)] == list(case.columns)
    assert_same_columns(
        as_columns(out.select(list(case.columns))), entity_columns(case), "entity columns"
    )
    assert out.column(ROW_IDX).to_pylist() == list(range(len(case.entities)))
    # Timestamps come out as UTC instants, whatever the input's time zone.
    assert out.schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")


@LOCAL_SETTINGS
@given(case=training_cases())
def test_hash_joins_of_one_row_per_key_sources_equal_asof_joins(case: TrainingCase) -> None:
    """Sources with one row per key are hash-joined (a cheaper plan); forcing ASOF
    joins everywhere must give the identical table."""
    from framework.features import training_set

    original = training_set._one_row_per_key
    with generated_store(case) as store:
        chosen: list[bool] = []
        training_set._one_row_per_key = (  # type: ignore[assignment]
            lambda *a: chosen.append(original(*a)) or chosen[-1]
        )
        try:
            planned = ours_for(store, case, case.refs)
            training_set._one_row_per_key = lambda *a: False  # type: ignore[assignment]
            asof = ours_for(store, case, case.refs)
        finally:
            training_set._one_row_per_key = original  # type: ignore[assignment]
    event(f"hash-joined sources: {sum(chosen)} of {len(chosen)}")
    assert_same_table(planned, asof, "planned joins vs ASOF only")


def test_sub_microsecond_entity_timestamps_are_not_truncated_into_the_ttl() -> None:
    t0 = BASE
    row = FeatureRow(keys=(1,), ts=t0, created=None, row_id=1, count=10, score=None, tag=None)
    view = ViewSpec(
        name="fv0",
        keys=("driver_id",),
        ttl=5 * SECOND,
        timestamp_field="ts",
        created_field=None,
        prefix="",
        rows=(row,),
    )
    case = TrainingCase(
        views=(view,),
        entities=(EntityRow(driver_id=1, rider_id=None, ts=t0),),
        refs=("fv0:count",),
        full_feature_names=False,
        columns=("driver_id", "event_timestamp"),
        tz="UTC",
        as_arrow=False,
    )
    # Entity rows exactly on the TTL edge (joins) and 400 ns beyond it (expired).
    edge = pd.Timestamp(t0 + 5 * SECOND, unit="us", tz="UTC")
    entity_df = pd.DataFrame(
        {
            "driver_id": [1, 1],
            "event_timestamp": [edge, edge + pd.Timedelta(nanoseconds=400)],
        }
    )
    with generated_store(case) as store:
        try:
            out = build_training_set(store, ["fv0:count"], entity_df)
        except DataError:
            return  # refusing the frame, as Feast does, is fine too
    assert out.column("count").to_pylist() == [10, None]
