"""Freshness: how old the served feature values were, against what the model saw in training.

A version's manifest records, per feature read from a feature view, the ages of
its values in the training set (``freshness``: entity time − feature time,
:mod:`framework.features.feature_ages`). The prediction log has, per feature, the
value's event time (``<feature>__timestamp``) and status, and the request's time
(``__timestamp``). Per version and feature, :func:`version_freshness` gives the
served age distribution (p50, p90, p99, max: seconds) of the values the store
returned (status ``PRESENT``; a value past its view's TTL was not served and is a
``stale_rate`` of :mod:`framework.monitoring.operations`), next to the training
one, and the share of served values older than the training p99 — the values the
server flagged with a reason (``serving.dataplane.freshness``), counted here with
the same comparison (microseconds, strictly older).

By construction 1 % of the training values were older than their p99; a share far
above it means the values are staler than the model learned on (a materialisation
that stopped or lags). ``status`` is ``stale`` above
:attr:`Thresholds.older_than_training_share` (``stale_features`` alert),
``insufficient_data`` below ``min_rows`` served values, else ``ok``.

One DuckDB scan of the version's rows for all its features. A version without
recorded ages (trained before they were) or a log without the timestamp columns
gives nothing, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from framework.features.feature_ages import PERCENTILES
from framework.logs.reader import sql_name as quote
from framework.models.manifest import Manifest
from framework.monitoring.thresholds import Thresholds

#: The share of training values older than their p99, by definition of the p99.
EXPECTED_SHARE = 0.01


@dataclass
class FeatureFreshness:
    """One feature's served ages (seconds) next to its training ages."""

    feature: str
    view: str
    training: dict[str, Any]  # rows, p50, p90, p99, max
    served: dict[str, Any]  # rows, p50, p90, p99, max
    older_than_training_p99: int
    older_share: float | None
    status: str  # ok | stale | insufficient_data

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "view": self.view,
            "status": self.status,
            "training": self.training,
            "served": self.served,
            "older_than_training_p99": self.older_than_training_p99,
            "older_share": self.older_share,
            "expected_share": EXPECTED_SHARE,
        }


def version_freshness(
    con: duckdb.DuckDBPyConnection,
    where: str,
    manifest: Manifest | None,
    columns: set[str],
    thresholds: Thresholds,
) -> list[FeatureFreshness] | None:
    """Served vs training ages of each feature of the version's rows (``where`` over the
    view ``log``); None when the version records no ages or the log has no event times."""
    if manifest is None or manifest.freshness is None:
        return None
    ages = {
        name: age
        for name, age in manifest.freshness.features.items()
        if age.p99 is not None and {f"{name}__timestamp", f"{name}__status"} <= columns
    }
    if not ages:
        return None
    select = []
    for name, age in ages.items():
        served_us = f"(epoch_us(__timestamp) - epoch_us({quote(name + '__timestamp')}))"
        having = (
            f"FILTER (WHERE {quote(name + '__status')} = 'PRESENT' "
            f"AND epoch_us({quote(name + '__timestamp')}) > 0)"
        )
        assert age.p99 is not None
        select += [
            f"count(*) {having}",
            f"quantile_cont({served_us} / 1e6, {list(PERCENTILES)}) {having}",
            f"max({served_us} / 1e6) {having}",
            f"count(*) FILTER (WHERE {quote(name + '__status')} = 'PRESENT' "
            f"AND epoch_us({quote(name + '__timestamp')}) > 0 "
            f"AND {served_us} > {round(age.p99 * 1_000_000)})",
        ]
    row = con.execute(f"SELECT {', '.join(select)} FROM log WHERE {where}").fetchone()
    assert row is not None
    out = []
    for k, (name, age) in enumerate(ages.items()):
        rows, quantiles, top, older = row[4 * k : 4 * k + 4]
        quantiles = quantiles or [None] * len(PERCENTILES)
        share = older / rows if rows else None
        if rows < thresholds.min_rows or share is None:
            status = "insufficient_data"
        elif share > thresholds.older_than_training_share:
            status = "stale"
        else:
            status = "ok"
        out.append(
            FeatureFreshness(
                feature=name,
                view=age.view,
                training={
                    "rows": age.rows,
                    "p50": age.p50,
                    "p90": age.p90,
                    "p99": age.p99,
                    "max": age.max,
                },
                served={
                    "rows": int(rows),
                    **{
                        f"p{round(p * 100)}": q for p, q in zip(PERCENTILES, quantiles, strict=True)
                    },
                    "max": top,
                },
                older_than_training_p99=int(older),
                older_share=share,
                status=status,
            )  # fmt: skip
        )
    return out
