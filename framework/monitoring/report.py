"""The monitoring report: one self-contained HTML file a person reads at a glance.

It renders a :class:`framework.monitoring.results.MonitorSummary` (and optionally a
skew report) as plain HTML with inline SVG plots drawn here: no JavaScript, no
external fonts, styles or scripts, so it opens offline, in a mail attachment
or a CI artifact viewer. Plots: drift scores ranked (PSI with the warn and
drift thresholds), the reference vs current distribution of every feature and
of the score and confidence, confidence and the decision mix over time,
latency percentiles over time; tables: alerts, versions (decisions, latency,
missing/stale features, cost, live quality), skew.

Hand-drawn SVG rather than a plotting library: the charts are simple bars and
lines, and this keeps the report dependency-free and byte-for-byte
deterministic for the same summary.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from framework.monitoring.results import MonitorSummary
from framework.monitoring.skew import SkewReport

_COLORS = {"ok": "#2e7d32", "warn": "#f9a825", "drift": "#c62828", "insufficient_data": "#9e9e9e"}
_REF, _CUR = "#90a4ae", "#1565c0"
_DECISION_COLORS = {
    "accept_rate": "#2e7d32",
    "validate_rate": "#f9a825",
    "review_rate": "#ef6c00",
    "fallback_rate": "#c62828",
}
_LINE_COLORS = ("#1565c0", "#ef6c00", "#6a1b9a", "#2e7d32", "#c62828")
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


def _e(value: Any) -> str:
    return html.escape(str(value))


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


# ------------------------------------------------------------------ SVG charts


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">'
        f"<title>{_e(title)}</title>{''.join(body)}</svg>"
    )


def psi_ranking(features: Sequence[Mapping[str, Any]], warn: float, alert: float) -> str:
    """Horizontal bars of PSI per feature, largest first, with the two thresholds."""
    rows = [f for f in features if f.get("psi") is not None]
    if not rows:
        return '<p class="muted">No feature had enough rows for a drift score.</p>'
    label_w, bar_w, row_h = 170, 420, 18
    top = max(max(f["psi"] for f in rows), alert * 1.2)
    height = 24 + row_h * len(rows)
    body = []
    for i, f in enumerate(rows):
        y = 8 + i * row_h
        w = max(1.0, bar_w * f["psi"] / top)
        color = _COLORS.get(f["status"], "#616161")
        body.append(
            f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">{_e(f["feature"])}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row_h - 5}" fill="{color}">'
            f"<title>{_e(f['feature'])}: PSI {f['psi']:.4f} ({_e(f['status'])})</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 12}">{f["psi"]:.3f}</text>'
        )
    for t, name in ((warn, "warn"), (alert, "drift")):
        x = label_w + bar_w * t / top
        body.append(
            f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{height - 14}" stroke="#424242" '
            f'stroke-dasharray="4 3"/><text x="{x:.1f}" y="{height - 2}" text-anchor="middle">'
            f"{name} {t}</text>"
        )
    return _svg(label_w + bar_w + 60, height, body, "PSI per feature, ranked")


def distribution(item: Mapping[str, Any], width: int = 360, height: int = 150) -> str:
    """Reference (grey) vs current (blue) share per bin of one feature."""
    bins = list(item.get("bins") or [])
    ref = list(item.get("reference_share") or [])
    cur = list(item.get("current_share") or [])
    if not bins:
        return ""
    top = max([*ref, *cur, 1e-9])
    plot_h, base = height - 40, height - 30
    slot = (width - 20) / len(bins)
    body = [f'<line x1="10" y1="{base}" x2="{width - 10}" y2="{base}" stroke="#bdbdbd"/>']
    for i, (label, r, c) in enumerate(zip(bins, ref, cur, strict=True)):
        x = 10 + i * slot
        bw = max(1.0, slot / 2 - 1)
        for j, (share, color, side) in enumerate(((r, _REF, "reference"), (c, _CUR, "current"))):
            h = plot_h * share / top
            body.append(
                f'<rect x="{x + j * bw:.1f}" y="{base - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                f'fill="{color}"><title>{_e(label)} {side}: {share:.1%}</title></rect>'
            )
        if len(bins) <= 12:
            body.append(
                f'<text x="{x + slot / 2:.1f}" y="{base + 12}" text-anchor="middle" '
                f'font-size="8">{_e(str(label)[:10])}</text>'
            )
    body.append(
        f'<rect x="{width - 150}" y="2" width="8" height="8" fill="{_REF}"/>'
        f'<text x="{width - 138}" y="10">reference</text>'
        f'<rect x="{width - 75}" y="2" width="8" height="8" fill="{_CUR}"/>'
        f'<text x="{width - 63}" y="10">current</text>'
    )
    return _svg(width, height, body, f"{item.get('feature')}: reference vs current")


def lines(
    title: str,
    xs: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    y_max: float | None = None,
    unit: str = "",
    width: int = 500,
    height: int = 190,
) -> str:
    """Line chart of a few series over time buckets (labels on the x axis)."""
    values = [v for s in series.values() for v in s if v is not None]
    if not xs or not values:
        return f'<p class="muted">{_e(title)}: no data.</p>'
    top = y_max if y_max is not None else max(values) * 1.1 or 1.0
    left, right, plot_top, base = 50, width - 10, 20, height - 30
    n = len(xs)

    def x_at(i: int) -> float:
        return left + (right - left) * (i / (n - 1) if n > 1 else 0.5)

    def y_at(v: float) -> float:
        return base - (base - plot_top) * min(v / top, 1.0)

    body = [
        f'<line x1="{left}" y1="{base}" x2="{right}" y2="{base}" stroke="#bdbdbd"/>',
        f'<line x1="{left}" y1="{plot_top}" x2="{left}" y2="{base}" stroke="#bdbdbd"/>',
        f'<text x="{left - 4}" y="{plot_top + 4}" text-anchor="end">{top:.3g}{unit}</text>',
        f'<text x="{left - 4}" y="{base}" text-anchor="end">0</text>',
        f'<text x="{left}" y="{height - 8}">{_e(xs[0])}</text>',
        f'<text x="{right}" y="{height - 8}" text-anchor="end">{_e(xs[-1])}</text>',
    ]
    for k, (name, s) in enumerate(series.items()):
        color = _LINE_COLORS[k % len(_LINE_COLORS)]
        points = [(x_at(i), y_at(v)) for i, v in enumerate(s) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            body.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>'
            )
        for (x, y), v in zip(points, [v for v in s if v is not None], strict=True):
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}">'
                f"<title>{_e(name)}: {v:.4g}{unit}</title></circle>"
            )
        body.append(
            f'<rect x="{left + 10 + k * 110}" y="4" width="8" height="8" fill="{color}"/>'
            f'<text x="{left + 22 + k * 110}" y="12">{_e(name)}</text>'
        )
    return _svg(width, height, body, title)


def stacked(
    title: str, xs: Sequence[str], series: Mapping[str, Sequence[float | None]], width: int = 500
) -> str:
    """Stacked bars of shares (0-1) per time bucket: the decision mix."""
    if not xs:
        return f'<p class="muted">{_e(title)}: no data.</p>'
    height, left, right, plot_top, base = 190, 50, width - 10, 20, 160
    slot = (right - left) / len(xs)
    body = [
        f'<line x1="{left}" y1="{base}" x2="{right}" y2="{base}" stroke="#bdbdbd"/>',
        f'<text x="{left - 4}" y="{plot_top + 4}" text-anchor="end">100%</text>',
        f'<text x="{left}" y="{height - 8}">{_e(xs[0])}</text>',
        f'<text x="{right}" y="{height - 8}" text-anchor="end">{_e(xs[-1])}</text>',
    ]
    for i, x_label in enumerate(xs):
        y = float(base)
        for name, s in series.items():
            share = s[i] or 0.0
            h = (base - plot_top) * share
            y -= h
            body.append(
                f'<rect x="{left + i * slot + 1:.1f}" y="{y:.1f}" width="{max(slot - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{_DECISION_COLORS.get(name, "#616161")}">'
                f"<title>{_e(x_label)} {_e(name)}: {share:.1%}</title></rect>"
            )
    for k, name in enumerate(series):
        body.append(
            f'<rect x="{left + 10 + k * 100}" y="4" width="8" height="8" '
            f'fill="{_DECISION_COLORS.get(name, "#616161")}"/>'
            f'<text x="{left + 22 + k * 100}" y="12">{_e(name.removesuffix("_rate"))}</text>'
        )
    return _svg(width, height, body, title)


# ------------------------------------------------------------------ sections


def _alerts(summary: Mapping[str, Any]) -> str:
    alerts = summary.get("alerts") or []
    if not alerts:
        return "<p>No alert threshold crossed.</p>"
    rows = "".join(
        f"<tr><td>{_e(a['severity'])}</td><td>{_e(a['name'])}</td><td>{_e(a['version'])}</td>"
        f"<td>{_e(a['message'])}</td></tr>"
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
            f"<tr><td>{_e(v['version'])}</td><td class=num>{v['rows']:,}</td>"
            + "".join(
                f"<td class=num>{_pct(d[k]['rate'])}</td>"
                for k in ("ACCEPT", "VALIDATE", "REVIEW", "FALLBACK")
            )
            + f"<td class=num>{lat_text}</td>"
            f"<td class=num>{_fmt(conf.get('current_mean'))} ({_fmt(conf.get('reference_mean'))})"
            f"</td><td>{_e(verdict.get('reason', '–'))}</td>"
            f"<td class=num>{_fmt(cost.get('cpu_seconds_per_prediction'), 5)}</td>"
            f"<td class=num>{_fmt(cost.get('cost_per_1k_predictions'), 6)}</td>"
            f"<td>{_e(q_text)}</td></tr>"
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
        f"<tr><td>{_e(c)}</td><td class=num>{n:,}</td></tr>" for c, n in e["by_code"].items()
    )
    examples = "".join(
        f"<tr><td>{_e(x['at'])}</td><td>{_e(x['rpc'])}</td><td>{_e(x['code'])}</td>"
        f"<td>{_e(x['request_id'])}</td><td>{_e(x['message'])}</td></tr>"
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
        f"<tr><td>{_e(name)}</td><td class=num>{_pct(r['missing_rate'])}</td>"
        f"<td class=num>{_pct(r['stale_rate'])}</td>"
        f"<td class=num>{_pct(r.get('reference_null_rate'))}</td></tr>"
        for name, r in rates.items()
    )
    return (
        "<table><tr><th>feature</th><th>missing online</th><th>stale (past TTL)</th>"
        f"<th>null in training</th></tr>{rows}</table>"
    )


def _drift_table(features: Sequence[Mapping[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{_e(f['feature'])}</td><td style='color:{_COLORS.get(f['status'], '#000')}'>"
        f"{_e(f['status'])}</td><td class=num>{_fmt(f['psi'])}</td><td>{_e(f['test'] or '–')}"
        f"</td><td class=num>{_fmt(f['statistic'])}</td><td class=num>{_p(f['p_value'])}</td>"
        f"<td class=num>{_pct(f['reference_null_rate'])} → {_pct(f['current_null_rate'])}</td>"
        f"<td class=num>{_fmt(f.get('importance'), 4)}</td>"
        f"<td>{_e('; '.join(f['reasons']))}</td></tr>"
        for f in features
    )
    return (
        "<table><tr><th>feature</th><th>status</th><th>PSI</th><th>test</th><th>statistic</th>"
        "<th>p-value</th><th>null rate</th><th>importance</th><th>why</th></tr>"
        f"{rows}</table>"
    )


def _reliance(d: Mapping[str, Any]) -> str:
    ranked = d.get("drifted_by_importance") or []
    if not ranked:
        return ""
    items = "".join(
        f"<li><b>{_e(f['feature'])}</b>: importance {_fmt(f['importance'], 4)}, PSI "
        f"{_fmt(f['psi'])}</li>"
        for f in ranked
    )
    return (
        "<p>Drifted features by how much the model relies on them (permutation importance "
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
            f"<tr><td>{_e(f['feature'])}</td><td class=num>{f['compared']:,}</td>"
            f"<td class=num style='color:{color}'>{f['mismatches']:,}</td>"
            f"<td class=num>{_pct(f['mismatch_rate'])}</td><td>{_e(example)}</td></tr>"
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
        out.append(f"<h3>version {_e(version)}</h3><div class=grid>")
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
                {k: [t[k] for t in points] for k in _DECISION_COLORS},
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
        f"<title>parity monitor: {_e(summary['model'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_e(summary['model'])} <span class=status style='background:{color}'>"
        f"{_e(status)}</span></h1>",
        f"<p class=muted>{window['rows']:,} predictions in {window['requests']:,} requests, "
        f"{_e(window['first'] or '–')} to {_e(window['last'] or '–')}; generated "
        f"{_e(summary.get('generated_at', ''))}</p>",
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
        parts.append(f"<h2>Drift: version {_e(v['version'])}</h2>")
        if not d:
            parts.append("<p class=muted>The registry has no reference for this version.</p>")
            continue
        parts.append(f"<p>{_e(d['dataset']['reason'])}.</p>")
        parts.append(_reliance(d))
        parts.append(psi_ranking(d["features"], t.get("psi_warn", 0.1), t.get("psi_drift", 0.25)))
        parts.append("<h3>Predictions: score and confidence</h3><div class=grid>")
        for name in ("score", "confidence"):
            if d.get(name):
                parts.append(
                    f"<div class=cell><h3>{name} ({_e(d[name]['status'])}, PSI "
                    f"{_fmt(d[name]['psi'])})</h3>{distribution(d[name])}</div>"
                )
        parts.append("</div><h3>Features: reference vs current</h3><div class=grid>")
        for f in d["features"]:
            parts.append(
                f"<div class=cell><h3 style='color:{_COLORS.get(f['status'], '#000')}'>"
                f"{_e(f['feature'])} ({_e(f['status'])}, PSI {_fmt(f['psi'])})</h3>"
                f"{distribution(f)}</div>"
            )
        parts.append("</div>")
        parts.append(_drift_table(d["features"]))
        parts.append("<h3>Missing and stale features</h3>" + _feature_status(v))
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
