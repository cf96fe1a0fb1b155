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

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, event, given, settings

from framework.errors import DataError
from framework.features import repository
from framework.features.training_set import build_training_set, write_training_set
from tests.strategies import (
    BASE,
    DAY,
    SECOND,
    EntityRow,
    FeatureRow,
    TrainingCase,
    ViewSpec,
    training_cases,
)
from tests.support.training_sets import (
    ROW_IDX,
    as_columns,
    assert_same_columns,
    assert_same_table,
    generated_store,
    parity_entity_df,
    same,
    sample_entity_frame,
)
from tests.support.workspaces import Workspace

pytestmark = pytest.mark.integration


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
        asked = {
            f"{p.name_to_use()}__{f.name}" if full_feature_names else f.name
            for p in (wanted.feature_view_projections if isinstance(features, str) else [])
            for f in p.features
        } | {
            r.replace(":", "__") if full_feature_names else r.split(":")[1]
            for r in (features if isinstance(features, list) else [])
        }

    # The inputs an on-demand view pulls in without being asked for (the refs case: the
    # rest of user_txn_7d) Feast orders as a set of strings, differently under every
    # hash seed; parity in their view's schema order. Every other column is in Feast's
    # place; the values are compared column by column.
    pulled_in = set(ours.column_names) - asked - set(entity_df.columns)
    assert bool(pulled_in) == isinstance(features, list)
    assert sorted(ours.column_names) == sorted(theirs.column_names)
    assert [c for c in ours.column_names if c not in pulled_in] == [
        c for c in theirs.column_names if c not in pulled_in
    ]
    assert_same_table(ours, theirs.select(ours.column_names), "parity vs Feast")
    assert_entity_columns_kept(ours, entity_df)
    assert ours.column(ROW_IDX).to_pylist() == list(range(len(entity_df)))
    # The frame does reach the cases it is meant to: matches, TTL expiry and no match.
    name = "user_txn_1h__txn_count_1h" if full_feature_names else "txn_count_1h"
    counts = ours.column(name)
    assert 0 < counts.null_count < len(counts) - 1_000


# ----------------------------------------------------- generated repositories


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
                    assert same(columns[name][n], got.values()[i]), f"{where}: {name}"


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
