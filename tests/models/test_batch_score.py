"""``parity score``: batch scoring with point-in-time features and the server's pipeline.

Promised (``framework/models/batch_score.py``): every entity row, in order, gets the score,
label and confidence the model version's own pipeline gives its point-in-time
features — the same numbers the server answers with at that moment — plus the
model name and version; the model is refused when its pinned definitions no
longer match the registry; nothing is left half-written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from framework.errors import ConfigError, DataError
from framework.features.fields import FeatureField
from framework.features.repository import apply, open_store
from framework.features.training_set import build_training_set
from framework.models.batch_score import ScoreSummary, score_entities
from framework.models.estimator import feature_frame, score
from framework.models.spec import Task
from framework.registry.artifact import ArtifactError
from framework.registry.model_registry import ModelRegistry, NotFoundError
from tests.support.cli import parity
from tests.support.progress import EVERY_BATCH, counts_to_total
from tests.support.workspaces import ROOT, Served, Trained, make_workspace

pytestmark = pytest.mark.integration
MODEL = "fraud_model"


def _entities(data: Path, n: int, out: Path) -> Path:
    """``n`` transactions as entity rows, scored 1 us before they happened (shuffled)."""
    path = data / "raw" / "transactions.parquet"
    duckdb.sql(
        f"""COPY (SELECT transaction_id, user_id, merchant_id, amount,
                         hour(transaction_timestamp AT TIME ZONE 'UTC')::BIGINT AS hour_of_day,
                         transaction_timestamp - INTERVAL 1 MICROSECOND AS event_timestamp
                  FROM '{path}' ORDER BY hash(transaction_id) LIMIT {n})
            TO '{out}' (FORMAT parquet)"""
    )
    return out


def test_scores_equal_the_pipeline_on_point_in_time_features(
    trained: Trained, trained_store: Any, tmp_path: Path
) -> None:
    registry = ModelRegistry(trained.registry_root)
    entities = _entities(trained.workspace.data, 700, tmp_path / "entities.parquet")
    out = tmp_path / "scores" / "out.parquet"
    summary = score_entities(
        trained_store, registry, f"{MODEL}:{trained.version}", entities, out, batch_rows=128
    )
    scored = pq.read_table(out)
    given = pq.read_table(entities)
    assert summary.rows == scored.num_rows == given.num_rows == 700
    assert scored.column_names == [
        *given.column_names, "score", "label", "confidence", "model_name", "model_version",
    ]  # fmt: skip
    for name in given.column_names:  # entity columns untouched, input order kept
        assert scored[name].to_pylist() == given[name].to_pylist()
    assert set(scored["model_name"].to_pylist()) == {MODEL}
    assert set(scored["model_version"].to_pylist()) == {str(trained.version)}

    model, manifest = registry.load(registry.resolve(f"{MODEL}:{trained.version}"))
    fields = [FeatureField(**f) for f in manifest["features"]]
    table = build_training_set(trained_store, manifest["feature_service"], given)
    expected = score(model, feature_frame(table, fields), Task.CLASSIFICATION, 0.5)
    np.testing.assert_array_equal(scored["score"].to_numpy(), expected.score)
    np.testing.assert_array_equal(scored["confidence"].to_numpy(), expected.confidence)
    assert scored["label"].to_pylist() == [str(v) for v in expected.label]
    assert summary.dataset_fingerprint == table.schema.metadata[b"parity.fingerprint"].decode()
    assert [p.name for p in out.parent.iterdir()] == ["out.parquet"]  # no temporary files left


def test_scores_equal_the_servers_answers_at_the_same_moment(
    served: Served, tmp_path: Path
) -> None:
    from serving.grpc.client import PredictionClient
    from tests.support.fraud_requests import recent_rows

    rows = recent_rows(served, 40)
    entities = tmp_path / "now.parquet"
    pq.write_table(
        pa.Table.from_pandas(
            pd.DataFrame(
                [
                    {**r["entity_keys"], **r["request_data"], "event_timestamp": served.now}
                    for r in rows
                ]
            ),
            preserve_index=False,
        ),
        entities,
    )
    summary = score_entities(
        served.store, served.registry, f"{MODEL}@champion", entities, tmp_path / "out.parquet"
    )
    assert summary.model == f"{MODEL}:1"
    with PredictionClient(served.target) as client:
        answers = client.predict(MODEL, rows)
    scored = pq.read_table(tmp_path / "out.parquet").to_pylist()
    for ours, theirs in zip(scored, answers, strict=True):
        assert ours["score"] == pytest.approx(theirs["score"], rel=1e-9, abs=1e-12)
        assert ours["confidence"] == pytest.approx(theirs["confidence"], rel=1e-9, abs=1e-12)
        assert ours["model_version"] == theirs["model_version"] == "1"


def test_cli_scores_to_parquet_with_a_json_summary(trained: Trained, tmp_path: Path) -> None:
    entities = _entities(trained.workspace.data, 50, tmp_path / "entities.parquet")
    out = tmp_path / "scores.parquet"
    result = subprocess.run(
        [sys.executable, "-m", "framework.cli", "score", "--repo", str(trained.workspace.repo),
         "--registry", str(trained.registry_root), "--entities", str(entities),
         "--model", f"{MODEL}:{trained.version}", "--out", str(out), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == pq.read_metadata(out).num_rows == 50
    assert summary["model"] == f"{MODEL}:{trained.version}"


def test_cli_score_logs_the_join_and_the_rows_scored_on_stderr(
    trained: Trained, tmp_path: Path
) -> None:
    entities = _entities(trained.workspace.data, 50, tmp_path / "entities.parquet")
    out = tmp_path / "scores.parquet"
    result = parity(
        "score", "--repo", str(trained.workspace.repo), "--registry", str(trained.registry_root),
        "--entities", str(entities), "--model", f"{MODEL}:{trained.version}", "--out", str(out),
        "--batch-size", "20", "--json", cwd=tmp_path, env=EVERY_BATCH,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == {f.name for f in fields(ScoreSummary)}
    assert summary["rows"] == pq.read_metadata(out).num_rows == 50
    assert counts_to_total(result.stderr, "join") == [1, 2, 3, 4]
    assert counts_to_total(result.stderr, "write") == [50]
    assert counts_to_total(result.stderr, "score") == [20, 40, 50]
    text = parity(
        "score", "--repo", str(trained.workspace.repo), "--registry", str(trained.registry_root),
        "--entities", str(entities), "--model", f"{MODEL}:{trained.version}", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"scored 50 rows with {MODEL}:{trained.version} -> ")
    assert len(text.stdout.splitlines()) == 1
    assert "score: scoring 50 rows" in text.stderr


def test_bad_input_is_named_and_leaves_nothing(
    trained: Trained, trained_store: Any, tmp_path: Path
) -> None:
    registry = ModelRegistry(trained.registry_root)
    entities = _entities(trained.workspace.data, 20, tmp_path / "entities.parquet")
    out = tmp_path / "out.parquet"
    with pytest.raises(NotFoundError, match="no alias 'nightly'"):
        score_entities(trained_store, registry, f"{MODEL}@nightly", entities, out)
    csv = tmp_path / "entities.csv"
    csv.write_text("user_id\n1\n")
    with pytest.raises(ConfigError, match="must be Parquet"):
        score_entities(trained_store, registry, f"{MODEL}:{trained.version}", csv, out)
    without_amount = tmp_path / "no_amount.parquet"
    pq.write_table(pq.read_table(entities).drop_columns(["amount"]), without_amount)
    with pytest.raises(DataError, match="'amount'"):
        score_entities(trained_store, registry, f"{MODEL}:{trained.version}", without_amount, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "entities.csv", "entities.parquet", "no_amount.parquet",
    ]  # fmt: skip


def test_a_model_whose_definitions_changed_is_refused(trained: Trained, tmp_path: Path) -> None:
    ws = make_workspace(tmp_path / "ws")
    shutil.copytree(trained.workspace.data, ws.data)
    # A fresh Feast registry: the copied one names the original workspace's online tables.
    shutil.rmtree(ws.data / "feast")
    source = (ws.repo / "fraud.py").read_text()
    (ws.repo / "fraud.py").write_text(source.replace("        merchant_profile,\n", "", 1))
    apply(ws.repo)
    entities = _entities(ws.data, 10, tmp_path / "entities.parquet")
    with open_store(ws.repo) as store, pytest.raises(ArtifactError, match="merchant_profile"):
        score_entities(
            store,
            ModelRegistry(trained.registry_root),
            f"{MODEL}:{trained.version}",
            entities,
            tmp_path / "out.parquet",
        )
    assert not (tmp_path / "out.parquet").exists()
