"""How old each feature value of a training set was when its entity row happened.

The age of a joined value is the entity row's event timestamp minus the event
timestamp of the feature row the point-in-time join matched (seconds, never
negative: the join takes no row newer than the entity row). It is what a model
learned to expect of a feature's freshness; the server compares what it reads
online against it (``serving.dataplane.freshness``) and ``parity monitor``
reports the served ages beside it (:mod:`framework.monitoring.freshness`).

How: the join's own query (:func:`framework.features.training_set._group_query`)
carries one more column per feature view, the matched row's age in microseconds
under the same match and the same TTL ``CASE`` as the values, so exactly the
rows that got a value from the view have an age; ties on event time do not
change an age. :func:`summarise` then reduces those narrow Arrow columns in
DuckDB, per feature over the rows whose value is not null (a matched row whose
value is null gave the model nothing): row count, exact percentiles
(``quantile_cont``, numpy's default "linear" definition) and the maximum. The
age columns are dropped before the training set is assembled; nothing is copied
into Python. On-demand features and request data have no age: they are computed
or sent at request time.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from framework.features.view_sources import quote

#: The percentiles recorded per feature (as ``p50``, ``p90``, ``p99``).
PERCENTILES = (0.5, 0.9, 0.99)


def age_column(i: int) -> str:
    """The column a group query names the age of view ``i``'s matched row."""
    return f"a{i}"


def age_sql(entity_ts: str, within_ttl: str | None) -> str:
    """The age in microseconds of the matched row ``v`` at ``entity_ts``; null without a
    match or, when ``within_ttl`` (a SQL condition) is given, outside it."""
    age = f"epoch_us({entity_ts}) - epoch_us(v.__ts)"
    return f"CASE WHEN {within_ttl} THEN {age} END" if within_ttl else age


def summarise(
    con: duckdb.DuckDBPyConnection, part: pa.Table, features: list[tuple[str, str, str, str]]
) -> dict[str, dict[str, Any]]:
    """Per feature (output name, view, value column, age column of ``part``): ``view``,
    ``rows`` (rows with a value), ``p50``, ``p90``, ``p99`` and ``max`` in seconds
    (None without rows).

    Two scans of ``part``: the counts, then the percentiles, once per view for the
    features that have a value wherever their view matched (most of them; exact
    percentiles sort their rows, so one sort serves them all), once more for each
    feature with nulls of its own.
    """
    if not features:
        return {}
    con.register("parity_ages", part)
    try:
        ages = sorted({age for *_, age in features})
        counted = [f"count({quote(a)})" for a in ages]
        counted += [
            f"count({quote(a)}) FILTER (WHERE {quote(v)} IS NOT NULL)" for *_, v, a in features
        ]
        counts = con.execute(f"SELECT {', '.join(counted)} FROM parity_ages").fetchone()
        assert counts is not None
        matched = dict(zip(ages, counts[: len(ages)], strict=True))
        rows = counts[len(ages) :]
        # (age column, value column or None: any row with an age) -> its aggregates' place
        wheres: dict[tuple[str, str | None], int] = {}
        place = []
        for (_, _, value, age), n in zip(features, rows, strict=True):
            key = (age, None if n == matched[age] else value)
            place.append(wheres.setdefault(key, len(wheres)))
        select = []
        for age, nulls_of in wheres:
            where = f"{quote(age)} IS NOT NULL"
            if nulls_of is not None:
                where += f" AND {quote(nulls_of)} IS NOT NULL"
            seconds = f"{quote(age)} / 1e6"
            select.append(
                f"quantile_cont({seconds}, {list(PERCENTILES)}) FILTER (WHERE {where}), "
                f"max({seconds}) FILTER (WHERE {where})"
            )
        found = con.execute(f"SELECT {', '.join(select)} FROM parity_ages").fetchone()
        assert found is not None
    finally:
        con.unregister("parity_ages")
    out: dict[str, dict[str, Any]] = {}
    for (name, view, _, _), n, k in zip(features, rows, place, strict=True):
        quantiles, top = found[2 * k], found[2 * k + 1]
        quantiles = quantiles or [None] * len(PERCENTILES)
        out[name] = {
            "view": view,
            "rows": int(n),
            **{f"p{round(p * 100)}": q for p, q in zip(PERCENTILES, quantiles, strict=True)},
            "max": top,
        }
    return out


def duration(seconds: float) -> str:
    """``seconds`` as a person reads an age: ``3d 2h``, ``5h 12m``, ``4m 10s``, ``12s``."""
    s = max(0, int(round(seconds)))
    days, s = divmod(s, 86_400)
    hours, s = divmod(s, 3_600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {s}s"
    return f"{s}s"
