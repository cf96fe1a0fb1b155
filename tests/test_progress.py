"""Progress of long jobs (``framework/progress.py``): a bar on a terminal, plain lines in a
log, both on the stream given (stderr), at the job's own work units."""

from __future__ import annotations

import io

import pytest

from framework.errors import ConfigError
from framework.progress import BarProgress, LineProgress, Progress, every_seconds, for_stream
from tests.support.progress import counts_to_total


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(progress: Progress) -> None:
    progress.start("offline sources", 4, "sources", "building")
    for name in ("users", "merchants", "transactions", "labels"):
        progress.advance("offline sources", 1, f"{name} written")
    progress.finish("offline sources")


def test_lines_at_every_batch_count_up_to_the_total_and_say_what_was_done() -> None:
    stream = io.StringIO()
    _run(LineProgress(stream, every=0))
    lines = stream.getvalue().splitlines()
    assert lines[0] == "offline sources: building 4 sources"
    assert lines[1].startswith("offline sources: 1/4 sources (")
    assert lines[1].endswith(") — users written")
    assert len(lines) == 5  # the last unit is told once, by the finishing line
    assert lines[4].startswith("offline sources: 4/4 sources in ")
    assert lines[4].endswith(" — labels written")
    assert counts_to_total(stream.getvalue(), "offline sources") == [1, 2, 3, 4]


def test_lines_between_start_and_end_wait_for_the_interval() -> None:
    stream = io.StringIO()
    _run(LineProgress(stream, every=3600))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert counts_to_total(stream.getvalue(), "offline sources") == [4]


def test_a_finishing_line_given_by_the_job_replaces_the_count() -> None:
    stream = io.StringIO()
    progress = LineProgress(stream, every=0)
    progress.start("user_profile", 10, "entities", "writing")
    progress.advance("user_profile", 10)
    progress.finish("user_profile", "user_profile: 10 entities in 0.01s [parity]")
    assert stream.getvalue().splitlines() == [
        "user_profile: writing 10 entities",
        "user_profile: 10 entities in 0.01s [parity]",
    ]


def test_a_terminal_gets_a_bar_and_a_log_gets_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    progress = for_stream(terminal)
    assert isinstance(progress, BarProgress)
    _run(progress)
    drawn = terminal.getvalue()
    assert "offline sources" in drawn and "4/4" in drawn and "labels written" in drawn
    assert "\n" not in drawn.rstrip("\n")  # one bar redrawn in place (\r), not lines

    monkeypatch.setenv("PARITY_PROGRESS_SECONDS", "2.5")
    log = for_stream(io.StringIO())
    assert isinstance(log, LineProgress) and log.every == 2.5


def test_a_bar_prints_the_jobs_line_for_a_task_that_drew_none() -> None:
    terminal = _Terminal()
    BarProgress(terminal).finish("txn_features", "txn_features: Feast materialised it [feast]")
    assert terminal.getvalue() == "txn_features: Feast materialised it [feast]\n"


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "inf"])
def test_a_bad_interval_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("PARITY_PROGRESS_SECONDS", value)
    with pytest.raises(ConfigError, match=f"PARITY_PROGRESS_SECONDS .* Got '{value}'"):
        every_seconds()


def test_the_default_does_nothing_at_all() -> None:
    progress = Progress()
    progress.start("x", 1, "rows")
    progress.advance("x", 1, "note")
    progress.finish("x")
