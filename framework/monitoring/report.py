"""The monitoring report: one self-contained HTML file a person reads at a glance.

It renders a :class:`framework.monitoring.results.MonitorSummary` (and optionally a
skew report) as plain HTML with inline SVG plots drawn here: no JavaScript, no
external fonts, styles or scripts, so it opens offline, in a mail attachment
or a CI artifact viewer. Plots: drift scores ranked (PSI with the warn and
drift thresholds), the reference vs current distribution of every feature and
of the score and confidence, confidence and the decision mix over time,
latency percentiles over time, feature ages served vs training; tables: alerts,
versions (decisions, latency, missing/stale features, cost, live quality), skew.

Hand-drawn SVG rather than a plotting library: the charts are simple bars and
lines, and this keeps the report dependency-free and byte-for-byte
deterministic for the same summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from framework.monitoring.charts import (
    DECISION_COLORS,
    STATUS_COLORS,
    age_ranges,
    distribution,
    escape,
    impact_ranking,
    lines,
    psi_ranking,
    stacked,
)
from framework.monitoring.results import MonitorSummary
from framework.monitoring.skew import SkewReport

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#212121;
max-width:1200px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:8px 0 2px}
.status{display:inline-block;padding:4px 10px;border-radius:4px;color:#fff;font-weight:600}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:12px}.cell{border:1px solid #eee;padding:6px}
.muted{color:#757575;font-size:12px}svg text{font-size:11px;fill:#424242}
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.2g}"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{value:.1%}"


# ------------------------------------------------------------------ sections


def _alerts(summary: Mapping[str, Any]) -> str:
    alerts = summary.get("alerts") or []
    if not alerts:
        return "<p>No alert threshold crossed.</p>"
    rows = "".join(
        f"<tr><td>{escape(a['severity'])}</td><td>{escape(a['name'])}</td><td>{escape(a['version'])}</td>"
        f"<td>{escape(a['message'])}</td></tr>"
        for a in alerts
    )
    head = "<tr><th>severity</th><th>alert</th><th>version</th><th>what</th></tr>"
    return f"<table>{head}{rows}</table>"


def _versions(summary: Mapping[str, Any]) -> str:
    head = (
        "<tr><th>version</th><th>rows</th><th>accept</th><th>validate</th><th>review</th>"
        "<th>fallback</th><th>latency p50 / p95 / p99 (ms)</th><th>mean confidence "
        "(holdout)</th><th>drift verdict</th><th>CPU s / prediction</th>"
        "<th>cost / 1k predictions</th><th>live quality</th></tr>"
    )
    rows = []
    for v in summary["versions"]:
        d = v["decisions"]
        lat = v.get("latency_seconds")
        lat_text = (
            " / ".join(_fmt(lat[k] * 1000, 1) for k in ("p50", "p95", "p99"))
            if lat and lat["p50"] is not None
            else "–"
        )
        drift = v.get("drift") or {}
        conf = drift.get("confidence") or {}
        verdict = drift.get("dataset") or {}
        cost = v.get("cost") or {}
        quality = v.get("quality") or {}
        live = quality.get("live") or {}
        q_text = (
            f"{quality['labelled']} outcomes, ROC-AUC {_fmt(live.get('roc_auc'))} "
            f"(holdout {_fmt((quality.get('holdout') or {}).get('roc_auc'))})"
            if quality.get("labelled")
            else "no outcomes"
        )
        rows.append(
            f"<tr><td>{escape(v['version'])}</td><td class=num>{v['rows']:,}</td>"
            + "".join(
                f"<td class=num>{_pct(d[k]['rate'])}</td>"
                for k in ("ACCEPT", "VALIDATE", "REVIEW", "FALLBACK")
            )
            + f"<td class=num>{lat_text}</td>"
            f"<td class=num>{_fmt(conf.get('current_mean'))} ({_fmt(conf.get('reference_mean'))})"
            f"</td><td>{escape(verdict.get('reason', '–'))}</td>"
            f"<td class=num>{_fmt(cost.get('cpu_seconds_per_prediction'), 5)}</td>"
            f"<td class=num>{_fmt(cost.get('cost_per_1k_predictions'), 6)}</td>"
            f"<td>{escape(q_text)}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _errors(summary: Mapping[str, Any]) -> str:
    e = summary.get("errors") or {}
    if not e.get("requests"):
        return "<p class=muted>No request in the window.</p>"
    text = (
        f"<p>{e['failed']:,} of {e['requests']:,} requests failed ({_pct(e['rate'])}): "
        f"{_pct(e['server_error_rate'])} by the server's fault, "
        f"{_pct(e['client_error_rate'])} by the clients'.</p>"
    )
    if not e["failed"]:
        return text
    codes = "".join(
        f"<tr><td>{escape(c)}</td><td class=num>{n:,}</td></tr>" for c, n in e["by_code"].items()
    )
    examples = "".join(
        f"<tr><td>{escape(x['at'])}</td><td>{escape(x['rpc'])}</td><td>{escape(x['code'])}</td>"
        f"<td>{escape(x['request_id'])}</td><td>{escape(x['message'])}</td></tr>"
        for x in e["examples"]
    )
    return (
        f"{text}<table><tr><th>status</th><th>requests</th></tr>{codes}</table>"
        "<h3>Latest failures</h3><table><tr><th>at</th><th>rpc</th><th>status</th>"
        f"<th>request id</th><th>message</th></tr>{examples}</table>"
    )


def _feature_status(v: Mapping[str, Any]) -> str:
    rates = v.get("feature_status") or {}
    if not rates:
        return ""
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td class=num>{_pct(r['missing_rate'])}</td>"
        f"<td class=num>{_pct(r['stale_rate'])}</td>"
        f"<td class=num>{_pct(r.get('reference_null_rate'))}</td></tr>"
        for name, r in rates.items()
    )
    return (
        "<table><tr><th>feature</th><th>missing online</th><th>stale (past TTL)</th>"
        f"<th>null in training</th></tr>{rows}</table>"
    )


def _by_impact(features: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The features by how far each moved the model's output on the window, where the
    window was decomposed (:mod:`framework.monitoring.impact`); else as given (by PSI)."""
    if not any(f.get("impact") for f in features):
        return list(features)
    return sorted(features, key=lambda f: -((f.get("impact") or {}).get("output_shift") or 0.0))


