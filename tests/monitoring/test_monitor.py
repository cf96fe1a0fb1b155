"""Monitoring over a real prediction log: the summary's numbers against values computed
here from the same rows, drift and alerts on shifted traffic, the sample-size guard,
live quality, the command line and its exit codes, the HTML report in headless
Chromium, the Prometheus rules in promtool, and training-serving skew against a
running server (zero on a correct setup, caught when the online store is stale)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from framework.errors import ConfigError
from framework.logs.outcomes import OutcomeStore
from framework.models.manifest import Manifest
from framework.models.reference_stats import numeric_profile
from framework.monitoring import log_drift
from framework.monitoring import summary as monitor
from framework.monitoring.prometheus import prometheus_text
from framework.monitoring.thresholds import parse_thresholds
from framework.registry.model_registry import ARTIFACT, ModelRef, ModelRegistry
from tests.support.browser import chromium, dump_dom
from tests.support.prediction_logs import (
    CATEGORIES,
    MODEL,
    T0,
    record_outcomes,
    toy_manifest,
    toy_rows,
    write_log,
)
from tests.support.progress import EVERY_BATCH, counts_to_total
from tests.support.services import missing as _missing
from tests.support.workspaces import Served, Workspace

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def toy(tmp_path: Path) -> tuple[Path, ModelRegistry]:
    """A registry with two versions of a toy model (manifest and reference only)."""
    registry = ModelRegistry(tmp_path / "models")
    rng = np.random.default_rng(0)
    manifest = toy_manifest(rng)
    for _ in range(2):
        registry.register(MODEL, {ARTIFACT: b"not a model"}, manifest)
    return tmp_path, registry


def _tables(summary: dict[str, Any], version: str = "1") -> dict[str, Any]:
    return next(v for v in summary["versions"] if v["version"] == version)


# ------------------------------------------------------------------ the summary


def test_clean_traffic_numbers_match_the_rows(toy: tuple[Path, ModelRegistry]) -> None:
    root, registry = toy
    rng = np.random.default_rng(1)
    rows = toy_rows(rng, 3_000)
    log = write_log(root, rows)
    summary = monitor.monitor_summary(log, registry, cpu_price_per_hour=0.1).to_dict()
    assert summary["model"] == MODEL and summary["status"] == "ok", summary["alerts"]
    assert summary["alerts"] == []
    v = _tables(summary)
    assert v["rows"] == v["requests"] == 3_000
    decisions = rows["decision"].to_pylist()
    for d in ("ACCEPT", "VALIDATE", "REVIEW"):
        assert v["decisions"][d]["count"] == decisions.count(d)
    assert v["decisions"]["FALLBACK"] == {"count": 0, "rate": 0.0}
    latency = rows["latency_seconds"].to_numpy()
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert v["latency_seconds"][key] == pytest.approx(np.quantile(latency, q))
    status = rows["count__status"].to_pylist()
    assert v["feature_status"]["count"]["stale_rate"] == status.count("OUTSIDE_MAX_AGE") / 3_000
    assert v["feature_status"]["count"]["missing_rate"] == 0.0
    cpu = rows["cpu_seconds"].to_numpy()
    assert v["cost"]["cpu_seconds_per_prediction"] == pytest.approx(cpu.mean())
    assert v["cost"]["cost_per_1k_predictions"] == pytest.approx(cpu.mean() * 1000 * 0.1 / 3600)
    drift = v["drift"]
    assert drift["dataset"]["status"] == "no_drift"
    assert {f["feature"] for f in drift["features"]} == {"amount", "category", "count"}
    assert drift["confidence"]["status"] != "drift" and drift["score"]["status"] != "drift"
    assert summary["timeline"] and sum(t["rows"] for t in summary["timeline"]) == 3_000
    json.loads(monitor.to_json(summary))  # JSON-ready, no NaN


def test_counts_equal_direct_counts_per_version(toy: tuple[Path, ModelRegistry]) -> None:
    """What the summary's few queries count for each version (bins and nulls, null or NaN;
    categories in one grouping-sets scan; statuses, cost and mean confidence in one
    aggregate) equals counts made here from that version's own rows, and the timeline's
    buckets equal DuckDB's ``time_bucket`` (a week wide here, where its origin, a Monday,
    matters)."""
    import duckdb

    from framework.models.reference_stats import bin_counts

    root, registry = toy
    rng = np.random.default_rng(12)
    one = toy_rows(rng, 900, version="1", missing=0.2)
    two = toy_rows(rng, 700, version="2", start=T0 + timedelta(days=60), inflate=1.3, new=0.05)
    amount = two["amount"].to_numpy().copy()
    amount[rng.random(700) < 0.1] = np.nan  # a logged NaN counts as a null
    two = two.set_column(two.schema.get_field_index("amount"), "amount", pa.array(amount))
    log = write_log(root, one, two)
    summary = monitor.monitor_summary(log, registry).to_dict()
    for version, rows in (("1", one), ("2", two)):
        v = _tables(summary, version)
        reference = registry.manifest(ModelRef(MODEL, int(version)))["reference"]["features"]
        by_name = {f["feature"]: f for f in v["drift"]["features"]}
        for name in ("amount", "count"):
            values = rows[name].to_numpy(zero_copy_only=False)  # nulls -> NaN
            counts = np.array(bin_counts(values[~np.isnan(values)], reference[name]["edges"]))
            assert by_name[name]["current_share"] == pytest.approx(counts / counts.sum())
            assert by_name[name]["current_null_rate"] == pytest.approx(np.isnan(values).mean())
            assert by_name[name]["current_rows"] == rows.num_rows
        seen = dict(zip(*np.unique(rows["category"].to_pylist(), return_counts=True), strict=True))
        category = by_name["category"]
        new = {k: int(c) for k, c in seen.items() if k not in CATEGORIES}
        assert category["new_categories"] == new and (version == "2") == bool(new)
        assert category["current_share"] == pytest.approx(
            [seen.get(k, 0) / rows.num_rows for k in category["bins"]]
        )
        status = rows["count__status"].to_pylist()
        assert v["feature_status"]["count"] == {
            "missing_rate": status.count("NOT_FOUND") / rows.num_rows,
            "stale_rate": status.count("OUTSIDE_MAX_AGE") / rows.num_rows,
            "reference_null_rate": reference["count"]["null_rate"],
        }
        assert v["feature_status"]["amount"]["missing_rate"] == 0.0
        cpu = rows["cpu_seconds"].to_numpy()
        assert v["cost"]["cpu_seconds_total"] == pytest.approx(cpu.sum())
        assert v["cost"]["predictions_measured"] == rows.num_rows
        confidence = v["drift"]["confidence"]
        assert confidence["current_mean"] == pytest.approx(rows["confidence"].to_numpy().mean())
        latency = rows["latency_seconds"].to_numpy()
        assert v["latency_seconds"]["p99"] == pytest.approx(np.quantile(latency, 0.99))
    width = summary["window"]["bucket_seconds"]
    assert width == 7 * 86_400
    expected = duckdb.sql(
        f"""SELECT time_bucket(INTERVAL {width} SECOND, __timestamp AT TIME ZONE 'UTC')
                       AT TIME ZONE 'UTC' AS bucket, model_version, count(*)
            FROM read_parquet('{log}/*/*/*.parquet') GROUP BY ALL ORDER BY 1, 2"""
    ).fetchall()
    assert [(t["bucket"], t["version"], t["rows"]) for t in summary["timeline"]] == [
        (b.astimezone(UTC).isoformat(), v, n) for b, v, n in expected
    ]


def test_categorical_counts_of_several_columns_in_one_scan() -> None:
    import duckdb

    con = duckdb.connect()
    con.execute(
        """CREATE TEMP VIEW log AS SELECT * FROM (VALUES ('a', 'x', 1), ('a', NULL, 1),
           (NULL, 'y', 2), ('b', 'y', 2)) AS t(c1, c2, v)"""
    )
    # A column's own nulls are counted under None, apart from the other column's groups.
    assert log_drift.categorical_counts(con, ["c1", "c2"], "TRUE") == {
        "c1": {"a": 2, None: 1, "b": 1},
        "c2": {"x": 1, None: 1, "y": 2},
    }
    assert log_drift.categorical_counts(con, ["c2", "c1"], "v = 2") == {
        "c2": {"y": 2},
        "c1": {None: 1, "b": 1},
    }
    assert log_drift.categorical_counts(con, [], "TRUE") == {}


def test_drifted_traffic_flags_exactly_the_shifted_features(
    toy: tuple[Path, ModelRegistry],
) -> None:
    root, registry = toy
    rng = np.random.default_rng(2)
    log = write_log(
        root,
        toy_rows(rng, 2_000, version="1"),
        toy_rows(rng, 2_000, version="2", start=T0 + timedelta(hours=3), inflate=1.6, new=0.08),
    )
    summary = monitor.monitor_summary(log, registry).to_dict()
    assert summary["status"] == "alert"
    flagged = {
        (a["version"], a["message"].split()[0])
        for a in summary["alerts"]
        if a["name"] == "feature_drift"
    }
    assert flagged == {("2", "amount"), ("2", "category")}
    # 2 of 3 features drifted: at the default 50 % the dataset drifted too.
    assert {a["name"] for a in summary["alerts"]} == {"feature_drift", "dataset_drift"}
    v2 = _tables(summary, "2")
    category = next(f for f in v2["drift"]["features"] if f["feature"] == "category")
    assert list(category["new_categories"]) == ["crypto_exchange"]
    assert v2["drift"]["features"][0]["feature"] in ("amount", "category")  # ranked by PSI
    assert _tables(summary, "1")["drift"]["dataset"]["drifted_features"] == []


def test_too_few_rows_give_no_verdict(toy: tuple[Path, ModelRegistry]) -> None:
    root, registry = toy
    rng = np.random.default_rng(3)
    log = write_log(root, toy_rows(rng, 120, inflate=3.0, new=0.5, score_scale=6.0))
    summary = monitor.monitor_summary(log, registry).to_dict()
    assert summary["status"] == "insufficient_data" and summary["alerts"] == []
    v = _tables(summary)
    assert v["drift"]["dataset"]["status"] == "insufficient_data"
    assert all(f["status"] == "insufficient_data" for f in v["drift"]["features"])
    # Lowering the guard (explicitly) gives the verdict.
    low = parse_thresholds(["min_rows=100"])
    assert monitor.monitor_summary(log, registry, thresholds=low).to_dict()["status"] == "alert"


def test_confidence_drop_is_an_early_warning(toy: tuple[Path, ModelRegistry]) -> None:
    root, registry = toy
    rng = np.random.default_rng(4)
    log = write_log(root, toy_rows(rng, 2_000, score_scale=3.5))  # scores drift towards 0.5
    summary = monitor.monitor_summary(log, registry).to_dict()
    names = {a["name"] for a in summary["alerts"]}
    assert {"confidence_drift", "confidence_drop", "prediction_drift"} <= names
    conf = _tables(summary)["drift"]["confidence"]
    assert conf["drop"] == pytest.approx(conf["reference_mean"] - conf["current_mean"])
    assert conf["drop"] >= 0.05


def _regression_rows(rng: np.random.Generator, n: int, *, version: str, null: bool) -> pa.Table:
    """A regression version's log: scores are values, confidence 0.0 (as the predictor
    logged it) or null (as it logs it now)."""
    rows = toy_rows(rng, n, version=version)
    value = rng.normal(50.0, 10.0, n)
    confidence = pa.nulls(n, pa.float64()) if null else pa.array(np.zeros(n))
    for name, column in (
        ("score", pa.array(value)),
        ("label", pa.array([f"{v:.3f}" for v in value])),
        ("confidence", confidence),
        ("decision", pa.array(["ACCEPT"] * n)),
    ):
        rows = rows.set_column(rows.schema.get_field_index(name), name, column)
    return rows


@pytest.mark.parametrize("reference_confidence", ["none", "all-null profile"])
def test_a_regression_version_raises_no_confidence_alert(
    tmp_path: Path, reference_confidence: str
) -> None:
    """Confidence is not a signal of a regression model, whatever the log holds for it
    (0.0 from older servers, null now) and whatever its manifest's reference says
    (null now, an all-null profile in older versions): "not applicable", no number."""
    registry = ModelRegistry(tmp_path / "models")
    rng = np.random.default_rng(11)
    manifest = toy_manifest(rng)
    manifest["task"] = "regression"
    manifest["reference"]["score"] = numeric_profile(rng.normal(50.0, 10.0, 8_000))
    manifest["reference"]["confidence"] = (
        None if reference_confidence == "none" else numeric_profile(np.full(8_000, np.nan))
    )
    registry.register(MODEL, {ARTIFACT: b"not a model"}, manifest)
    registry.register(MODEL, {ARTIFACT: b"not a model"}, manifest)
    log = write_log(
        tmp_path,
        _regression_rows(rng, 2_000, version="1", null=False),
        _regression_rows(rng, 2_000, version="2", null=True),
    )
    typed = monitor.monitor_summary(log, registry)
    summary = typed.to_dict()
    assert summary["status"] == "ok", summary["alerts"]
    for version in ("1", "2"):
        conf = _tables(summary, version)["drift"]["confidence"]
        assert conf["status"] == "not_applicable"
        assert conf["psi"] is None and conf["current_mean"] is None and conf["drop"] is None
        assert "regression" in conf["reasons"][0]
        assert _tables(summary, version)["drift"]["score"]["status"] != "drift"
        # No label-free estimate for a regression, and the output says so rather than
        # leaving the field out.
        estimated = _tables(summary, version)["estimated"]
        assert estimated["available"] is False and "regression" in estimated["reason"]
    assert all(t["mean_confidence"] is None for t in summary["timeline"])
    assert all(t.get("estimated_roc_auc") is None for t in summary["timeline"])
    from framework.cli.monitor import summary_text

    assert "estimated (no labels): not available for a regression model" in summary_text(
        summary, None
    )
    assert "parity_confidence_mean{" not in prometheus_text(typed)
    json.loads(monitor.to_json(summary))
    from framework.monitoring.report import write_report

    html = write_report(tmp_path / "report.html", typed).read_text()
    assert "confidence (not_applicable" in html


def test_missing_features_and_review_rate_alert(toy: tuple[Path, ModelRegistry]) -> None:
    root, registry = toy
    rng = np.random.default_rng(5)
    log = write_log(root, toy_rows(rng, 1_000, missing=0.4))
    summary = monitor.monitor_summary(log, registry, thresholds=parse_thresholds(
        ["review_rate=0.0"])).to_dict()  # fmt: skip
    by_name = {a["name"]: a for a in summary["alerts"]}
    assert "count" in by_name["missing_features"]["message"]
    assert by_name["missing_features"]["value"] == pytest.approx(
        _tables(summary)["feature_status"]["count"]["missing_rate"]
        + _tables(summary)["feature_status"]["count"]["stale_rate"]
    )
    assert "review_rate" in by_name


def test_window_and_request_prefix_select_rows(toy: tuple[Path, ModelRegistry]) -> None:
    root, registry = toy
    rng = np.random.default_rng(6)
    log = write_log(
        root,
        toy_rows(rng, 600, prefix="clean"),
        toy_rows(rng, 700, prefix="drift", start=T0 + timedelta(days=1), inflate=2.0),
    )
    early = monitor.monitor_summary(log, registry, until=T0 + timedelta(hours=12)).to_dict()
    late = monitor.monitor_summary(log, registry, since=T0 + timedelta(hours=12)).to_dict()
    assert (early["window"]["rows"], late["window"]["rows"]) == (600, 700)
    assert early["status"] == "ok" and late["status"] == "alert"
    by_prefix = monitor.monitor_summary(log, registry, request_id_prefix="clean").to_dict()
    assert by_prefix["window"]["rows"] == 600 and by_prefix["status"] == "ok"


def test_live_quality_joins_reported_outcomes(toy: tuple[Path, ModelRegistry]) -> None:
    from sklearn.metrics import roc_auc_score

    root, registry = toy
    rng = np.random.default_rng(7)
    rows = toy_rows(rng, 800)
    log = write_log(root, rows)
    ids, scores = rows["__request_id"].to_pylist(), rows["score"].to_numpy()
    users = rows["user_id"].to_pylist()
    truth = (rng.random(800) < scores * 2).astype(int)
    store = record_outcomes(root, rows, truth, every=2)  # for every other prediction
    store.record(ids[1], entity_keys={"user_id": users[1] + 1}, event_time=None, label=1.0)
    summary = monitor.monitor_summary(log, registry, outcomes_root=root / "outcomes").to_dict()
    quality = _tables(summary)["quality"]
    assert quality["labelled"] == 400  # the outcome naming another user did not match
    assert quality["live"]["roc_auc"] == pytest.approx(roc_auc_score(truth[::2], scores[::2]))
    holdout = registry.manifest(ModelRef(MODEL, 1))["metrics"]["holdout"]
    assert quality["holdout"]["roc_auc"] == holdout["roc_auc"]


def test_request_data_profiled_in_the_reference_is_checked_too(
    toy: tuple[Path, ModelRegistry],
) -> None:
    root, registry = toy
    manifest = registry.manifest(ModelRef(MODEL, 1))
    reference = manifest["reference"]
    reference["request_data"] = {"amount": reference["features"].pop("amount")}
    registry.register(MODEL, {ARTIFACT: b"not a model"}, manifest)  # version 3
    rng = np.random.default_rng(11)
    log = write_log(root, toy_rows(rng, 1_000, version="3", inflate=1.6))
    summary = monitor.monitor_summary(log, registry).to_dict()
    drift = _tables(summary, "3")["drift"]
    assert [f["feature"] for f in drift["features"] if f["status"] == "drift"] == ["amount"]


def test_thresholds_are_checked_by_name() -> None:
    t = parse_thresholds(["psi_drift=0.3", "latency-p99-seconds=0.5", "min_rows=10"])
    assert (t.drift.psi_drift, t.latency_p99_seconds, t.min_rows) == (0.3, 0.5, 10)
    with pytest.raises(ConfigError, match="unknown threshold 'psi'"):
        parse_thresholds(["psi=0.3"])
    with pytest.raises(ConfigError, match="--threshold psi_drift: must be a number"):
        parse_thresholds(["psi_drift=high"])
    with pytest.raises(ConfigError, match="min_rows: must be a whole number"):
        parse_thresholds(["min_rows=2.5"])
    with pytest.raises(ConfigError, match="'psi_warn' must not exceed 'psi_drift'"):
        parse_thresholds(["psi_warn=0.5"])


def test_an_empty_log_is_a_clear_error(toy: tuple[Path, ModelRegistry]) -> None:
    root, registry = toy
    from framework.errors import DataError

    with pytest.raises(DataError, match="has no rows"):
        monitor.monitor_summary(root / "predictions", registry, MODEL).to_dict()


def test_prometheus_text_parses(toy: tuple[Path, ModelRegistry]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    root, registry = toy
    rng = np.random.default_rng(8)
    log = write_log(root, toy_rows(rng, 1_000, inflate=1.8))
    summary = monitor.monitor_summary(log, registry)
    families = {f.name: f for f in text_string_to_metric_families(prometheus_text(summary))}
    detected = {s.labels["feature"]: s.value for s in families["parity_drift_detected"].samples}
    assert detected == {"amount": 1.0, "category": 0.0, "count": 0.0}
    assert families["parity_monitor_alerts"].samples[0].value == len(summary.alerts)
    cost = families["parity_cost_per_1k_predictions"].samples[0]
    assert cost.labels == {"model": MODEL, "version": "1"} and cost.value > 0
    # When the gauges were made, for the alert on a scheduled run that stopped.
    (ran,) = families["parity_monitor_last_run_timestamp_seconds"].samples
    assert ran.labels == {"model": MODEL} and abs(ran.value - time.time()) < 60
    at = {f.name: f for f in text_string_to_metric_families(prometheus_text(summary, now=1e9))}
    assert at["parity_monitor_last_run_timestamp_seconds"].samples[0].value == 1e9


# ------------------------------------------------------------------ the command line


def _cli(argv: list[str]) -> int:
    """``parity`` as its console script runs it (the exit code, output captured by pytest)."""
    from framework.cli import main as cli

    return cli.main(argv)


def test_cli_monitor_exit_code_json_report_and_gauges(
    toy: tuple[Path, ModelRegistry], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, registry = toy
    rng = np.random.default_rng(9)
    drifted = toy_rows(rng, 1_000, prefix="drift", start=T0 + timedelta(days=1), inflate=1.7)
    log = write_log(root, toy_rows(rng, 1_000, prefix="clean"), drifted)
    base = ["--log", str(log), "--registry", str(registry.root), "--model", MODEL]
    assert _cli(["monitor", *base, "--until", "2026-03-01T12:00", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ok"
    report, prom = tmp_path / "out" / "report.html", tmp_path / "out" / "drift.prom"
    code = _cli(["monitor", *base, "--since", "2026-03-02", "--report", str(report),
                 "--prometheus", str(prom), "--cpu-price-per-hour", "0.2"])  # fmt: skip
    assert code == 7
    out = capsys.readouterr().out
    assert "ALERT warning feature_drift (v1): amount drifted" in out
    assert report.read_text().count("<svg") >= 5
    assert 'parity_drift_detected{feature="amount",model="toy_model",version="1"} 1.0' in (
        prom.read_text()
    )
    assert _cli(["monitor", *base, "--no-fail"]) == 0


def test_cli_monitor_logs_its_steps_on_stderr_and_prints_the_same_json(
    toy: tuple[Path, ModelRegistry],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, registry = toy
    rng = np.random.default_rng(10)
    rows = toy_rows(rng, 600)
    log = write_log(root, rows, toy_rows(rng, 600, version="2", prefix="v2"))
    OutcomeStore(root / "outcomes").record(
        rows["__request_id"][0].as_py(), entity_keys={}, event_time=None, label=1.0
    )
    for name, value in EVERY_BATCH.items():
        monkeypatch.setenv(name, value)
    base = ["--log", str(log), "--registry", str(registry.root), "--model", MODEL, "--no-fail"]
    assert _cli(["monitor", *base, "--json"]) == 0
    printed = capsys.readouterr()
    expected = monitor.monitor_summary(log, registry, MODEL, outcomes_root=root / "outcomes")
    assert json.loads(printed.out).keys() == expected.to_dict().keys()
    # The window, the outcome join, versions 1 and 2, the timeline.
    assert counts_to_total(printed.err, "monitor") == [1, 2, 3, 4, 5]
    log_lines = printed.err.splitlines()
    assert log_lines[1].endswith("— window: 1,200 predictions")
    assert log_lines[2].endswith("— outcomes joined")
    assert log_lines[4].endswith("— version 2") and log_lines[5].endswith("— timeline")

    assert _cli(["monitor", *base]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith(f"{MODEL}: ") and "monitor:" not in printed.out
    assert counts_to_total(printed.err, "monitor") == [1, 2, 3, 4, 5]


def test_cli_rejects_bad_flags(toy: tuple[Path, ModelRegistry]) -> None:
    root, registry = toy
    base = ["--log", str(root / "predictions"), "--registry", str(registry.root)]
    with pytest.raises(SystemExit) as exc:
        _cli(["monitor", *base, "--cpu-price-per-hour", "-1"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        _cli(["skew", *base, "--sample", "0"])
    assert _cli(["monitor", *base, "--threshold", "nope=1"]) == 2


# ------------------------------------------------------------------ HTML and deploy files


@pytest.mark.integration
def test_report_opens_in_headless_chromium(toy: tuple[Path, ModelRegistry], tmp_path: Path) -> None:
    from framework.monitoring.report import write_report
    from framework.monitoring.skew import FeatureSkew, SkewExample, SkewReport

    root, registry = toy
    rng = np.random.default_rng(10)
    second = toy_rows(rng, 1_500, version="2", inflate=1.7, new=0.05, start=T0 + timedelta(hours=4))
    log = write_log(root, toy_rows(rng, 1_500), second)
    summary = monitor.monitor_summary(log, registry)
    example = SkewExample("r1", 0, "2026-03-01T08:00:00", {"user_id": 1}, served=3, offline=4)
    skew = SkewReport(MODEL, 10, ["1"], [FeatureSkew("count", 10, 1, 0.1, [example])],
                      {"rel": 1e-9, "abs": 1e-9})  # fmt: skip
    page = write_report(tmp_path / "report.html", summary, skew)
    dom, log = dump_dom(page, tmp_path / "profile")
    assert "<title>parity monitor: toy_model</title>" in dom
    # every plot rendered as an SVG element: 2 versions x (PSI ranking + score + confidence +
    # 3 features + feature ages served vs training) + the timeline's 5 plots per version
    # (confidence, decision mix, estimated ROC-AUC and PR-AUC, latency)
    assert dom.count("<svg") == 2 * (1 + 2 + 3 + 1) + 2 * 5
    assert dom.count('aria-label="Feature age: served vs training"') == 2
    assert "PR-AUC over time: estimated without labels" in dom
    assert "crypto_exchange" in dom and "Training-serving skew" in dom
    console_errors = [
        line for line in log.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()
    ]
    assert not console_errors
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}",
         "--window-size=1280,2400", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    assert shot.stat().st_size > 10_000  # the page painted something


def test_alerting_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        _missing("promtool is not installed (Debian: apt-get install prometheus)")
    rules = ROOT / "deploy" / "prometheus" / "alerts.yml"
    proc = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr
    tests = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
    proc = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True,
                          text=True, timeout=60, cwd=tests.parent)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_grafana_dashboard_queries_only_exported_metrics() -> None:
    """Every metric the dashboard plots is one the server or ``parity monitor`` exports."""
    import re

    from serving.grpc.metrics import ServerMetrics

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "parity.json").read_text())
    families = {m.name for m in ServerMetrics().registry.collect()}
    exported = {f"{n}{s}" for n in families for s in ("", "_total", "_bucket", "_sum", "_count")}
    from framework.monitoring.results import MonitorSummary, Window
    from framework.monitoring.skew import FeatureSkew, SkewReport
    from framework.monitoring.thresholds import Thresholds

    window = Window(None, None, None, None, None, 0, 0)
    summary = MonitorSummary("m", "", window, Thresholds(), errors={})
    skew = SkewReport("m", 0, [], [FeatureSkew("f", 0, 0, 0.0)], {})
    monitor_text = prometheus_text(summary, skew)
    exported |= set(re.findall(r"^# TYPE (parity_[a-z0-9_]+)", monitor_text, re.M))
    used: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"(?<![:\w])(parity_[a-z0-9_]+)", target["expr"]))
    assert len(used) >= 10
    assert used <= exported, sorted(used - exported)


def test_grafana_panels_filter_every_per_model_series_by_the_model_variable() -> None:
    """A panel plotting a series that has a ``model`` label selects ``model=~"$model"``,
    so the dashboard's model filter applies to every per-model panel."""
    import re

    from prometheus_client.metrics import MetricWrapperBase
    from prometheus_client.parser import text_string_to_metric_families

    from framework.monitoring.results import MonitorSummary, Window
    from framework.monitoring.skew import FeatureSkew, SkewReport
    from framework.monitoring.thresholds import Thresholds
    from serving.grpc.metrics import ServerMetrics

    per_model: set[str] = set()
    for metric in vars(ServerMetrics()).values():
        # prometheus_client keeps a metric's label names in ``_labelnames`` (no public name)
        if isinstance(metric, MetricWrapperBase) and "model" in metric._labelnames:
            base = metric._name.removesuffix("_total")
            per_model |= {f"{base}{s}" for s in ("", "_total", "_bucket", "_sum", "_count")}
    window = Window(None, None, None, None, None, 0, 0)
    summary = MonitorSummary("m", "", window, Thresholds(), errors={})
    skew = SkewReport("m", 0, [], [FeatureSkew("f", 0, 0, 0.0)], {})
    for family in text_string_to_metric_families(prometheus_text(summary, skew)):
        per_model |= {s.name for s in family.samples if "model" in s.labels}
    assert {"parity_latency_seconds_bucket", "parity_fallbacks_total"} <= per_model
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "parity.json").read_text())
    unfiltered = [
        (panel["title"], name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name, selector in re.findall(
            r"(?<![:\w])(parity_[a-z0-9_]+)(\{[^}]*\})?", target["expr"]
        )
        if name in per_model and 'model=~"$model"' not in selector
    ]
    assert unfiltered == []


# ------------------------------------------------------------------ against a real server


@pytest.fixture(scope="module")
def served_copy(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Like conftest's ``served``, but the Feast definitions are applied again in the copy,
    so its sources are the copy's own Parquet files, which a test may change."""
    import contextlib
    import io

    from framework.features.repository import apply
    from tests.support.workspaces import serve_workspace

    root = tmp_path_factory.mktemp("monitored")
    shutil.copytree(trained.workspace.root, root, dirs_exist_ok=True)
    ws = Workspace(root)
    # A fresh Feast registry: the copied one records the trained workspace's online tables
    # (absolute paths), and Feast's apply would tear those down.
    (ws.data / "feast" / "registry.db").unlink()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        apply(ws.repo)
    with serve_workspace(ws, trained.version) as served:
        yield served


def _recent(served: Served, n: int) -> list[dict[str, Any]]:
    from tests.support.fraud_requests import recent_rows

    return recent_rows(served, n)


@pytest.mark.integration
def test_skew_is_zero_on_a_correct_setup_and_catches_a_stale_online_store(
    served_copy: Served,
) -> None:
    import pyarrow.parquet as pq

    from framework.monitoring.skew import check_skew
    from serving.grpc.client import PredictionClient

    rows = _recent(served_copy, 60)
    with PredictionClient(served_copy.target) as client:
        client.predict("fraud_model", rows, request_id="skew-check")
    assert served_copy.running.prediction_log.flush(30)
    log = served_copy.workspace.data / "predictions"

    report = check_skew(served_copy.store, log, served_copy.registry, "fraud_model", sample=500)
    assert report.sampled >= 60
    assert report.mismatches == 0, [f for f in report.features if f.mismatches]
    assert {f.feature for f in report.features} >= {"credit_limit", "txn_count_7d", "category"}
    assert report.consequence.rows == 0 and report.consequence.by_feature == []

    # The offline data changes (a credit-limit correction) and nobody re-materialises:
    # the online store the server read is stale.
    source = served_copy.workspace.data / "offline" / "user_profile.parquet"
    table = pq.read_table(source)
    changed = table.set_column(
        table.schema.get_field_index("credit_limit"),
        "credit_limit",
        pc.multiply(table["credit_limit"], 2.0),
    )
    pq.write_table(changed, source)
    stale = check_skew(served_copy.store, log, served_copy.registry, "fraud_model", sample=500)
    by_feature = {f.feature: f for f in stale.features}
    limit = by_feature["credit_limit"]
    assert limit.mismatch_rate > 0.9
    example = limit.examples[0]
    assert example.offline == pytest.approx(2 * example.served)
    assert by_feature["txn_count_7d"].mismatches == 0  # only the changed source differs
    # The consequence: every differing row scored on both vectors by the model itself.
    effect = stale.consequence
    assert effect.rows == limit.mismatches
    assert [f["feature"] for f in effect.by_feature] == ["credit_limit"]
    assert effect.by_feature[0]["rows"] == limit.mismatches
    model, manifest = Manifest.load(served_copy.registry, ModelRef("fraud_model", 1))
    worst = effect.examples[0]
    assert worst["features"] == ["credit_limit"]
    assert abs(worst["offline_score"] - worst["served_score"]) == pytest.approx(
        effect.max_abs_score_change
    )
    assert effect.max_abs_score_change is not None and effect.max_abs_score_change > 0
    assert 0 <= effect.decision_changed <= effect.rows and 0 <= effect.label_changed
    assert model is not None and manifest.serving.threshold > 0


@pytest.mark.integration
def test_monitor_reads_the_servers_log(served_copy: Served) -> None:
    from serving.grpc.client import PredictionClient

    with PredictionClient(served_copy.target) as client:
        client.predict("fraud_model", _recent(served_copy, 30), request_id="monitor-check")
    assert served_copy.running.prediction_log.flush(30)
    summary = monitor.monitor_summary(
        served_copy.workspace.data / "predictions", served_copy.registry, "fraud_model",
        request_id_prefix="monitor-check",
    ).to_dict()  # fmt: skip
    v = _tables(summary)
    assert v["rows"] == 30 and v["requests"] == 1
    assert summary["status"] == "insufficient_data"  # 30 rows: no verdict at the default guard
    assert v["cost"]["cpu_seconds_total"] > 0  # the server measured the request's CPU
    assert sum(d["count"] for d in v["decisions"].values()) == 30
    assert set(v["feature_status"]) >= {"txn_count_1h", "credit_limit"}
    assert v["drift"]["features"] and v["drift"]["confidence"]["reference_mean"] is not None
    assert date.fromisoformat(summary["window"]["first"][:10]) == served_copy.now.date()


# ------------------------------------------------------------------ the sample's drift scenarios


def _period_drift(ws: Workspace, manifest: dict[str, Any], since: datetime) -> dict[str, str]:
    """Each feature's drift status for the transactions from ``since`` on, as the server
    would have seen them (the point-in-time join just before each transaction)."""
    import duckdb

    from framework.features.fields import FeatureField
    from framework.features.training_set import build_training_set
    from framework.models.estimator import feature_frame
    from framework.monitoring.drift import feature_drift

    entities = duckdb.sql(
        f"""SELECT user_id, merchant_id, amount,
                   hour(transaction_timestamp AT TIME ZONE 'UTC')::BIGINT AS hour_of_day,
                   transaction_timestamp - INTERVAL 1 MICROSECOND AS event_timestamp
            FROM '{ws.data / "raw" / "transactions.parquet"}'
            WHERE transaction_timestamp >= '{since.isoformat()}'::TIMESTAMPTZ"""
    ).to_arrow_table()
    table = build_training_set(ws.repo, manifest["feature_service"], entities)
    fields = [FeatureField(**f) for f in manifest["features"]]
    frame = feature_frame(table, fields)
    reference = manifest["reference"]["features"]
    return {
        f.name: feature_drift(f.name, reference[f.name], frame[f.name].to_numpy()).status
        for f in fields
    }


@pytest.mark.slow
@pytest.mark.integration
def test_the_samples_drift_scenarios_are_flagged_on_the_features_they_shift(
    trained: Any, tmp_path: Path
) -> None:
    """The trained model's reference against the last quarter of the sample: clean, then
    with amount inflation and a new merchant category from the drift start."""
    import contextlib
    import io

    from framework.features.repository import apply
    from framework.sample.data import generate
    from framework.sample.pipeline import build_offline_sources
    from framework.sample.scenario import GenerationConfig
    from tests.support.workspaces import TRAIN_SAMPLE, make_workspace

    clean = _period_drift(trained.workspace, trained.manifest, TRAIN_SAMPLE.drift_start)
    # Nothing moves without a scenario: the shipped spec trains from the sample's 31st day,
    # once the 30-day merchant windows have filled.
    assert {f for f, s in clean.items() if s == "drift"} == set(), clean

    config = GenerationConfig(
        seed=TRAIN_SAMPLE.seed,
        transactions=TRAIN_SAMPLE.transactions,
        drift=("amount_inflation", "new_merchant_category"),
    )
    ws = make_workspace(tmp_path)
    generate(config, ws.data)
    build_offline_sources(ws.data / "raw", ws.data / "offline")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        apply(ws.repo)
    drifted = _period_drift(ws, trained.manifest, config.drift_start)
    flagged = {f for f, s in drifted.items() if s == "drift"}
    # The model takes no raw amount (it is request data for the on-demand ratios, which
    # are scale-free): inflation shows in the 7-day amount mean and spread. The new
    # category is a new value of `category`. Nothing else moves.
    assert flagged == {"amount_mean_7d", "amount_std_7d", "category"}, drifted
