"""Spark's own progress, told to a :class:`framework.progress.Progress`.

Spark knows how many tasks each stage of a job has and how many are done; a
thread polls its status tracker (every half second) for the jobs of one job
group and reports each stage as a task of its own (``spark stage N``, in
tasks), one after another, with the stage's name as Spark gives it.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from framework.progress import Progress

POLL_SECONDS = 0.5


@contextlib.contextmanager
def watched(spark: Any, progress: Progress, description: str) -> Iterator[None]:
    """Run the Spark jobs started inside the block as one job group whose stages
    ``progress`` hears of."""
    sc = spark.sparkContext
    group = f"parity-{uuid.uuid4().hex[:12]}"
    sc.setJobGroup(group, description, interruptOnCancel=True)
    stop = threading.Event()
    watcher = threading.Thread(
        target=_watch, args=(sc.statusTracker(), group, progress, stop), daemon=True
    )
    watcher.start()
    try:
        yield
    except BaseException:
        sc.cancelJobGroup(group)
        raise
    finally:
        stop.set()
        watcher.join()
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)


def _watch(tracker: Any, group: str, progress: Progress, stop: threading.Event) -> None:
    told: dict[int, int] = {}  # job -> tasks told as done
    open_job: int | None = None
    began: dict[int, tuple[float, int]] = {}  # job -> (monotonic start, tasks)

    def close(job: int) -> None:
        # Spark's counts can trail a job's end by a moment; the job is done, say so.
        t, tasks = began[job]
        progress.finish(
            f"spark job {job}",
            f"spark job {job}: {tasks:,} tasks done in {time.monotonic() - t:.2f}s",
        )

    def poll() -> None:
        nonlocal open_job
        for job in sorted(tracker.getJobIdsForGroup(group) or []):
            info = tracker.getJobInfo(job)
            if info is None:
                continue
            stages = [tracker.getStageInfo(s) for s in info.stageIds]
            total = sum(s.numTasks for s in stages if s is not None)
            done = sum(s.numCompletedTasks for s in stages if s is not None)
            if job not in told:
                if info.status != "RUNNING":
                    told[job] = -1  # over between two polls: too quick to be worth a line
                    continue
                if open_job is not None:
                    close(open_job)
                open_job, told[job] = job, 0
                began[job] = (time.monotonic(), total)
                progress.start(f"spark job {job}", total, "tasks", f"{len(stages)} stages,")
            if job == open_job and done > told[job]:
                progress.advance(f"spark job {job}", done - told[job])
                told[job] = done

    while not stop.wait(POLL_SECONDS):
        with contextlib.suppress(Exception):  # the tracker is advisory; never fail a job
            poll()
    with contextlib.suppress(Exception):
        poll()
    if open_job is not None:
        close(open_job)
