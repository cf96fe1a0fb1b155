"""Micro-batching: concurrent frames share model calls and get exactly their own rows."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
import pytest

from framework.registry import ModelRef, ModelRegistry
from serving.batching import BatchedModel, MicroBatcher
from tests.conftest import Trained


def test_batched_scores_equal_one_by_one_scores(trained: Trained) -> None:
    import pyarrow.parquet as pq

    from framework.estimator import FeatureField, feature_frame

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
