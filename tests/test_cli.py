"""The ``parity`` command line as a user meets it: help, errors, the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Workspace

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
    for command in ("demo", "data", "apply"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "command",
    [["demo"], ["data"], ["data", "generate"], ["data", "features"], ["apply"]],
)
def test_each_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: parity " + " ".join(command))
    assert "--json" in result.stdout or command == ["data"]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["data", "generate", "--seed", "x"], "argument --seed"),
        (["data", "generate", "--scale", "lots"], "'--scale'"),
        (["data", "generate", "--drift", "meteor"], "Unknown drift scenario 'meteor'"),
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


@pytest.mark.integration
@pytest.mark.slow
def test_demo_runs_end_to_end_and_says_what_it_did(workspace: Workspace) -> None:
    result = run("demo", "--scale", "5k", cwd=workspace.root)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for step in ("generate", "features", "apply", "materialize", "online", "training-set"):
        assert f"  {step}" in out, out
    assert str(workspace.repo) in out  # it used the workspace's repository, not the checkout's
    assert (workspace.data / "feast" / "registry.db").exists()
    assert (workspace.data / "feast" / "online.db").exists()
    assert out.count("  user ") == 3  # three online feature vectors shown
    assert len(out.splitlines()) <= 15
    assert "Warning" not in result.stderr, result.stderr  # a clean demo: no library noise


@pytest.mark.integration
@pytest.mark.slow
def test_demo_json_reports_online_vectors(workspace: Workspace) -> None:
    result = run("demo", "--scale", "3k", "--json", "--repo", str(workspace.repo))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["name"] for s in report["steps"]] == [
        "generate",
        "features",
        "apply",
        "materialize",
        "online",
        "training-set",
    ]
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
