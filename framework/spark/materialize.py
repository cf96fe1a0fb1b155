"""``parity materialize`` on Spark: the latest rows computed and written by the executors.

The semantics are :mod:`framework.materialize.job`'s: for each feature view and
interval ``[start, end]`` (both inclusive), the rows of its source in the
interval, one per entity key — the latest event time, ties going to the latest
created time (a missing created time loses every tie) — written online exactly
as Feast's ``materialize`` writes them. Here Spark reads the source
(:func:`framework.spark.sources.scan`), keeps each key's latest row with a
``row_number`` window partitioned by the join keys, and each partition is
written by the executor that holds it (``mapInArrow`` over Arrow batches):
parity's columnar encoder (:mod:`framework.materialize.online_encoding`) and
Redis bulk writer (:mod:`framework.materialize.redis_writer`) run there, a
writer per Python worker, kept for the next task. Nothing but one row of
counts per partition comes back to the driver. The partition count is the
profile's ``batch_engine.partitions`` (else Spark's shuffle partitions).

What travels to the executors is picklable and small: the repository and
profile paths, the values of the environment variables the profile names (a
worker's environment is the JVM's, which may predate them), the view as its
protobuf, and column names and types. A worker re-reads the profile with
Feast's ``load_repo_config`` and opens its own Redis connection; it never
opens the registry.

Crash safety is job.py's: a batch is written whole or not at all (one hash
write per entity), rewriting writes the same bytes, and the interval is
recorded in the Feast registry with Feast's ``apply_materialization`` only
after every partition of the view has been written and flushed — a failed
task fails the Spark job, the driver records nothing, and the incremental
watermark never passes unwritten data. Running again converges.

Only Redis is written from the executors: it takes concurrent writers from
many machines; a local SQLite file does not. Views this path cannot take (no
bulk writer for the store, transformations, no entity, a source Spark does not
read) are handed to Feast's ``materialize``, and the summary says why.

One difference from the DuckDB path: :func:`framework.spark.sources.scan` drops
rows with a null join key, where the DuckDB path refuses the view.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from framework.errors import ConfigError, FeatureStoreError
from framework.features.repository import Profile
from framework.features.view_sources import View
from framework.materialize.job import (
    Job,
    MaterializeSummary,
    ViewResult,
    feast_materialize,
    feast_only,
    interval,
    interval_asked,
    record_interval,
    select_views,
    view_of,
)
from framework.materialize.online_encoding import value_type_name
from framework.materialize.online_write import open_writer
from framework.materialize.writer import OnlineWriter
from framework.progress import Progress
from framework.spark import sources
from framework.spark.progress import watched
from framework.spark.session import session
from framework.spark.writer_task import STATS_SCHEMA, WriteTask

#: Entities per Arrow batch an executor encodes and writes (as job.py's BATCH_ROWS).
BATCH_ROWS = 50_000
ENGINE = "spark"


@dataclass
class _SparkJob:
    """One view for the executors: the planned job and how Spark reads its source."""

    job: Job
    view: View


def _plan(
    store: Any,
    writer: OnlineWriter | None,
    no_writer: str,
    views: list[Any],
    start: datetime | None,
    end: datetime,
    incremental: bool,
) -> list[Job | _SparkJob]:
    """Per view: Spark's executors, or Feast with the reason."""
    planned: list[Job | _SparkJob] = []
    for fv in views:
        job = Job(fv, interval(fv, start, end, incremental), end, "feast", "")
        reason = feast_only(fv, writer, no_writer)
        if reason is None and writer is not None and writer.kind != "redis":
            reason = (
                f"the {writer.kind} online store is one local file; the Spark path writes "
                "Redis from its executors"
            )
        if reason is not None:
            job.reason = reason
        else:
            view = view_of(fv)
            try:
                sources.identify(view, Path(store.repo_path))
            except ConfigError as exc:
                job.reason = str(exc)
            else:
                job.engine = ENGINE
                planned.append(_SparkJob(job, view))
                continue
        planned.append(job)
    return planned


