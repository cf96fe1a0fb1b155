"""``parity train`` and ``parity models``: register versions; list, show, promote, roll back.

Added to ``parity``'s parser by :func:`register` (like :mod:`framework.cli.monitor`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from framework.cli.monitor import Handler
from framework.features.feature_ages import duration
from framework.features.repository import default_repo
from framework.models.manifest import Manifest
from framework.registry.model_registry import ModelRef

Helpers = Mapping[str, Callable[..., Any]]


def _version(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a version is a positive number, got {text!r}")
    return int(text)


def _alias_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alias", default="champion", help="the alias (default: %(default)s)")
    parser.add_argument("--reason", default="", help="why (recorded in the history)")
    parser.add_argument("--by", help="who (recorded; default: user@host)")


def register(commands: Any, helpers: Helpers) -> dict[tuple[str, str | None], Handler]:
    """Add ``train`` and ``models`` to ``commands`` (argparse subparsers).

    ``helpers`` holds ``framework.cli.main``'s shared helpers: ``repo_args``,
    ``registry_arg``, ``json_arg``, ``duckdb_args`` (functions taking a parser),
    ``timestamp`` (an argparse type), ``registry`` (the registry of parsed arguments),
    ``default_model`` (``--model``, else the registry's only model), ``emit`` (print
    JSON or text) and ``fmt`` (a metric value as text).
    """
    _add_train(commands, helpers)
    _add_models(commands, helpers)
    return {
        ("train", None): partial(_cmd_train, helpers=helpers),
        ("models", "list"): partial(_cmd_models_list, helpers=helpers),
        ("models", "show"): partial(_cmd_models_show, helpers=helpers),
        ("models", "promote"): partial(_cmd_models_promote, helpers=helpers),
        ("models", "rollback"): partial(_cmd_models_rollback, helpers=helpers),
    }


def _add_train(commands: Any, helpers: Helpers) -> None:
    train = commands.add_parser(
        "train",
        help="fit, evaluate and register a model version from a spec",
        description="Build the point-in-time training set of a model spec, fit its scikit-learn "
        "pipeline on the earliest period, calibrate on the next, evaluate on the latest "
        "(time-based holdout) and register a new immutable version with its lineage.",
    )
    helpers["repo_args"](train)
    train.add_argument(
        "--spec",
        type=Path,
        help="model spec (TOML; default: the only *.toml in REPO/models)",
    )
    train.add_argument(
        "--as-of",
        type=helpers["timestamp"],
        help="use labels known at this time (ISO 8601; default: the latest label's arrival)",
    )
    train.add_argument(
        "--start", type=helpers["timestamp"], help="first event time to train on (ISO 8601)"
    )
    train.add_argument("--end", type=helpers["timestamp"], help="train on events before this time")
    helpers["registry_arg"](train)
    train.add_argument("--by", help="who trains (recorded; default: user@host)")
    helpers["json_arg"](train)


def _add_models(commands: Any, helpers: Helpers) -> None:
    models = commands.add_parser(
        "models",
        help="the model registry: list, show, promote, rollback",
        description="Immutable model versions, addressed NAME:VERSION or NAME@ALIAS, and "
        "aliases (champion, challenger) moved by gated promotion and rollback.",
    )
    models_commands = models.add_subparsers(
        dest="models_command", metavar="SUBCOMMAND", parser_class=type(models)
    )
    models_commands.required = True
    listing = models_commands.add_parser(
        "list", help="models, versions and aliases", description="Every model and version."
    )
    helpers["repo_args"](listing, profile=False)
    helpers["registry_arg"](listing)
    helpers["json_arg"](listing)
    show = models_commands.add_parser(
        "show",
        help="one version: lineage, features, metrics, aliases",
        description="A version's manifest: NAME (the champion, else the latest), NAME:VERSION "
        "or NAME@ALIAS.",
    )
    show.add_argument(
        "model",
        metavar="NAME[:VERSION|@ALIAS]",
        nargs="?",
        help="default: the only model in the registry",
    )
    helpers["repo_args"](show, profile=False)
    helpers["registry_arg"](show)
    helpers["json_arg"](show)
    promote = models_commands.add_parser(
        "promote",
        help="point an alias at a version, after the promotion gate",
        description="Move NAME@ALIAS to VERSION if the artifact verifies and loads, it "
        "reproduces its smoke sample, its pinned feature definitions match the Feast "
        "registry, and its holdout metric is not worse than the current version's beyond "
        "the spec's tolerance (--force with --reason overrides that last check only).",
    )
    promote.add_argument("name", metavar="NAME")
    promote.add_argument("version", metavar="VERSION", type=_version)
    _alias_args(promote)
    promote.add_argument(
        "--force", action="store_true", help="promote even if its metrics are worse"
    )
    helpers["repo_args"](promote)
    helpers["registry_arg"](promote)
    helpers["json_arg"](promote)
    roll = models_commands.add_parser(
        "rollback",
        help="point an alias back at its previous version",
        description="Move NAME@ALIAS back to the version it pointed to before its last move.",
    )
    roll.add_argument("name", metavar="NAME")
    _alias_args(roll)
    helpers["repo_args"](roll, profile=False)
    helpers["registry_arg"](roll)
    helpers["json_arg"](roll)


def _cmd_train(args: argparse.Namespace, helpers: Helpers) -> None:
    from framework.features.repository import data_dir, open_store
    from framework.models.spec import find_spec, load_spec
    from framework.models.training import train_model
    from framework.registry.model_registry import ModelRegistry

    repo = args.repo or default_repo()
    path = find_spec(repo, args.spec)
    spec = load_spec(path)
    registry = ModelRegistry(args.registry or data_dir(repo) / "models")

    def progress(step: str, seconds: float) -> None:
        if not args.json:
            print(f"  {step:<13} {seconds:>6.2f}s", flush=True)

    if not args.json:
        print(f"parity train {spec.name} from {path}")
    with open_store(repo, args.profile) as store:
        result = train_model(
            repo,
            spec,
            store=store,
            registry=registry,
            spec_path=path,
            as_of=args.as_of,
            start=args.start,
            end=args.end,
            by=args.by,
            progress=progress,
        )
    m = result.manifest.as_dict()
    if args.json:
        print(
            json.dumps(
                {"model": str(result.ref), "seconds": result.seconds, **_summary(m)},
                indent=2,
                default=str,
            )
        )
        return
    print(f"registered {result.ref} in {result.seconds}s -> {registry.version_dir(result.ref)}")
    print("\n".join(_metric_lines(m, helpers["fmt"])))


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": m["version"],
        "feature_service": m["feature_service"],
        "features": len(m["features"]),
        "dataset_fingerprint": m["dataset"]["fingerprint"],
        "split": m["split"],
        "calibration": m["calibration"],
        "metrics": m["metrics"],
    }


def _metric_lines(m: dict[str, Any], fmt: Callable[[Any], str]) -> list[str]:
    split = m["split"]
    lines = [
        "  periods: "
        + ", ".join(
            f"{k} {v['rows']:,} rows ({v['start'][:10]} to {v['end'][:10]})"
            for k, v in split.items()
            if v
        )
    ]
    hold, base = m["metrics"]["holdout"], m["metrics"]["baseline"]
    if m["task"] == "classification":
        keys = ("roc_auc", "pr_auc", "log_loss", "brier", "ece")
        lines.append("  holdout:  " + ", ".join(f"{k} {fmt(hold[k])}" for k in keys))
        lines.append(
            "  baseline: "
            + ", ".join(f"{k} {fmt(base[k])}" for k in keys)
            + " (training base rate for every row)"
        )
        cal = m["calibration"]
        if cal["method"] != "none":
            lines.append(
                f"  calibration ({cal['method']}): ECE {fmt(cal['ece_before'])} before, "
                f"{fmt(cal['ece_after'])} after"
            )
        for t in hold["at_thresholds"]:
            lines.append(
                f"  score >= {t['threshold']}: precision {fmt(t['precision'])}, "
                f"recall {fmt(t['recall'])}, flagged {t['flagged_share']:.2%}"
            )
        mix = hold["decisions"]
        lines.append(
            "  decisions: "
            + ", ".join(
                f"{k} {v['share']:.1%}"
                + (f" (accuracy {v['accuracy']:.3f})" if v["accuracy"] is not None else "")
                for k, v in mix.items()
            )
        )
    else:
        lines.append(
            "  holdout:  " + ", ".join(f"{k} {fmt(hold[k])}" for k in ("mae", "rmse", "r2"))
        )
        lines.append(
            "  baseline: " + ", ".join(f"{k} {fmt(base[k])}" for k in ("mae", "rmse", "r2"))
        )
    return lines


def _cmd_models_list(args: argparse.Namespace, helpers: Helpers) -> None:
    registry = helpers["registry"](args)
    rows = []
    for name in registry.names():
        aliases = registry.aliases(name)
        by_version: dict[int, list[str]] = {}
        for alias, v in aliases.items():
            by_version.setdefault(v, []).append(alias)
        for v in registry.versions(name):
            m = Manifest.read(registry, ModelRef(name, v)).as_dict()
            metric = m["gate"]["metric"]
            rows.append(
                {
                    "model": f"{name}:{v}",
                    "aliases": sorted(by_version.get(v, [])),
                    "created_at": m["created_at"],
                    "feature_service": m["feature_service"],
                    "metric": metric,
                    "value": m["metrics"]["holdout"].get(metric),
                }
            )
    if args.json:
        print(json.dumps({"registry": str(registry.root), "versions": rows}, indent=2))
        return
    if not rows:
        print(f"no models in {registry.root} (run parity train)")
        return
    for r in rows:
        tags = " ".join(f"@{a}" for a in r["aliases"])
        print(
            f"{r['model']:<24} {r['created_at'][:19]}  {r['feature_service']:<20} "
            f"{r['metric']} {helpers['fmt'](r['value'])}  {tags}".rstrip()
        )


def _cmd_models_show(args: argparse.Namespace, helpers: Helpers) -> None:
    registry = helpers["registry"](args)
    ref = registry.resolve(args.model or helpers["default_model"](args))
    m = Manifest.read(registry, ref).as_dict()
    aliases = sorted(a for a, v in registry.aliases(ref.name).items() if v == ref.version)
    history = [e for e in registry.history(ref.name) if e.get("action") != "promote-refused"]
    if args.json:
        print(json.dumps({**m, "aliases": aliases, "history": history}, indent=2, default=str))
        return
    code = m["code"]
    print(f"{ref}  {' '.join('@' + a for a in aliases)}".rstrip())
    print(f"  created    {m['created_at']} by {m['created_by']}")
    print(f"  estimator  {m['estimator']['class']} (calibration: {m['calibration']['method']})")
    print(
        f"  features   {len(m['features'])} from feature service {m['feature_service']!r} "
        f"(definitions {m['definitions_digest'][:12]})"
    )
    ages = (m.get("freshness") or {}).get("features") or {}
    for f in m["features"]:
        print(f"               {f['view']}:{f['name']} {f['dtype']}{_age(ages.get(f['name']))}")
    print(f"  label      {m['label']}")
    print(
        f"  dataset    fingerprint {m['dataset']['fingerprint'][:16]}, "
        f"{m['dataset']['entity_rows']:,} rows ({m['dataset']['engine']})"
    )
    print(f"  window     as of {m['window']['as_of']}")
    commit = code["git_commit"][:12] if code["git_commit"] else "unknown"
    print(f"  code       git {commit}{' (with uncommitted changes)' if code['dirty'] else ''}")
    print(
        f"  artifact   {m['artifact']['format']} {m['artifact']['bytes']:,} bytes, "
        f"sha256 {m['artifact']['sha256'][:16]}"
    )
    print("\n".join(_metric_lines(m, helpers["fmt"])))
    print("\n".join(_explanation_lines(m)))
    if history:
        print("  history")
        for e in history[-10:]:
            print(
                f"    {e['at'][:19]} {e['action']} @{e['alias']}: {e['from']} -> {e['to']} "
                f"by {e['by']}" + (f" ({e['reason']})" if e.get("reason") else "")
            )


def _explanation_lines(m: dict[str, Any]) -> list[str]:
    """How the version's predictions are explained, and its global feature importance."""
    e = m.get("explanation")
    lines = []
    if not e:
        lines.append("  explain    no explainer (registered before explanations existed)")
    elif not e.get("method"):
        lines.append(f"  explain    not explainable: {e['reason']}")
    else:
        lines.append(
            f"  explain    {e['method']} (shap {e['shap_version']}) on the "
            f"{e['explained_output']}, in score units through the {e['score_link']}; base "
            f"value {e['base_value']:.4f}; background: {e['background']['used']}"
        )
    imp = m.get("importance") or {}
    if imp.get("method"):
        lines.append(
            f"  importance permutation on {imp['rows']:,} holdout rows ({imp['metric']} drop, "
            f"mean of {imp['repeats']})"
        )
        for f in imp["features"]:
            lines.append(f"               {f['feature']:<30} {f['mean']:+.4f} ± {f['std']:.4f}")
    return lines


