"""The plain progress lines a command writes to stderr when stderr is not a terminal
(:class:`framework.progress.LineProgress`), read back by task."""

from __future__ import annotations

import re

#: Plain lines at every batch instead of every 10 s: what a test sets to see them all.
EVERY_BATCH = {"PARITY_PROGRESS_SECONDS": "0"}


def counts_to_total(stderr: str, task: str) -> list[int]:
    """The counts ``task``'s lines report, after checking they are what a log reader
    needs: one start line naming the total, then strictly increasing counts of that
    total, the last of them the finishing line (with the time taken) at the total."""
    name = re.escape(task)
    starts = [
        m
        for line in stderr.splitlines()
        if (m := re.match(rf"{name}: [a-z]+ ([\d,]+) (.+)$", line))
    ]
    assert len(starts) == 1, f"no single start line for {task!r} in:\n{stderr}"
    total, unit = int(starts[0][1].replace(",", "")), re.escape(starts[0][2])
    counted = re.compile(rf"{name}: ([\d,]+)/([\d,]+) {unit} (\(|in \d+\.\d\ds)")
    lines = [m for line in stderr.splitlines() if (m := counted.match(line))]
    assert lines, f"no count for {task!r} in:\n{stderr}"
    counts = [int(m[1].replace(",", "")) for m in lines]
    assert all(int(m[2].replace(",", "")) == total for m in lines), stderr
    assert counts == sorted(set(counts)), f"counts of {task!r} not increasing: {counts}"
    assert counts[-1] == total and lines[-1][3].startswith("in "), stderr
    return counts
