"""The monitoring report's charts: hand-drawn inline SVG, no plotting library.

The charts are simple bars and lines; drawing them here keeps the report
dependency-free (no JavaScript, fonts or scripts) and byte-for-byte
deterministic for the same summary.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STATUS_COLORS = {
    "ok": "#2e7d32",
    "warn": "#f9a825",
    "drift": "#c62828",
    "insufficient_data": "#9e9e9e",
}
REFERENCE_COLOR, CURRENT_COLOR = "#90a4ae", "#1565c0"
DECISION_COLORS = {
    "accept_rate": "#2e7d32",
    "validate_rate": "#f9a825",
    "review_rate": "#ef6c00",
    "fallback_rate": "#c62828",
}
LINE_COLORS = ("#1565c0", "#ef6c00", "#6a1b9a", "#2e7d32", "#c62828")


def escape(value: Any) -> str:
    """``value`` as HTML text."""
    return html.escape(str(value))


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


_LABEL_W, _BAR_W, _ROW_H = 170, 420, 18


@dataclass(frozen=True)
class _Bar:
    label: str
    value: float
    color: str
    tooltip: str
    text: str  # printed after the bar


def _bars(bars: Sequence[_Bar], top: float, y0: int) -> list[str]:
    """One labelled horizontal bar per row, scaled to ``top``, from ``y0`` down."""
    body = []
    for i, bar in enumerate(bars):
        y = y0 + i * _ROW_H
        w = max(1.0, _BAR_W * bar.value / top)
        body.append(
            f'<text x="{_LABEL_W - 6}" y="{y + 12}" text-anchor="end">{escape(bar.label)}</text>'
            f'<rect x="{_LABEL_W}" y="{y + 2}" width="{w:.1f}" height="{_ROW_H - 5}" '
            f'fill="{bar.color}"><title>{escape(bar.tooltip)}</title></rect>'
            f'<text x="{_LABEL_W + w + 4:.1f}" y="{y + 12}">{escape(bar.text)}</text>'
        )
    return body


def psi_ranking(features: Sequence[Mapping[str, Any]], warn: float, alert: float) -> str:
    """Horizontal bars of PSI per feature, largest first, with the two thresholds."""
    rows = [f for f in features if f.get("psi") is not None]
    if not rows:
        return '<p class="muted">No feature had enough rows for a drift score.</p>'
    top = max(max(f["psi"] for f in rows), alert * 1.2)
    height = 24 + _ROW_H * len(rows)
    body = _bars(
        [
            _Bar(
                f["feature"],
                f["psi"],
                STATUS_COLORS.get(f["status"], "#616161"),
                f"{f['feature']}: PSI {f['psi']:.4f} ({f['status']})",
                f"{f['psi']:.3f}",
            )
            for f in rows
        ],  # fmt: skip
        top,
        8,
    )
    for t, name in ((warn, "warn"), (alert, "drift")):
        x = _LABEL_W + _BAR_W * t / top
        body.append(
            f'<line x1="{x:.1f}" y1="4" x2="{x:.1f}" y2="{height - 14}" stroke="#424242" '
            f'stroke-dasharray="4 3"/><text x="{x:.1f}" y="{height - 2}" text-anchor="middle">'
            f"{name} {t}</text>"
        )
    return _svg(_LABEL_W + _BAR_W + 60, height, body, "PSI per feature, ranked")


def impact_ranking(features: Sequence[Mapping[str, Any]], status: Mapping[str, str]) -> str:
    """Horizontal bars of how far each feature moved the model's output (score units),
    largest first, coloured by the feature's drift status."""
    rows = [f for f in features if f["output_shift"] > 0][:15]
    if not rows:
        return '<p class="muted">No feature moved the model\'s output.</p>'
    bars = []
    for f in rows:
        state = status.get(f["feature"], "ok")
        bars.append(
            _Bar(f["feature"], f["output_shift"], STATUS_COLORS.get(state, "#616161"),
                 f"{f['feature']}: moved the score by {f['output_shift']:.4f} "
                 f"({f['share']:.0%} of the move; {state})", f"{f['share']:.0%}")
        )  # fmt: skip
    top = max(f["output_shift"] for f in rows)
    return _svg(_LABEL_W + _BAR_W + 60, 12 + _ROW_H * len(rows), _bars(bars, top, 4),
                "How far each feature moved the output")  # fmt: skip


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
        for j, (share, color, side) in enumerate(
            ((r, REFERENCE_COLOR, "reference"), (c, CURRENT_COLOR, "current"))
        ):
            h = plot_h * share / top
            body.append(
                f'<rect x="{x + j * bw:.1f}" y="{base - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                f'fill="{color}"><title>{escape(label)} {side}: {share:.1%}</title></rect>'
            )
        if len(bins) <= 12:
            body.append(
                f'<text x="{x + slot / 2:.1f}" y="{base + 12}" text-anchor="middle" '
                f'font-size="8">{escape(str(label)[:10])}</text>'
            )
    body.append(
        f'<rect x="{width - 150}" y="2" width="8" height="8" fill="{REFERENCE_COLOR}"/>'
        f'<text x="{width - 138}" y="10">reference</text>'
        f'<rect x="{width - 75}" y="2" width="8" height="8" fill="{CURRENT_COLOR}"/>'
        f'<text x="{width - 63}" y="10">current</text>'
    )
    return _svg(width, height, body, f"{item.get('feature')}: reference vs current")


