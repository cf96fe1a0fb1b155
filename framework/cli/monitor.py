"""``parity monitor`` and ``parity skew``: the command-line side of monitoring.

:func:`register` adds both subcommands to ``parity``'s parser and returns their
handlers for ``framework.cli.main``'s dispatch table. Both exit with
:attr:`AlertsRaised.exit_code` (7) after printing their results when an alert
threshold is crossed, so a scheduler (cron, Airflow, a CI job) can alert on
the exit status alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from framework.errors import ConfigError, ParityError

Handler = Callable[[argparse.Namespace], None]


class AlertsRaised(ParityError):
    """Monitoring crossed an alert threshold (the results were printed first)."""

    exit_code = 7


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text!r}")
    return value


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}")
    return int(text)


def add_log_window_args(
    parser: argparse.ArgumentParser, helpers: Mapping[str, Callable[..., Any]]
) -> None:
    helpers["repo_args"](parser)
    helpers["registry_arg"](parser)
    parser.add_argument("--model", help="the model (default: the only one in the log)")
    parser.add_argument(
        "--since", type=helpers["timestamp"], help="first request time, ISO 8601 (naive: UTC)"
    )
    parser.add_argument(
        "--until", type=helpers["timestamp"], help="end of the window (exclusive), ISO 8601"
    )
    parser.add_argument(
        "--log",
        type=Path,
        help="the prediction log (default: predictions/ in the repository's state folder)",
    )
    helpers["json_arg"](parser)


def register(
    commands: Any, helpers: Mapping[str, Callable[..., Any]]
) -> dict[tuple[str, str | None], Handler]:
    """Add ``monitor`` and ``skew`` to ``commands`` (argparse subparsers).

    ``helpers`` holds ``framework.cli.main``'s shared argument helpers: ``repo_args``,
    ``registry_arg``, ``json_arg`` (functions taking a parser) and ``timestamp``
    (an argparse type).
    """
    monitor = commands.add_parser(
        "monitor",
        help="drift, skew, decisions, latency, cost and live quality from the prediction log",
        description="Compare logged predictions with each model version's reference "
        "statistics: per-feature drift (PSI on the stored bins, KS, chi-square, new "
        "categories), prediction and confidence drift, decision mix, missing and stale "
        "features, feature ages served vs training, latency, CPU cost and live quality "
        "(when outcomes were reported). "
        "Exits 7 when an alert threshold is crossed.",
        epilog="Thresholds (--threshold NAME=VALUE): psi_warn 0.1, psi_drift 0.25, p_value 0.05, "
        "ks_statistic 0.1, js_distance 0.1, new_category_share 0.01, null_rate_change 0.1, "
        "min_rows 500, dataset_drift_share 0.5, confidence_drop 0.05, latency_p99_seconds 0.25, "
        "fallback_rate 0.05, review_rate 0.3, server_error_rate 0.01, client_error_rate 0.05, "
        "missing_rate_increase 0.1, quality_drop 0.05, "
        "min_labels 200, skew_mismatch_rate 0, older_than_training_share 0.1.",
    )
    add_log_window_args(monitor, helpers)
    monitor.add_argument("--report", type=Path, metavar="PATH.html", help="write the HTML report")
    monitor.add_argument(
        "--prometheus",
        type=Path,
        metavar="PATH.prom",
        help="write drift, confidence and cost gauges in Prometheus' text format",
    )
    monitor.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a threshold (repeatable; see below)",
    )
    monitor.add_argument(
        "--cpu-price-per-hour",
        type=_price,
        default=None,
        help="price of one CPU-hour for the cost per 1,000 predictions "
        "(default: $PARITY_CPU_PRICE_PER_HOUR, else 0.04)",
    )
    monitor.add_argument(
        "--request-prefix", help="only requests whose id starts with this (one traffic source)"
    )
    monitor.add_argument(
        "--outcomes",
        type=Path,
        help="reported ground truth (default: outcomes/ in the repository's state folder)",
    )
    monitor.add_argument(
        "--skew",
        type=_positive,
        metavar="N",
        help="also run the skew check on N sampled predictions (needs the Feast repository)",
    )
    monitor.add_argument(
        "--no-fail", action="store_true", help="exit 0 even when alerts are raised"
    )

    skew = commands.add_parser(
        "skew",
        help="training-serving skew: recompute logged features offline and compare",
        description="For sampled logged predictions, rebuild the features with the "
        "point-in-time join at the time they were served and compare value by value. "
        "Exits 7 when a feature's mismatch rate exceeds --max-mismatch-rate.",
    )
    add_log_window_args(skew, helpers)
    skew.add_argument(
        "--sample", type=_positive, default=1_000, help="rows to check (default: %(default)s)"
    )
    skew.add_argument(
        "--tolerance",
        type=_price,
        default=1e-9,
        help="relative and absolute tolerance for floats (default: %(default)s)",
    )
    skew.add_argument(
        "--max-mismatch-rate",
        type=_price,
        default=0.0,
        help="largest per-feature mismatch rate that is not an alert (default: %(default)s)",
    )
    return {("monitor", None): cmd_monitor, ("skew", None): cmd_skew}


def log_paths(args: argparse.Namespace) -> tuple[Path, Path, Any]:
    """The repository, the prediction log and the model registry the flags name."""
    from framework.features.repository import data_dir, default_repo
    from framework.registry.model_registry import ModelRegistry

    repo = args.repo or default_repo()
    data = data_dir(repo)
    registry = ModelRegistry(args.registry or data / "models")
    return repo, args.log or data / "predictions", registry


def _run_skew(args: argparse.Namespace, repo: Path, log: Path, registry: Any, sample: int,
              tolerance: float) -> Any:  # fmt: skip
    from framework.features.repository import open_store
    from framework.monitoring.skew import check_skew

    with open_store(repo, args.profile) as store:
        return check_skew(
            store, log, registry, args.model, sample=sample, since=args.since, until=args.until,
            rel_tol=tolerance, abs_tol=tolerance,
        )  # fmt: skip


def cmd_monitor(args: argparse.Namespace) -> None:
    from framework.monitoring.alerts import add_skew
    from framework.monitoring.prometheus import prometheus_text
    from framework.monitoring.report import write_report
    from framework.monitoring.summary import DEFAULT_CPU_PRICE_PER_HOUR, monitor_summary, to_json
    from framework.monitoring.thresholds import parse_thresholds
    from framework.progress import for_stream

    repo, log, registry = log_paths(args)
    thresholds = parse_thresholds(args.threshold)
    price = args.cpu_price_per_hour
    if price is None:
        env = os.environ.get("PARITY_CPU_PRICE_PER_HOUR")
        try:
            price = _price(env) if env else DEFAULT_CPU_PRICE_PER_HOUR
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"PARITY_CPU_PRICE_PER_HOUR: {exc}.") from None
    outcomes = args.outcomes or log.parent / "outcomes"
    progress = for_stream(sys.stderr)
    summary = monitor_summary(
        log, registry, args.model, since=args.since, until=args.until,
        request_id_prefix=args.request_prefix, outcomes_root=outcomes, thresholds=thresholds,
        cpu_price_per_hour=price, progress=progress,
    )  # fmt: skip
    if args.skew:
        # One step: it recomputes the sampled predictions' features by a point-in-time join.
        progress.start("skew", 1, "check", "running")
        skew = _run_skew(args, repo, log, registry, args.skew, 1e-9)
        progress.advance("skew", 1, f"{skew.sampled:,} predictions recomputed")
        progress.finish("skew")
        add_skew(summary, skew, thresholds)
    if args.report:
        write_report(args.report, summary, summary.skew)
    if args.prometheus:
        args.prometheus.parent.mkdir(parents=True, exist_ok=True)
        args.prometheus.write_text(prometheus_text(summary, summary.skew))
    payload = summary.to_dict()
    print(to_json(payload) if args.json else summary_text(payload, args.report))
    if summary.alerts and not args.no_fail:
        raise AlertsRaised(
            f"{len(summary.alerts)} alert(s): "
            + ", ".join(sorted({a.name for a in summary.alerts}))
        )


def summary_text(summary: Mapping[str, Any], report: Path | None) -> str:
    """What ``parity monitor`` prints without ``--json``: a few lines per version."""
    w = summary["window"]
    lines = [
        f"{summary['model']}: {summary['status']} — {w['rows']:,} predictions in "
        f"{w['requests']:,} requests ({w['first']} to {w['last']})"
    ]
    e = summary.get("errors") or {}
    if e.get("requests"):
        codes = ", ".join(f"{c} {n:,}" for c, n in e["by_code"].items())
        lines.append(
            f"  failed requests: {e['failed']:,} of {e['requests']:,} ({e['rate']:.1%}; server "
            f"{e['server_error_rate']:.1%}, client {e['client_error_rate']:.1%})"
            + (f": {codes}" if codes else "")
        )
    for v in summary["versions"]:
        d = v["decisions"]
        mix = ", ".join(f"{k} {d[k]['rate']:.1%}" for k in d if d[k]["count"])
        lat = v.get("latency_seconds") or {}
        line = f"  version {v['version']}: {v['rows']:,} rows; {mix}"
        if lat.get("p50") is not None:
            line += (
                f"; latency p50/p95/p99 {lat['p50'] * 1000:.1f}/{lat['p95'] * 1000:.1f}/"
                f"{lat['p99'] * 1000:.1f} ms"
            )
        if v.get("cost"):
            line += f"; {v['cost']['cost_per_1k_predictions']:.6f} per 1k predictions"
        lines.append(line)
        lines += _quality_lines(v)
        lines += _freshness_lines(v)
        if v.get("drift"):
            lines.append(f"    drift: {v['drift']['dataset']['reason']}")
            impacts = v["drift"].get("drifted_by_impact") or []
            by_impact = [f for f in impacts if f["output_shift"] is not None]
            ranked = v["drift"].get("drifted_by_importance") or []
            if by_impact:
                lines.append(
                    "    drifted, by how far each moved the score: "
                    + ", ".join(
                        f"{f['feature']} ({f['output_shift']:.4f}, {f['share']:.0%})"
                        for f in by_impact
                    )
                )
            elif any(f["importance"] is not None for f in ranked):
                lines.append(
                    "    drifted, by model reliance: "
                    + ", ".join(
                        f"{f['feature']} ({f['importance']:.4f})"
                        for f in ranked
                        if f["importance"] is not None
                    )  # fmt: skip
                )
            for f in v["drift"]["features"][:5]:
                if f["psi"] is not None:
                    lines.append(f"      {f['feature']:<24} PSI {f['psi']:.3f}  {f['status']}")
    for a in summary["alerts"]:
        lines.append(f"  ALERT {a['severity']} {a['name']} (v{a['version']}): {a['message']}")
    if report:
        lines.append(f"report: {report}")
    return "\n".join(lines)


def _quality_lines(v: Mapping[str, Any]) -> list[str]:
    """Estimated (no labels) next to holdout, and realized where outcomes were joined."""

    def metric(e: Mapping[str, Any] | None) -> str:
        return "n/a" if not e else f"{e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"

    out = []
    est = v.get("estimated")
    if est and est.get("available") is False:
        out.append(f"    estimated (no labels): {est['reason']}")
    elif est:
        hold = est.get("holdout") or {}
        out.append(
            f"    estimated (no labels, {est['rows']:,} predictions): ROC-AUC "
            f"{metric(est['roc_auc'])}, PR-AUC {metric(est['pr_auc'])}; holdout "
            + ", ".join(f"{k} {hold[k]:.3f}" for k in ("roc_auc", "pr_auc") if hold.get(k))
        )
    q = v.get("quality") or {}
    if q.get("live"):
        live, qe = q["live"], q.get("estimated") or {}
        out.append(
            f"    realized on {q['labelled']:,} outcomes: ROC-AUC "
            + ("n/a" if live.get("roc_auc") is None else f"{live['roc_auc']:.3f}")
            + f" (the same rows' scores predicted {metric(qe.get('roc_auc'))}), PR-AUC "
            + ("n/a" if live.get("pr_auc") is None else f"{live['pr_auc']:.3f}")
            + f" (predicted {metric(qe.get('pr_auc'))})"
        )
    return out


def _freshness_lines(v: Mapping[str, Any]) -> list[str]:
    """Per feature, served ages next to training's, and the share older than its p99."""
    from framework.features.feature_ages import duration

    def ages(a: Mapping[str, Any]) -> str:
        return " / ".join("–" if a[k] is None else duration(a[k]) for k in ("p50", "p99"))

    items = v.get("freshness") or []
    if not items:
        return []
    out = ["    feature age, served p50 / p99 vs training p50 / p99, share past training p99:"]
    for f in items:
        share = "n/a" if f["older_share"] is None else f"{f['older_share']:.1%}"
        out.append(
            f"      {f['feature']:<30} {ages(f['served']):>17} vs {ages(f['training']):<17} "
            f"{share:>6}  {f['status']}"
        )
    return out