def _profile_env(yaml_path: Path) -> dict[str, str]:
    """The environment variables ``yaml_path`` names (``$VAR``, ``${VAR}``) that are set:
    what an executor needs to read the profile as the driver read it."""
    names = re.findall(r"\$\{(\w+)\}|\$(\w+)", yaml_path.read_text())
    wanted = {a or b for a, b in names}
    return {name: os.environ[name] for name in sorted(wanted) if name in os.environ}


def _partitions(store: Any) -> int | None:
    """``batch_engine.partitions`` of the profile, when it sets one."""
    try:
        engine = store.config.batch_engine
    except Exception:  # a batch engine type Feast cannot load here: Spark's default
        return None
    partitions = int(getattr(engine, "partitions", 0) or 0)
    return partitions if partitions > 0 else None


def _latest(spark: Any, item: _SparkJob, store: Any, partitions: int | None) -> Any:
    """The view's latest row per entity key in the job's interval, as a DataFrame
    partitioned by the join keys."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    job, view = item.job, item.view
    rows = sources.scan(spark, view, 0, Path(store.repo_path))
    start_us, end_us = (int(t.timestamp() * 1_000_000) for t in (job.start, job.end))
    micros = F.unix_micros(F.col("__ts"))
    rows = rows.where((micros >= F.lit(start_us)) & (micros <= F.lit(end_us)))
    keys = [F.col(f"k0_{j}") for j in range(len(view.join_keys))]
    if partitions:
        # Hash-partitioned by the keys already: the window below needs no second shuffle.
        rows = rows.repartition(partitions, *keys)
    order = [F.col("__ts").desc()]
    if view.created_field:
        order.append(F.col("__created").desc_nulls_last())
    window = Window.partitionBy(*keys).orderBy(*order)
    return (
        rows.withColumn("__rank", F.row_number().over(window))
        .where(F.col("__rank") == 1)
        .drop("__rank")
    )


def _has_bytes(latest: Any, item: _SparkJob) -> dict[str, bool]:
    """BYTES features: whether any latest value is non-empty. Feast decides the encoding
    of ``b""`` from the whole column (see ``encode_values``), so this is one aggregate
    over every partition before any is written (only views with BYTES features)."""
    from pyspark.sql import functions as F

    fv = item.job.fv
    blobs = [
        (f.name, f"f0_{j}")
        for j, f in enumerate(fv.features)
        if value_type_name(f.dtype.to_value_type()) == "BYTES"
    ]
    if not blobs:
        return {}
    row = latest.agg(
        *[F.coalesce(F.max(F.length(F.col(c)) > 0), F.lit(False)) for _, c in blobs]
    ).collect()[0]
    return {name: bool(row[i]) for i, (name, _) in enumerate(blobs)}


def _task(store: Any, yaml_path: Path, item: _SparkJob, has_bytes: dict[str, bool]) -> WriteTask:
    """What an executor needs to write the view's partitions (all picklable)."""
    fv = item.job.fv
    return WriteTask(
        repo_path=str(Path(store.repo_path).resolve()),
        yaml_path=str(yaml_path.resolve()),
        env=_profile_env(yaml_path),
        view_proto=fv.to_proto().SerializeToString(),
        keys=[(c.name, int(c.dtype.to_value_type().value)) for c in fv.entity_columns],
        types={f.name: int(f.dtype.to_value_type().value) for f in fv.features},
        has_bytes=has_bytes,
    )


def _one_line(exc: BaseException) -> str:
    """The Python error an executor raised, else the first line Spark gives."""
    text = str(exc)
    raised = re.findall(r"^(?:\w+\.)*\w+(?:Error|Exception): .*$", text, re.MULTILINE)
    line = raised[-1] if raised else " ".join(text.split())
    return line[:300]