def age_ranges(items: Sequence[Mapping[str, Any]], width: int = 640) -> str:
    """Per feature, its training (grey) and served (blue; red when stale) ages as bars from
    p50 to p99 with a tick at p90, on a log time axis, and the share served older than
    training's p99 (:mod:`framework.monitoring.freshness`): a blue bar reaching past the grey
    one is a feature staler than the model learned on."""
    rows = [f for f in items if f["training"]["p99"] is not None]
    if not rows:
        return '<p class="muted">No feature age was recorded.</p>'
    ends = [a[k] for f in rows for a in (f["training"], f["served"]) for k in ("p50", "p99")]
    ends = [max(e, 1.0) for e in ends if e is not None]
    lo, hi = math.log10(min(ends)) - 0.3, math.log10(max(ends)) + 0.3
    label_w, left, right, row_h = 190, 200, width - 70, 30
    height = 34 + row_h * len(rows)

    def x_at(seconds: float) -> float:
        return left + (right - left) * (math.log10(max(seconds, 1.0)) - lo) / (hi - lo)

    body = []
    for tick, name in _AGE_TICKS:
        if lo <= math.log10(tick) <= hi:
            x = x_at(tick)
            body.append(
                f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{height - 16}" stroke="#e0e0e0"/>'
                f'<text x="{x:.1f}" y="{height - 4}" text-anchor="middle">{name}</text>'
            )
    for i, f in enumerate(rows):
        y = 16 + i * row_h
        body.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(f["feature"])}</text>'
        )
        served_color = STATUS_COLORS["drift"] if f["status"] == "stale" else CURRENT_COLOR
        for j, (side, color) in enumerate(
            (("training", REFERENCE_COLOR), ("served", served_color))
        ):
            a = f[side]
            if a["p50"] is None or a["p99"] is None:
                continue
            x0, x1 = x_at(a["p50"]), x_at(a["p99"])
            top = y + 3 + j * 11
            body.append(
                f'<rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 2):.1f}" height="9" '
                f'fill="{color}"><title>{escape(f["feature"])} {side}: p50 {a["p50"]:.0f} s, '
                f"p90 {a['p90']:.0f} s, p99 {a['p99']:.0f} s ({a['rows']:,} values)</title></rect>"
            )
            if a.get("p90") is not None:
                x = x_at(a["p90"])
                body.append(
                    f'<line x1="{x:.1f}" y1="{top - 1}" x2="{x:.1f}" y2="{top + 10}" '
                    'stroke="#212121"/>'
                )
        share = f["older_share"]
        body.append(
            f'<text x="{right + 6}" y="{y + 15}" style="fill:{served_color};font-weight:600">'
            f"{'–' if share is None else f'{share:.1%}'}</text>"
        )
    body.append(
        f'<rect x="{left}" y="2" width="8" height="8" fill="{REFERENCE_COLOR}"/>'
        f'<text x="{left + 12}" y="10">training</text>'
        f'<rect x="{left + 70}" y="2" width="8" height="8" fill="{CURRENT_COLOR}"/>'
        f'<text x="{left + 82}" y="10">served (p50 to p99, tick at p90)</text>'
        f'<text x="{right + 6}" y="10">older</text>'
    )
    return _svg(width, height, body, "Feature age: served vs training")


