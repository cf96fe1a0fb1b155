"""Point-in-time training sets on Spark, with the DuckDB path's semantics.

The rules are :mod:`framework.features.training_set`'s: for each entity row each
feature view gives the feature row with the latest event time at or before the
entity's (both TTL bounds inclusive, no TTL or zero TTL no limit), ties on event
time to the latest created time, no match nulls; every entity row kept, in input
order, duplicates included; on-demand features by Feast's own code; the same
fingerprint. ``tests/spark/test_training_set_spark.py`` checks the result equals
the DuckDB path's row for row on generated repositories.

Why parity's own plan and not Feast's Spark retrieval: Feast's Spark offline store
reads only ``SparkSource`` (a repository's ``FileSource`` Parquet would have to be
redefined), and its point-in-time join is a range join (every feature row of a key
at or before the entity row, then a ``row_number``), whose cost grows with the rows
per key; measured in ``bench/spark.py``. Here each source group is one pass: entity
rows and feature rows of the group are unioned, partitioned by the join keys and
ordered by event time (feature rows before entity rows at the same time, created
time ascending), and each entity row takes the ``last`` feature row before it — an
as-of join as a window, linear after the shuffle's sort. Only the row index, keys
and entity time go through it; the groups' columns then join the entity rows on
the row index.

The entity frame is read and normalised by the DuckDB code of the embedded path
(:func:`framework.features.entity_frame.register_entities`: timestamp column, UTC,
checks) and written once, with its row index, as Parquet next to the output where
the executors read it; its digest is computed on the way. The result is ordered by
the row index (a range-partitioned sort) and written by the executors as a folder
of Parquet parts, ``part-00000...`` in input order, never collected to the driver;
its :class:`TrainingSetInfo` goes beside them in ``_parity_training_set.json``.
The folder appears by one rename when complete.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from framework.duck import connect
from framework.errors import DataError
from framework.features import feature_ages
from framework.features.entity_frame import ROW, register_entities
from framework.features.fingerprint import (
    EntityHasher,
    definitions_digest,
    fingerprint,
    source_identities,
)
from framework.features.join_plan import JoinPlan, join_plan, open_repo
from framework.features.training_file import TrainingSetInfo
from framework.features.view_sources import group_views, quote
from framework.progress import Progress
from framework.spark import sources
from framework.spark.progress import watched
from framework.spark.session import session

#: The file beside the parts that holds the :class:`TrainingSetInfo` (a leading
#: underscore: Spark and Arrow readers skip it).
INFO_FILE = "_parity_training_set.json"
#: Age columns carried when ages are asked for (dropped by :func:`read_table`).
AGE_PREFIX = "__parity_age_"
BATCH_ROWS = 65_536
ENGINE = "spark"
#: DuckDB's memory limit while the driver stages the entity frame.
STAGING_MEMORY = "1GB"


@dataclass
class Joined:
    """The point-in-time join as a Spark DataFrame (not yet run), ordered by the row
    index it still carries (:data:`ROW`), and what its info is made of."""

    frame: Any
    plan: JoinPlan
    timestamp: str
    entity_columns: list[str]
    rows: int
    entity_digest: str
    definitions: str
    sources: list[dict[str, Any]]
    age_columns: list[str]

    def info(self, full_feature_names: bool, ages: dict[str, Any] | None) -> TrainingSetInfo:
        return TrainingSetInfo(
            fingerprint=fingerprint(self.definitions, self.entity_digest, self.sources),
            engine=ENGINE,
            engine_reason="the spark profile: parity's point-in-time join on Spark",
            feature_service=self.plan.service_name,
            features=self.plan.refs,
            full_feature_names=full_feature_names,
            timestamp_column=self.timestamp,
            entity_rows=self.rows,
            entity_digest=self.entity_digest,
            definitions_digest=self.definitions,
            sources=self.sources,
            ages=ages,
        )


def join(
    store: Any,
    features: str | Sequence[str] | Any,
    entity_df: Any,
    work: Path,
    *,
    full_feature_names: bool = False,
    ages: bool = False,
) -> Joined:
    """Plan the join of ``entity_df`` on Spark; the normalised entity frame is staged in
    ``work`` (storage the executors read), which must outlive the frame's use."""
    spark = session(store)
    plan = join_plan(store, features, full_feature_names)
    repo_path = Path(store.repo_path)
    entity_file, columns, timestamp, rows, digest = _stage_entities(plan, entity_df, work)
    for view in plan.views:
        sources.identify(view, repo_path)
    plan.groups = group_views(plan.views)
    frame, age_columns = _join(spark, plan, entity_file, columns, timestamp, repo_path)
    if not ages:
        frame = frame.drop(*age_columns)
        age_columns = []
    frame = _on_demand(frame, plan, full_feature_names).orderBy(ROW)
    return Joined(
        frame=frame,
        plan=plan,
        timestamp=timestamp,
        entity_columns=columns,
        rows=rows,
        entity_digest=digest,
        definitions=definitions_digest(
            [store.get_feature_view(v.name) for v in plan.views], plan.odfvs, plan.refs
        ),
        sources=source_identities(sources.sources_of(plan.views)),
        age_columns=age_columns,
    )


