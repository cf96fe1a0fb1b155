"""Values served older than the version saw in training: a reason on the answer and a
count, exactly for the values whose age (request time − event time, as logged) exceeds
the feature's training p99; fresh values get none; a manifest without ages, no check."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest

from framework.features.feature_ages import duration
from framework.models.manifest import Manifest
from framework.registry.model_registry import ModelRef
from serving.dataplane.freshness import AgeLimits, older_than_training
from serving.dataplane.predictor import PredictInput, Predictor, RowInput
from serving.grpc.metrics import ServerMetrics
from tests.support.fraud_requests import recent_rows
from tests.support.workspaces import Champion

pytestmark = pytest.mark.integration
MODEL = "fraud_model"
OLD = " old; in training 99% were at most "


def _serve(champion: Champion, clock: float) -> tuple[list[Any], pa.Table, ServerMetrics]:
    """The 40 latest transactions scored at ``clock``: answers, log rows, metrics."""
    metrics = ServerMetrics()
    logged: list[pa.Table] = []
    predictor = Predictor(
        champion.registry, champion.store, log=lambda model, rows: logged.append(rows.to_table()),
        clock=lambda: clock,
        on_old_values=lambda ref, feature, count: metrics.child(
            metrics.old_features, ref.name, str(ref.version), feature
        ).inc(count),
    )  # fmt: skip
    try:
        rows = recent_rows(champion.workspace, 40)
        outs = predictor.predict(
            PredictInput(MODEL, [RowInput(r["entity_keys"], r["request_data"]) for r in rows])
        )
    finally:
        predictor.close()
    return outs, pa.concat_tables(logged), metrics


def _expected(table: pa.Table, manifest: Manifest) -> dict[int, dict[str, int]]:
    """Per logged row, its features present online and older than training's p99 (age µs)."""
    assert manifest.freshness is not None
    log = table.to_pylist()
    out: dict[int, dict[str, int]] = {}
    for i, row in enumerate(log):
        for name, age in manifest.freshness.features.items():
            if row[f"{name}__status"] != "PRESENT" or age.p99 is None:
                continue
            served_us = (row["__timestamp"] - row[f"{name}__timestamp"]) // timedelta(
                microseconds=1
            )
            if served_us > round(age.p99 * 1e6):
                out.setdefault(i, {})[name] = served_us
    return out


def _check(outs: list[Any], table: pa.Table, metrics: ServerMetrics, manifest: Manifest) -> int:
    expected = _expected(table, manifest)
    assert manifest.freshness is not None
    for i, out in enumerate(outs):
        old = [r for r in out.reasons if OLD in r]
        assert old == [
            f"{name} is {duration(us / 1e6)}{OLD}"
            f"{duration(manifest.freshness.features[name].p99 or 0)}"
            for name, us in expected.get(i, {}).items()
        ], i
    counted = {
        s.labels["feature"]: s.value
        for family in metrics.registry.collect()
        if family.name == "parity_feature_older_than_training"
        for s in family.samples
        if s.name.endswith("_total")
    }
    per_feature: dict[str, int] = {}
    for features in expected.values():
        for name in features:
            per_feature[name] = per_feature.get(name, 0) + 1
    assert counted == per_feature
    return sum(per_feature.values())


def test_values_older_than_in_training_get_a_reason_and_are_counted(champion: Champion) -> None:
    manifest = Manifest.read(champion.registry, ModelRef(MODEL, 1))
    assert manifest.freshness is not None
    now = champion.now.timestamp()
    # Just after the sample: the online values are as fresh as in training; any older
    # than the p99 (there may be a few, as in training) is reported, and only those.
    outs, table, metrics = _serve(champion, now)
    fresh = _check(outs, table, metrics, manifest)
    assert fresh < len(outs)
    assert any(not [r for r in o.reasons if OLD in r] for o in outs)
    # 36 hours later (materialisation stopped): the 30-day merchant risk features, updated
    # daily, are older than any training saw (p99 under a day) but within their 2-day TTL.
    risk = manifest.freshness.features["merchant_fraud_rate_30d"]
    assert risk.p99 is not None and risk.p99 < 86_400
    outs, table, metrics = _serve(champion, now + 36 * 3600)
    late = _check(outs, table, metrics, manifest)
    assert late > fresh
    present = table.column("merchant_fraud_rate_30d__status").to_pylist().count("PRESENT")
    assert present > 0
    assert sum(any(r.startswith("merchant_fraud_rate_30d is 1d 1") for r in o.reasons)
               for o in outs) == present  # fmt: skip
    # The decision is the model's, as without the check.
    assert all(o.decision != "FALLBACK" for o in outs)


def test_a_manifest_without_ages_is_not_checked(champion: Champion) -> None:
    manifest = Manifest.read(champion.registry, ModelRef(MODEL, 1))
    older = manifest.model_copy(update={"freshness": None})
    assert AgeLimits.of(older) is None
    limits = AgeLimits.of(manifest)
    assert limits is not None
    assert set(limits.limit_us) == set(manifest.freshness.features)  # type: ignore[union-attr]


def test_only_present_values_past_the_limit_are_reported() -> None:
    from framework.features.online import OnlineVectors

    limits = AgeLimits({"a": 10_000_000, "b": 5_000_000}, {"a": 10.0, "b": 5.0})
    now = 1_700_000_000_000_000
    vectors = OnlineVectors(
        {"a": [1, 2, 3, 4], "b": [1, 2, 3, 4]},
        features=["a", "b"],
        status={"a": ["PRESENT", "PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"],
                "b": ["PRESENT"] * 4},
        event_time_us={"a": [now - 10_000_000, now - 10_000_001, now - 99_000_000, 0],
                       "b": [now - 4_000_000, now - 3_600_000_000, now, now - 5_000_000]},
    )  # fmt: skip
    reasons, counts = older_than_training(limits, vectors, [now] * 4)
    # Row 0: exactly at the limit (kept); row 2: past the TTL; row 3: no value.
    assert reasons == {1: ["a is 10s old; in training 99% were at most 10s",
                           "b is 1h 0m old; in training 99% were at most 5s"]}  # fmt: skip
    assert counts == {"a": 1, "b": 1}