def cmd_skew(args: argparse.Namespace) -> None:
    repo, log, registry = log_paths(args)
    report = _run_skew(args, repo, log, registry, args.sample, args.tolerance)
    payload = report.to_dict()
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
    else:
        lines = [
            f"{report.model}: {report.sampled:,} logged predictions recomputed offline, "
            f"{report.mismatches:,} values differ"
        ]
        for f in payload["features"]:
            if f["mismatches"]:
                ex = f["examples"][0]
                lines.append(
                    f"  {f['feature']:<24} {f['mismatch_rate']:.1%} ({f['mismatches']} of "
                    f"{f['compared']}); e.g. {ex['entity_keys']} at {ex['timestamp']}: served "
                    f"{ex['served']!r}, offline {ex['offline']!r}"
                )
        effect = payload["consequence"]
        if effect["rows"]:
            lines.append(
                f"  consequence: {effect['rows']:,} rows rescored on the offline values: score "
                f"change mean {effect['mean_abs_score_change']:.4f}, max "
                f"{effect['max_abs_score_change']:.4f}; {effect['label_changed']:,} labels and "
                f"{effect['decision_changed']:,} decisions changed"
            )
            lines += [
                f"    {f['feature']:<24} alone moves the score by {f['mean_abs_score_change']:.4f}"
                f" on average (max {f['max_abs_score_change']:.4f}, {f['rows']:,} rows)"
                for f in effect["by_feature"]
            ]
        print("\n".join(lines))
    worst = max((f.mismatch_rate for f in report.features), default=0.0)
    if worst > args.max_mismatch_rate:
        raise AlertsRaised(
            f"training-serving skew: mismatch rate {worst:.1%} > {args.max_mismatch_rate:.1%}"
        )