def write_training_set(
    repo: Any,
    features: str | Sequence[str] | Any,
    entity_df: Any,
    out: Path,
    *,
    full_feature_names: bool = False,
    temp_directory: Path | None = None,
    ages: bool = False,
    progress: Progress | None = None,
) -> TrainingSetInfo:
    """The point-in-time join of ``entity_df`` on Spark, written to the folder ``out``.

    Parameters as :func:`framework.features.training_set.write_training_set`; ``repo``
    opens under the spark profile (its ``spark_conf`` starts the session).
    ``temp_directory`` holds the normalised entity frame while the job runs (default:
    next to ``out``; on a cluster, storage the executors read). With ``ages``, the
    ages of the values are measured (:mod:`framework.features.feature_ages`) and kept
    in the info (what ``parity train`` records).
    """
    progress = progress or Progress()
    store = open_repo(repo)
    with staged(Path(out), temp_directory) as (work, tmp):
        joined = join(
            store, features, entity_df, work, full_feature_names=full_feature_names, ages=ages
        )
        spark = session(store)
        with watched(spark, progress, f"parity training set -> {out}"):
            joined.frame.drop(ROW).write.parquet(str(tmp))
        measured = _ages(spark, tmp, joined.plan) if ages else None
        info = joined.info(full_feature_names, measured)
        (tmp / INFO_FILE).write_text(info.to_json())
    return info


def build_training_set(
    store: Any, features: str | Sequence[str] | Any, entity_df: Any, folder: Path
) -> pa.Table:
    """The join on Spark read back as one table, ages measured (as
    :func:`framework.features.training_set.build_training_set` gives it): written as
    parts in a temporary folder under ``folder`` (storage the executors write; on a
    cluster, shared), read part by part, then removed."""
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".training-set-") as tmp:
        out = Path(tmp) / "training_set"
        write_training_set(store, features, entity_df, out, ages=True)
        return read_table(out)


