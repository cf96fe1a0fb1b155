"""How fresh the online store is: per feature view, the last materialised interval and
the age of the newest value written online.

The interval is the latest one recorded in the Feast registry (what
``parity materialize`` and Feast's own ``materialize`` record); the newest event
time written is parity's bookkeeping, kept by the online writer next to the data
it describes (:mod:`framework.materialize.online_write`), so every server reading the same
store reports the same age. :func:`freshness` is what the server exports as the
``parity_feature_freshness_seconds{view}`` gauge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from framework.materialize.online_write import open_writer


@dataclass
class ViewStatus:
    """Freshness of one view: its latest materialised interval and newest online value."""

    view: str
    intervals: int
    last_start: str | None
    last_end: str | None
    newest_event: str | None
    age_seconds: float | None
    last_entities: int | None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def status(store: Any, now: datetime | None = None, allow_cache: bool = False) -> list[ViewStatus]:
    """Per online feature view, the last interval recorded in the Feast registry and the
    age of the newest event time written online at ``now`` (None where unknown: never
    materialised by parity, or only through Feast's own materialize).

    ``allow_cache`` reads the views from Feast's registry cache instead of refreshing it.
    """
    now = _utc(now or datetime.now(UTC))
    writer, _ = open_writer(store)
    try:
        state = writer.read_state() if writer is not None else {}
    finally:
        if writer is not None:
            writer.close()
    out = []
    for fv in sorted(store.list_feature_views(allow_cache=allow_cache), key=lambda v: v.name):
        if not fv.online:
            continue
        intervals = list(fv.materialization_intervals)
        last = max(intervals, key=lambda i: _utc(i[1])) if intervals else None
        entry = state.get(fv.name, {})
        newest = entry.get("newest_event")
        age = (now - datetime.fromisoformat(newest)).total_seconds() if newest else None
        out.append(
            ViewStatus(
                view=fv.name,
                intervals=len(intervals),
                last_start=_utc(last[0]).isoformat() if last else None,
                last_end=_utc(last[1]).isoformat() if last else None,
                newest_event=newest,
                age_seconds=round(age, 3) if age is not None else None,
                last_entities=entry.get("last_run", {}).get("entities"),
            )
        )
    return out


def freshness(store: Any, now: datetime | None = None) -> dict[str, float | None]:
    """Seconds since the newest online value, per view (None where unknown)."""
    return {s.view: s.age_seconds for s in status(store, now, allow_cache=True)}
