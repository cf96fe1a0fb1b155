"""Ids for requests that come without one: 32 hex digits, unique across processes.

``uuid.uuid4().hex`` asks the OS for 16 random bytes (a system call) and builds a
``UUID`` object for every request: about 1 % of a served sequential ``Predict``'s
time. Here a process draws 64 random bits once (again in a forked child) and counts:
the id is those bits and the count, 16 hex digits each. Two processes share a prefix
with probability 2**-64; within a process a count never repeats.
"""

from __future__ import annotations

import itertools
import os
import threading

_lock = threading.Lock()
_prefix = ""
_count = itertools.count()


def _draw() -> None:
    global _prefix, _count
    _prefix = os.urandom(8).hex()
    _count = itertools.count()


_draw()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_draw)


def new_request_id() -> str:
    """A request id no other call in any process has been given."""
    with _lock:  # ``next`` on a count is atomic under the GIL; the lock keeps it so without
        n = next(_count)
    return f"{_prefix}{n:016x}"
