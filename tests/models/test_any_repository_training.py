"""``parity train`` on Feast repositories shaped unlike the sample: every Feast type is
either taken soundly by the estimator or refused by name before any work; tasks have
task-aware defaults; a multiclass label is refused before the join; nanosecond entity
timestamps are accepted when exact; serving rules are checked against the model's
columns; the manifest carries a probe of keys that really exist.

Each test builds a small Feast repository in its own temporary folder (file registry,
SQLite, DuckDB offline store over Parquet written here), or uses the repository
``feast init`` generates, as it is.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from framework.errors import ConfigError, DataError
from framework.features import repository
from framework.features.fields import FeatureField
from framework.features.training_set import build_training_set, write_training_set
from framework.models.estimator import feature_frame
from framework.models.spec import ModelSpec, Task, spec_from_dict
from framework.models.training import TrainResult, train_model
from framework.registry.model_registry import ModelRegistry
from tests.support.workspaces import embedded_store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
ROWS = 240


# ------------------------------------------------------------ a generated repository


@dataclass
class Repo:
    root: Path
    store: Any
    labels: Path

    def spec(self, **changes: Any) -> ModelSpec:
        return spec_from_dict(spec_dict(self.labels, **changes))

    def train(self, **changes: Any) -> TrainResult:
        return train_model(
            self.root,
            self.spec(**changes),
            store=self.store,
            registry=ModelRegistry(self.root / "models"),
        )


def spec_dict(labels_path: Path, **changes: Any) -> dict[str, Any]:
    """A spec over the generated repository's service, left at the defaults."""
    raw: dict[str, Any] = {
        "name": "any_model",
        "feature_service": "svc",
        "labels": {
            "query": f"SELECT * FROM read_parquet('{labels_path}')",
            "keys": ["key"],
            "column": "label",
            "event_timestamp": "event_timestamp",
        },
        "estimator": {"class": "sklearn.linear_model.LogisticRegression"},
    }
    for name, value in changes.items():
        if isinstance(value, dict) and isinstance(raw.get(name), dict):
            raw[name] = {**raw[name], **value}
        else:
            raw[name] = value
    return raw


