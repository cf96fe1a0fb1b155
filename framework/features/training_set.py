"""Point-in-time-correct training sets, joined by DuckDB over the offline Parquet sources.

For each entity row (join keys + event timestamp) each feature view contributes
its feature row with the latest event timestamp at or before the entity
timestamp and no older than the view's TTL (both bounds inclusive; no TTL or a
zero TTL means no limit); ties on event timestamp go to the latest created
timestamp; no match gives nulls. Every entity row is kept, in input order,
duplicates included. On-demand features are computed by Feast's own
transformation code (``OnDemandFeatureView.transform_arrow``), the code the
online path runs. The result equals Feast's ``get_historical_features`` on the
same repository (column for column, row for row) — see
``tests/features/test_training_set_parity.py``.

How: the entity frame is registered (or read straight from Parquet) with a row
index. Each source (views reading the same files share one) is joined in its
own DuckDB query that carries only the row index, the join keys and the entity
timestamp: an ``ASOF LEFT JOIN`` on the join keys and ``entity_ts >=
feature_ts`` straight over the view's FileSource path(s) — or, for a source no
larger than the entity frame that holds one row per key, a hash join on the
same condition, which gives the same rows without sorting the entity side —
ordered by the row index. TTL is a ``CASE`` on the matched row's timestamp.
The columns of those narrow results are then put next to the entity columns
(in memory: Arrow; streamed: DuckDB tables side by side with ``POSITIONAL
JOIN``, so writing to Parquet runs in bounded memory, DuckDB spilling to its
temp directory beyond its memory limit). Nothing is pulled into pandas.
Feature views whose source is not a local file fall back to Feast's
``get_historical_features``, and the metadata says so. On-demand views run a
batch of rows at a time.

Every result carries a dataset fingerprint (definitions + entity frame +
source file identities) in its Arrow schema metadata, and an in-memory result the
ages of its feature values (:mod:`framework.features.feature_ages`, measured by the
same queries).

What to join comes from :mod:`framework.features.join_plan`; the metadata written
with the result is :mod:`framework.features.training_file`. Both are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from framework.duck import connect
from framework.features import feature_ages, on_demand
from framework.features.entity_frame import ROW, Entities, register_entities
from framework.features.fingerprint import (
    EntityHasher,
    definitions_digest,
    fingerprint,
    source_identities,
)
from framework.features.join_plan import (
    JoinPlan,
    join_plan,
    open_repo,
)
from framework.features.training_file import (
    FINGERPRINT_KEY,
    METADATA_KEY,
    TrainingSetInfo,
    read_info,
    with_metadata,
)
from framework.features.view_sources import (
    View,
    file_list,
    group_views,
    local_files,
    quote,
    scan_sql,
)
from framework.progress import Progress

__all__ = [
    "BATCH_ROWS",
    "build_training_set",
    "write_training_set",
]

BATCH_ROWS = 65_536
#: The tasks :func:`write_training_set` reports: the joins (one per feature source,
#: where the time goes), then the rows written.
JOIN, WRITE = "join", "write"


# --------------------------------------------------------------------- query


def _output(i: int, j: int) -> str:
    """The column a group query names feature ``j`` of view ``i``."""
    return f"o{i}_{j}"


def _group_query(plan: JoinPlan, entities: Entities, g: int, *, ages: bool = False) -> str:
    """One source group's features for every entity row, in the entity frame's order;
    with ``ages``, also each view's matched-row age (:mod:`framework.features.feature_ages`).

    The ASOF join carries only the row index, the join keys and the timestamp of
    the entity frame: DuckDB sorts its left side for every ASOF join, and sorting
    four narrow tables then putting the columns side by side costs less time and
    half the memory of carrying the whole, growing row through each join in turn.
    """
    scan, members = plan.groups[g]
    ets = quote(entities.timestamp)
    keys = list(dict.fromkeys(scan.join_keys.values()))
    narrow = ", ".join(quote(c) for c in [ROW, *keys, entities.timestamp])
    on = [
        f"e.{quote(col)} = v.{quote(f'k{g}_{j}')}" for j, col in enumerate(scan.join_keys.values())
    ]
    on.append(f"e.{ets} >= v.__ts")
    select = []
    for view in members:
        i = plan.views.index(view)
        within_ttl = None
        if view.ttl:
            micros = view.ttl // timedelta(microseconds=1)
            within_ttl = f"v.__ts >= e.{ets} - to_microseconds({micros})"
        for j, feature in enumerate(view.features):
            value = f"v.{quote(f'f{g}_{scan.features.index(feature)}')}"
            if within_ttl:
                value = f"CASE WHEN {within_ttl} THEN {value} END"
            select.append(f"{value} AS {quote(_output(i, j))}")
        if ages:
            age = feature_ages.age_sql(f"e.{ets}", within_ttl)
            select.append(f"{age} AS {quote(feature_ages.age_column(i))}")
    return (
        f"SELECT {', '.join(select)} FROM (SELECT {narrow} FROM entities) e "
        f"{'LEFT JOIN' if plan.one_row_per_key[g] else 'ASOF LEFT JOIN'} ({scan.scan}) v "
        f"ON {' AND '.join(on)} ORDER BY e.{ROW}"
    )


def _one_row_per_key(con: duckdb.DuckDBPyConnection, scan: View, g: int, entity_rows: int) -> bool:
    """Whether a source smaller than the entity frame has at most one row per join key.

    Such a source (a profile table, say) is joined with a hash join on the keys and
    ``entity_ts >= feature_ts``, which gives exactly the ASOF result — the one row
    if it is not newer than the entity row, else nothing — at a third of the cost:
    an ASOF join sorts the whole entity side, a hash join only hashes the source.
    The check reads the source once; larger sources are not checked (ASOF).
    """
    (rows,) = con.execute(
        f"SELECT sum(num_rows) FROM parquet_file_metadata([{file_list(scan.files)}])"
    ).fetchone() or (0,)
    if rows is None or rows > entity_rows:
        return False
    keys = [quote(f"k{g}_{j}") for j in range(len(scan.join_keys))]
    not_null = " AND ".join(f"{k} IS NOT NULL" for k in keys)
    (repeated,) = con.execute(
        f"SELECT count(*) - count(DISTINCT row({', '.join(keys)})) FROM ({scan.scan}) "
        f"WHERE {not_null}"
    ).fetchone() or (1,)
    return bool(repeated == 0)


def _entity_query(entities: Entities) -> str:
    return f"SELECT {', '.join(quote(c) for c in entities.columns)} FROM entities ORDER BY {ROW}"


def _outputs(plan: JoinPlan) -> list[tuple[str, str]]:
    """(group query column, output name) in Feast's order: view by view, feature by feature."""
    return [
        (_output(i, j), out)
        for i, view in enumerate(plan.views)
        for j, out in enumerate(view.output)
    ]


