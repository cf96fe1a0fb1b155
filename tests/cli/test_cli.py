"""The ``parity`` command line as a user meets it: help, errors, the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.progress import EVERY_BATCH, counts_to_total
from tests.support.workspaces import ROOT, Trained, Workspace

PARITY = [sys.executable, "-m", "framework.cli"]


def run(
    *args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PARITY, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    commands = ("demo", "data", "apply", "training-set", "train", "models", "serve", "predict")
    for command in (*commands, "review", "materialize", "score", "monitor", "skew", "init"):
        assert command in result.stdout


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"parity {version('parity')}"


def test_review_list_shows_an_item_queued_without_a_score(tmp_path: Path) -> None:
    from framework.logs.review_queue import ReviewQueue

    queue = ReviewQueue(tmp_path / ".parity" / "review" / "queue.db")
    queue.add([{"request_id": "r1", "row_index": 0, "model": "m", "version": "1"}])
    queue.close()
    result = run("review", "list", "--repo", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "m:1 r1#0 score — open" in result.stdout


def test_output_piped_into_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    """``parity review list --json | head``: the reader closes the pipe after a few
    bytes; parity stops with the shell's broken-pipe status, no traceback."""
    from framework.logs.review_queue import ReviewQueue

    queue = ReviewQueue(tmp_path / ".parity" / "review" / "queue.db")
    items = [
        {"request_id": f"r{i}", "row_index": 0, "model": "m", "version": "1",
         "score": 0.5, "confidence": 0.5, "reasons": ["x" * 200],
         "entity_keys": {"user_id": i}}
        for i in range(2_000)
    ]  # fmt: skip
    queue.add(items)
    queue.close()
    with subprocess.Popen(
        [*PARITY, "review", "list", "--repo", str(tmp_path), "--json", "--limit", "2000"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(10).startswith(b"{")  # ~1 MB follow: more than a pipe holds
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


@pytest.mark.parametrize(
    "command",
    [
        ["demo"],
        ["data"],
        ["data", "generate"],
        ["data", "features"],
        ["apply"],
        ["training-set"],
        ["train"],
        ["models"],
        ["models", "list"],
        ["models", "show"],
        ["models", "promote"],
        ["models", "rollback"],
        ["serve"],
        ["predict"],
        ["review"],
        ["review", "list"],
        ["review", "resolve"],
        ["materialize"],
        ["score"],
        ["monitor"],
        ["skew"],
        ["init"],
    ],
)
def test_each_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: parity " + " ".join(command))
    assert "--json" in result.stdout or command in (["data"], ["models"], ["review"], ["serve"])


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["data", "generate", "--seed", "x"], "argument --seed"),
        (["data", "generate", "--scale", "lots"], "'--scale'"),
        (["data", "generate", "--drift", "meteor"], "Unknown drift scenario 'meteor'"),
        (["demo", "--drift", "meteor"], "Unknown drift scenario 'meteor'"),
        (["data", "generate", "--days", "1"], "'days'"),
        (["apply", "--profile", "staging"], "argument --profile"),
        (["apply", "--repo", "/nonexistent/repo"], "'--repo' folder /nonexistent/repo"),
        (["data", "features", "--data", "/nonexistent/data"], "Raw sample data not found"),
        (
            ["data", "generate", "--memory-limit", "lots", "--scale", "200"],
            "Invalid DuckDB setting",
        ),
    ],
)
def test_wrong_arguments_give_one_line_and_non_zero_exit(
    args: list[str], names: str, tmp_path: Path
) -> None:
    if args[:2] == ["data", "generate"]:
        args = [*args, "--out", str(tmp_path)]
    result = run(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert names in lines[0]
    assert "Traceback" not in result.stderr


def test_data_generate_json_summary(tmp_path: Path) -> None:
    result = run(
        "data", "generate", "--scale", "2k", "--seed", "4", "--out", str(tmp_path), "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["raw"]["config"]["seed"] == 4
    assert summary["raw"]["transactions"] > 0
    assert set(summary["offline"]["rows"]) == {
        "user_profile",
        "merchant_profile",
        "user_transaction_features",
        "merchant_risk_features",
    }
    for path in summary["offline"]["files"].values():
        assert Path(path).exists()


@pytest.mark.parametrize(
    ("scale", "chunks"), [("2k", 1), pytest.param("260k", 2, marks=pytest.mark.slow)]
)
def test_data_generate_logs_chunks_and_sources_on_stderr_only(
    tmp_path: Path, scale: str, chunks: int
) -> None:
    """Progress (users' transactions a chunk at a time, then each offline source) goes to
    stderr; stdout holds the same JSON, or the same two lines, as without it."""
    result = run("data", "generate", "--scale", scale, "--out", str(tmp_path), "--json",
                 env=EVERY_BATCH)  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == {"raw", "raw_seconds", "offline", "offline_seconds"}
    assert counts_to_total(result.stderr, "raw sample") == list(range(1, chunks + 1))
    assert f"— {summary['raw']['transactions']:,} transactions" in result.stderr
    assert counts_to_total(result.stderr, "offline sources") == [1, 2, 3, 4]
    rows = summary["offline"]["rows"]["merchant_risk_features"]
    assert f"— merchant_risk_features: {rows:,} rows" in result.stderr
    if chunks == 1:
        text = run("data", "generate", "--scale", scale, "--out", str(tmp_path / "text"))
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert [line.split(" ")[0] for line in lines] == ["generated", "built"]
        assert "raw sample: generating 1 chunks" in text.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_demo_runs_end_to_end_and_says_what_it_did(workspace: Workspace) -> None:
    # 10k transactions: enough labelled fraud before the clean period for the calibration
    # folds, and 1,000 replayed transactions a period (above monitoring's 500-row guard).
    result = run("demo", "--scale", "10k", cwd=workspace.root)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    steps = ("generate", "features", "apply", "materialize", "online", "training-set", "train")
    for step in (*steps, "promote", "serve", "monitor"):
        assert f"  {step}" in out, out
    assert "fraud_model@champion: unset -> 1" in out
    assert (workspace.data / "models" / "fraud_model" / "versions" / "1" / "model.skops").exists()
    assert str(workspace.repo) in out  # it used the workspace's repository, not the checkout's
    assert (workspace.data / "feast" / "registry.db").exists()
    assert (workspace.data / "feast" / "online.db").exists()
    assert out.count("  user ") == 3  # three online feature vectors shown
    # The sample drifts from 75 % of its period on; the clean period before is not flagged.
    assert "drift from 2026-03-09: amount_inflation, new_merchant_category" in out
    clean = next(line for line in out.splitlines() if line.startswith("  clean period"))
    drifted = next(line for line in out.splitlines() if line.startswith("  drifted period"))
    assert ", 0 of 17 features drifted" in clean, out
    assert "drift" not in clean.partition("; also ")[2], out  # latency may alert, drift not
    assert ": alert, " in drifted and "category" in drifted and "amount_mean_7d" in drifted, out
    for report in ("monitor.html", "monitor-clean.html"):
        assert (workspace.data / report).read_text().startswith("<!DOCTYPE html>")
    # The loop closes: ground truth for the drifted period, then retraining gated on the
    # same holdout (at 10k transactions the challenger may or may not beat the champion).
    assert "  feedback" in out and "  retrain" in out
    assert "Closing the loop" in out and "  ground truth   drifted period, " in out
    retrain = next(line for line in out.splitlines() if line.startswith("  retrain   "))
    assert "passed the gate" in retrain or "refused: change pr_auc" in retrain, retrain
    assert len(out.splitlines()) <= 30
    assert "Warning" not in result.stderr, result.stderr  # a clean demo: no library noise
    assert result.stderr == "", result.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_demo_json_reports_online_vectors_and_monitoring(workspace: Workspace) -> None:
    result = run("demo", "--scale", "10k", "--json", "--repo", str(workspace.repo))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["steps"]] == [
        "generate",
        "features",
        "apply",
        "materialize",
        "online",
        "training-set",
        "train",
        "promote",
        "serve",
        "monitor",
        "feedback",
        "retrain",
        *(["reload", "after"] if report["loop"]["retrain"]["status"] == "promoted" else []),
    ]
    assert [p["model_version"] for p in report["predictions"]] == ["1", "1", "1"]
    model = report["model"]
    assert model["model"] == "fraud_model:1" and model["champion"] == 1
    assert model["holdout"]["roc_auc"] > model["baseline"]["roc_auc"]
    training = report["training_set"]
    assert training["engine"] == "duckdb"
    assert 0 < training["rows"] <= training["entity_rows"] + 1
    assert len(training["fingerprint"]) == 64
    vectors = report["online_vectors"]
    assert len(vectors) == 3
    for v in vectors:
        f, req = v["features"], v["request"]
        # The latest transactions were materialised, so their user has 7-day stats online
        # and the on-demand feature equals amount / mean, computed by Feast's own code.
        assert f["txn_count_7d"] >= 1
        assert f["amount_to_mean_7d"] == pytest.approx(req["amount"] / f["amount_mean_7d"])
    monitoring = report["monitoring"]
    assert monitoring["drift_scenarios"] == ["amount_inflation", "new_merchant_category"]
    clean, drifted = monitoring["clean"], monitoring["drift"]
    # About a tenth of the sample a period (at most 3,000), every replayed row logged.
    assert clean["rows"] == clean["replayed"] and drifted["rows"] == drifted["replayed"]
    assert 500 <= clean["rows"] <= 3_000
    assert clean["period"]["end"] <= drifted["period"]["start"]
    assert (clean["dataset_drift"], clean["drifted_features"]) == ("no_drift", [])
    # (Operational alerts such as latency depend on the machine; drift ones must not fire.)
    drift_alerts = {"feature_drift", "dataset_drift", "prediction_drift", "confidence_drift"}
    assert not drift_alerts & set(clean["alerts"]), clean["alerts"]
    assert drifted["status"] == "alert" and "feature_drift" in drifted["alerts"]
    # The new category is a new value of `category`; the inflated amounts show in the
    # 7-day amount statistics (the model takes no raw amount).
    assert {"category", "amount_mean_7d", "amount_std_7d"} <= set(drifted["drifted_features"])
    new = drifted["features"]["category"]["reasons"]
    assert any("crypto_exchange" in r for r in new), new
    # The model trained on what happened before the clean period only.
    assert model["trained_before"] == clean["period"]["start"]
    # Ground truth for every replayed drifted prediction, joined by request id and row.
    loop = report["loop"]
    assert loop["feedback"]["stored"] == drifted["replayed"]
    counts = loop["feedback"]["counts"]
    assert counts["by_request_id"] >= drifted["replayed"] and counts["ambiguous"] == 0
    assert loop["feedback"]["champion"]["labelled"] == drifted["replayed"]
    retrain = loop["retrain"]
    assert retrain["trigger"]["fired"] and "feature_drift" in retrain["trigger"]["alerts"]
    assert retrain["champion"] == 1 and retrain["challenger"] == 2
    # Both versions were scored on the same rows, which the challenger never trained on.
    assert retrain["holdout"]["train_end"] < retrain["holdout"]["start"]
    assert set(retrain["metrics"]) == {"challenger", "champion", "baseline"}
    if retrain["status"] == "promoted":
        assert loop["reload_seconds"] < 10
        after = loop["after"]
        assert after["old"]["labelled"] == after["new"]["labelled"] == after["transactions"]


@pytest.mark.integration
@pytest.mark.slow
def test_demo_without_drift_scenarios(workspace: Workspace) -> None:
    result = run("demo", "--scale", "10k", "--drift", "none", "--json", cwd=workspace.root)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "no drift" in report["steps"][0]["detail"]
    monitoring = report["monitoring"]
    assert monitoring["drift_scenarios"] == []
    # Neither scenario's features move when the scenarios are off.
    for period in ("clean", "drift"):
        flagged = set(monitoring[period]["drifted_features"])
        assert not flagged & {"category", "amount_mean_7d", "amount_std_7d"}, flagged


@pytest.mark.integration
@pytest.mark.slow
def test_demo_on_the_production_profile(
    workspace: Workspace, postgres_url: str, redis_address: str
) -> None:
    env = {"PARITY_REGISTRY_URL": postgres_url, "PARITY_REDIS": redis_address}
    result = run(
        "demo", "--profile", "production", "--scale", "3k", "--json", cwd=workspace.root, env=env
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["profile"] == "production"
    assert "into Redis" in report["steps"][3]["detail"]
    assert all(v["features"]["txn_count_7d"] >= 1 for v in report["online_vectors"])
    # The embedded stores were not touched.
    assert not (workspace.data / "feast" / "registry.db").exists()
    assert not (workspace.data / "feast" / "online.db").exists()


# ------------------------------------------------------------- train and models


@pytest.mark.integration
def test_train_and_the_models_commands(trained: Trained, tmp_path: Path) -> None:
    repo = str(trained.workspace.repo)
    registry = str(tmp_path / "models")
    where = ["--repo", repo, "--registry", registry]

    result = run("train", *where, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["model"] == "fraud_model:1"
    assert summary["metrics"]["holdout"]["roc_auc"] > 0.7
    text = run("train", *where)
    assert text.returncode == 0, text.stderr
    assert "registered fraud_model:2" in text.stdout
    assert "holdout:  roc_auc" in text.stdout and "calibration (sigmoid)" in text.stdout

    promoted = run("models", "promote", "fraud_model", "1", *where, "--reason", "first", "--json")
    assert promoted.returncode == 0, promoted.stderr
    move = json.loads(promoted.stdout)
    assert (move["previous"], move["version"]) == (None, 1)
    assert [c["name"] for c in move["checks"]] == ["artifact", "smoke", "definitions", "metrics"]
    assert run("models", "promote", "fraud_model", "2", *where).returncode == 0

    listing = json.loads(run("models", "list", "--registry", registry, "--json").stdout)
    assert [(v["model"], v["aliases"]) for v in listing["versions"]] == [
        ("fraud_model:1", []),
        ("fraud_model:2", ["champion"]),
    ]
    shown = run("models", "show", "fraud_model@champion", "--registry", registry)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("fraud_model:2  @champion")
    assert "merchant_profile:category String" in shown.stdout
    assert "merchant_risk_30d:merchant_fraud_rate_30d Float64  (age in training: p50 " in (
        shown.stdout
    )
    assert "promote @champion: 1 -> 2" in shown.stdout

    back = run("models", "rollback", "fraud_model", "--registry", registry, "--reason", "oops")
    assert back.returncode == 0, back.stderr
    assert "rolled back 2 -> 1" in back.stdout
    full = json.loads(run("models", "show", "fraud_model", "--registry", registry, "--json").stdout)
    assert full["version"] == 1 and full["aliases"] == ["champion"]
    assert [e["action"] for e in full["history"]] == ["promote", "promote", "rollback"]
    assert full["history"][-1]["reason"] == "oops"


@pytest.mark.parametrize(
    ("args", "code", "names"),
    [
        (["models", "show", "nope"], 2, "No model 'nope'"),
        (["models", "show", "fraud_model:9"], 2, "has no version 9"),
        (["models", "show", "fraud_model@staging"], 2, "no alias 'staging'"),
        (["models", "rollback", "fraud_model"], 2, "no earlier version"),
        (["models", "promote", "fraud_model", "one"], 2, "a version is a positive number"),
        (["models", "promote", "fraud_model", "1", "--force"], 2, "needs a reason"),
        (["train", "--spec", "/nonexistent.toml"], 2, "No model spec at /nonexistent.toml"),
        (["train", "--as-of", "yesterday"], 2, "not an ISO 8601 time"),
    ],
)
def test_models_errors_are_one_line(
    args: list[str], code: int, names: str, trained: Trained, tmp_path: Path
) -> None:
    import shutil

    registry = tmp_path / "models"
    shutil.copytree(trained.registry_root, registry)
    result = run(*args, "--registry", str(registry), "--repo", str(trained.workspace.repo))
    if args[:2] == ["models", "show"] or args[:2] == ["models", "rollback"]:
        result = run(*args, "--registry", str(registry))
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert names in lines[0]