def make_repo(
    root: Path,
    features: dict[str, tuple[Any, pa.Array]] | None = None,
    *,
    keys: pa.Array | None = None,
    key_type: Any = None,
    labels: pa.Array | None = None,
    request: pa.Array | None = None,
    source: Path | None = None,
) -> Repo:
    """One view ``stats`` keyed by ``key`` with a numeric ``x`` and ``features``; a
    feature service ``svc``; labels one minute after each feature row, same key.
    ``request``: an on-demand view ``plus`` (``x + bonus``) over request data ``bonus``."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float64, Int64
    from feast.value_type import ValueType

    root.mkdir(parents=True, exist_ok=True)
    keys = keys if keys is not None else pa.array([i % 40 for i in range(ROWS)], pa.int64())
    times = [T0 + timedelta(hours=i) for i in range(ROWS)]
    x = pa.array([float((i * 7) % 11) for i in range(ROWS)])
    columns = {"key": keys, "event_timestamp": pa.array(times, TS), "x": x}
    columns.update({name: values for name, (_, values) in (features or {}).items()})
    pq.write_table(pa.table(columns), root / "stats.parquet")
    label_columns = {
        "key": keys,
        "event_timestamp": pa.array([t + timedelta(minutes=1) for t in times], TS),
        "label": labels
        if labels is not None
        else pa.array([int(v > 5) for v in x.to_pylist()], pa.int64()),
    }
    if request is not None:
        label_columns["bonus"] = request
    pq.write_table(pa.table(label_columns), root / "labels.parquet")

    store = embedded_store(root, "anyrepo")
    entity = Entity(name="thing", join_keys=["key"], value_type=key_type or ValueType.INT64)
    view = FeatureView(
        name="stats",
        entities=[entity],
        schema=[Field(name="x", dtype=Float64)]
        + [Field(name=name, dtype=kind) for name, (kind, _) in (features or {}).items()],
        source=FileSource(
            path=str(source or root / "stats.parquet"), timestamp_field="event_timestamp"
        ),
    )
    objects: list[Any] = [entity, view]
    served: list[Any] = [view]
    if request is not None:
        bonus = RequestSource(name="bonus_source", schema=[Field(name="bonus", dtype=Int64)])

        @on_demand_feature_view(sources=[view, bonus], schema=[Field(name="x_plus", dtype=Float64)])
        def plus(inputs: pd.DataFrame) -> pd.DataFrame:
            return pd.DataFrame({"x_plus": inputs["x"] + inputs["bonus"]})

        objects.append(plus)
        served.append(plus)
    objects.append(FeatureService(name="svc", features=served))
    store.apply(objects)
    return Repo(root, store, root / "labels.parquet")


@pytest.fixture
def repos(tmp_path: Path) -> Iterator[Any]:
    """``repos(name, ...)``: :func:`make_repo` under ``tmp_path / name``, closed after."""
    made: list[Repo] = []

    def build(name: str, *args: Any, **kwargs: Any) -> Repo:
        repo = make_repo(tmp_path / name, *args, **kwargs)
        made.append(repo)
        return repo

    yield build
    for repo in made:
        repository.close_store(repo.store)


# ------------------------------------------------------------ 1. Feast types


def test_a_bool_feature_is_a_number_zero_or_one() -> None:
    field = FeatureField(name="flag", dtype="Bool", view="v")
    assert not field.categorical
    frame = feature_frame(pa.table({"flag": pa.array([True, False, None])}), [field])
    assert frame["flag"].dtype == np.float64
    assert frame["flag"].iloc[:2].tolist() == [1.0, 0.0] and np.isnan(frame["flag"].iloc[2])


def test_a_bool_feature_trains(repos: Any) -> None:
    from feast.types import Bool

    flags = pa.array([i % 3 == 0 for i in range(ROWS)])
    result = repos("bool_feature", {"flag": (Bool, flags)}).train()
    assert {"name": "flag", "dtype": "Bool", "view": "stats"} in result.manifest.as_dict()[
        "features"
    ]
    profile = result.manifest.as_dict()["reference"]["features"]["flag"]
    assert profile["kind"] == "numerical" and profile["min"] == 0.0 and profile["max"] == 1.0


def test_a_bool_label_trains_a_binary_classifier(repos: Any) -> None:
    labels = pa.array([(i * 7) % 11 > 5 for i in range(ROWS)])
    result = repos("bool_label", labels=labels).train()
    assert result.manifest.as_dict()["metrics"]["holdout"]["roc_auc"] > 0.9


def test_a_bool_join_key_trains(repos: Any) -> None:
    from feast.value_type import ValueType

    keys = pa.array([i % 2 == 0 for i in range(ROWS)])
    result = repos("bool_key", keys=keys, key_type=ValueType.BOOL).train()
    assert result.manifest.as_dict()["join_keys"] == ["key"]
    assert result.manifest.as_dict()["dataset"]["entity_rows"] == ROWS


def _refused_types() -> list[tuple[str, Any, pa.Array]]:
    from feast.types import Array, Bytes, Int64, Map, String, Struct, UnixTimestamp

    n = range(ROWS)
    return [
        ("UnixTimestamp", UnixTimestamp, pa.array([T0 + timedelta(days=i) for i in n], TS)),
        ("Array(Int64)", Array(Int64), pa.array([[i, i + 1] for i in n])),
        ("Bytes", Bytes, pa.array([bytes([i % 256, 255]) for i in n])),
        ("Map", Map, pa.array([{"a": str(i)} for i in n])),
        ("Struct({a: String})", Struct({"a": String}), pa.array([{"a": str(i)} for i in n])),
    ]


@pytest.mark.parametrize(
    ("dtype", "kind", "values"), _refused_types(), ids=[t[0] for t in _refused_types()]
)
def test_a_feature_the_estimator_cannot_take_is_refused_by_name_before_the_labels_are_read(
    repos: Any, dtype: str, kind: Any, values: pa.Array
) -> None:
    repo = repos("refused", {"odd": (kind, values)})
    # A label query that would fail: the refusal has to come before it runs.
    broken = {"query": "SELECT * FROM read_parquet('no_such_labels.parquet')"}
    with pytest.raises(ConfigError) as caught:
        repo.train(labels=broken)
    message = str(caught.value)
    assert "\n" not in message
    assert "'odd'" in message and dtype in message and "on-demand feature view" in message
    assert not (repo.root / "models").exists() or ModelRegistry(repo.root / "models").names() == []


@pytest.mark.parametrize("name", ["score", "date", "x__status"])
def test_a_feature_named_like_a_prediction_log_column_is_refused_before_the_labels_are_read(
    repos: Any, name: str
) -> None:
    """A feature named ``score`` was logged over by the prediction's score (``parity
    monitor`` then failed on the column and ``parity skew`` saw every row mismatch); one
    named ``date`` made every prediction's log write fail."""
    from feast.types import Float64

    repo = repos("clash", {name: (Float64, pa.array([float(i) for i in range(ROWS)]))})
    broken = {"query": "SELECT * FROM read_parquet('no_such_labels.parquet')"}
    with pytest.raises(ConfigError) as caught:
        repo.train(labels=broken)
    message = str(caught.value)
    assert "\n" not in message
    assert f"feature {name!r}" in message and "prediction log's own columns" in message
    assert "field_mapping" in message


