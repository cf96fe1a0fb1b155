"""``parity feedback``: ingest ground truth, join it to the predictions, report live quality.

Added to ``parity``'s parser by :func:`register` (like :mod:`framework.cli.monitor`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from framework.cli.monitor import Handler, add_log_window_args, log_paths
from framework.errors import ConfigError
from framework.models.manifest import Manifest


def _seconds(text: str) -> timedelta:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return timedelta(seconds=value)


def register(
    commands: Any, helpers: Mapping[str, Callable[..., Any]]
) -> dict[tuple[str, str | None], Handler]:
    parser = commands.add_parser(
        "feedback",
        help="ingest ground truth and report live quality per model version and decision",
        description="Store the outcomes in PATH (CSV, Parquet or JSON lines: request_id and "
        "optional row_index, or every entity key and event_time; label; optional "
        "observed_at), join every stored outcome to the prediction log (by request id, or by "
        "entity keys + time) and report live quality per model version and per decision. "
        "The joined outcomes are also written to data/offline/feedback/MODEL.parquet, a label "
        "source for retraining (labels.feedback = true in a model spec). Without PATH: join "
        "and report only.",
    )
    parser.add_argument("path", nargs="?", type=Path, metavar="PATH", help="an outcome file")
    add_log_window_args(parser, helpers)
    parser.add_argument(
        "--within", type=_seconds, default=timedelta(minutes=10), metavar="SECONDS",
        help="outcomes by entity keys + time match the prediction for those keys nearest in "
        "time within this many seconds (default: 600)",
    )  # fmt: skip
    parser.add_argument(
        "--late-after", type=_seconds, default=timedelta(days=30), metavar="SECONDS",
        help="an outcome known this long after its prediction counts as late (default: 30 "
        "days)",
    )  # fmt: skip
    parser.add_argument("--request-prefix", help="only predictions whose request id starts so")
    return {("feedback", None): cmd_feedback}


def cmd_feedback(args: argparse.Namespace) -> None:
    from framework.features.repository import data_dir
    from framework.logs.outcomes import OutcomeStore
    from framework.logs.reader import pick_model
    from framework.loop.feedback import feedback_report, ingest

    repo, log, registry = log_paths(args)
    data = data_dir(repo)
    model = pick_model(log, args.model)
    stored = 0
    if args.path is not None:
        names = registry.names()
        if model not in names:
            raise ConfigError(f"--model: no model {model!r} in the registry {registry.root}.")
        latest = registry.resolve(f"{model}:{registry.versions(model)[-1]}")
        keys = Manifest.read(registry, latest).join_keys
        stored = ingest(args.path, OutcomeStore(data / "outcomes"), keys)
    report = feedback_report(
        log, data / "outcomes", registry, model, data=data, since=args.since, until=args.until,
        request_id_prefix=args.request_prefix, within=args.within, late_after=args.late_after,
    )  # fmt: skip
    report.stored = stored
    payload = report.to_dict()
    if args.json:
        print(json.dumps(payload, indent=2, default=str))
        return
    print(_text(payload, args.path))


def _text(report: Mapping[str, Any], path: Path | None) -> str:
    c = report["counts"]
    lines = []
    if path is not None:
        lines.append(f"stored {report['stored']:,} outcomes from {path}")
    lines.append(
        f"{report['model']}: {c['joined']:,} predictions labelled from {c['outcomes']:,} "
        f"outcomes ({c['by_request_id']:,} by request id, {c['by_entity_keys']:,} by entity "
        f"keys + time); unknown {c['unknown']:,}, duplicates {c['duplicates']:,}, ambiguous "
        f"{c['ambiguous']:,}, late {c['late']:,}"
    )
    for v in report["versions"]:
        live = v.get("live") or {}
        if not v.get("labelled"):
            lines.append(f"  version {v['version']}: no labelled predictions")
            continue
        hold = v.get("holdout") or {}
        lines.append(
            f"  version {v['version']}: {v['labelled']:,} labelled; live ROC-AUC "
            f"{_f(live.get('roc_auc'))} (holdout {_f(hold.get('roc_auc'))}), PR-AUC "
            f"{_f(live.get('pr_auc'))} (holdout {_f(hold.get('pr_auc'))}), log loss "
            f"{_f(live.get('log_loss'))}, accuracy {_f(live.get('accuracy'))}"
        )
        for d, b in (v.get("by_decision") or {}).items():
            lines.append(
                f"    {d:<8} {b['labelled']:>6,} labelled, accuracy {b['accuracy']:.3f}, "
                f"positive rate {b['positive_rate']:.3f}"
            )
    if report.get("label_source"):
        s = report["label_source"]
        lines.append(f"label source: {s['path']} ({s['rows']:,} rows with entity keys)")
    return "\n".join(lines)


def _f(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"