def _moved(f: Mapping[str, Any]) -> str:
    impact = f.get("impact")
    if not impact:
        return "–"
    return f"{impact['output_shift']:.4f} ({impact['share']:.0%})"


def _drift_table(features: Sequence[Mapping[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{escape(f['feature'])}</td>"
        f"<td style='color:{STATUS_COLORS.get(f['status'], '#000')}'>{escape(f['status'])}</td>"
        f"<td class=num>{_fmt(f['psi'])}</td><td>{escape(f['test'] or '–')}"
        f"</td><td class=num>{_fmt(f['statistic'])}</td><td class=num>{_p(f['p_value'])}</td>"
        f"<td class=num>{_pct(f['reference_null_rate'])} → {_pct(f['current_null_rate'])}</td>"
        f"<td class=num>{_moved(f)}</td><td class=num>{_fmt(f.get('importance'), 4)}</td>"
        f"<td>{escape('; '.join(f['reasons']))}</td></tr>"
        for f in _by_impact(features)
    )
    return (
        "<table><tr><th>feature</th><th>status</th><th>PSI</th><th>test</th><th>statistic</th>"
        "<th>p-value</th><th>null rate</th><th>moved the output</th><th>importance</th>"
        "<th>why</th></tr>"
        f"{rows}</table>"
    )


def _reliance(d: Mapping[str, Any]) -> str:
    """The drifted features ranked by how far they moved the model's output on this window
    (SHAP attributions), with the plot; without a decomposition, by training importance."""
    impact = d.get("impact") or {}
    ranked = d.get("drifted_by_impact") or []
    if impact.get("method"):
        status = {f["feature"]: f["status"] for f in d.get("features") or []}
        items = "".join(
            f"<li><b>{escape(f['feature'])}</b>: moved the score by {_fmt(f['output_shift'], 4)} "
            f"({_pct(f['share'])} of the move; mean {f['mean_shift']:+.4f}), PSI "
            f"{_fmt(f['psi'])}</li>"
            for f in ranked
        )
        return (
            "<p>What moved the model's output on this window: each feature's SHAP "
            f"attributions on {impact['rows']:,} logged rows against "
            f"{impact['reference_rows']:,} training rows ({escape(impact['method'])}; mean "
            f"score {impact['mean_score_reference']:.4f} → {impact['mean_score_window']:.4f})."
            "</p>"
            + impact_ranking(impact["features"], status)
            + (f"<p>Drifted features by impact, largest first:</p><ol>{items}</ol>" * bool(items))
        )
    note = (
        f'<p class="muted">No attribution of the output\'s move: {escape(impact["reason"])}.</p>'
        if impact.get("reason") and ranked
        else ""
    )
    if not ranked:
        return note
    items = "".join(
        f"<li><b>{escape(f['feature'])}</b>: importance {_fmt(f['importance'], 4)}, PSI "
        f"{_fmt(f['psi'])}</li>"
        for f in ranked
    )
    return (
        note + "<p>Drifted features by how much the model relies on them (permutation importance "
        f"on the training holdout, largest first):</p><ol>{items}</ol>"
    )


def _skew(skew: Mapping[str, Any] | None) -> str:
    if not skew:
        return '<p class="muted">Not run (<code>parity skew</code>).</p>'
    rows = []
    for f in skew["features"]:
        ex = f["examples"][0] if f["examples"] else None
        example = (
            f"{ex['entity_keys']} at {ex['timestamp']}: served {ex['served']!r}, offline "
            f"{ex['offline']!r}"
            if ex
            else ""
        )
        color = "#c62828" if f["mismatches"] else "#2e7d32"
        rows.append(
            f"<tr><td>{escape(f['feature'])}</td><td class=num>{f['compared']:,}</td>"
            f"<td class=num style='color:{color}'>{f['mismatches']:,}</td>"
            f"<td class=num>{_pct(f['mismatch_rate'])}</td><td>{escape(example)}</td></tr>"
        )
    return (
        f"<p>{skew['sampled']:,} logged predictions recomputed offline; "
        f"{skew['mismatches']:,} values differ.</p>"
        "<table><tr><th>feature</th><th>compared</th><th>mismatches</th><th>rate</th>"
        f"<th>example</th></tr>{''.join(rows)}</table>"
    )


def _timeline(summary: Mapping[str, Any]) -> str:
    timeline = summary.get("timeline") or []
    if not timeline:
        return '<p class="muted">No rows in the window.</p>'
    out = []
    versions = sorted({t["version"] for t in timeline}, key=str)
    for version in versions:
        points = [t for t in timeline if t["version"] == version]
        xs = [t["bucket"][:16].replace("T", " ") for t in points]
        out.append(f"<h3>version {escape(version)}</h3><div class=grid>")
        out.append(
            '<div class="cell">'
            + lines(
                "Confidence over time",
                xs,
                {
                    "mean confidence": [t["mean_confidence"] for t in points],
                    "10th percentile": [t["p10_confidence"] for t in points],
                },
                y_max=1.0,
            )
            + "</div>"
        )
        out.append(
            '<div class="cell">'
            + stacked(
                "Decision mix over time",
                xs,
                {k: [t[k] for t in points] for k in DECISION_COLORS},
            )
            + "</div>"
        )
        for metric, name in (("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC")):
            est = [t.get(f"estimated_{metric}") for t in points]
            if any(est):
                out.append(
                    '<div class="cell">'
                    + lines(
                        f"{name} over time: estimated without labels, and realized",
                        xs,
                        {
                            "estimated": [e["value"] if e else None for e in est],
                            "95% low": [e["low"] if e else None for e in est],
                            "95% high": [e["high"] if e else None for e in est],
                            "realized": [t.get(f"realized_{metric}") for t in points],
                        },
                        y_max=1.0,
                    )
                    + "</div>"
                )
        out.append(
            '<div class="cell">'
            + lines(
                "Latency percentiles over time (ms)",
                xs,
                {
                    f"p{p}": [
                        None if t[f"latency_p{p}"] is None else t[f"latency_p{p}"] * 1000
                        for t in points
                    ]
                    for p in (50, 95, 99)
                },
                unit=" ms",
            )
            + "</div></div>"
        )
    return "".join(out)


def render_html(result: MonitorSummary, skew_report: SkewReport | None = None) -> str:
    """The report as one HTML document (drawn from the summary's JSON shape)."""
    summary = result.to_dict()
    skew = skew_report.to_dict() if skew_report is not None else None
    status = summary.get("status", "ok")
    color = {"alert": "#c62828", "ok": "#2e7d32"}.get(status, "#9e9e9e")
    window = summary["window"]
    t = summary.get("thresholds") or {}
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>parity monitor: {escape(summary['model'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{escape(summary['model'])} <span class=status style='background:{color}'>"
        f"{escape(status)}</span></h1>",
        f"<p class=muted>{window['rows']:,} predictions in {window['requests']:,} requests, "
        f"{escape(window['first'] or '–')} to {escape(window['last'] or '–')}; generated "
        f"{escape(summary.get('generated_at', ''))}</p>",
        "<h2>Alerts</h2>",
        _alerts(summary),
        "<h2>Versions</h2>",
        _versions(summary),
        "<h2>Failed requests</h2>",
        _errors(summary),
        "<h2>Over time</h2>",
        _timeline(summary),
    ]
    for v in summary["versions"]:
        d = v.get("drift")
        parts.append(f"<h2>Drift: version {escape(v['version'])}</h2>")
        if not d:
            parts.append("<p class=muted>The registry has no reference for this version.</p>")
            continue
        parts.append(f"<p>{escape(d['dataset']['reason'])}.</p>")
        parts.append(_reliance(d))
        parts.append(psi_ranking(d["features"], t.get("psi_warn", 0.1), t.get("psi_drift", 0.25)))
        parts.append("<h3>Predictions: score and confidence</h3><div class=grid>")
        for name in ("score", "confidence"):
            if d.get(name):
                parts.append(
                    f"<div class=cell><h3>{name} ({escape(d[name]['status'])}, PSI "
                    f"{_fmt(d[name]['psi'])})</h3>{distribution(d[name])}</div>"
                )
        parts.append("</div><h3>Features: reference vs current</h3><div class=grid>")
        for f in _by_impact(d["features"]):
            parts.append(
                f"<div class=cell><h3 style='color:{STATUS_COLORS.get(f['status'], '#000')}'>"
                f"{escape(f['feature'])} ({escape(f['status'])}, PSI {_fmt(f['psi'])})</h3>"
                f"{distribution(f)}</div>"
            )
        parts.append("</div>")
        parts.append(_drift_table(d["features"]))
        parts.append("<h3>Missing and stale features</h3>" + _feature_status(v))
        if v.get("freshness"):
            parts.append(
                "<h3>Feature age: served vs training</h3><p class=muted>Share of served "
                "values older than training's 99th percentile on the right (1% in "
                f"training).</p>{age_ranges(v['freshness'])}"
            )
    parts += ["<h2>Training-serving skew</h2>", _skew(skew), "</body></html>"]
    return "\n".join(parts)


def write_report(path: Path, summary: MonitorSummary, skew: SkewReport | None = None) -> Path:
    """Write the HTML report (atomically: a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_html(summary, skew), encoding="utf-8")
    tmp.replace(path)
    return path
