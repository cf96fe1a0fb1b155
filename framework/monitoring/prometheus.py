"""The monitoring summary as Prometheus gauges (``parity monitor --prometheus``)."""

from __future__ import annotations

from framework.monitoring import drift
from framework.monitoring.results import MonitorSummary
from framework.monitoring.skew import SkewReport


def prometheus_text(
    result: MonitorSummary, skew_report: SkewReport | None = None, *, now: float | None = None
) -> str:
    """Drift, confidence, cost and alert gauges in Prometheus' text format (for a
    node_exporter textfile collector or a Pushgateway), with the time they were made
    (``now``, seconds since the epoch; default: the clock), so an alert can tell when
    the scheduled run stopped producing them."""
    import time

    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    summary = result.to_dict()  # the output boundary: the gauges follow the JSON's shape
    skew = skew_report.to_dict() if skew_report is not None else None

    r = CollectorRegistry()
    mv = ["model", "version"]
    psi = Gauge("parity_drift_psi", "PSI of a feature against its reference.",
                [*mv, "feature"], registry=r)  # fmt: skip
    detected = Gauge("parity_drift_detected", "1 if the feature drifted, else 0.",
                     [*mv, "feature"], registry=r)  # fmt: skip
    pvalue = Gauge("parity_drift_p_value", "p-value of the feature's KS or chi-square test.",
                   [*mv, "feature"], registry=r)  # fmt: skip
    share = Gauge("parity_dataset_drift_share", "Share of drifted features.", mv, registry=r)
    output = Gauge("parity_prediction_drift_psi", "PSI of the score or confidence distribution.",
                   [*mv, "output"], registry=r)  # fmt: skip
    conf = Gauge("parity_confidence_mean", "Mean confidence: reference (holdout) or current.",
                 [*mv, "window"], registry=r)  # fmt: skip
    cost = Gauge("parity_cost_per_1k_predictions", "CPU cost of 1,000 predictions.", mv,
                 registry=r)  # fmt: skip
    cpu = Gauge("parity_cpu_seconds_per_prediction", "CPU seconds per prediction.", mv,
                registry=r)  # fmt: skip
    rows = Gauge("parity_monitor_rows", "Logged predictions in the monitored window.", mv,
                 registry=r)  # fmt: skip
    alert_count = Gauge("parity_monitor_alerts", "Alerts raised by parity monitor.", ["model"],
                        registry=r)  # fmt: skip
    estimated = Gauge("parity_estimated_quality", "A classifier's metric expected from its "
                      "scores without labels ('estimate', or its interval's 'low' and 'high').",
                      [*mv, "metric", "bound"], registry=r)  # fmt: skip
    older = Gauge("parity_feature_older_than_training_share", "Share of a feature's served "
                  "values older than the 99th percentile of its ages in training (0.01 there).",
                  [*mv, "feature"], registry=r)  # fmt: skip
    model = str(summary["model"])
    for v in summary["versions"]:
        labels = (model, v["version"])
        rows.labels(*labels).set(v["rows"])
        d = v.get("drift")
        if d:
            for f in d["features"]:
                if f["psi"] is not None:
                    psi.labels(*labels, f["feature"]).set(f["psi"])
                    detected.labels(*labels, f["feature"]).set(float(f["status"] == drift.DRIFT))
                if f["p_value"] is not None:
                    pvalue.labels(*labels, f["feature"]).set(f["p_value"])
            if d["dataset"]["drift_share"] is not None:
                share.labels(*labels).set(d["dataset"]["drift_share"])
            for name in ("score", "confidence"):
                if (d.get(name) or {}).get("psi") is not None:
                    output.labels(*labels, name).set(d[name]["psi"])
            c = d.get("confidence") or {}
            for window in ("reference", "current"):
                if c.get(f"{window}_mean") is not None:
                    conf.labels(*labels, window).set(c[f"{window}_mean"])
        for metric in ("roc_auc", "pr_auc"):
            e = (v.get("estimated") or {}).get(metric)
            if e:
                for bound, key in (("estimate", "value"), ("low", "low"), ("high", "high")):
                    estimated.labels(*labels, metric, bound).set(e[key])
        for f in v.get("freshness") or []:
            if f["older_share"] is not None:
                older.labels(*labels, f["feature"]).set(f["older_share"])
        if v.get("cost"):
            cost.labels(*labels).set(v["cost"]["cost_per_1k_predictions"])
            cpu.labels(*labels).set(v["cost"]["cpu_seconds_per_prediction"])
    errors = summary.get("errors") or {}
    if errors.get("requests"):
        failed = Gauge("parity_monitor_failed_requests", "Failed requests in the monitored "
                       "window by status code.", ["model", "code"], registry=r)  # fmt: skip
        for code, n in errors["by_code"].items():
            failed.labels(model, code).set(n)
        rate = Gauge("parity_monitor_error_rate", "Share of the window's requests that "
                     "failed, by whose fault (server or client).", ["model", "kind"],
                     registry=r)  # fmt: skip
        for kind in ("server", "client"):
            rate.labels(model, kind).set(errors[f"{kind}_error_rate"])
    alert_count.labels(model).set(len(summary["alerts"]))
    ran = Gauge("parity_monitor_last_run_timestamp_seconds",
                "When parity monitor wrote these gauges (seconds since the epoch).", ["model"],
                registry=r)  # fmt: skip
    ran.labels(model).set(time.time() if now is None else now)
    if skew:
        mismatch = Gauge("parity_skew_mismatch_rate",
                         "Share of sampled predictions whose feature differs offline.",
                         ["model", "feature"], registry=r)  # fmt: skip
        for f in skew["features"]:
            mismatch.labels(model, f["feature"]).set(f["mismatch_rate"])
    return generate_latest(r).decode()
