"""``parity materialize``: feature values from the offline store into the online store.

For each feature view and interval ``[start, end]`` (both inclusive, as in Feast
0.67's ``materialize``) DuckDB reads the view's Parquet source in place and keeps
the latest row per entity key (ties on event time go to the latest created
time) in a temporary table — spilled to disk beyond its memory limit — which
then streams out in record batches, in serialized-key order where the online
store wants it. Each batch is encoded column by column into Feast's bytes
(:mod:`framework.materialize.online_encoding`) while a writer thread writes the previous
one in bulk (:mod:`framework.materialize.online_write`). Memory is bounded by the batch
size, whatever the size of the table. What lands online is what Feast's own
``materialize`` writes: ``get_online_features`` and parity's server read it
unchanged (``tests/materialize/test_materialize.py`` compares both stores row for row).

Interrupting is safe. A batch is written whole or not at all (SQLite: one
transaction; Redis: one hash write per entity), rewriting a row writes the same
bytes, and the interval is recorded in the Feast registry — with Feast's own
``apply_materialization``, so ``feast`` tooling and ``materialize_incremental``
see it — only after the view's last batch is written. The incremental
watermark (the end of the latest recorded interval) therefore never passes
unwritten data, and running the job again converges to the same online state.

Views this path cannot take (a source DuckDB does not read, transformations,
an online store without a bulk writer) are handed to Feast's ``materialize``,
and the summary says so and why.

Freshness — the last interval and the age of the newest online value per view —
is :mod:`framework.materialize.freshness`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from framework.duck import connect
from framework.errors import ConfigError, FeatureStoreError
from framework.features.view_sources import View, local_files
from framework.materialize.latest_rows import LatestRows, ViewSource
from framework.materialize.online_write import open_writer
from framework.materialize.pump import pump
from framework.materialize.writer import OnlineWriter, ViewTarget, Written
from framework.progress import Progress, rate_text

#: Entities per batch: large enough that per-batch costs vanish, small enough that a
#: batch (encoded, in flight, and the next one) stays a few tens of MB.
BATCH_ROWS = 50_000
#: Where an incremental run starts for a view never materialised and without a TTL.
BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class ViewResult:
    """What materialising one view did."""

    view: str
    start: str
    end: str
    engine: str  # "parity" (DuckDB), "spark" (framework.spark.materialize) or "feast"
    engine_reason: str
    entities: int  # latest rows in the interval, one per entity key
    written: int
    skipped: int  # Redis: the stored value was as new or newer (Feast's rule)
    newest_event: str | None
    seconds: float

    @property
    def rate(self) -> float:
        return self.entities / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        """One line: what was written, how fast, by which engine."""
        ours = self.engine != "feast"
        detail = f"{self.entities:,} entities" if ours else self.engine_reason
        if self.skipped:
            detail += f" ({self.written:,} written, {self.skipped:,} already up to date)"
        rate = f", {rate_text(self.rate)}" if ours and self.seconds else ""
        return f"{self.view}: {detail} in {self.seconds:.2f}s{rate} [{self.engine}]"


@dataclass
class MaterializeSummary:
    online_store: str
    incremental: bool
    views: list[ViewResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def entities(self) -> int:
        return sum(v.entities for v in self.views)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["entities"] = self.entities
        out["entities_per_second"] = round(self.entities / self.seconds, 1) if self.seconds else 0
        return out


@dataclass
class Job:
    """One view to materialise: the Feast view, its interval, and how."""

    fv: Any
    start: datetime
    end: datetime
    engine: str
    reason: str
    target: ViewTarget | None = None
    source: ViewSource | None = None


# ------------------------------------------------------------------- planning


def select_views(store: Any, names: Sequence[str] | None) -> list[Any]:
    """The feature views to materialise: the named ones, else every online view."""
    from feast import FeatureView

    known = {fv.name: fv for fv in store.list_feature_views()}
    odfvs = {v.name: v for v in store.list_on_demand_feature_views()}
    if not names:
        chosen = [fv for fv in known.values() if fv.online]
        chosen += [v for v in odfvs.values() if v.write_to_online_store]
        return sorted(chosen, key=lambda v: v.name)
    chosen = []
    for name in names:
        view = known.get(name) or odfvs.get(name)
        if view is None:
            raise ConfigError(
                f"Unknown feature view {name!r} in '--views'; the registry has: "
                f"{', '.join(sorted(known)) or 'none (run parity apply)'}."
            )
        if isinstance(view, FeatureView) and not view.online:
            raise ConfigError(f"Feature view {name!r} in '--views' is not online (online=False).")
        if not isinstance(view, FeatureView) and not view.write_to_online_store:
            raise ConfigError(
                f"On-demand feature view {name!r} in '--views' is computed at request time "
                "(write_to_online_store=False); there is nothing to materialise."
            )
        if view not in chosen:
            chosen.append(view)
    return chosen


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def interval(fv: Any, start: datetime | None, end: datetime, incremental: bool) -> datetime:
    """Where the view's interval starts: ``start``, or when ``incremental`` the end of its
    last recorded interval (never materialised: ``end`` minus its TTL, else the beginning)."""
    if not incremental:
        assert start is not None
        return start
    if getattr(fv, "most_recent_end_time", None) is not None:
        return _utc(fv.most_recent_end_time)
    ttl = getattr(fv, "ttl", None)
    # Never materialised: values older than the TTL would read as expired anyway.
    return end - ttl if ttl else BEGINNING


def feast_only(fv: Any, writer: OnlineWriter | None, no_writer: str) -> str | None:
    """Why Feast's ``materialize`` must take view ``fv`` (None: parity's bulk path can)."""
    from feast import FeatureView

    if writer is None:
        return no_writer
    if type(fv) is not FeatureView:
        return f"{type(fv).__name__} views are materialised by Feast"
    if getattr(fv, "feature_transformation", None) or getattr(fv, "filter", None):
        return "the view transforms or filters its source"
    if not fv.entity_columns:
        return "the view has no entity (Feast's dummy entity key)"
    return None


def view_of(fv: Any) -> View:
    """Feature view ``fv`` as the source reader sees it (every feature, no TTL)."""
    return View(
        name=fv.name,
        projection_name=fv.name,
        join_keys={c.name: c.name for c in fv.entity_columns},
        features=[f.name for f in fv.features],
        output=[f.name for f in fv.features],
        timestamp_field=fv.batch_source.timestamp_field,
        created_field=fv.batch_source.created_timestamp_column or None,
        ttl=None,
        source=fv.batch_source,
    )


def _plan(
    store: Any,
    writer: OnlineWriter | None,
    no_writer: str,
    views: list[Any],
    start: datetime | None,
    end: datetime,
    incremental: bool,
) -> list[Job]:
    jobs = []
    for fv in views:
        job = Job(fv, interval(fv, start, end, incremental), end, "feast", "")
        reason = feast_only(fv, writer, no_writer)
        if reason is not None:
            job.reason = reason
        else:
            view = view_of(fv)
            files = local_files(view, Path(store.repo_path))
            if files is None:
                job.reason = (
                    f"its source is a {type(fv.batch_source).__name__}, which DuckDB does not "
                    "read directly"
                )
            else:
                view.files = files
                types = {f.name: f.dtype.to_value_type() for f in fv.features}
                job.engine = "parity"
                job.source = ViewSource(
                    name=fv.name,
                    view=view,
                    keys=[(c.name, c.dtype.to_value_type()) for c in fv.entity_columns],
                    types=types,
                )
                job.target = ViewTarget(fv, sorted(types))
        jobs.append(job)
    return jobs


def _materialize_view(
    con: Any,
    job: Job,
    index: int,
    writer: OnlineWriter,
    batch_rows: int,
    progress: Progress,
) -> ViewResult:
    assert job.target is not None and job.source is not None
    target = job.target
    started = time.perf_counter()
    latest = LatestRows(
        con,
        job.source,
        index,
        job.start,
        job.end,
        key_ordered=writer.wants_key_order,
        texts=writer.wants_texts,
        key_version=writer.key_version,
    )
    progress.start(job.fv.name, latest.entities, "entities", "writing")
    totals = Written(0, 0)

    def done(result: Written) -> None:
        totals.written += result.written
        totals.skipped += result.skipped
        progress.advance(job.fv.name, result.written + result.skipped)

    prepared = (writer.prepare(target, batch) for batch in latest.batches(batch_rows))
    pump(prepared, lambda item: writer.write(target, item), done)
    writer.flush()  # every batch stored before the interval is recorded
    latest.drop()
    newest = _utc(latest.newest).isoformat() if latest.newest is not None else None
    return ViewResult(
        view=job.fv.name,
        start=job.start.isoformat(),
        end=job.end.isoformat(),
        engine="parity",
        engine_reason=f"DuckDB over local Parquet, bulk {writer.kind} writes",
        entities=latest.entities,
        written=totals.written,
        skipped=totals.skipped,
        newest_event=newest,
        seconds=round(time.perf_counter() - started, 3),
    )


def feast_materialize(store: Any, job: Job) -> ViewResult:
    """Feast's own materialize for one view (it records the interval itself)."""
    started = time.perf_counter()
    try:
        # Feast prints its progress to stdout; keep stdout for parity's own output.
        with contextlib.redirect_stdout(sys.stderr):
            store.materialize(start_date=job.start, end_date=job.end, feature_views=[job.fv.name])
    except Exception as exc:
        raise FeatureStoreError(
            f"Feast's materialize of {job.fv.name!r} failed: {' '.join(str(exc).split())[:300]}"
        ) from exc
    return ViewResult(
        view=job.fv.name,
        start=job.start.isoformat(),
        end=job.end.isoformat(),
        engine="feast",
        engine_reason=job.reason,
        entities=0,
        written=0,
        skipped=0,
        newest_event=None,
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
    memory_limit: str | None = None,
    temp_directory: Path | None = None,
    threads: int | None = None,
    now: datetime | None = None,
) -> MaterializeSummary:
    """Write the latest feature values of ``[start, end]`` to the online store.

    Parameters
    ----------
    store
        A Feast ``FeatureStore`` (:func:`framework.features.repository.open_store`).
    start, end
        The interval of event times, both inclusive; ``end`` defaults to now.
        Naive times are UTC.
    incremental
        Instead of ``start``: per view, from the end of its latest recorded
        interval (never materialised: ``end`` minus its TTL, or everything
        without one).
    views
        Feature view names (default: every online view).
    batch_rows
        Entities per written batch.

    Returns
    -------
    MaterializeSummary
        Per view: interval, engine, entities, written, skipped, newest event time.

    Examples
    --------
    >>> from framework.features.repository import open_store  # doctest: +SKIP
    >>> with open_store(Path("feature_repo")) as store:  # doctest: +SKIP
    ...     summary = materialize(store, incremental=True)
    """
    started = time.perf_counter()
    start, end = interval_asked(start, end or now or datetime.now(UTC), incremental)
    if batch_rows < 1:
        raise ConfigError(f"The batch size must be at least 1. Got {batch_rows}.")
    progress = progress or Progress()
    selected = select_views(store, views)
    writer, no_writer = open_writer(store)
    summary = MaterializeSummary(
        online_store=writer.describe() if writer else str(store.config.online_store.type),
        incremental=incremental,
    )
    try:
        jobs = _plan(store, writer, no_writer, selected, start, end, incremental)
        ours = [j for j in jobs if j.engine == "parity"]
        if writer is not None and ours:
            writer.check([j.target for j in ours if j.target is not None])
            summary.online_store = writer.describe()
        con = connect(memory_limit=memory_limit, temp_directory=temp_directory, threads=threads)
        try:
            _run(con, store, writer, jobs, batch_rows, progress, summary)
        finally:
            con.close()
    finally:
        if writer is not None:
            writer.close()
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def interval_asked(
    start: datetime | None, end: datetime, incremental: bool
) -> tuple[datetime | None, datetime]:
    """``start`` and ``end`` in UTC, or :class:`ConfigError` when they do not fit together."""
    end = _utc(end)
    if incremental and start is not None:
        raise ConfigError("Give '--start' or '--incremental', not both.")
    if not incremental and start is None:
        raise ConfigError("Give '--start' (and optionally '--end'), or '--incremental'.")
    if start is not None:
        start = _utc(start)
        if start > end:
            raise ConfigError(
                f"'--start' ({start.isoformat()}) is after '--end' ({end.isoformat()})."
            )
    return start, end


