"""``parity monitor`` reports served feature ages next to the training ones: percentiles
and the share older than training's p99 equal values computed here from the logged rows;
a large share is ``stale`` and alerts; a version without recorded ages has none."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from framework.cli import main as cli
from framework.monitoring import summary as monitor
from framework.monitoring.prometheus import prometheus_text
from framework.registry.model_registry import ARTIFACT, ModelRegistry
from tests.support.prediction_logs import MODEL, T0, toy_manifest, toy_rows, write_log


def _served_ages(rows: pa.Table, feature: str) -> np.ndarray:
    """Seconds between the request and the value's event time, of the values served."""
    served = [
        (r["__timestamp"] - r[f"{feature}__timestamp"]) / timedelta(seconds=1)
        for r in rows.select(
            ["__timestamp", f"{feature}__timestamp", f"{feature}__status"]
        ).to_pylist()
        if r[f"{feature}__status"] == "PRESENT"
    ]
    return np.array(served)


def _monitor_text(log: Path, registry: ModelRegistry, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``parity monitor`` prints for ``log``."""
    cli.main(["monitor", "--log", str(log), "--registry", str(registry.root), "--no-fail"])
    return capsys.readouterr().out


def test_served_ages_are_reported_against_training_and_a_stale_feature_alerts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    manifest = toy_manifest(np.random.default_rng(0))
    for _ in range(2):
        registry.register(MODEL, {ARTIFACT: b"not a model"}, manifest)
    rng = np.random.default_rng(3)
    fresh = toy_rows(rng, 2_000)
    # Version 2 reads a store whose user counts stopped updating for a third of the rows.
    stale = toy_rows(rng, 2_000, version="2", stale=0.3, start=T0 + timedelta(hours=3))
    log = write_log(tmp_path, fresh, stale)
    summary = monitor.monitor_summary(log, registry)
    out = summary.to_dict()
    for version, rows in (("1", fresh), ("2", stale)):
        v = next(v for v in out["versions"] if v["version"] == version)
        by_feature = {f["feature"]: f for f in v["freshness"]}
        assert set(by_feature) == {"category", "count"}  # amount is request data: no age
        for name, f in by_feature.items():
            training = manifest["freshness"]["features"][name]
            assert f["training"] == {k: training[k] for k in ("rows", "p50", "p90", "p99", "max")}
            ages = _served_ages(rows, name)
            assert f["served"]["rows"] == len(ages)
            assert [f["served"][k] for k in ("p50", "p90", "p99")] == pytest.approx(
                np.percentile(ages, [50, 90, 99]), rel=1e-9
            )
            assert f["served"]["max"] == pytest.approx(ages.max())
            older = int((ages > training["p99"]).sum())
            assert f["older_than_training_p99"] == older
            assert f["older_share"] == pytest.approx(older / len(ages))
            assert f["expected_share"] == 0.01
        assert by_feature["category"]["status"] == "ok"
        assert by_feature["count"]["status"] == ("stale" if version == "2" else "ok")
    assert 0.25 < summary.version("2").freshness[1].older_share < 0.35  # type: ignore[union-attr,index]
    stale_alerts = [a for a in summary.alerts if a.name == "stale_features"]
    assert [(a.version, a.message.split(":")[0]) for a in stale_alerts] == [("2", "count")]
    assert "older than training's p99 (2h 33m; 1% in training)" in stale_alerts[0].message
    gauges = prometheus_text(summary, now=0.0)
    share = summary.version("2").freshness[1].older_share  # type: ignore[union-attr,index]
    assert (
        f'parity_feature_older_than_training_share{{feature="count",model="{MODEL}",'
        f'version="2"}} {share!r}' in gauges
    )
    text = _monitor_text(log, registry, capsys)
    assert "share past training p99" in text
    assert any(
        line.split()[:1] == ["count"] and line.endswith("stale") for line in text.splitlines()
    )


def test_a_version_without_recorded_ages_or_a_log_without_event_times_has_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = ModelRegistry(tmp_path / "models")
    manifest = toy_manifest(np.random.default_rng(0))
    registry.register(MODEL, {ARTIFACT: b"not a model"}, {**manifest, "freshness": None})
    registry.register(MODEL, {ARTIFACT: b"not a model"}, manifest)
    rng = np.random.default_rng(4)
    first = toy_rows(rng, 600)
    second = toy_rows(rng, 600, version="2", start=T0 + timedelta(hours=3))
    summary = monitor.monitor_summary(write_log(tmp_path / "a", first, second), registry)
    assert summary.version("1").freshness is None  # type: ignore[union-attr]
    assert summary.version("2").freshness is not None  # type: ignore[union-attr]
    # A log written before event times were logged.
    times = ["count__timestamp", "category__timestamp"]
    log = write_log(tmp_path / "b", first.drop_columns(times), second.drop_columns(times))
    summary = monitor.monitor_summary(log, registry)
    assert [v.freshness for v in summary.versions] == [None, None]
    assert "feature age" not in _monitor_text(log, registry, capsys)
