"""A repository owns its state: relative paths resolve against it, never the working
directory; two repositories never share state; outside one, a command says how to
name one. Commands run as a user runs them: subprocesses from unrelated folders."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from framework.errors import ConfigError
from framework.features.repository import DEFAULT_STATE, data_dir, default_repo
from framework.features.sql_paths import resolve_sql_paths
from tests.support.cli import parity

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _values(value: float, users: int = 4) -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array(range(1, users + 1), pa.int64()),
            "value": pa.array([value] * users, pa.float64()),
            "event_timestamp": pa.array([T0] * users, pa.timestamp("us", tz="UTC")),
        }
    )


def _glob_repo(root: Path, value: float) -> Path:
    """A Feast repository whose FileSource path is a relative glob, data/part-*.parquet."""
    repo = root / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(
        textwrap.dedent("""\
            project: owned
            provider: local
            registry: data/registry.db
            offline_store:
              type: duckdb
            online_store:
              type: sqlite
              path: data/online.db
            entity_key_serialization_version: 3
            auth:
              type: no_auth
        """)
    )
    (repo / "definitions.py").write_text(
        textwrap.dedent("""\
            from datetime import timedelta

            from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
            from feast.types import Float64

            user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
            source = FileSource(
                name="stats_source", path="data/part-*.parquet", timestamp_field="event_timestamp"
            )
            stats = FeatureView(
                name="stats", entities=[user], ttl=timedelta(days=0),
                schema=[Field(name="value", dtype=Float64)], source=source, online=True,
            )
            svc = FeatureService(name="svc", features=[stats])
        """)
    )
    half = _values(value)
    pq.write_table(half.slice(0, 2), repo / "data" / "part-1.parquet")
    pq.write_table(half.slice(2), repo / "data" / "part-2.parquet")
    return repo


def _decoy_folder(root: Path) -> Path:
    """A working directory holding other files at the repository's relative paths."""
    decoy = root / "elsewhere"
    (decoy / "data").mkdir(parents=True)
    pq.write_table(_values(666.0), decoy / "data" / "part-1.parquet")
    pq.write_table(_values(666.0), decoy / "data" / "part-9.parquet")
    pq.write_table(pa.table({"user_id": [1], "label": [666]}), decoy / "labels.parquet")
    return decoy


@pytest.mark.integration
def test_relative_glob_sources_read_the_repositorys_files_from_any_working_directory(
    tmp_path: Path,
) -> None:
    repo = _glob_repo(tmp_path, 1.0)
    decoy = _decoy_folder(tmp_path)
    entities = tmp_path / "entities.parquet"
    pq.write_table(
        pa.table({"user_id": pa.array([1, 2, 3, 4], pa.int64()),
                  "event_timestamp": pa.array([T0 + timedelta(hours=1)] * 4,
                                              pa.timestamp("us", tz="UTC"))}),
        entities,
    )  # fmt: skip
    where = ["--repo", str(repo)]
    assert (r := parity("apply", *where, cwd=decoy)).returncode == 0, r.stderr
    out = tmp_path / "training.parquet"
    r = parity("training-set", *where, "--feature-service", "svc", "--entities", str(entities),
               "--out", str(out), cwd=decoy)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert pq.read_table(out)["value"].to_pylist() == [1.0, 1.0, 1.0, 1.0]

    r = parity("materialize", *where, "--start", "2026-02-01", "--end", "2026-04-01", cwd=decoy)
    assert r.returncode == 0, r.stderr
    online = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""\
            import json
            from feast import FeatureStore
            store = FeatureStore(repo_path={str(repo)!r})
            rows = [{{"user_id": i}} for i in (1, 2, 3, 4)]
            print(json.dumps(store.get_online_features(
                features=["stats:value"], entity_rows=rows).to_dict()["value"]))
        """)],
        cwd=repo, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert online.returncode == 0, online.stderr
    assert json.loads(online.stdout.strip().splitlines()[-1]) == [1.0, 1.0, 1.0, 1.0]
    # Feast's files and parity's state are the repository's, none in the working directory.
    assert (repo / "data" / "online.db").exists()
    assert sorted(p.name for p in decoy.iterdir()) == ["data", "labels.parquet"]


def test_a_relative_path_with_nothing_behind_it_is_an_error_naming_the_repositorys_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feast import FileSource

    from framework.errors import DataError
    from framework.features.view_sources import View, local_files

    decoy = _decoy_folder(tmp_path)
    monkeypatch.chdir(decoy)
    source = FileSource(path="data/part-*.parquet", timestamp_field="event_timestamp")
    view = View(name="stats", projection_name="stats", join_keys={}, features=[], output=[],
                timestamp_field="event_timestamp", created_field=None, ttl=None,
                source=source)  # fmt: skip
    repo = tmp_path / "repo"
    repo.mkdir()
    with pytest.raises(DataError, match=str(repo / "data")):
        local_files(view, repo)


def test_label_query_paths_resolve_against_the_repository_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from framework.models.label_query import load_labels
    from framework.models.spec import spec_from_dict

    repo = tmp_path / "repo"
    repo.mkdir()
    pq.write_table(
        pa.table({"user_id": [1, 2], "label": [0, 1],
                  "ts": pa.array([T0, T0], pa.timestamp("us", tz="UTC"))}),
        repo / "labels.parquet",
    )  # fmt: skip
    decoy = _decoy_folder(tmp_path)
    monkeypatch.chdir(decoy)  # DuckDB alone would read ./labels.parquet first
    spec = spec_from_dict({
        "name": "m", "feature_service": "svc",
        "labels": {"query": "SELECT * FROM read_parquet('labels.parquet')",
                   "keys": ["user_id"], "column": "label", "event_timestamp": "ts"},
        "estimator": {"class": "sklearn.linear_model.LogisticRegression"},
    })  # fmt: skip
    table = load_labels(spec, data_dir(repo), repo)
    assert table["label"].to_pylist() == [0, 1]


def test_label_query_paths_fall_back_to_the_state_folder_never_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spec reading 'raw/labels.parquet' finds it in the state folder (../data)."""
    repo, state = tmp_path / "repo", tmp_path / "data"
    (state / "raw").mkdir(parents=True)
    repo.mkdir()
    (repo / "parity.toml").write_text('state = "../data"\n')
    assert data_dir(repo) == state.resolve()
    pq.write_table(pa.table({"v": [1]}), state / "raw" / "labels.parquet")
    decoy = tmp_path / "decoy"
    (decoy / "raw").mkdir(parents=True)
    pq.write_table(pa.table({"v": [666]}), decoy / "raw" / "labels.parquet")
    monkeypatch.chdir(decoy)
    sql = resolve_sql_paths("SELECT v FROM 'raw/labels.parquet'", [repo, data_dir(repo)])
    assert sql == f"SELECT v FROM '{state.resolve() / 'raw' / 'labels.parquet'}'"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM read_parquet('a.parquet')", "SELECT * FROM read_parquet('/r/a.parquet')"),
        ("FROM read_parquet(['a/*.parquet', 'b.parquet'], hive_partitioning = true)",
         "FROM read_parquet(['/r/a/*.parquet', '/r/b.parquet'], hive_partitioning = true)"),
        ("FROM 'l.csv' JOIN read_csv('m.csv', delim = ',') USING (k)",
         "FROM '/r/l.csv' JOIN read_csv('/r/m.csv', delim = ',') USING (k)"),
        ("SELECT 'x.parquet' AS s FROM t WHERE c IN ('a', 'b')",
         "SELECT 'x.parquet' AS s FROM t WHERE c IN ('a', 'b')"),
        ("FROM read_parquet('/abs/a.parquet'), read_json('s3://b/c.json')",
         "FROM read_parquet('/abs/a.parquet'), read_json('s3://b/c.json')"),
        ("FROM read_parquet('it''s.parquet')", "FROM read_parquet('/r/it''s.parquet')"),
    ],
)  # fmt: skip
def test_only_file_path_literals_in_sql_are_resolved(sql: str, expected: str) -> None:
    assert resolve_sql_paths(sql, [Path("/r")]) == expected