def _run(
    con: Any,
    store: Any,
    writer: OnlineWriter | None,
    jobs: list[Job],
    batch_rows: int,
    progress: Progress,
    summary: MaterializeSummary,
) -> None:
    """Materialise each planned view in turn, by parity's writer or by Feast."""
    # See training_set._prepare: DuckDB 1.5's top_n_window_elimination mis-rewrites
    # "row_number() ... = 1" windows ordered by an aliased column.
    con.execute("SET disabled_optimizers = 'top_n_window_elimination'")
    for index, job in enumerate(jobs):
        if job.engine == "parity":
            assert writer is not None
            result = _materialize_view(con, job, index, writer, batch_rows, progress)
            record_interval(store, writer, job, result)
        else:
            result = feast_materialize(store, job)
        summary.views.append(result)
        progress.finish(result.view, result.describe())


def record_interval(store: Any, writer: OnlineWriter, job: Job, result: ViewResult) -> None:
    """After the view's last batch: its freshness, then the interval (the watermark)."""
    previous = writer.read_state().get(job.fv.name, {}).get("newest_event")
    newest = result.newest_event
    if previous is not None and (
        newest is None or datetime.fromisoformat(previous) > datetime.fromisoformat(newest)
    ):
        newest = previous  # an earlier run wrote later values (Redis keeps them)
    writer.write_state(
        job.fv.name,
        {
            "newest_event": newest,
            "last_run": {
                "start": result.start,
                "end": result.end,
                "entities": result.entities,
                "written": result.written,
                "finished_at": datetime.now(UTC).isoformat(),
            },
        },
    )
    try:
        store.registry.apply_materialization(job.fv, store.project, job.start, job.end)
    except Exception as exc:
        raise FeatureStoreError(
            f"Recording the materialised interval of {job.fv.name!r} in the Feast registry "
            f"failed (the values are written; run again): {' '.join(str(exc).split())[:300]}"
        ) from exc


__all__ = ["BATCH_ROWS", "MaterializeSummary", "Progress", "ViewResult", "materialize"]
