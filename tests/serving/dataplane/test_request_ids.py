"""Request ids: unique across threads, and across a process and the children it forks."""

from __future__ import annotations

import multiprocessing
import re
import threading

import pytest

from serving.dataplane.request_ids import new_request_id


def test_ids_from_many_threads_are_distinct_32_hex_digits() -> None:
    ids: list[list[str]] = [[] for _ in range(8)]

    def make(out: list[str]) -> None:
        out.extend(new_request_id() for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(out,)) for out in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in ids for i in out]
    assert len(set(every)) == len(every) == 40_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in every)


def _child_ids(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put([new_request_id() for _ in range(3)])


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="the OS cannot fork"
)
def test_a_forked_child_draws_its_own_prefix() -> None:
    ours = [new_request_id() for _ in range(3)]
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_child_ids, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    theirs = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join(30)
    prefixes = {i[:16] for i in ours} | {i[:16] for ids in theirs for i in ids}
    assert len(prefixes) == 3  # the parent's and each child's
    assert len({*ours, *(i for ids in theirs for i in ids)}) == 9
