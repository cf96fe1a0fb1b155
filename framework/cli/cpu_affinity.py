"""``parity serve --cpu-affinity spread``: each server process on one core, all its threads.

A server process runs Python on many threads (gRPC's, the request pool's, the
prediction log's) that take turns holding the GIL. Let the OS spread them over the
cores and every turn hands the GIL (and the interpreter's shared objects) from one core
to the other: here a process doing the same requests spent 1.4 ms of CPU on each
instead of 0.9 at 64 in flight, and a sequential ``Predict`` took 1.45 ms instead of
1.15 (``bench/serving.py``, 2 cores; ``docs/benchmarks.md``). On one core a turn is a
context switch that finds its caches warm. So worker ``i`` of ``--workers N`` runs on
the ``i``-th core this command may use (round robin), and a single process on the
first; ``--cpu-affinity off`` leaves placement to the OS.

Linux only (``os.sched_setaffinity``); elsewhere, and where the call is refused (a
container that forbids it), the server runs unpinned and says so.
"""

from __future__ import annotations

import os


def allowed_cores() -> list[int]:
    """The cores this process may run on, in order (empty where the OS cannot say)."""
    getter = getattr(os, "sched_getaffinity", None)
    return sorted(getter(0)) if getter is not None else []


def core_for(index: int) -> int | None:
    """The core worker ``index`` runs on (None: cannot pin here)."""
    cores = allowed_cores()
    return cores[index % len(cores)] if cores else None


def pin(pid: int, core: int) -> str | None:
    """Pin every thread of process ``pid`` to ``core``; threads it starts later inherit
    the pin from the thread that starts them. Returns why it could not, or None."""
    setter = getattr(os, "sched_setaffinity", None)
    if setter is None:
        return "this OS has no sched_setaffinity"
    try:
        # /proc/PID/task lists every thread, Python's and native ones (gRPC's).
        threads = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        threads = [pid]
    try:
        for tid in threads:
            try:
                setter(tid, {core})
            except ProcessLookupError:  # the thread ended meanwhile
                continue
    except OSError as exc:
        return f"sched_setaffinity refused: {exc}"
    return None


def place(pid: int, index: int) -> tuple[int | None, str | None]:
    """Pin process ``pid`` where worker ``index`` goes: (its core, None), or (None, why
    it could not be pinned)."""
    core = core_for(index)
    if core is None:
        return None, "this OS cannot say which cores"
    why = pin(pid, core)
    return (None, why) if why is not None else (core, None)
