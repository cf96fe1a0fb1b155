"""Progress of a long job, for a person at a terminal or for a log.

A job reports in its own work units — entities written, chunks generated,
feature sources joined, rows scored, monitoring steps — at its natural
boundaries (a batch, a chunk, a stage), never per row, to a :class:`Progress`,
which does nothing: library callers pay nothing and see nothing. The command
line passes :func:`for_stream`'s choice. On a terminal :class:`BarProgress`
draws a tqdm bar per task with the rate and the time left; otherwise
:class:`LineProgress` writes plain lines — when a task starts, every ``every``
seconds while it runs (``$PARITY_PROGRESS_SECONDS``, default 10; 0 gives a line
per batch) and when it ends — which read well in CI logs and ``journalctl``.
Both write to stderr, so results and ``--json`` output on stdout stay clean.

A job runs its tasks one after another (``start``, ``advance``..., ``finish``);
``advance`` may be called from another thread than ``start`` (materialisation
writes on a second thread).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

from framework.errors import ConfigError

#: Seconds between two plain lines of one task, unless ``$PARITY_PROGRESS_SECONDS`` says.
EVERY_SECONDS = 10.0


def rate_text(value: float) -> str:
    """A rate per second, short: ``12.3k/s``, ``840/s``, ``0.5/s``."""
    if value >= 1000:
        return f"{value / 1000:,.1f}k/s"
    return f"{value:,.0f}/s" if value >= 10 else f"{value:.1f}/s"


class Progress:
    """Receives a job's progress; the command line draws a bar or logs lines. Does
    nothing here."""

    def start(self, task: str, total: int, unit: str, verb: str = "processing") -> None:
        """``task`` is about to do ``total`` ``unit`` (``verb`` says what to them)."""

    def advance(self, task: str, amount: int, note: str = "") -> None:
        """``amount`` more units are done; ``note`` may say what (a stage's name)."""

    def finish(self, task: str, line: str = "") -> None:
        """``task`` is done; ``line`` says what it did (default: the count and the time)."""


class BarProgress(Progress):
    """A tqdm bar per task: units done, rate, time left."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._bar: Any = None

    def start(self, task: str, total: int, unit: str, verb: str = "processing") -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            desc=task,
            unit=f" {unit}",
            unit_scale=total >= 10_000,  # 1.2M rows, but 3/4 sources (not 3.00/4.00)
            file=self.stream,
            dynamic_ncols=True,
        )

    def advance(self, task: str, amount: int, note: str = "") -> None:
        if self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(amount)

    def finish(self, task: str, line: str = "") -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif line:  # a task that ran without a bar (materialised by Feast, say)
            print(line, file=self.stream, flush=True)


class LineProgress(Progress):
    """One line per task start and end, and one every ``every`` seconds in between."""

    def __init__(self, stream: TextIO | None = None, every: float = EVERY_SECONDS) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self._lock = threading.Lock()
        self._unit = self._note = ""
        self._total = 0
        self._done = 0
        self._started = 0.0
        self._last = 0.0

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, task: str, total: int, unit: str, verb: str = "processing") -> None:
        with self._lock:
            self._unit, self._note, self._total, self._done = unit, "", total, 0
            self._started = self._last = time.monotonic()
        self._print(f"{task}: {verb} {total:,} {unit}")

    def advance(self, task: str, amount: int, note: str = "") -> None:
        with self._lock:
            self._done += amount
            self._note = note
            now = time.monotonic()
            # The last unit is told by finish, with the time taken.
            if now - self._last < self.every or self._done >= self._total:
                return
            self._last = now
            done, total, elapsed = self._done, self._total, now - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        left = f", {(total - done) / rate:,.0f}s left" if rate > 0 else ""
        what = f" — {note}" if note else ""
        self._print(f"{task}: {done:,}/{total:,} {self._unit} ({rate_text(rate)}{left}){what}")

    def finish(self, task: str, line: str = "") -> None:
        if not line:
            with self._lock:
                done, total, note = self._done, self._total, self._note
                elapsed = time.monotonic() - self._started
            rate = f", {rate_text(done / elapsed)}" if elapsed > 0 else ""
            what = f" — {note}" if note else ""
            line = f"{task}: {done:,}/{total:,} {self._unit} in {elapsed:.2f}s{rate}{what}"
        self._print(line)


def every_seconds() -> float:
    """``$PARITY_PROGRESS_SECONDS``, else :data:`EVERY_SECONDS`."""
    text = os.environ.get("PARITY_PROGRESS_SECONDS", "").strip()
    if not text:
        return EVERY_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise ConfigError(
            f"PARITY_PROGRESS_SECONDS must be a number of seconds, 0 or more. Got {text!r}."
        )
    return value


def for_stream(stream: TextIO | None = None) -> Progress:
    """A bar on a terminal, lines otherwise (every ``$PARITY_PROGRESS_SECONDS``)."""
    stream = stream or sys.stderr
    return BarProgress(stream) if stream.isatty() else LineProgress(stream, every_seconds())