# ------------------------------------------------------------ the feast init repository


#: The `feast init` template declares its entity without a value_type (Feast warns).
_FEAST_INIT_WARNING = "ignore:Entity value_type will be mandatory:DeprecationWarning"


@pytest.fixture(scope="module")
def feast_init_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository ``feast init`` generates, applied as it is."""
    root = tmp_path_factory.mktemp("feast-init")
    feast = str(Path(sys.executable).with_name("feast"))  # this interpreter's Feast
    subprocess.run([feast, "init", "demo"], cwd=root, check=True, capture_output=True)
    repo = root / "demo" / "feature_repo"
    with warnings.catch_warnings():
        warnings.filterwarnings(*_FEAST_INIT_WARNING.split(":", 2)[:2], DeprecationWarning)
        repository.apply(repo)
    return repo


@pytest.mark.filterwarnings(_FEAST_INIT_WARNING)
def test_the_feast_init_repository_refuses_its_map_json_and_struct_features_by_name(
    feast_init_repo: Path,
) -> None:
    stats = feast_init_repo / "data" / "driver_stats.parquet"
    raw = spec_dict(stats, feature_service="driver_activity_v2")
    raw["labels"].update(keys=["driver_id"], column="conv_rate")
    with repository.open_store(feast_init_repo) as store:
        with pytest.raises(ConfigError) as caught:
            train_model(
                feast_init_repo,
                spec_from_dict(raw),
                store=store,
                registry=ModelRegistry(feast_init_repo / "models"),
            )
    message = str(caught.value)
    for name, kind in (
        ("driver_metadata", "Map"),
        ("driver_config", "Json"),
        ("driver_profile", "Struct"),
    ):
        assert f"'{name}' ({kind}" in message
    assert "conv_rate" not in message.split("(it takes")[0]


@pytest.mark.filterwarnings(_FEAST_INIT_WARNING)
def test_the_feast_init_repository_trains_on_its_scalar_and_on_demand_features(
    feast_init_repo: Path,
) -> None:
    """driver_activity_v1: conv_rate and the on-demand view over request data; the
    source's timestamps are nanoseconds (as pandas writes them)."""
    stats = feast_init_repo / "data" / "driver_stats.parquet"
    assert pq.read_schema(stats).field("event_timestamp").type.unit == "ns"
    raw = spec_dict(stats, feature_service="driver_activity_v1", task="regression")
    raw["labels"] = {
        "query": f"SELECT driver_id, event_timestamp + INTERVAL 1 MINUTE AS event_timestamp, "
        f"acc_rate AS label, 1 AS val_to_add, 2 AS val_to_add_2 FROM read_parquet('{stats}')",
        "keys": ["driver_id"],
        "column": "label",
        "event_timestamp": "event_timestamp",
    }
    raw["estimator"] = {"class": "sklearn.linear_model.Ridge"}
    with repository.open_store(feast_init_repo) as store:
        result = train_model(
            feast_init_repo,
            spec_from_dict(raw),
            store=store,
            registry=ModelRegistry(feast_init_repo / "models"),
        )
    names = [f["name"] for f in result.manifest.as_dict()["features"]]
    assert names == ["conv_rate", "conv_rate_plus_val1", "conv_rate_plus_val2"]
    probe = result.manifest.as_dict()["probe"]
    assert probe["entity_rows"] and all(set(r) == {"driver_id"} for r in probe["entity_rows"])
    assert probe["request_data"][0] == {"val_to_add": 1, "val_to_add_2": 2}


# ------------------------------------------------------------ 2. tasks


def test_a_regression_spec_left_at_the_defaults_gets_regression_defaults(tmp_path: Path) -> None:
    spec = spec_from_dict(
        spec_dict(
            tmp_path / "l.parquet",
            task="regression",
            estimator={"class": "sklearn.linear_model.Ridge"},
        )
    )
    assert spec.task is Task.REGRESSION
    assert spec.gate.metric == "rmse" and not spec.gate.higher_is_better
    assert (spec.split.train, spec.split.calibration, spec.split.holdout) == (0.8, 0.0, 0.2)
    # Given explicitly, a classification-only setting is still an error, by name.
    with pytest.raises(ConfigError, match="gate.metric"):
        spec_from_dict(
            spec_dict(tmp_path / "l.parquet", task="regression", gate={"metric": "pr_auc"})
        )
    with pytest.raises(ConfigError, match="split.calibration"):
        spec_from_dict(
            spec_dict(
                tmp_path / "l.parquet",
                task="regression",
                split={"train": 0.7, "calibration": 0.1, "holdout": 0.2},
            )
        )
    classification = spec_from_dict(spec_dict(tmp_path / "l.parquet"))
    assert classification.gate.metric == "pr_auc"
    assert (classification.split.train, classification.split.calibration) == (0.7, 0.1)


