"""Writing on a second thread while the next batch is prepared.

Why by hand: the standard library's executors queue without bound and cannot drop
waiting work on an interrupt; materialisation needs at most two prepared batches
in memory and an interrupt that finishes the batch being written (one transaction)
and drops the rest.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

from framework.materialize.writer import Written


def pump(
    items: Iterator[Any],
    write: Callable[[Any], Written],
    done: Callable[[Written], None],
) -> None:
    """Write ``items`` on a second thread while the next ones are produced.

    At most two prepared batches wait at a time. On an error or an interrupt on
    either side, the batch being written is finished (it is one transaction), the
    waiting ones are dropped, and the error is raised here.
    """
    pending: queue.Queue[Any] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []
    stop = object()

    def consume() -> None:
        while True:
            item = pending.get()
            if item is stop:
                return
            try:
                done(write(item))
            except BaseException as exc:
                failure.append(exc)
                return

    worker = threading.Thread(target=consume, name="parity-online-writer", daemon=True)
    worker.start()

    def put(item: Any) -> bool:
        while worker.is_alive():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    finished = False
    try:
        for item in items:
            if failure or not put(item):
                break
        finished = True
    finally:
        if not finished:  # interrupted: do not write what is still waiting
            with contextlib.suppress(queue.Empty):
                while True:
                    pending.get_nowait()
        put(stop)
        worker.join()
    if failure:
        raise failure[0]