#: Grid lines of :func:`age_ranges` (seconds, label).
_AGE_TICKS = (
    (1, "1s"), (60, "1m"), (3_600, "1h"), (86_400, "1d"), (7 * 86_400, "7d"),
    (30 * 86_400, "30d"), (365 * 86_400, "1y"), (3_650 * 86_400, "10y"),
)  # fmt: skip


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
        return f'<p class="muted">{escape(title)}: no data.</p>'
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
        f'<text x="{left}" y="{height - 8}">{escape(xs[0])}</text>',
        f'<text x="{right}" y="{height - 8}" text-anchor="end">{escape(xs[-1])}</text>',
    ]
    for k, (name, s) in enumerate(series.items()):
        color = LINE_COLORS[k % len(LINE_COLORS)]
        points = [(x_at(i), y_at(v)) for i, v in enumerate(s) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            body.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>'
            )
        for (x, y), v in zip(points, [v for v in s if v is not None], strict=True):
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}">'
                f"<title>{escape(name)}: {v:.4g}{unit}</title></circle>"
            )
        body.append(
            f'<rect x="{left + 10 + k * 110}" y="4" width="8" height="8" fill="{color}"/>'
            f'<text x="{left + 22 + k * 110}" y="12">{escape(name)}</text>'
        )
    return _svg(width, height, body, title)


def stacked(
    title: str, xs: Sequence[str], series: Mapping[str, Sequence[float | None]], width: int = 500
) -> str:
    """Stacked bars of shares (0-1) per time bucket: the decision mix."""
    if not xs:
        return f'<p class="muted">{escape(title)}: no data.</p>'
    height, left, right, plot_top, base = 190, 50, width - 10, 20, 160
    slot = (right - left) / len(xs)
    body = [
        f'<line x1="{left}" y1="{base}" x2="{right}" y2="{base}" stroke="#bdbdbd"/>',
        f'<text x="{left - 4}" y="{plot_top + 4}" text-anchor="end">100%</text>',
        f'<text x="{left}" y="{height - 8}">{escape(xs[0])}</text>',
        f'<text x="{right}" y="{height - 8}" text-anchor="end">{escape(xs[-1])}</text>',
    ]
    for i, x_label in enumerate(xs):
        y = float(base)
        for name, s in series.items():
            share = s[i] or 0.0
            h = (base - plot_top) * share
            y -= h
            body.append(
                f'<rect x="{left + i * slot + 1:.1f}" y="{y:.1f}" width="{max(slot - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{DECISION_COLORS.get(name, "#616161")}">'
                f"<title>{escape(x_label)} {escape(name)}: {share:.1%}</title></rect>"
            )
    for k, name in enumerate(series):
        body.append(
            f'<rect x="{left + 10 + k * 100}" y="4" width="8" height="8" '
            f'fill="{DECISION_COLORS.get(name, "#616161")}"/>'
            f'<text x="{left + 22 + k * 100}" y="12">{escape(name.removesuffix("_rate"))}</text>'
        )
    return _svg(width, height, body, title)
