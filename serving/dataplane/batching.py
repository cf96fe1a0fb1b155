"""Adaptive micro-batching: concurrent requests share one model call or one lookup.

A scikit-learn ``predict_proba`` on one row costs about as much as on dozens
(the per-call overhead dominates), and so does a Feast ``get_online_features``
call; so under concurrency the server merges the work that is waiting into one
call and hands each caller its rows. It is adaptive: a request that finds the
function idle runs at once (no waiting window, so no added latency when
traffic is light); requests that arrive while a call runs are merged into the
next one, up to ``max_rows``.

Leadership passes on: the caller that runs a batch runs only that one, then
wakes the first waiting caller to run the next (a caller never works through
other callers' batches after its own answer is ready, which would stretch the
tail latency under steady load). A waiting caller can give up after a timeout.

Results are identical to calling the function on each part alone: the model
pipeline and the online read are row-wise. If a merged call fails with one of
the ``alone`` exception types, each part is retried on its own, so one bad
request cannot fail the others batched with it. No library offers this for
in-process functions (model servers do it behind their own HTTP/gRPC front
ends), hence this small class.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Generic, TypeVar

import pandas as pd

from framework.models.model_input import FeatureColumns, as_frame

P = TypeVar("P")  # one caller's part
R = TypeVar("R")  # the function's result for a (merged) part


def _concat_frames(frames: Sequence[Any]) -> Any:
    """Model inputs merged: :class:`FeatureColumns` (the server's) or pandas frames."""
    if len(frames) == 1:
        return frames[0]
    if isinstance(frames[0], FeatureColumns):
        return FeatureColumns.concat(frames)
    return pd.concat([as_frame(f) for f in frames], ignore_index=True)


def _slice_rows(out: Any, start: int, rows: int) -> Any:
    return out[start : start + rows]


class _Waiter(Generic[P]):
    """One caller: its part, and how it is woken (answered, failed, or made leader).

    ``woken`` is made only for a caller that waits (under the batcher's lock, before
    anyone can wake it): a caller that finds the function idle, every call when
    requests come one at a time, runs at once and never needs one."""

    __slots__ = ("part", "rows", "woken", "lead", "result", "error")

    def __init__(self, part: P, rows: int) -> None:
        self.part = part
        self.rows = rows
        self.woken: threading.Event | None = None
        self.lead = False
        self.result: Any = None
        self.error: BaseException | None = None


class MicroBatcher(Generic[P, R]):
    """Serialises calls of ``fn``, merging the parts that wait (see the module docstring).

    ``size`` counts a part's rows, ``merge`` joins parts into one, ``split`` takes a
    caller's rows (start, count) out of the merged result. The defaults fit pandas
    frames in, per-row arrays out.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        max_rows: int = 512,
        *,
        size: Callable[[Any], int] = len,
        merge: Callable[[Sequence[Any]], Any] = _concat_frames,
        split: Callable[[Any, int, int], Any] = _slice_rows,
        alone: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.fn = fn
        self.max_rows = max_rows
        self.size = size
        self.merge = merge
        self.split = split
        self.alone = alone
        self._lock = threading.Lock()
        self._pending: list[_Waiter[Any]] = []
        self._busy = False
        self.calls = 0
        self.batched_frames = 0

    def __call__(self, part: Any, timeout: float | None = None) -> Any:
        """``fn`` of ``part``, possibly computed together with other callers' parts.

        With ``timeout``, a caller still waiting for its batch to start after that many
        seconds raises :class:`concurrent.futures.TimeoutError` (its part is dropped).
        """
        me: _Waiter[Any] = _Waiter(part, self.size(part))
        with self._lock:
            self._pending.append(me)
            if not self._busy:
                self._busy = me.lead = True
            else:
                me.woken = threading.Event()
        if me.woken is not None and not me.woken.wait(timeout):
            with self._lock:
                if not me.woken.is_set():
                    if me in self._pending:
                        self._pending.remove(me)
                    raise FutureTimeout()
        if me.lead:
            self._run_one()
        if me.error is not None:
            raise me.error
        return me.result

    def _run_one(self) -> None:
        """Run the batch at the head of the queue (the leader's part is first), then pass
        leadership to the next waiting caller, or go idle."""
        with self._lock:
            batch: list[_Waiter[Any]] = []
            rows = 0
            while self._pending and (not batch or rows + self._pending[0].rows <= self.max_rows):
                waiter = self._pending.pop(0)
                batch.append(waiter)
                rows += waiter.rows
        try:
            self.calls += 1
            self.batched_frames += len(batch)
            self._compute(batch)
        finally:
            with self._lock:
                if self._pending:
                    successor = self._pending[0]
                    successor.lead = True
                    assert successor.woken is not None  # it found the batcher busy
                    successor.woken.set()
                else:
                    self._busy = False
            for waiter in batch:
                if waiter.woken is not None:
                    waiter.woken.set()

    def _compute(self, batch: list[_Waiter[Any]]) -> None:
        try:
            merged = self.merge([w.part for w in batch]) if len(batch) > 1 else batch[0].part
            out = self.fn(merged)
        except BaseException as exc:
            if len(batch) > 1 and isinstance(exc, self.alone):
                for waiter in batch:  # one bad part must not fail the others
                    self._compute([waiter])
                return
            for waiter in batch:
                waiter.error = exc
            return
        if len(batch) == 1:
            batch[0].result = out
            return
        start = 0
        for waiter in batch:
            waiter.result = self.split(out, start, waiter.rows)
            start += waiter.rows


class BatchedModel:
    """A fitted model whose ``predict_proba`` / ``predict`` go through micro-batchers
    (``batching`` off: straight to the model). :meth:`use` puts another model with the
    same answers behind it (its compiled form) without stopping calls in flight."""

    def __init__(self, model: Any, max_rows: int = 512, *, batching: bool = True) -> None:
        self.batching = batching
        self.proba: MicroBatcher[Any, Any] | None = (
            MicroBatcher(model.predict_proba, max_rows) if hasattr(model, "predict_proba") else None
        )
        self.values: MicroBatcher[Any, Any] = MicroBatcher(model.predict, max_rows)
        #: The model without the micro-batchers, for a caller whose rows are already every
        #: waiting caller's (a run of the predictor's request batcher); made once.
        self.alone = _Alone(self)
        self.use(model)

    def use(self, model: Any) -> None:
        """Score with ``model`` from the next call on (a batch running keeps its model).
        A model that takes :class:`FeatureColumns` (the compiled form) gets them as they
        are; any other gets the pandas frame they stand for."""
        from framework.models.compiled import CompiledModel

        self.model = model
        self._proba: Callable[[Any], Any]
        self._predict: Callable[[Any], Any]
        if isinstance(model, CompiledModel):
            self._proba, self._predict = model.predict_proba, model.predict
        else:
            self._proba = lambda x: model.predict_proba(as_frame(x))
            self._predict = lambda x: model.predict(as_frame(x))
        if self.proba is not None:
            self.proba.fn = self._proba
        self.values.fn = self._predict

    def predict_proba(self, inputs: Any) -> Any:
        assert self.proba is not None
        return self.proba(inputs) if self.batching else self._proba(inputs)

    def predict(self, inputs: Any) -> Any:
        return self.values(inputs) if self.batching else self._predict(inputs)


class _Alone:
    """:class:`BatchedModel`'s current model called directly."""

    __slots__ = ("batched",)

    def __init__(self, batched: BatchedModel) -> None:
        self.batched = batched

    def predict_proba(self, inputs: Any) -> Any:
        return self.batched._proba(inputs)

    def predict(self, inputs: Any) -> Any:
        return self.batched._predict(inputs)