# ------------------------------------------------------------------ public API


@dataclass
class _Run:
    plan: JoinPlan
    entities: Entities
    con: duckdb.DuckDBPyConnection
    definitions: str
    sources: list[dict[str, Any]]
    full_feature_names: bool
    #: Per feature with a source row, the ages of its values (set by :meth:`table`).
    ages: dict[str, dict[str, Any]] | None = None

    def table(self) -> pa.Table:
        """The whole join in memory: the entity columns, then each group's features; the
        ages of the values on the way (:attr:`ages`, their columns not kept)."""
        columns = self.con.execute(_entity_query(self.entities)).to_arrow_table()
        names, arrays = list(columns.column_names), list(columns.columns)
        found: dict[str, pa.ChunkedArray] = {}
        self.ages = {}
        for g, (_, members) in enumerate(self.plan.groups):
            query = _group_query(self.plan, self.entities, g, ages=True)
            part = self.con.execute(query).to_arrow_table()
            wanted = [
                (out, view.name, _output(i, j), feature_ages.age_column(i))
                for view in members
                for i in [self.plan.views.index(view)]
                for j, out in enumerate(view.output)
            ]
            self.ages.update(feature_ages.summarise(self.con, part, wanted))
            found.update(zip(part.column_names, part.columns, strict=True))
        for column, out in _outputs(self.plan):
            names.append(out)
            arrays.append(found[column])
        return pa.table(arrays, names=names)

    def batches(self, progress: Progress) -> pa.RecordBatchReader:
        """The join in record batches, in bounded memory: each group's features go to a
        DuckDB table (spilled to the temp directory beyond the memory limit) here, then
        the entity columns and those tables stream out side by side (POSITIONAL JOIN)
        as the reader is read."""
        owner: dict[str, str] = {}
        progress.start(JOIN, len(self.plan.groups), "feature sources", "joining")
        for g, (_, members) in enumerate(self.plan.groups):
            query = _group_query(self.plan, self.entities, g)
            self.con.execute(f"CREATE TEMP TABLE parity_g{g} AS {query}")
            columns = self.con.execute(f"DESCRIBE parity_g{g}").fetchall()
            owner.update({str(row[0]): f"g{g}" for row in columns})
            progress.advance(JOIN, 1, ", ".join(view.name for view in members))
        progress.finish(JOIN)
        select = [f"e.{quote(c)}" for c in self.entities.columns]
        select += [
            f"{owner[column]}.{quote(column)} AS {quote(out)}"
            for column, out in _outputs(self.plan)
        ]
        joins = "".join(f" POSITIONAL JOIN parity_g{g} g{g}" for g in range(len(self.plan.groups)))
        query = f"SELECT {', '.join(select)} FROM ({_entity_query(self.entities)}) e{joins}"
        return self.con.execute(query).to_arrow_reader(BATCH_ROWS)

    def info(self, entity_digest: str, engine: str, reason: str) -> TrainingSetInfo:
        return TrainingSetInfo(
            fingerprint=fingerprint(self.definitions, entity_digest, self.sources),
            engine=engine,
            engine_reason=reason,
            feature_service=self.plan.service_name,
            features=self.plan.refs,
            full_feature_names=self.full_feature_names,
            timestamp_column=self.entities.timestamp,
            entity_rows=self.entities.rows,
            entity_digest=entity_digest,
            definitions_digest=self.definitions,
            sources=self.sources,
            ages=self.ages,
        )