def _materialize_view(
    spark: Any,
    store: Any,
    yaml_path: Path,
    item: _SparkJob,
    partitions: int | None,
    progress: Progress,
) -> ViewResult:
    job = item.job
    started = time.perf_counter()
    name = job.fv.name
    try:
        with watched(spark, progress, f"parity materialize {name}"):
            latest = _latest(spark, item, store, partitions)
            task = _task(store, yaml_path, item, _has_bytes(latest, item))
            stats = latest.mapInArrow(task, STATS_SCHEMA).collect()
    except FeatureStoreError:
        raise
    except Exception as exc:  # py4j / PythonException from a task: nothing is recorded
        raise FeatureStoreError(
            f"Materialising {name!r} on Spark failed (no interval recorded; run again): "
            f"{_one_line(exc)}"
        ) from exc
    newest_us = max((s["newest_us"] for s in stats if s["newest_us"] is not None), default=None)
    newest = (
        datetime.fromtimestamp(newest_us / 1_000_000, UTC).isoformat()
        if newest_us is not None
        else None
    )
    parts = len(stats)
    return ViewResult(
        view=name,
        start=job.start.isoformat(),
        end=job.end.isoformat(),
        engine=ENGINE,
        engine_reason=f"Spark, {parts} partitions written by the executors in bulk (redis)",
        entities=sum(s["entities"] for s in stats),
        written=sum(s["written"] for s in stats),
        skipped=sum(s["skipped"] for s in stats),
        newest_event=newest,
        seconds=round(time.perf_counter() - started, 3),
    )


def materialize(
    store: Any,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    incremental: bool = False,
    views: Sequence[str] | None = None,
    batch_rows: int = BATCH_ROWS,
    progress: Progress | None = None,
    now: datetime | None = None,
    yaml_path: Path | None = None,
) -> MaterializeSummary:
    """Write the latest feature values of ``[start, end]`` to the online store, on Spark.

    The parameters and the summary are :func:`framework.materialize.job.materialize`'s
    (engine ``"spark"`` for the views written here); ``batch_rows`` is the size of the
    Arrow batches each executor encodes and writes. ``yaml_path`` is the profile the
    store was opened from (default: the repository's ``feature_store.spark.yaml``); the
    executors read it again.

    Examples
    --------
    >>> from framework.features.repository import Profile, open_store  # doctest: +SKIP
    >>> with open_store(Path("feature_repo"), Profile.SPARK) as store:  # doctest: +SKIP
    ...     summary = materialize(store, incremental=True)
    """
    started = time.perf_counter()
    start, end = interval_asked(start, end or now or datetime.now(UTC), incremental)
    if batch_rows < 1:
        raise ConfigError(f"The batch size must be at least 1. Got {batch_rows}.")
    progress = progress or Progress()
    yaml_path = Path(yaml_path or Path(store.repo_path) / Profile.SPARK.yaml_name)
    if not yaml_path.is_file():
        raise ConfigError(f"The profile file {yaml_path} does not exist.")
    selected = select_views(store, views)
    writer, no_writer = open_writer(store)
    summary = MaterializeSummary(
        online_store=writer.describe() if writer else str(store.config.online_store.type),
        incremental=incremental,
    )
    try:
        planned = _plan(store, writer, no_writer, selected, start, end, incremental)
        ours = [p for p in planned if isinstance(p, _SparkJob)]
        spark = None
        if ours:
            assert writer is not None
            writer.check([])  # Redis unreachable: say so before Spark starts
            spark = session(store)
        partitions = _partitions(store)
        for item in planned:
            if isinstance(item, _SparkJob):
                assert writer is not None and spark is not None
                with _arrow_batch_rows(spark, batch_rows):
                    result = _materialize_view(spark, store, yaml_path, item, partitions, progress)
                record_interval(store, writer, item.job, result)
            else:
                result = feast_materialize(store, item)
            summary.views.append(result)
            progress.finish(result.view, result.describe())
    finally:
        if writer is not None:
            writer.close()
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


@contextlib.contextmanager
def _arrow_batch_rows(spark: Any, rows: int) -> Iterator[None]:
    """Spark's Arrow batch size (what ``mapInArrow`` hands a task at a time) set to
    ``rows`` for the block, then put back."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    before = spark.conf.get(key, None)
    spark.conf.set(key, str(rows))
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


__all__ = ["BATCH_ROWS", "materialize"]
