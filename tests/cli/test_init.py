"""``parity init`` on Feast's own template, and the generated spec reference."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from framework.models import spec_reference
from framework.models.spec import load_spec
from tests.support.cli import parity

FEAST = Path(sys.executable).with_name("feast")
QUERY = (
    "SELECT driver_id, (avg_daily_trips > 500)::INT AS busy, "
    "event_timestamp + INTERVAL 30 MINUTE AS ts, 1::BIGINT AS val_to_add, "
    "2::BIGINT AS val_to_add_2 FROM read_parquet('data/driver_stats.parquet')"
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``feast init``'s template, created once (copy it to change it)."""
    root = tmp_path_factory.mktemp("template")
    subprocess.run([str(FEAST), "init", "tmpl"], cwd=root, check=True, capture_output=True)
    return root / "tmpl"


def _copy(template: Path, where: Path) -> Path:
    shutil.copytree(template, where, ignore=shutil.ignore_patterns("__pycache__"))
    return where / "feature_repo"


def test_init_lists_what_it_cannot_choose_alone_and_exits_2(template: Path, tmp_path: Path) -> None:
    repo = _copy(template, tmp_path / "p")
    result = parity("init", cwd=repo)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "parity init: error: --feature-service: pick one of: driver_activity_v1 (keys "
        "driver_id; request data val_to_add, val_to_add_2); driver_activity_v2 (keys driver_id; "
        "request data val_to_add, val_to_add_2); driver_activity_v3 (keys driver_id; request "
        "data val_to_add, val_to_add_2)."
    ]
    result = parity("init", "--feature-service", "driver_activity_v1", cwd=repo)
    assert result.returncode == 2
    assert "--task: pick one of: classification, regression" in result.stderr
    query = QUERY.replace("AS busy,", "AS busy, 0 AS spare,")
    result = parity("init", "--feature-service", "driver_activity_v1", "--task", "regression",
                    "--label-query", query, cwd=repo)  # fmt: skip
    assert result.returncode == 2
    assert "--label: which column is the label? (busy, spare)" in result.stderr
    assert not (repo / "models").exists()


def test_a_placeholder_spec_is_valid_and_carries_no_sample_rules(
    template: Path, tmp_path: Path
) -> None:
    repo = _copy(template, tmp_path / "p")
    result = parity("init", "--repo", str(repo), "--feature-service", "driver_activity_v2",
                    "--task", "regression", "--json", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["keys"], out["label_query_given"]) == (["driver_id"], False)
    spec = load_spec(Path(out["spec"]))
    assert spec.task.value == "regression" and spec.split.calibration == 0
    assert spec.gate.metric == "rmse" and spec.serving.rules == []
    text = Path(out["spec"]).read_text()
    assert "PLACEHOLDER" in text and "fraud" not in text
    again = parity("init", "--repo", str(repo), "--feature-service", "driver_activity_v2",
                   "--task", "regression", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 2 and "--force" in again.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_init_writes_a_spec_parity_train_accepts_and_state_stays_in_the_repository(
    template: Path, tmp_path: Path
) -> None:
    a = _copy(template, tmp_path / "a")
    b = _copy(template, tmp_path / "b")
    # The working directory holds a decoy at the label query's and the source's path.
    decoy = tmp_path / "elsewhere"
    (decoy / "data").mkdir(parents=True)
    rows = pq.read_table(a / "data" / "driver_stats.parquet")
    pq.write_table(rows.slice(0, 40), decoy / "data" / "driver_stats.parquet")

    result = parity("init", "--repo", str(a), "--feature-service", "driver_activity_v1",
                    "--task", "classification", "--label-query", QUERY, cwd=decoy)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        "* driver_activity_v1" in result.stdout and "entities: driver (driver_id)" in result.stdout
    )
    spec = load_spec(a / "models" / "driver_activity_v1.toml")
    assert (spec.labels.column, spec.labels.event_timestamp) == ("busy", "ts")

    assert (r := parity("apply", "--repo", str(a), cwd=decoy)).returncode == 0, r.stderr
    r = parity("train", "--repo", str(a), "--json", cwd=decoy)
    assert r.returncode == 0, r.stderr
    trained = json.loads(r.stdout)
    assert trained["model"] == "driver_activity_v1:1"
    split = trained["split"]
    assert sum(p["rows"] for p in split.values() if p) == rows.num_rows  # not the decoy's 40

    listing = json.loads(parity("models", "list", "--repo", str(a), "--json", cwd=decoy).stdout)
    assert listing["registry"] == str((a / ".parity" / "models").resolve())
    assert [v["model"] for v in listing["versions"]] == ["driver_activity_v1:1"]
    # The sibling repository has a registry of its own, still empty.
    other = json.loads(parity("models", "list", "--repo", str(b), "--json", cwd=decoy).stdout)
    assert other["versions"] == []
    assert sorted(p.name for p in decoy.iterdir()) == ["data"]
    # Inside the repository, no --repo: its own registry, and the only model is the default.
    shown = parity("models", "show", "--json", cwd=a)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["feature_service"] == "driver_activity_v1"


@pytest.mark.integration
def test_init_in_an_empty_folder_creates_a_repository_from_feasts_template(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "new-project"
    folder.mkdir()
    result = parity("init", "--feature-service", "driver_activity_v1", "--task",
                    "classification", cwd=folder)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "created a Feast repository from Feast's template" in result.stdout
    repo = folder / "feature_repo"
    assert (repo / "feature_store.yaml").is_file()
    assert (repo / "data" / "driver_stats.parquet").is_file()
    assert load_spec(repo / "models" / "driver_activity_v1.toml").feature_service == (
        "driver_activity_v1"
    )
    # A folder that is neither a repository nor empty is refused, and left alone.
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    refused = parity("init", cwd=tmp_path / "busy")
    assert refused.returncode == 2 and "not a Feast repository" in refused.stderr
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]


def test_the_spec_reference_is_generated_from_the_spec_model() -> None:
    assert spec_reference.DOC.read_text() == spec_reference.render(), (
        "docs/spec-reference.md is stale: run python -m framework.models.spec_reference"
    )
