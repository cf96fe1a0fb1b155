"""``parity retrain``: the command-line side of :mod:`framework.loop.retrain` (cron-friendly).

Exit status: 0 when the run did its job (not triggered, a challenger staged or
promoted, still waiting for predictions), 6 when the gate refused the challenger
(its numbers printed first), like a refused ``parity models promote``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from framework.cli.monitor import Handler
from framework.errors import ConfigError, ParityError


class RetrainRefused(ParityError):
    """The retraining gate refused the challenger (the results were printed first)."""

    exit_code = 6


def _thresholds(items: list[str], flag: str) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(text)
        except ValueError:
            raise ConfigError(f"{flag}: expected METRIC=NUMBER, got {item!r}.") from None
    return out


def register(
    commands: Any, helpers: Mapping[str, Callable[..., Any]]
) -> dict[tuple[str, str | None], Handler]:
    parser = commands.add_parser(
        "retrain",
        help="retrain, gate against the champion on the same rows, promote if better",
        description="When the trigger holds (--reason schedule: always; drift: parity monitor "
        "flags drift for the champion; quality: live quality dropped, from parity feedback's "
        "outcomes), train a challenger with the model's spec on fresh labels, score champion "
        "and challenger on the challenger's holdout (the latest period, never trained on), "
        "and gate: absolute thresholds, better than the base rate, and change thresholds "
        "against the champion. The decision and its numbers go to the model's history; a "
        "passing challenger takes @challenger (with --promote: @champion). --promote-after N "
        "instead promotes the current @challenger once it has N logged predictions (shadow "
        "or canary) without an operational alert. Exits 6 when the gate refuses.",
    )
    helpers["repo_args"](parser)
    helpers["registry_arg"](parser)
    parser.add_argument("--spec", type=Path, help="model spec (default: the only one in models/)")
    parser.add_argument("--reason", choices=["schedule", "drift", "quality"], default="schedule",
                        help="what triggers the run (default: schedule)")  # fmt: skip
    parser.add_argument("--since", type=helpers["timestamp"],
                        help="with drift/quality: the monitoring window's start")  # fmt: skip
    parser.add_argument("--until", type=helpers["timestamp"],
                        help="with drift/quality: the window's end (exclusive)")  # fmt: skip
    parser.add_argument("--as-of", type=helpers["timestamp"],
                        help="train on labels known then (default: the latest)")  # fmt: skip
    parser.add_argument("--absolute", action="append", default=[], metavar="METRIC=BOUND",
                        help="an absolute threshold (repeatable)")  # fmt: skip
    parser.add_argument("--change", action="append", default=[], metavar="METRIC=LEAST",
                        help="least improvement over the champion (repeatable)")  # fmt: skip
    parser.add_argument("--promote", action="store_true",
                        help="make a passing challenger the champion at once")  # fmt: skip
    parser.add_argument("--promote-after", type=int, metavar="N",
                        help="promote @challenger after N logged predictions")  # fmt: skip
    parser.add_argument(
        "--log", type=Path, help="the prediction log (default: predictions/ in the state folder)"
    )
    parser.add_argument("--by", help="who retrains (recorded; default: user@host)")
    helpers["json_arg"](parser)
    return {("retrain", None): cmd_retrain}


def cmd_retrain(args: argparse.Namespace) -> None:
    from framework.features.repository import data_dir, default_repo, open_store
    from framework.loop.retrain import check_trigger, promote_after, retrain
    from framework.models.spec import find_spec, load_spec
    from framework.registry.model_registry import ModelRegistry

    repo = args.repo or default_repo()
    data = data_dir(repo)
    registry = ModelRegistry(args.registry or data / "models")
    log = args.log or data / "predictions"
    path = find_spec(repo, args.spec)
    spec = load_spec(path)
    with open_store(repo, args.profile) as store:
        if args.promote_after is not None:
            if args.promote_after < 1:
                raise ConfigError("--promote-after: must be at least 1.")
            result = promote_after(registry, store, log, spec.name, args.promote_after, by=args.by)
        else:
            trigger = check_trigger(args.reason, log, registry, spec.name,
                                    outcomes_root=data / "outcomes", since=args.since,
                                    until=args.until)  # fmt: skip
            result = retrain(
                repo, spec, store=store, registry=registry, trigger=trigger, spec_path=path,
                as_of=args.as_of, promote_now=args.promote,
                absolute=_thresholds(args.absolute, "--absolute"),
                change=_thresholds(args.change, "--change"), by=args.by,
            )  # fmt: skip
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print(_text(result))
    if result.status == "refused":
        raise RetrainRefused(result.message)


def _text(r: Any) -> str:
    lines = [f"{r.status}: {r.message}"]
    if r.trigger:
        lines.append(f"  trigger {r.trigger['reason']}: {r.trigger['why']}")
    if r.holdout:
        h = r.holdout
        lines.append(
            f"  holdout {h['rows']:,} rows from {h['start']} to {h['end']} (training ended "
            f"{h['train_end']})"
        )
    m = r.metrics
    if m.get("challenger"):
        names = [k for k in ("roc_auc", "pr_auc", "log_loss", "brier") if k in m["challenger"]]
        lines.append("  " + " " * 12 + "".join(f"{n:>10}" for n in names))
        for who in ("challenger", "champion", "baseline"):
            if m.get(who):
                lines.append(f"  {who:<12}" + "".join(f"{m[who][n]:>10.4f}" for n in names))
    for c in r.checks:
        lines.append(f"  {'pass' if c['ok'] else 'FAIL'} {c['name']}: {c['detail']}")
    return "\n".join(lines)
