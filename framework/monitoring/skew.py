"""Training-serving skew: do logged predictions carry the features training would see?

For a sample of logged predictions, :func:`check_skew` rebuilds each row's
features offline with :func:`framework.build_training_set` at the time it was
served (``__timestamp``, with the same entity keys and request data) and
compares them value by value with what the server logged: both null, equal
strings, or floats within a tolerance. The result is a mismatch rate per
feature, with examples.

On a correct setup the rate is 0 (the point-in-time join and the TTL-enforced
online read agree by design). It is not when the online store is stale (the
offline data changed and nobody re-materialised), when materialisation
missed a window, or when the two paths compute a feature differently.

Its consequence (:class:`SkewConsequence`): every sampled row with a mismatching
feature is scored by its version on the vector it was served and on the offline one —
how far the scores moved, how many labels and decisions changed — and once per
mismatching feature with only that feature's offline value, so the report names the
features responsible. A skew that changes no decision is a data fix; one that does is
an incident.

Rows scored from client-supplied feature vectors (KServe V2 plain model
serving) have no entity keys and are not sampled. The sample is deterministic:
the rows with the smallest hash of request id and row index.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from framework.errors import ConfigError, DataError
from framework.logs import layout
from framework.logs.reader import (
    log_columns,
    log_versions,
    open_log,
    pick_model,
    sql_literal,
    sql_name,
)
from framework.models.manifest import Manifest
from framework.registry.model_registry import ModelRef, ModelRegistry

#: Relative and absolute tolerance for float features.
REL_TOL = 1e-9
ABS_TOL = 1e-9
MAX_EXAMPLES = 5


@dataclass
class SkewExample:
    """One sampled prediction whose feature differs offline."""

    request_id: str
    row_index: int
    timestamp: str
    entity_keys: dict[str, Any]
    served: Any
    offline: Any


@dataclass
class FeatureSkew:
    feature: str
    compared: int
    mismatches: int
    mismatch_rate: float
    examples: list[SkewExample] = field(default_factory=list)


@dataclass
class SkewConsequence:
    """What the mismatches did to the answers: each sampled row with a mismatching feature
    scored by its version on the vector it was served and on the offline one."""

    rows: int = 0
    mean_abs_score_change: float | None = None
    max_abs_score_change: float | None = None
    label_changed: int = 0  # the label (the score against the threshold) flipped
    decision_changed: int = 0  # the confidence bucket (ACCEPT/VALIDATE/REVIEW) changed
    #: Per feature, the score change its offline value alone makes (one at a time).
    by_feature: list[dict[str, Any]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SkewReport:
    model: str
    sampled: int
    versions: list[str]
    features: list[FeatureSkew]
    tolerance: dict[str, float]
    consequence: SkewConsequence = field(default_factory=SkewConsequence)

    @property
    def mismatches(self) -> int:
        return sum(f.mismatches for f in self.features)

    @property
    def max_mismatch_rate(self) -> float:
        return max((f.mismatch_rate for f in self.features), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["mismatches"] = self.mismatches
        out["features"].sort(key=lambda f: (-f["mismatch_rate"], f["feature"]))
        return out


def same_value(
    served: Any, offline: Any, rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL
) -> bool:
    """Both null (None or NaN), equal, or numbers within the tolerance."""

    def null(v: Any) -> bool:
        return v is None or (isinstance(v, float) and math.isnan(v))

    if null(served) or null(offline):
        return null(served) and null(offline)
    if isinstance(served, int | float) and isinstance(offline, int | float):
        return math.isclose(float(served), float(offline), rel_tol=rel_tol, abs_tol=abs_tol)
    return bool(served == offline)


def check_skew(
    store: Any,
    log_root: Path,
    registry: ModelRegistry,
    model: str | None = None,
    *,
    sample: int = 1_000,
    since: datetime | None = None,
    until: datetime | None = None,
    rel_tol: float = REL_TOL,
    abs_tol: float = ABS_TOL,
) -> SkewReport:
    """Recompute sampled logged predictions' features offline and compare them.

    Parameters
    ----------
    store
        The Feast repository path or ``FeatureStore`` (as for ``build_training_set``).
    log_root, registry, model, since, until
        As for :func:`framework.monitoring.summary.monitor_summary`.
    sample
        How many logged rows to check (at most).
    rel_tol, abs_tol
        Float tolerance of the comparison.
    """
    from framework.features.training_set import build_training_set

    if sample < 1:
        raise ConfigError(f"--sample must be a positive number of rows. Got {sample}.")
    if rel_tol < 0 or abs_tol < 0:
        raise ConfigError("--tolerance must not be negative.")
    model = pick_model(log_root, model)
    con = open_log(log_root, model, since=since, until=until)
    try:
        columns = log_columns(con)
        versions = sorted(log_versions(con))
        checked: dict[str, FeatureSkew] = {}
        effects = _Effects()
        sampled = 0
        for version in versions:
            ref = ModelRef(model, int(version))
            served = _ServedInputs.of(Manifest.read(registry, ref))
            rows = _sample(con, model, version, served, columns, sample - sampled)
            if rows.num_rows == 0:
                continue
            sampled += rows.num_rows
            entity = rows.select([*served.keys, *served.request, "event_timestamp"])
            offline = build_training_set(store, served.feature_service, entity)
            differs = _compare(
                rows, offline, served.features, served.keys, checked, rel_tol, abs_tol
            )
            if any(any(flags) for flags in differs.values()):
                effects.add(registry, ref, rows, offline, differs)
            if sampled >= sample:
                break
    finally:
        con.close()
    if sampled == 0:
        raise DataError(f"No logged predictions of {model} with entity keys to check.")
    return SkewReport(
        model=model,
        sampled=sampled,
        versions=versions,
        features=list(checked.values()),
        tolerance={"rel": rel_tol, "abs": abs_tol},
        consequence=effects.result(),
    )


class _Effects:
    """The score changes of the rows whose features differ, gathered over versions."""

    def __init__(self) -> None:
        self.changes: list[np.ndarray] = []
        self.by_feature: dict[str, list[float]] = {}
        self.label_changed = self.decision_changed = 0
        self.examples: list[dict[str, Any]] = []

    def add(
        self,
        registry: ModelRegistry,
        ref: ModelRef,
        logged: pa.Table,
        offline: pa.Table,
        differs: dict[str, list[bool]],
    ) -> None:
        """Score the rows with a mismatching feature on both vectors, and on the served
        vector with each mismatching feature alone set to its offline value."""
        from framework.models.estimator import feature_frame, score

        model, manifest = Manifest.load(registry, ref)
        fields = manifest.fields
        any_row = np.zeros(logged.num_rows, dtype=bool)
        for flags in differs.values():
            any_row |= np.asarray(flags, dtype=bool)
        rows = np.flatnonzero(any_row)
        served = feature_frame(logged.take(rows), fields)
        rebuilt = feature_frame(offline.take(rows), fields)
        t = manifest.serving

        def scored(frame: Any) -> Any:
            return score(model, frame, manifest.task, t.threshold)

        before, after = scored(served), scored(rebuilt)
        change = after.score - before.score
        self.changes.append(change)
        self.label_changed += int(np.sum(before.label != after.label))
        if not np.isnan(before.confidence).all():
            edges = [t.review_below, t.accept]
            moved = np.digitize(before.confidence, edges) != np.digitize(after.confidence, edges)
            self.decision_changed += int(np.sum(moved))
        for name, flags in differs.items():
            mine = np.asarray(flags, dtype=bool)[rows]
            if not mine.any():
                continue
            one = served.copy()
            one[name] = rebuilt[name]
            alone = scored(one).score - before.score
            self.by_feature.setdefault(name, []).extend(np.abs(alone[mine]).tolist())
        ids = logged[layout.REQUEST_ID].take(rows).to_pylist()
        for i in np.argsort(-np.abs(change))[: MAX_EXAMPLES - len(self.examples)]:
            self.examples.append(
                {
                    "request_id": ids[i],
                    "version": ref.version,
                    "served_score": float(before.score[i]),
                    "offline_score": float(after.score[i]),
                    "features": sorted(n for n, f in differs.items() if f[int(rows[i])]),
                }
            )

    def result(self) -> SkewConsequence:
        if not self.changes:
            return SkewConsequence()
        change = np.abs(np.concatenate(self.changes))
        ranked = sorted(self.by_feature.items(), key=lambda item: -float(np.mean(item[1])))
        by_feature: list[dict[str, Any]] = [
            {"feature": name, "rows": len(v), "mean_abs_score_change": float(np.mean(v)),
             "max_abs_score_change": float(np.max(v))}
            for name, v in ranked
        ]  # fmt: skip
        return SkewConsequence(
            rows=len(change),
            mean_abs_score_change=float(change.mean()),
            max_abs_score_change=float(change.max()),
            label_changed=self.label_changed,
            decision_changed=self.decision_changed,
            by_feature=by_feature,
            examples=self.examples,
        )


@dataclass
class _ServedInputs:
    """What a version's prediction took: its manifest's keys, request data and features."""

    feature_service: str
    keys: list[str]
    request: list[str]
    features: list[str]

    @classmethod
    def of(cls, manifest: Manifest) -> _ServedInputs:
        return cls(
            feature_service=manifest.feature_service,
            keys=list(manifest.join_keys),
            request=list(manifest.request_data),
            features=[f.name for f in manifest.features],
        )


def _sample(
    con: duckdb.DuckDBPyConnection,
    model: str,
    version: str,
    served: _ServedInputs,
    columns: set[str],
    limit: int,
) -> pa.Table:
    """Up to ``limit`` of the version's logged rows with entity keys, the smallest hash of
    request id and row index first (deterministic), with what they were served."""
    needed = [*served.keys, *served.request, *served.features]
    absent = [c for c in needed if c not in columns]
    if absent:
        raise DataError(f"The prediction log lacks the column {absent[0]!r} of {model}:{version}.")
    where = " AND ".join(
        [
            f"{layout.MODEL_VERSION} = {sql_literal(version)}",
            *(f"{sql_name(k)} IS NOT NULL" for k in served.keys),
        ]
    )
    request_id, row_index = layout.REQUEST_ID, layout.ROW_INDEX
    return con.execute(
        f"""SELECT {request_id}, {row_index}, {layout.TIMESTAMP} AS event_timestamp,
                   {", ".join(sql_name(c) for c in needed)}
            FROM log WHERE {where}
            ORDER BY hash({request_id}, {row_index}), {request_id}, {row_index}
            LIMIT {int(limit)}"""
    ).to_arrow_table()


def _compare(
    logged: pa.Table,
    offline: pa.Table,
    features: Sequence[str],
    keys: Sequence[str],
    checked: dict[str, FeatureSkew],
    rel_tol: float,
    abs_tol: float,
) -> dict[str, list[bool]]:
    """Count each feature's mismatches into ``checked``; returns, per feature, which rows
    differ."""
    differs: dict[str, list[bool]] = {}
    ids = logged[layout.REQUEST_ID].to_pylist()
    index = logged[layout.ROW_INDEX].to_pylist()
    times = logged["event_timestamp"].to_pylist()
    key_values = {k: logged[k].to_pylist() for k in keys}
    for name in features:
        served = logged[name].to_pylist()
        rebuilt = offline[name].to_pylist()
        entry = checked.setdefault(name, FeatureSkew(name, 0, 0, 0.0))
        flags = differs[name] = [False] * len(served)
        for i, (s, o) in enumerate(zip(served, rebuilt, strict=True)):
            entry.compared += 1
            if same_value(s, o, rel_tol, abs_tol):
                continue
            flags[i] = True
            entry.mismatches += 1
            if len(entry.examples) < MAX_EXAMPLES:
                entry.examples.append(
                    SkewExample(
                        request_id=ids[i],
                        row_index=index[i],
                        timestamp=times[i].isoformat(),
                        entity_keys={k: key_values[k][i] for k in keys},
                        served=s,
                        offline=o,
                    )
                )
        entry.mismatch_rate = entry.mismatches / entry.compared if entry.compared else 0.0
    return differs
