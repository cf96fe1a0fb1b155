"""The Feast repository: apply it, materialise it with Feast, read it back online.

Embedded profile (file registry, SQLite) always; production profile (SQL
registry on PostgreSQL, Redis online store) against real servers.
"""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from framework.errors import ConfigError, FeatureStoreError
from framework.features import repository
from framework.features.repository import Profile
from tests.support.workspaces import Workspace

pytestmark = pytest.mark.integration

VIEWS = {
    "user_profile",
    "merchant_profile",
    "user_txn_1h",
    "user_txn_24h",
    "user_txn_7d",
    "merchant_risk_30d",
}


def test_apply_registers_every_definition(sample_workspace: Workspace) -> None:
    summary = repository.apply(sample_workspace.repo)
    assert (summary.entities, summary.feature_views) == (2, 6)
    assert (summary.on_demand_feature_views, summary.feature_services) == (1, 1)
    with repository.open_store(sample_workspace.repo) as store:
        views = store.list_feature_views()
        odfvs = store.list_on_demand_feature_views()
        service = store.get_feature_service("fraud_model_v1")
        source = store.get_feature_view("user_txn_7d").batch_source.path
    assert {v.name for v in views} == VIEWS
    assert [v.name for v in odfvs] == ["transaction_context"]
    assert {p.name for p in service.feature_view_projections} == VIEWS | {"transaction_context"}
    ttl = {v.name: v.ttl for v in views}
    assert ttl["user_txn_1h"] == timedelta(hours=1)
    assert ttl["user_txn_7d"] == timedelta(days=7)
    assert not ttl["user_profile"]  # static: no expiry
    # Sources point into this workspace's data folder, whatever the working directory.
    assert Path(source) == sample_workspace.data / "offline" / "user_transaction_features.parquet"


def test_apply_is_idempotent_and_removes_deleted_definitions(sample_workspace: Workspace) -> None:
    repository.apply(sample_workspace.repo)
    repository.apply(sample_workspace.repo)  # again: nothing changes, nothing fails
    with repository.open_store(sample_workspace.repo) as store:
        assert {v.name for v in store.list_feature_views()} == VIEWS

    # A view (and its use in the service) deleted from the repository leaves the registry.
    fraud = sample_workspace.repo / "fraud.py"
    text = fraud.read_text()
    text = text.replace("        user_txn_1h,\n", "", 1)
    start = text.index("user_txn_1h = FeatureView(")
    end = text.index("user_txn_24h = FeatureView(")
    fraud.write_text(text[:start] + text[end:])
    repository.apply(sample_workspace.repo)
    with repository.open_store(sample_workspace.repo) as store:
        assert {v.name for v in store.list_feature_views()} == VIEWS - {"user_txn_1h"}


def test_broken_definitions_give_a_clear_error(sample_workspace: Workspace) -> None:
    (sample_workspace.repo / "broken.py").write_text("raise RuntimeError('typo in definitions')\n")
    with pytest.raises(FeatureStoreError, match="typo in definitions"):
        repository.apply(sample_workspace.repo)


def test_bad_repository_paths_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        repository.load_store(tmp_path / "nope")
    tmp_path.joinpath("repo").mkdir()
    with pytest.raises(ConfigError, match="no feature_store.yaml"):
        repository.load_store(tmp_path / "repo")
    (tmp_path / "repo" / "feature_store.yaml").write_text("project: parity\nonline_store: [1\n")
    with pytest.raises(ConfigError, match="feature_store.yaml"):
        repository.load_store(tmp_path / "repo")


def _materialize(store: Any) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        store.materialize(
            start_date=datetime(2000, 1, 1, tzinfo=UTC),
            end_date=datetime(2026, 6, 1, tzinfo=UTC),
        )


