"""Progress of a long batch job, for a person at a terminal or for a log.

On a terminal :class:`BarProgress` draws a tqdm bar per feature view with the
rate (entities/s) and the time left; otherwise :class:`LineProgress` writes
plain lines — when a view starts, every ``every`` seconds while it runs, and
when it ends — which read well in CI logs and ``journalctl``. Both write to
stderr, so ``--json`` output on stdout stays clean.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from framework.materialize.job import Progress, ViewResult


def _rate(value: float) -> str:
    return f"{value / 1000:,.1f}k/s" if value >= 1000 else f"{value:,.0f}/s"


def _finished(result: ViewResult) -> str:
    detail = f"{result.entities:,} entities" if result.engine == "parity" else result.engine_reason
    if result.skipped:
        detail += f" ({result.written:,} written, {result.skipped:,} already up to date)"
    rate = f", {_rate(result.rate)}" if result.engine == "parity" and result.seconds else ""
    return f"{result.view}: {detail} in {result.seconds:.2f}s{rate} [{result.engine}]"


class BarProgress(Progress):
    """A tqdm bar per view: entities written, rate, time left."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._bar: Any = None

    def start(self, view: str, entities: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=entities,
            desc=view,
            unit=" entities",
            unit_scale=True,
            file=self.stream,
            dynamic_ncols=True,
        )

    def advance(self, view: str, entities: int) -> None:
        if self._bar is not None:
            self._bar.update(entities)

    def finish(self, result: ViewResult) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        else:
            print(_finished(result), file=self.stream, flush=True)


class LineProgress(Progress):
    """One line per view start and end, and one every ``every`` seconds in between."""

    def __init__(self, stream: TextIO | None = None, every: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self._lock = threading.Lock()
        self._total = 0
        self._done = 0
        self._started = 0.0
        self._last = 0.0

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, view: str, entities: int) -> None:
        with self._lock:
            self._total, self._done = entities, 0
            self._started = self._last = time.monotonic()
        self._print(f"{view}: writing {entities:,} entities")

    def advance(self, view: str, entities: int) -> None:
        with self._lock:
            self._done += entities
            now = time.monotonic()
            if now - self._last < self.every:
                return
            self._last = now
            done, total, elapsed = self._done, self._total, now - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        left = f", {(total - done) / rate:,.0f}s left" if rate > 0 else ""
        self._print(f"{view}: {done:,}/{total:,} entities ({_rate(rate)}{left})")

    def finish(self, result: ViewResult) -> None:
        self._print(_finished(result))


def for_stream(stream: TextIO | None = None) -> Progress:
    """A bar on a terminal, lines otherwise."""
    stream = stream or sys.stderr
    return BarProgress(stream) if stream.isatty() else LineProgress(stream)