def _cmd_models_promote(args: argparse.Namespace, helpers: Helpers) -> None:
    from framework.features.repository import open_store
    from framework.loop.promotion import promote

    registry = helpers["registry"](args)
    with open_store(args.repo or default_repo(), args.profile) as store:
        move = promote(
            registry,
            args.name,
            args.version,
            store=store,
            alias=args.alias,
            by=args.by,
            reason=args.reason,
            force=args.force,
        )
    checks = "; ".join(f"{c.name}: {c.detail}" for c in move.checks)
    helpers["emit"](
        args,
        move.to_dict(),
        f"{args.name}@{args.alias}: {move.previous or 'unset'} -> {move.version} ({checks})",
    )


def _cmd_models_rollback(args: argparse.Namespace, helpers: Helpers) -> None:
    from framework.loop.promotion import rollback

    registry = helpers["registry"](args)
    move = rollback(registry, args.name, alias=args.alias, by=args.by, reason=args.reason)
    helpers["emit"](
        args,
        move.to_dict(),
        f"{args.name}@{args.alias}: rolled back {move.previous} -> {move.version}",
    )


def _age(age: dict[str, Any] | None) -> str:
    """How old a feature's values were in training (nothing for one without an age)."""
    if not age or age.get("p99") is None:
        return ""
    return f"  (age in training: p50 {duration(age['p50'])}, p99 {duration(age['p99'])})"