@contextlib.contextmanager
def staged(out: Path, temp_directory: Path | None) -> Iterator[tuple[Path, Path]]:
    """(work, tmp): a folder for the staged entity frame (in ``temp_directory``, else
    next to ``out``), removed afterwards, and the folder the job writes, which replaces
    ``out`` (file or folder) when the block succeeds and is removed when it fails."""
    work = Path(temp_directory or out.parent) / f".{out.name}.spark.tmp"
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        yield work, tmp
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        tmp.replace(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stage_entities(
    plan: JoinPlan, entity_df: Any, work: Path
) -> tuple[Path, list[str], str, int, str]:
    """The entity frame normalised by the embedded path's code, with its row index, as
    Parquet in ``work``; its columns, timestamp column, rows and digest."""
    # The driver only stages rows: bounded memory, DuckDB spills beyond it.
    con = connect(memory_limit=STAGING_MEMORY, temp_directory=work / "duckdb")
    try:
        entities = register_entities(
            con,
            entity_df,
            join_keys={v.name: list(v.join_keys.values()) for v in plan.views},
            request_data={o.name: list(o.get_request_data_schema()) for o in plan.odfvs},
        )
        names = ", ".join(quote(c) for c in entities.columns)
        hasher = EntityHasher(entities.columns)
        query = f"SELECT {names} FROM entities ORDER BY {ROW}"
        for batch in con.execute(query).to_arrow_reader(BATCH_ROWS):
            hasher.update(batch)
        path = work / "entities.parquet"
        con.execute(f"COPY (SELECT {names}, {ROW} FROM entities) TO '{path}' (FORMAT parquet)")
        return path, entities.columns, entities.timestamp, entities.rows, hasher.hexdigest()
    finally:
        con.close()


def _join(
    spark: Any,
    plan: JoinPlan,
    entity_file: Path,
    columns: list[str],
    timestamp: str,
    repo_path: Path,
) -> tuple[Any, list[str]]:
    """The entity rows with every view's features (Feast's column order) and each view's
    age column; the row index kept for the final sort."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    entities = spark.read.parquet(str(entity_file))
    result = entities
    outputs: dict[tuple[int, int], str] = {}
    age_columns: list[str] = []
    for g, (scan_view, members) in enumerate(plan.groups):
        feats = sources.scan(spark, scan_view, g, repo_path)
        keys = [f"k{g}_{j}" for j in range(len(scan_view.join_keys))]
        left = entities.select(
            sources.col(ROW),
            *[
                sources.col(c).alias(k)
                for c, k in zip(scan_view.join_keys.values(), keys, strict=True)
            ],
            sources.col(timestamp).alias("__ts"),
            F.lit(None).cast("timestamp").alias("__created"),
            F.lit(None).alias("__m"),
            F.lit(1).alias("__side"),
        )
        match = F.struct(
            F.col("__ts").alias("ts"), *[F.col(f"f{g}_{j}") for j in range(len(scan_view.features))]
        )
        right = feats.select(
            F.lit(None).cast("long").alias(ROW),
            *[F.col(k) for k in keys],
            F.col("__ts"),
            F.col("__created"),
            match.alias("__m"),
            F.lit(0).alias("__side"),
        )
        left = left.withColumn("__m", F.lit(None).cast(right.schema["__m"].dataType))
        window = (
            Window.partitionBy(*keys)
            .orderBy(F.col("__ts"), F.col("__side"), F.col("__created").asc_nulls_first())
            .rowsBetween(Window.unboundedPreceding, Window.currentRow)
        )
        matched = (
            left.unionByName(right)
            .withColumn("__hit", F.last("__m", ignorenulls=True).over(window))
            .where(F.col("__side") == 1)
        )
        select = [sources.col(ROW)]
        for view in members:
            i = plan.views.index(view)
            within = F.col("__hit").isNotNull()
            if view.ttl:
                micros = view.ttl // timedelta(microseconds=1)
                within = within & (
                    F.unix_micros(F.col("__hit.ts")) >= F.unix_micros(F.col("__ts")) - micros
                )
            for j, feature in enumerate(view.features):
                name = f"o{i}_{j}"
                value = F.col("__hit").getField(f"f{g}_{scan_view.features.index(feature)}")
                select.append(F.when(within, value).alias(name))
                outputs[(i, j)] = name
            age = f"{AGE_PREFIX}{i}"
            select.append(
                F.when(within, F.unix_micros("__ts") - F.unix_micros(F.col("__hit.ts"))).alias(age)
            )
            age_columns.append(age)
        result = result.join(matched.select(*select), on=ROW, how="left")
    final = [sources.col(c) for c in columns]
    final += [
        F.col(outputs[(i, j)]).alias(out)
        for i, view in enumerate(plan.views)
        for j, out in enumerate(view.output)
    ]
    final += [F.col(a) for a in age_columns] + [sources.col(ROW)]
    return result.select(*final), age_columns


def _on_demand(joined: Any, plan: JoinPlan, full_feature_names: bool) -> Any:
    """On-demand features by Feast's code, on the executors, a batch at a time (the
    views travel as their protos); their columns get the types the views declare."""
    if not plan.odfvs:
        return joined
    from feast.types import from_feast_to_pyarrow_type
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    requested = [r.split(":", 1) for r in plan.refs]
    added: list[tuple[str, pa.DataType]] = []
    for odfv in plan.odfvs:
        name = odfv.projection.name_to_use()
        for feature in odfv.features:
            if [odfv.name, feature.name] in requested or [name, feature.name] in requested:
                out = f"{name}__{feature.name}" if full_feature_names else feature.name
                added.append((out, from_feast_to_pyarrow_type(feature.dtype)))
    fields = [*joined.schema.fields]
    ordered = [f.name for f in fields]
    position = ordered.index(ROW) - len([c for c in ordered if c.startswith(AGE_PREFIX)])
    for out, kind in added:
        fields.insert(position, StructField(out, from_arrow_type(kind), True))
        position += 1
    schema = StructType(fields)
    task = _OnDemandTask(
        refs=list(plan.refs),
        join_keys=[list(v.join_keys.values()) for v in plan.views],
        protos=[odfv.to_proto().SerializeToString() for odfv in plan.odfvs],
        full_feature_names=full_feature_names,
        names=[f.name for f in schema.fields],
    )
    return joined.mapInArrow(task, schema)


class _OnDemandTask:
    """The function ``mapInArrow`` runs on executors: Feast's on-demand transformations
    (:func:`framework.features.on_demand.apply`) over each Arrow batch."""

    def __init__(
        self,
        refs: list[str],
        join_keys: list[list[str]],
        protos: list[bytes],
        full_feature_names: bool,
        names: list[str],
    ) -> None:
        self.refs, self.join_keys, self.protos = refs, join_keys, protos
        self.full_feature_names, self.names = full_feature_names, names

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from types import SimpleNamespace

        from feast.on_demand_feature_view import OnDemandFeatureView
        from feast.protos.feast.core.OnDemandFeatureView_pb2 import (
            OnDemandFeatureView as OdfvProto,
        )

        from framework.features import on_demand

        odfvs = []
        for blob in self.protos:
            proto = OdfvProto()
            proto.ParseFromString(blob)
            odfvs.append(OnDemandFeatureView.from_proto(proto))
        views = [SimpleNamespace(join_keys={k: k for k in keys}) for keys in self.join_keys]
        plan = SimpleNamespace(refs=self.refs, views=views, odfvs=odfvs)
        for batch in batches:
            table = on_demand.apply(pa.Table.from_batches([batch]), plan, self.full_feature_names)
            yield from table.select(self.names).to_batches()


def _ages(spark: Any, written: Path, plan: JoinPlan) -> dict[str, dict[str, Any]]:
    """Per feature with a source row: rows with a value, exact percentiles (linear, as
    DuckDB's ``quantile_cont``) and maximum of its age in seconds, read back from the
    written parts (only the age and value columns are read)."""
    from pyspark.sql import functions as F

    data = spark.read.parquet(str(written))
    aggregates = []
    names = []
    for i, view in enumerate(plan.views):
        age = F.col(f"{AGE_PREFIX}{i}") / 1e6
        for out in view.output:
            has = F.col(f"{AGE_PREFIX}{i}").isNotNull() & sources.col(out).isNotNull()
            seconds = F.when(has, age)
            aggregates += [
                F.count(seconds),
                F.percentile(seconds, F.array(*[F.lit(p) for p in feature_ages.PERCENTILES])),
                F.max(seconds),
            ]
            names.append((out, view.name))
    if not aggregates:
        return {}
    row = data.agg(*aggregates).collect()[0]
    found: dict[str, dict[str, Any]] = {}
    for k, (out, view_name) in enumerate(names):
        n, quantiles, top = row[3 * k], row[3 * k + 1], row[3 * k + 2]
        quantiles = list(quantiles) if n else [None] * len(feature_ages.PERCENTILES)
        found[out] = {
            "view": view_name,
            "rows": int(n),
            **{
                f"p{round(p * 100)}": q
                for p, q in zip(feature_ages.PERCENTILES, quantiles, strict=True)
            },
            "max": top,
        }
    return found


def parts(folder: Path) -> list[Path]:
    """The Parquet parts of a Spark-written training set, in row order."""
    return sorted(p for p in Path(folder).glob("part-*.parquet"))


def read_info(folder: Path) -> TrainingSetInfo:
    path = Path(folder) / INFO_FILE
    if not path.exists():
        raise DataError(f"{folder} carries no parity training-set metadata ({INFO_FILE}).")
    return TrainingSetInfo(**json.loads(path.read_text()))


def batches(folder: Path, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The rows of a Spark-written training set, in order, a batch at a time, without its
    age columns."""
    for part in parts(folder):
        file = pq.ParquetFile(part)
        wanted = [n for n in file.schema_arrow.names if not n.startswith(AGE_PREFIX)]
        yield from file.iter_batches(batch_size=batch_rows, columns=wanted)


def read_table(folder: Path) -> pa.Table:
    """A Spark-written training set as one table (read part by part, batch by batch),
    its info in the schema metadata as :func:`framework.features.training_set.build_training_set`
    gives it."""
    from framework.features.training_file import with_metadata

    info = read_info(folder)
    chunks = list(batches(folder))
    if not chunks:
        raise DataError(f"{folder} holds no rows.")
    table = pa.Table.from_batches(chunks)
    return table.replace_schema_metadata(with_metadata(table.schema, info).metadata)