def _latest_offline_rows(data: Path, n: int) -> list[dict[str, Any]]:
    """The latest user and merchant feature rows, straight from the Parquet sources."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    cursor = con.execute(
        f"""
        WITH u AS (
            SELECT * FROM read_parquet('{data}/offline/user_transaction_features.parquet')
            QUALIFY row_number() OVER (PARTITION BY user_id ORDER BY event_timestamp DESC) = 1
        ), m AS (
            SELECT * FROM read_parquet('{data}/offline/merchant_risk_features.parquet')
            QUALIFY row_number() OVER (PARTITION BY merchant_id ORDER BY event_timestamp DESC) = 1
        ), p AS (SELECT * FROM read_parquet('{data}/offline/merchant_profile.parquet'))
        SELECT u.user_id, m.merchant_id, u.txn_count_7d, u.amount_mean_7d, u.amount_std_7d,
               u.distinct_merchants_7d, m.merchant_txn_count_30d, m.merchant_fraud_rate_30d,
               p.category
        FROM u, m JOIN p USING (merchant_id)
        ORDER BY u.event_timestamp DESC, m.merchant_id LIMIT {n}
        """
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _check_round_trip(store: Any, data: Path) -> None:
    expected = _latest_offline_rows(data, 5)
    rows = [
        {"user_id": e["user_id"], "merchant_id": e["merchant_id"], "amount": 42.0, "hour_of_day": 3}
        for e in expected
    ]
    online = store.get_online_features(
        features=store.get_feature_service("fraud_model_v1"), entity_rows=rows
    ).to_dict()
    for i, e in enumerate(expected):
        for name in (
            "txn_count_7d",
            "amount_mean_7d",
            "amount_std_7d",
            "distinct_merchants_7d",
            "merchant_txn_count_30d",
            "merchant_fraud_rate_30d",
            "category",
        ):
            assert online[name][i] == pytest.approx(e[name]), (name, i)
        # The on-demand view ran on the values read back, with the request data.
        assert online["is_night"][i] == 1
        if e["amount_mean_7d"]:
            assert online["amount_to_mean_7d"][i] == pytest.approx(42.0 / e["amount_mean_7d"])
    unknown = store.get_online_features(
        features=["user_txn_7d:txn_count_7d"], entity_rows=[{"user_id": -1}]
    ).to_dict()
    assert unknown["txn_count_7d"] == [None]


def test_feast_materialises_into_sqlite_and_reads_back(sample_workspace: Workspace) -> None:
    repository.apply(sample_workspace.repo)
    with repository.open_store(sample_workspace.repo) as store:
        _materialize(store)
        assert (sample_workspace.data / "feast" / "online.db").exists()
        _check_round_trip(store, sample_workspace.data)


def test_production_profile_on_postgres_and_redis(
    sample_workspace: Workspace,
    postgres_url: str,
    redis_address: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARITY_REGISTRY_URL", postgres_url)
    monkeypatch.setenv("PARITY_REDIS", redis_address)
    summary = repository.apply(sample_workspace.repo, Profile.PRODUCTION)
    assert summary.profile == "production"
    with repository.open_store(sample_workspace.repo, Profile.PRODUCTION) as store:
        assert type(store.registry).__name__ == "SqlRegistry"
        assert store.config.online_store.type == "redis"
        assert {v.name for v in store.list_feature_views()} == VIEWS
        _materialize(store)
        _check_round_trip(store, sample_workspace.data)
    # Nothing went to the embedded stores.
    assert not (sample_workspace.data / "feast" / "registry.db").exists()
    assert not (sample_workspace.data / "feast" / "online.db").exists()


def test_production_profile_with_unreachable_registry_fails_clearly(
    sample_workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARITY_REGISTRY_URL", "postgresql+psycopg://postgres@127.0.0.1:1/parity")
    with pytest.raises(FeatureStoreError, match=r"production registry .* 127.0.0.1:1/parity"):
        repository.apply(sample_workspace.repo, Profile.PRODUCTION)


def test_production_profile_creates_a_missing_registry_database(
    sample_workspace: Workspace, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    url = sa.make_url(postgres_url)
    fresh = url.set(database=f"{url.database}_new")
    monkeypatch.setenv("PARITY_REGISTRY_URL", fresh.render_as_string(hide_password=False))
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with repository.open_store(sample_workspace.repo, Profile.PRODUCTION) as store:
            assert store.config.registry.path.endswith(f"/{fresh.database}")
        with admin.connect() as con:
            names = con.execute(sa.text("SELECT datname FROM pg_database")).scalars().all()
        assert fresh.database in names
    finally:
        with admin.connect() as con:
            con.execute(sa.text(f'DROP DATABASE IF EXISTS "{fresh.database}" WITH (FORCE)'))
        admin.dispose()


def test_spark_profile_without_pyspark_or_java_says_what_to_install(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spark profile needs PySpark and a Java runtime: without either, opening it
    stops with how to get them, before Feast imports its Spark offline store."""
    # None in sys.modules is how Python itself marks a module as not importable.
    monkeypatch.setitem(__import__("sys").modules, "pyspark", None)
    with pytest.raises(ConfigError, match=r"needs PySpark: pip install 'parity\[spark\]'"):
        repository.load_store(workspace.repo, Profile.SPARK)
    monkeypatch.undo()
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(workspace.root))  # no java on it
    with pytest.raises(ConfigError, match="needs a Java runtime.*scripts/install-java"):
        repository.load_store(workspace.repo, Profile.SPARK)
