"""``--cpu-affinity spread``: a process pinned with every thread it has and will start."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from framework.cli import cpu_affinity

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity"), reason="the OS has no sched_setaffinity"
)

# Three threads at once, then (on a line from the parent) three more: each prints nothing
# and sleeps, so the parent reads their placement from /proc.
CHILD = """
import sys, threading, time
def start():
    for _ in range(3):
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
start()
print("ready", flush=True)
sys.stdin.readline()
start()
print("more", flush=True)
time.sleep(60)
"""


def _cores_of(pid: int) -> dict[int, set[int]]:
    return {int(tid): os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def test_every_thread_and_every_later_thread_runs_on_the_core() -> None:
    cores = cpu_affinity.allowed_cores()
    core = cores[-1]
    with subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline().strip() == "ready"
            before = _cores_of(child.pid)
            assert len(before) == 4 and all(c == set(cores) for c in before.values())
            assert cpu_affinity.pin(child.pid, core) is None
            assert all(c == {core} for c in _cores_of(child.pid).values())
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "more"
            after = _cores_of(child.pid)
            assert len(after) == 7
            assert all(c == {core} for c in after.values())
        finally:
            child.kill()


def test_workers_go_round_robin_over_the_cores_the_command_may_use() -> None:
    cores = cpu_affinity.allowed_cores()
    assert cores == sorted(os.sched_getaffinity(0))
    assert [cpu_affinity.core_for(i) for i in range(2 * len(cores))] == cores * 2