def test_sibling_repositories_keep_their_state_apart(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert data_dir(a) == (a / DEFAULT_STATE).resolve()
    assert data_dir(b) == (b / DEFAULT_STATE).resolve()
    # A parity.toml can place it elsewhere, relative to the repository.
    (a / "parity.toml").write_text('state = "../state-of-a"\n')
    assert data_dir(a) == (tmp_path / "state-of-a").resolve()


def test_a_bad_parity_toml_names_the_file_and_the_setting(tmp_path: Path) -> None:
    (tmp_path / "parity.toml").write_text('stat = "x"\n')
    with pytest.raises(ConfigError, match=r"parity.toml: unknown setting 'stat'"):
        data_dir(tmp_path)
    (tmp_path / "parity.toml").write_text("state = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        data_dir(tmp_path)


def test_the_sample_keeps_its_state_in_the_data_folder_next_to_it() -> None:
    assert data_dir(ROOT / "feature_repo") == ROOT / "data"


def test_the_default_repository_is_never_one_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PARITY_REPO", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="--repo DIR or PARITY_REPO"):
        default_repo()
    (tmp_path / "feature_repo").mkdir()
    (tmp_path / "feature_repo" / "feature_store.yaml").write_text("project: x\n")
    assert default_repo() == tmp_path / "feature_repo"
    (tmp_path / "feature_store.yaml").write_text("project: y\n")
    assert default_repo() == tmp_path
    monkeypatch.setenv("PARITY_REPO", "/somewhere")
    assert default_repo() == Path("/somewhere")


@pytest.mark.parametrize(
    "command",
    [
        ["models", "list"],
        ["models", "show"],
        ["models", "rollback", "m"],
        ["materialize", "--status"],
        ["train"],
        ["apply"],
        ["predict", "--entity", "user_id=1"],
        ["monitor"],
        ["feedback"],
        ["review", "list"],
    ],
)
def test_outside_any_repository_a_command_says_how_to_name_one(
    command: list[str], tmp_path: Path
) -> None:
    result = parity(*command, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--repo DIR or PARITY_REPO" in lines[0]
    assert "fraud" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written anywhere near


def _registry_with(root: Path, *names: str) -> None:
    for name in names:
        (root / name / "versions").mkdir(parents=True)


def test_the_only_model_is_the_default_and_several_are_listed(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text("project: x\n")
    _registry_with(data_dir(repo) / "models", "churn")
    unreachable = ["predict", "--target", "127.0.0.1:9", "--timeout", "0.5"]
    result = parity(*unreachable, cwd=repo)
    assert "--model" not in result.stderr  # went on with churn: the server is what failed
    _registry_with(data_dir(repo) / "models", "upsell")
    result = parity(*unreachable, cwd=repo)
    assert result.returncode == 2
    assert "several models (churn, upsell); pick one with --model NAME" in result.stderr
    listing = parity("models", "list", "--json", cwd=tmp_path, env={"PARITY_REPO": str(repo)})
    assert json.loads(listing.stdout)["registry"] == str(data_dir(repo) / "models")
