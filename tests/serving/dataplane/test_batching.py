"""Micro-batching: concurrent frames share model calls and get exactly their own rows."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pytest

from framework.registry.model_registry import ModelRef, ModelRegistry
from serving.dataplane.batching import BatchedModel, MicroBatcher
from tests.support.workspaces import Trained


def test_batched_scores_equal_one_by_one_scores(trained: Trained) -> None:
    import pyarrow.parquet as pq

    from framework.features.fields import FeatureField
    from framework.models.estimator import feature_frame

    model, manifest = ModelRegistry(trained.registry_root).load(ModelRef("fraud_model", 1))
    fields = [FeatureField(**f) for f in manifest["features"]]
    smoke = pq.read_table(
        trained.registry_root / "fraud_model" / "versions" / "1" / "smoke.parquet"
    )
    frame = feature_frame(smoke, fields)
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 9, size=60)
    starts = rng.integers(0, len(frame) - 9, size=60)
    frames = [
        frame.iloc[s : s + n].reset_index(drop=True) for s, n in zip(starts, sizes, strict=True)
    ]
    expected = [model.predict_proba(f) for f in frames]
    batched = BatchedModel(model, max_rows=64)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(batched.predict_proba, frames))
    for e, g in zip(expected, got, strict=True):
        assert g.shape == e.shape
        np.testing.assert_array_equal(g, e)
    assert batched.proba is not None
    assert batched.proba.batched_frames == len(frames)


def test_waiting_frames_are_merged_into_one_call() -> None:
    """While one call runs, the frames that arrive are scored together in the next."""
    release = threading.Event()
    calls: list[int] = []

    def slow_sum(frame: pd.DataFrame) -> Any:
        calls.append(len(frame))
        if len(calls) == 1:
            release.wait(10)  # hold the first call until the others queue up
        return frame["x"].to_numpy() * 2

    batcher = MicroBatcher(slow_sum, max_rows=100)
    frames = [pd.DataFrame({"x": np.arange(i, i + 3)}) for i in range(0, 30, 3)]
    with ThreadPoolExecutor(len(frames)) as pool:
        first = pool.submit(batcher, frames[0])
        while not calls:
            time.sleep(0.001)
        rest = [pool.submit(batcher, f) for f in frames[1:]]
        while len(batcher._pending) < len(rest):
            time.sleep(0.001)
        release.set()
        results = [first.result(), *(r.result() for r in rest)]
    assert calls == [3, 27]  # one call alone, then the nine waiting frames together
    for frame, result in zip(frames, results, strict=True):
        np.testing.assert_array_equal(result, frame["x"].to_numpy() * 2)


def test_an_error_reaches_every_caller_of_that_batch() -> None:
    def boom(frame: pd.DataFrame) -> Any:
        raise ValueError("model exploded")

    batcher = MicroBatcher(boom)
    with pytest.raises(ValueError, match="model exploded"):
        batcher(pd.DataFrame({"x": [1]}))
    assert not batcher._busy  # the next caller is not stuck behind a failed batch


def test_a_leader_returns_after_its_own_batch_and_the_next_caller_leads() -> None:
    """The caller that ran a batch does not go on to run the batches queued behind it."""
    gate = threading.Event()
    threads: list[str] = []

    def record(parts: list[int]) -> list[int]:
        threads.append(threading.current_thread().name)
        if len(threads) == 1:
            gate.wait(10)
        return [p * 10 for p in parts]

    batcher: MicroBatcher[list[int], list[int]] = MicroBatcher(
        record, merge=lambda ps: [x for p in ps for x in p]
    )
    with ThreadPoolExecutor(4, thread_name_prefix="caller") as pool:
        first = pool.submit(batcher, [1])
        while not threads:
            time.sleep(0.001)
        rest = [pool.submit(batcher, [n]) for n in (2, 3, 4)]
        while len(batcher._pending) < 3:
            time.sleep(0.001)
        gate.set()
        assert first.result() == [10]
        assert [r.result() for r in rest] == [[20], [30], [40]]
    assert len(threads) == 2  # one batch alone, then the three waiting parts together
    assert threads[0] != threads[1]  # the second batch ran on a waiting caller's thread
    assert not batcher._busy


def test_a_failing_part_is_retried_alone_and_fails_only_its_caller() -> None:
    class Bad(Exception):
        pass

    calls: list[list[int]] = []
    gate = threading.Event()

    def double(parts: list[int]) -> list[int]:
        calls.append(list(parts))
        if len(calls) == 1:
            gate.wait(10)
        if -1 in parts:
            raise Bad("part -1 is bad")
        return [p * 2 for p in parts]

    batcher: MicroBatcher[list[int], list[int]] = MicroBatcher(
        double, merge=lambda ps: [x for p in ps for x in p], alone=(Bad,)
    )
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher, [5])
        while not calls:
            time.sleep(0.001)
        rest = [pool.submit(batcher, p) for p in ([1, 2], [-1], [3])]
        while len(batcher._pending) < 3:
            time.sleep(0.001)
        gate.set()
        assert first.result() == [10]
        assert rest[0].result() == [2, 4]
        with pytest.raises(Bad, match="part -1 is bad"):
            rest[1].result()
        assert rest[2].result() == [6]
    assert calls[1] == [1, 2, -1, 3]  # merged first, then each part on its own
    assert calls[2:] == [[1, 2], [-1], [3]]


def test_a_waiting_caller_gives_up_after_its_timeout_and_its_part_is_not_run() -> None:
    from concurrent.futures import TimeoutError as FutureTimeout

    gate = threading.Event()
    calls: list[list[int]] = []

    def slow(parts: list[int]) -> list[int]:
        calls.append(list(parts))
        gate.wait(10)
        return parts

    batcher: MicroBatcher[list[int], list[int]] = MicroBatcher(
        slow, merge=lambda ps: [x for p in ps for x in p]
    )
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(batcher, [1])
        while not calls:
            time.sleep(0.001)
        with pytest.raises(FutureTimeout):
            batcher([2], timeout=0.05)
        gate.set()
        assert first.result() == [1]
    assert calls == [[1]]
    assert not batcher._busy and not batcher._pending