def _prepare(
    repo: Any,
    features: Any,
    entity_df: Any,
    full_feature_names: bool,
    memory_limit: str | None,
    temp_directory: Path | None,
    threads: int | None,
) -> tuple[_Run, str | None]:
    """Resolve everything; return the run and, when DuckDB cannot do it, why not."""
    store = open_repo(repo)
    plan = join_plan(store, features, full_feature_names)
    con = connect(memory_limit=memory_limit, temp_directory=temp_directory, threads=threads)
    # Never plan an ASOF join as a nested loop: DuckDB does that below 64 estimated left
    # rows, and an estimate can be far off (it is 0 for a registered Arrow table).
    con.execute("SET asof_loop_join_threshold = 0")
    # DuckDB 1.5.6's top_n_window_elimination rewrites "row_number() ... = 1" into an
    # arg_max over the wrong columns when the window orders by an aliased column:
    # the created-timestamp tie-break then picks an arbitrary row (found by
    # tests/features/test_training_set_parity.py; regression test in test_training_set.py).
    con.execute("SET disabled_optimizers = 'top_n_window_elimination'")
    try:
        entities = register_entities(
            con,
            entity_df,
            join_keys={v.name: list(v.join_keys.values()) for v in plan.views},
            request_data={o.name: list(o.get_request_data_schema()) for o in plan.odfvs},
        )
        fallback = None
        for view in plan.views:
            files = local_files(view, Path(store.repo_path))
            if files is None:
                fallback = (
                    f"feature view {view.name!r} reads a {type(view.source).__name__} "
                    f"({getattr(view.source, 'path', '') or 'non-file source'}), which DuckDB "
                    "does not read directly"
                )
                break
            view.files = files
        if fallback is None:
            plan.groups = group_views(plan.views)
            for g, (scan, _) in enumerate(plan.groups):
                scan.scan = scan_sql(scan, con, g)
                plan.one_row_per_key.append(_one_row_per_key(con, scan, g, entities.rows))
    except BaseException:
        con.close()
        raise
    run = _Run(
        plan=plan,
        entities=entities,
        con=con,
        definitions=definitions_digest(
            [store.get_feature_view(v.name) for v in plan.views], plan.odfvs, plan.refs
        ),
        sources=source_identities([(v.name, v.files) for v in plan.views])
        if fallback is None
        else [],
        full_feature_names=full_feature_names,
    )
    return run, fallback


def _feast_table(run: _Run) -> pa.Table:
    """Feast's own get_historical_features, for sources DuckDB cannot read directly."""
    entity_df = run.con.execute(f"SELECT * EXCLUDE ({ROW}) FROM entities ORDER BY {ROW}").df()
    entity_df[ROW] = range(len(entity_df))
    job = run.plan.store.get_historical_features(
        entity_df=entity_df,
        features=run.plan.features_arg,
        full_feature_names=run.full_feature_names,
    )
    table = job.to_arrow()
    table = table.sort_by(ROW).drop_columns([ROW])
    return table