def test_a_split_that_gives_only_the_holdout_trains_on_the_rest(tmp_path: Path) -> None:
    spec = spec_from_dict(spec_dict(tmp_path / "l.parquet", split={"holdout": 0.3}))
    assert (spec.split.train, spec.split.calibration, spec.split.holdout) == (0.6, 0.1, 0.3)


def test_a_regression_spec_left_at_the_defaults_trains(repos: Any) -> None:
    labels = pa.array([float((i * 7) % 11) * 2.5 + 1 for i in range(ROWS)])
    result = repos("regression", labels=labels).train(
        task="regression", estimator={"class": "sklearn.linear_model.Ridge"}
    )
    manifest = result.manifest.as_dict()
    assert manifest["task"] == "regression" and manifest["gate"]["metric"] == "rmse"
    assert manifest["split"]["calibration"] is None
    assert manifest["metrics"]["holdout"]["rmse"] < manifest["metrics"]["baseline"]["rmse"]
    assert manifest["reference"]["confidence"] is None  # not applicable, not a fake number


@pytest.mark.parametrize(
    ("labels", "shown"),
    [
        (pa.array([i % 3 for i in range(ROWS)], pa.int64()), "0, 1, 2"),
        (pa.array(["cat", "dog"] * (ROWS // 2)), "'cat', 'dog'"),
        (pa.array([0.0, 0.5, 1.0] * (ROWS // 3)), "0.0, 0.5, 1.0"),
    ],
    ids=["three-classes", "text", "fractions"],
)
def test_a_classification_label_that_is_not_binary_is_refused_before_the_join(
    repos: Any, tmp_path: Path, labels: pa.Array, shown: str
) -> None:
    # The view's source file does not exist: a join would fail with another error.
    repo = repos("multiclass", labels=labels, source=tmp_path / "missing.parquet")
    with pytest.raises(DataError) as caught:
        repo.train()
    message = str(caught.value)
    assert "\n" not in message
    assert "'label'" in message and shown in message and "binary" in message
    assert 'task = "regression"' in message


# ------------------------------------------------------------ 4. nanosecond timestamps


def test_exact_nanosecond_entity_timestamps_are_accepted_from_pandas_arrow_and_parquet(
    repos: Any, tmp_path: Path
) -> None:
    repo = repos("ns")
    times = pd.Series(
        pd.to_datetime([T0 + timedelta(hours=5, minutes=1), T0 + timedelta(hours=6)], utc=True)
    )
    frame = pd.DataFrame({"key": [5, 6], "event_timestamp": times.astype("datetime64[ns, UTC]")})
    assert frame["event_timestamp"].dtype.unit == "ns"  # type: ignore[attr-defined]
    micro = frame.astype({"event_timestamp": "datetime64[us, UTC]"})
    want = build_training_set(repo.store, "svc", micro).column("x").to_pylist()
    assert want[0] == float((5 * 7) % 11)
    folder = tmp_path / "entities"
    folder.mkdir()
    frame.to_parquet(folder / "part-0.parquet")
    assert pq.read_schema(folder / "part-0.parquet").field("event_timestamp").type.unit == "ns"
    for given in (frame, pa.Table.from_pandas(frame), folder / "part-0.parquet", folder):
        got = build_training_set(repo.store, "svc", given)
        assert got.column("x").to_pylist() == want, type(given)
    info = write_training_set(repo.store, "svc", folder, tmp_path / "out.parquet")
    assert info.entity_rows == 2


def test_an_entity_row_without_a_time_is_refused_naming_the_row(repos: Any) -> None:
    """A NaT entity time got a feature value matched on the keys alone."""
    repo = repos("nat")
    times = pd.to_datetime([T0 + timedelta(hours=5), None], utc=True)
    frame = pd.DataFrame({"key": [5, 6], "event_timestamp": times})
    with pytest.raises(DataError, match=r"'event_timestamp' is missing \(null\) in row 1"):
        build_training_set(repo.store, "svc", frame)


def test_sub_microsecond_label_times_do_not_crash_training(repos: Any, tmp_path: Path) -> None:
    """Labels that arrive 400 ns after the cut-off: the arrival filter compares exactly."""
    repo = repos("ns_labels")
    labels = pq.read_table(repo.labels).to_pandas()
    # Naive (UTC) nanoseconds: DuckDB reads those as TIMESTAMP_NS, keeping the 400 ns.
    naive = labels["event_timestamp"].dt.tz_convert(None).astype("datetime64[ns]")
    labels["arrived"] = naive + pd.Timedelta(nanoseconds=400)
    path = tmp_path / "ns_labels.parquet"
    labels.to_parquet(path)
    as_of = (labels["event_timestamp"].iloc[-1]).to_pydatetime()
    result = train_model(
        repo.root,
        spec_from_dict(spec_dict(path, labels={"label_timestamp": "arrived"})),
        store=repo.store,
        registry=ModelRegistry(repo.root / "models"),
        as_of=as_of,
    )
    # The last label arrived 400 ns after as_of: not used.
    assert result.manifest.as_dict()["dataset"]["entity_rows"] == ROWS - 1


# ------------------------------------------------------------ 5. serving rules


def test_a_serving_rule_naming_a_column_the_model_does_not_have_is_refused_before_the_labels(
    repos: Any,
) -> None:
    repo = repos("rules", request=pa.array([i % 5 for i in range(ROWS)], pa.int64()))
    rule = {"name": "typo", "when": "x > 3 and bonuss < 2"}
    with pytest.raises(ConfigError) as caught:
        repo.train(
            serving={"rules": [rule]},
            labels={"query": "SELECT * FROM read_parquet('no_such_labels.parquet')"},
        )
    message = str(caught.value)
    assert "\n" not in message
    assert "'typo'" in message and "'bonuss'" in message
    assert "bonus, key, x, x_plus" in message


def test_serving_rules_over_features_keys_and_request_data_are_accepted(repos: Any) -> None:
    repo = repos("good_rules", request=pa.array([i % 5 for i in range(ROWS)], pa.int64()))
    rules = [
        {"name": "big", "when": "x_plus > 10 and abs(x) >= 1 or key == 3"},
        {"name": "bonus", "when": "`bonus` in [1, 2] and not (x < inf)", "decision": "ACCEPT"},
        {"name": "text", "when": "x.isna() or bonus != 4"},
    ]
    result = repo.train(serving={"rules": rules})
    assert [r["name"] for r in result.manifest.as_dict()["serving"]["rules"]] == [
        "big",
        "bonus",
        "text",
    ]


def test_a_serving_rule_that_does_not_parse_is_refused_when_the_spec_loads(
    tmp_path: Path,
) -> None:
    rule = {"name": "broken", "when": "x > > 3"}
    with pytest.raises(ConfigError, match=r"serving\.rules\.0\.when: .*cannot parse .x > > 3."):
        spec_from_dict(spec_dict(tmp_path / "l.parquet", serving={"rules": [rule]}))


# ------------------------------------------------------------ 6. the probe


def test_the_manifest_carries_a_probe_of_the_latest_keys_and_request_data(repos: Any) -> None:
    keys = pa.array([f"c_{i % 40:04d}" for i in range(ROWS)])
    from feast.value_type import ValueType

    repo = repos(
        "probe",
        keys=keys,
        key_type=ValueType.STRING,
        request=pa.array([i % 5 for i in range(ROWS)], pa.int64()),
    )
    manifest = repo.train().manifest.as_dict()
    probe = manifest["probe"]
    assert set(probe) == {"entity_rows", "request_data"}
    rows, request = probe["entity_rows"], probe["request_data"]
    assert len(rows) == len(request) == 16
    # The last 16 labelled rows (distinct keys), leading zeros kept.
    last = list(range(ROWS - 16, ROWS))
    assert rows == [{"key": f"c_{i % 40:04d}"} for i in last]
    assert request == [{"bonus": i % 5} for i in last]
    json.dumps(probe, allow_nan=False)


def test_a_probe_of_bytes_keys_is_base64(repos: Any) -> None:
    from feast.value_type import ValueType

    keys = pa.array([bytes([0, i % 40]) for i in range(ROWS)], pa.binary())
    repo = repos("bytes_key", keys=keys, key_type=ValueType.BYTES)
    rows = repo.train().manifest.as_dict()["probe"]["entity_rows"]
    assert rows[-1] == {"key": {"base64": base64.b64encode(bytes([0, (ROWS - 1) % 40])).decode()}}
