"""Spark's own progress, told to a :class:`framework.progress.Progress`.

Spark knows how many tasks each stage of a job has and how many are done; a
thread polls its status tracker (every half second) for the jobs of one job
group and reports each stage as a task of its own (``spark stage N``, in
tasks), one after another, with the stage's name as Spark gives it.
"""

from __future__ import annotations

import contextlib
import threading
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
    reported: dict[int, int] = {}  # stage -> tasks told as done
    current: int | None = None

    def poll() -> None:
        nonlocal current
        for job in tracker.getJobIdsForGroup(group) or []:
            info = tracker.getJobInfo(job)
            for stage in sorted(info.stageIds if info else []):
                s = tracker.getStageInfo(stage)
                if s is None or s.numTasks == 0:
                    continue
                if stage not in reported:
                    if current is not None:
                        progress.finish(f"spark stage {current}")
                    current = stage
                    reported[stage] = 0
                    progress.start(f"spark stage {stage}", s.numTasks, "tasks", s.name)
                if stage == current and s.numCompletedTasks > reported[stage]:
                    progress.advance(f"spark stage {stage}", s.numCompletedTasks - reported[stage])
                    reported[stage] = s.numCompletedTasks

    while not stop.wait(POLL_SECONDS):
        with contextlib.suppress(Exception):  # the tracker is advisory; never fail a job
            poll()
    with contextlib.suppress(Exception):
        poll()
    if current is not None:
        progress.finish(f"spark stage {current}")