def _feast_training_set(run: _Run, reason: str) -> pa.Table:
    """The whole training set by Feast, fingerprinted like ours."""
    hasher = EntityHasher(run.entities.columns)
    query = f"SELECT * EXCLUDE ({ROW}) FROM entities ORDER BY {ROW}"
    for batch in run.con.execute(query).to_arrow_reader(BATCH_ROWS):
        hasher.update(batch)
    table = _feast_table(run)
    info = run.info(hasher.hexdigest(), "feast", reason)
    return table.replace_schema_metadata(with_metadata(table.schema, info).metadata)


def build_training_set(
    repo: Any,
    features: str | Sequence[str] | Any,
    entity_df: Any,
    *,
    full_feature_names: bool = False,
    memory_limit: str | None = None,
    temp_directory: Path | None = None,
    threads: int | None = None,
) -> pa.Table:
    """Join point-in-time-correct features to every entity row.

    Parameters
    ----------
    repo
        A Feast repository path or a ``feast.FeatureStore``.
    features
        A feature service name, a ``FeatureService``, or ``view:feature`` refs.
    entity_df
        A pandas DataFrame, a pyarrow Table or a Parquet path with the join
        keys, an ``event_timestamp`` column (or exactly one timestamp column;
        naive means UTC) and any request data the on-demand views need.
    full_feature_names
        Name output columns ``view__feature`` instead of ``feature``.

    Returns
    -------
    pyarrow.Table
        The entity columns (timestamps as UTC), then the features, in the
        entity frame's row order; schema metadata ``parity.fingerprint`` and
        ``parity.training_set`` (JSON :class:`TrainingSetInfo`).

    Examples
    --------
    >>> import pandas as pd
    >>> entities = pd.DataFrame({"user_id": [1], "merchant_id": [3], "amount": [12.5],
    ...     "hour_of_day": [14], "event_timestamp": [pd.Timestamp("2026-02-01", tz="UTC")]})
    >>> table = build_training_set("feature_repo", "fraud_model_v1", entities)  # doctest: +SKIP
    >>> table.schema.metadata[b"parity.fingerprint"]  # doctest: +SKIP
    """
    run, fallback = _prepare(
        repo, features, entity_df, full_feature_names, memory_limit, temp_directory, threads
    )
    try:
        hasher = EntityHasher(run.entities.columns)
        if fallback is not None:
            return _feast_training_set(run, fallback)
        table = run.table()
        for batch in table.to_batches():
            hasher.update(batch)
        table = on_demand.apply_in_batches(table, run.plan, full_feature_names, BATCH_ROWS)
        info = run.info(hasher.hexdigest(), "duckdb", "all sources are local Parquet")
        return table.replace_schema_metadata(with_metadata(table.schema, info).metadata)
    finally:
        run.con.close()


def write_training_set(
    repo: Any,
    features: str | Sequence[str] | Any,
    entity_df: Any,
    out: Path,
    *,
    full_feature_names: bool = False,
    memory_limit: str | None = None,
    temp_directory: Path | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
) -> TrainingSetInfo:
    """Like :func:`build_training_set`, streamed to a Parquet file in bounded memory.

    The file is written under a temporary name and renamed when complete.
    ``progress`` hears of each feature source joined (task ``join``), then of the
    rows written, a batch at a time (task ``write``).
    """
    progress = progress or Progress()
    run, fallback = _prepare(
        repo, features, entity_df, full_feature_names, memory_limit, temp_directory, threads
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        hasher = EntityHasher(run.entities.columns)
        if fallback is not None:
            progress.start(JOIN, 1, "Feast query", "running")
            table = _feast_training_set(run, fallback)
            progress.advance(JOIN, 1)
            progress.finish(JOIN)
            pq.write_table(table, tmp)
            info = read_info(table)
        else:
            writer: pq.ParquetWriter | None = None
            try:
                batches = run.batches(progress)
                progress.start(WRITE, run.entities.rows, "rows", "writing")
                for batch in batches:
                    hasher.update(batch)
                    part = on_demand.apply(
                        pa.Table.from_batches([batch]), run.plan, full_feature_names
                    )
                    if writer is None:
                        schema = on_demand.declared_types(part.schema, run.plan)
                        writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                    writer.write_table(on_demand.as_schema(part, writer.schema))
                    progress.advance(WRITE, batch.num_rows)
                progress.finish(WRITE)
                info = run.info(hasher.hexdigest(), "duckdb", "all sources are local Parquet")
                if writer is not None:
                    writer.add_key_value_metadata(
                        {METADATA_KEY: info.to_json(), FINGERPRINT_KEY: info.fingerprint}
                    )
            finally:
                if writer is not None:
                    writer.close()
        tmp.replace(out)
        return info
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        run.con.close()
