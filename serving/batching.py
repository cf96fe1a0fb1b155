"""Adaptive micro-batching: concurrent requests share one model call.

A scikit-learn ``predict_proba`` on one row costs about as much as on dozens
(the per-call overhead dominates), so under concurrency the server merges the
feature frames that are waiting into one call and hands each caller its rows.
It is adaptive: a request that finds the model idle is scored at once (no
waiting window, so no added latency when traffic is light); requests that
arrive while a call runs are batched into the next one, up to ``max_rows``.

Results are identical to scoring each frame alone: the pipeline is row-wise.
No library offers this for in-process scikit-learn models (model servers do
it behind their own HTTP/gRPC front ends), hence this small class.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pandas as pd


class MicroBatcher:
    """Serialises calls of ``fn`` (a frame -> per-row array function), merging waiters."""

    def __init__(self, fn: Callable[[pd.DataFrame], Any], max_rows: int = 512) -> None:
        self.fn = fn
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._pending: list[tuple[pd.DataFrame, Future[Any]]] = []
        self._busy = False
        self.calls = 0
        self.batched_frames = 0

    def __call__(self, frame: pd.DataFrame) -> Any:
        future: Future[Any] = Future()
        with self._lock:
            self._pending.append((frame, future))
            if self._busy:
                lead = False
            else:
                self._busy = lead = True
        if lead:
            self._drain()
        return future.result()

    def _drain(self) -> None:
        """Run batches until nothing waits (the caller that found the model idle leads)."""
        while True:
            with self._lock:
                batch: list[tuple[pd.DataFrame, Future[Any]]] = []
                rows = 0
                while self._pending and (
                    not batch or rows + len(self._pending[0][0]) <= self.max_rows
                ):
                    item = self._pending.pop(0)
                    batch.append(item)
                    rows += len(item[0])
                if not batch:
                    self._busy = False
                    return
            self.calls += 1
            self.batched_frames += len(batch)
            frames = [f for f, _ in batch]
            try:
                merged = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
                out = self.fn(merged)
            except BaseException as exc:
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            start = 0
            for frame, fut in batch:
                fut.set_result(out[start : start + len(frame)])
                start += len(frame)


class BatchedModel:
    """A fitted model whose ``predict_proba`` / ``predict`` go through micro-batchers."""

    def __init__(self, model: Any, max_rows: int = 512) -> None:
        self.model = model
        self.proba = (
            MicroBatcher(model.predict_proba, max_rows) if hasattr(model, "predict_proba") else None
        )
        self.values = MicroBatcher(model.predict, max_rows)

    def predict_proba(self, frame: pd.DataFrame) -> Any:
        assert self.proba is not None
        return self.proba(frame)

    def predict(self, frame: pd.DataFrame) -> Any:
        return self.values(frame)
