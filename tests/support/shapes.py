"""Feast repositories of many shapes, generated on disk for the conformance suite.

Each shape is a plain Feast repository (a definitions module, ``feature_store.yaml``,
Parquet sources), a labels file and a model spec in ``<repo>/models/``. Paths in the
definitions, the YAML and the label query are absolute (relative-path resolution is
the product's business and is tested elsewhere), and every shape lives in a folder of
its own, so no two repositories can share state.

The data are laid out so that the served traffic comes from the training
distribution (nothing may alert on it) and every path has one right answer:

- every entity of a view has three feature rows: around ``now - 4 days`` and
  ``now - 2 days`` (the training period) and one in the last two hours (what is
  served: a main view's 5-40 minutes old, younger than the 1-50 minutes its values
  had at the training events, so served ages come from the training distribution
  too); all values are drawn independently from one distribution;
- a *main* view has the service's full keys; labels are events 1-50 minutes after
  its first two rows, computed from those rows' values and the request data, so
  every training row joins a value from every view (no nulls in training);
- views keyed by a subset of the keys have their rows 6-9 hours before the main
  view's, so a label event always sees the same generation of them;
- with a ``created`` column, one feature row in ten has a twin at the same event
  time with other values and an earlier created timestamp (the twin must lose);
- probe rows (not trained on) test the join's edges: an event exactly at a feature
  row, 5 hours after one (beyond the short TTL of 3 hours), before any row, and
  duplicated entity rows.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import pandas as pd

#: Entities (or key combinations) per main view: above the monitor's 500-row guard, so
#: one served request per entity gives a window it will judge.
N = 600
SHORT_TTL = timedelta(hours=3)

Gen = Callable[[np.random.Generator, int], Any]


@dataclass
class Generated:
    """A repository on disk and what the walk needs to know about it."""

    repo: Path
    model: str
    service: str
    keys: list[str]
    request: list[str]
    task: str
    labels: pd.DataFrame  # keys, event_timestamp, request data, label
    probes: pd.DataFrame  # more entity rows for the training-set comparison
    traffic: list[dict[str, dict[str, Any]]]  # one served row per main entity
    views: dict[str, list[dict[str, Any]]]  # feature view -> its online keys
    multiclass: bool = False


@dataclass(frozen=True)
class Shape:
    name: str
    covers: str
    build: Callable[[Path, datetime], Generated] = field(repr=False)


# ----------------------------------------------------------------- value generators


def f64(scale: float = 1.0, loc: float = 0.0) -> Gen:
    return lambda rng, n: (rng.normal(loc, scale, n)).astype(np.float64)


def f32(scale: float = 1.0, loc: float = 0.0) -> Gen:
    return lambda rng, n: (rng.normal(loc, scale, n)).astype(np.float32)


def i64(lo: int, hi: int) -> Gen:
    return lambda rng, n: rng.integers(lo, hi, n).astype(np.int64)


def i32(lo: int, hi: int) -> Gen:
    return lambda rng, n: rng.integers(lo, hi, n).astype(np.int32)


def pick(*values: Any) -> Gen:
    return lambda rng, n: [values[i] for i in rng.integers(0, len(values), n)]


def boolean() -> Gen:
    return lambda rng, n: rng.random(n) < 0.4


# ----------------------------------------------------------------- layout


def view_rows(
    keys: pd.DataFrame,
    features: dict[str, Gen],
    now: datetime,
    rng: np.random.Generator,
    *,
    main: bool,
    created: str | None = None,
) -> pd.DataFrame:
    """Three generations of feature rows per key row (see the module docstring)."""
    n = len(keys)
    lo, hi = (-3.0, 3.0) if main else (-9.0, -6.0)
    parts = []
    for generation, center in ((1, now - timedelta(days=4)), (2, now - timedelta(days=2))):
        hours = rng.uniform(lo, hi, n)
        parts.append((generation, [center + timedelta(hours=float(h)) for h in hours]))
    minutes = rng.uniform(5, 40, n) if main else rng.uniform(60, 120, n)
    parts.append((3, [now - timedelta(minutes=float(m)) for m in minutes]))
    frames = []
    for generation, times in parts:
        frame = keys.reset_index(drop=True).copy()
        frame["event_timestamp"] = pd.to_datetime(
            [t.replace(microsecond=0) for t in times], utc=True
        )
        frame["generation"] = generation
        for name, gen in features.items():
            frame[name] = gen(rng, n)
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    if created:
        out[created] = out["event_timestamp"] + pd.Timedelta(seconds=10)
    return out


def with_losing_twins(
    frame: pd.DataFrame, features: dict[str, Gen], created: str, rng: np.random.Generator
) -> pd.DataFrame:
    """One row in ten gets a twin at the same event time, other values, created earlier."""
    twins = frame[rng.random(len(frame)) < 0.1].copy()
    for name, gen in features.items():
        twins[name] = gen(rng, len(twins))
    twins[created] = twins["event_timestamp"] - pd.Timedelta(seconds=10)
    return pd.concat([frame, twins], ignore_index=True).sample(frac=1.0, random_state=1)


def label_events(main: pd.DataFrame, keys: list[str], rng: np.random.Generator) -> pd.DataFrame:
    """Entity rows 1-50 minutes after the main view's training-period rows."""
    rows = main[main["generation"] < 3].copy()
    offsets = pd.to_timedelta(rng.integers(60, 3000, len(rows)), unit="s")
    rows["event_timestamp"] = rows["event_timestamp"] + offsets
    return rows.drop(columns=["generation"]).reset_index(drop=True)


def probes(
    main: pd.DataFrame, labels: pd.DataFrame, keys: list[str], now: datetime
) -> pd.DataFrame:
    first = main[main["generation"] == 1].head(20)[keys + ["event_timestamp"]]
    exact = first.copy()
    late = first.assign(event_timestamp=first["event_timestamp"] + pd.Timedelta(hours=5))
    boundary = first.assign(event_timestamp=first["event_timestamp"] + SHORT_TTL)
    early = first.assign(event_timestamp=pd.Timestamp(now - timedelta(days=10)))
    dupes = labels.head(5)[keys + ["event_timestamp"]]
    return pd.concat([exact, late, boundary, early, dupes, dupes], ignore_index=True)


def traffic(
    main: pd.DataFrame, keys: list[str], request: dict[str, Gen], rng: np.random.Generator
) -> tuple[list[dict[str, dict[str, Any]]], pd.DataFrame]:
    latest = main[main["generation"] == 3].reset_index(drop=True)
    req = pd.DataFrame({name: gen(rng, len(latest)) for name, gen in request.items()})
    rows = []
    for i in range(len(latest)):
        rows.append(
            {
                "entity_keys": {k: _plain(latest.at[i, k]) for k in keys},
                "request_data": {c: _plain(req.at[i, c]) for c in req.columns},
            }
        )
    return rows, req


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def online_keys(
    frame: pd.DataFrame, keys: list[str], rename: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    latest = frame[frame["generation"] == 3][keys].drop_duplicates()
    latest = latest.rename(columns=rename or {})
    return [{k: _plain(v) for k, v in row.items()} for row in latest.to_dict("records")]


def add_request(frame: pd.DataFrame, request: dict[str, Gen], rng: np.random.Generator) -> None:
    for name, gen in request.items():
        frame[name] = gen(rng, len(frame))


def sigmoid_label(score: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A learnable binary label: the sign of a score plus a little noise."""
    return (score + rng.normal(0, 0.25, len(score)) > 0).astype(np.int64)


# ----------------------------------------------------------------- writing a repository

YAML = """\
project: $project
provider: local
registry: $state/registry.db
offline_store:
  type: duckdb
online_store:
  type: sqlite
  path: $state/online.db
entity_key_serialization_version: 3
auth:
  type: no_auth
"""

HEADER = """\
# Generated by tests/support/shapes.py for the conformance suite.
from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import (
    Array, Bool, Bytes, Float32, Float64, Int32, Int64, Json, Map, String, Struct
)
"""


def write_yaml(repo: Path, project: str, state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        Template(YAML).substitute(project=project, state=state)
    )


def spec_toml(
    model: str,
    service: str,
    task: str,
    labels: Path,
    keys: list[str],
    estimator: str,
    params: str,
    extra: str = "",
) -> str:
    return textwrap.dedent(
        f'''\
        name = "{model}"
        task = "{task}"
        feature_service = "{service}"
        random_state = 0

        [labels]
        query = "SELECT * FROM read_parquet('{labels}')"
        keys = {json.dumps(keys)}
        column = "label"
        event_timestamp = "event_timestamp"

        [estimator]
        class = "{estimator}"
        params = {params}
        '''
    ) + textwrap.dedent(extra)


CLASSIFIER = ("sklearn.ensemble.HistGradientBoostingClassifier", "{ max_iter = 60 }")
REGRESSOR = ("sklearn.ensemble.HistGradientBoostingRegressor", "{ max_iter = 60 }")
CLASSIFICATION_EXTRA = """
[calibration]
method = "sigmoid"
"""


def write_shape(
    root: Path,
    name: str,
    definitions: str,
    sources: dict[str, pd.DataFrame],
    labels: pd.DataFrame,
    spec: Callable[[Path], str],
) -> Path:
    """Write sources, labels, repository and spec under ``root``; returns the repository."""
    src = root / "sources"
    src.mkdir(parents=True, exist_ok=True)
    for file, frame in sources.items():
        frame.drop(columns=["generation"], errors="ignore").to_parquet(src / file, index=False)
    labels_path = root / "labels.parquet"
    labels.to_parquet(labels_path, index=False)
    repo = root / "repo"
    (repo / "models").mkdir(parents=True)
    write_yaml(repo, name, root / "feast")
    # A module name of its own per shape: Feast imports definitions by module name, and
    # the suite imports every shape's definitions into one process.
    (repo / f"defs_{name}.py").write_text(
        HEADER + Template(textwrap.dedent(definitions)).substitute(src=src)
    )
    (repo / "models" / f"{name}_model.toml").write_text(spec(labels_path))
    return repo


# ----------------------------------------------------------------- the shapes


def string_keys(root: Path, now: datetime) -> Generated:
    rng = np.random.default_rng(1)
    # Leading zeros ("007") and numeric-looking strings ("02139") must stay strings.
    ids = [f"{i:03d}" for i in range(300)] + [f"{2000 + i:05d}" for i in range(300)]
    assert "007" in ids and "02139" in ids
    keys = pd.DataFrame({"customer_id": ids})
    feats = {
        "spend": f64(),
        "ratio": f32(),
        "visits": i64(0, 50),
        "segment": pick("gold", "silver", "bronze", "none"),
    }
    main = view_rows(keys, feats, now, rng, main=True, created="created")
    labels = label_events(main, ["customer_id"], rng)
    labels["label"] = sigmoid_label(
        labels["spend"].to_numpy() + (labels["segment"] == "gold").to_numpy() - 0.3, rng
    )
    source = with_losing_twins(main, feats, "created", rng)
    definitions = """
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    customer_stats = FeatureView(
        name="customer_stats",
        entities=[customer],
        ttl=timedelta(0),  # no TTL
        schema=[
            Field(name="customer_id", dtype=String),
            Field(name="spend", dtype=Float64),
            Field(name="ratio", dtype=Float32),
            Field(name="visits", dtype=Int64),
            Field(name="segment", dtype=String),
        ],
        source=FileSource(
            path="$src/customer_stats.parquet",
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        ),
    )
    customer_service = FeatureService(name="customer_service", features=[customer_stats])
    """
    lab = labels[["customer_id", "event_timestamp", "label"]]
    repo = write_shape(
        root, "string_keys", definitions, {"customer_stats.parquet": source}, lab,
        lambda p: spec_toml("string_keys_model", "customer_service", "classification", p,
                            ["customer_id"], *CLASSIFIER, CLASSIFICATION_EXTRA),
    )  # fmt: skip
    rows, _ = traffic(main, ["customer_id"], {}, rng)
    return Generated(
        repo, "string_keys_model", "customer_service", ["customer_id"], [], "classification",
        lab, probes(main, lab, ["customer_id"], now), rows,
        {"customer_stats": online_keys(main, ["customer_id"])},
    )  # fmt: skip


def int32_regression(root: Path, now: datetime) -> Generated:
    rng = np.random.default_rng(2)
    keys = pd.DataFrame({"store_id": np.arange(10, 10 + N, dtype=np.int32)})
    feats = {"sales": f32(10, 100), "staff": i32(1, 20), "region": pick("n", "s", "e", "w")}
    main = view_rows(keys, feats, now, rng, main=True)
    labels = label_events(main, ["store_id"], rng)
    labels["label"] = (
        2.0 * labels["sales"].astype(float) + 3.0 * labels["staff"] + rng.normal(0, 1, len(labels))
    )
    definitions = """
    store = Entity(name="store", join_keys=["store_id"], value_type=ValueType.INT32)
    store_daily = FeatureView(
        name="store_daily",
        entities=[store],
        ttl=timedelta(hours=3),  # short TTL
        schema=[
            Field(name="store_id", dtype=Int32),
            Field(name="sales", dtype=Float32),
            Field(name="staff", dtype=Int32),
            Field(name="region", dtype=String),
        ],
        source=FileSource(path="$src/store_daily.parquet", timestamp_field="event_timestamp"),
    )
    store_service = FeatureService(name="store_service", features=[store_daily])
    """
    extra = """
    [split]
    train = 0.8
    calibration = 0
    holdout = 0.2

    [calibration]
    method = "none"

    [gate]
    metric = "mae"
    """
    lab = labels[["store_id", "event_timestamp", "label"]]
    repo = write_shape(
        root, "int32_regression", definitions, {"store_daily.parquet": main}, lab,
        lambda p: spec_toml("int32_regression_model", "store_service", "regression", p,
                            ["store_id"], *REGRESSOR, extra),
    )  # fmt: skip
    rows, _ = traffic(main, ["store_id"], {}, rng)
    return Generated(
        repo, "int32_regression_model", "store_service", ["store_id"], [], "regression",
        lab, probes(main, lab, ["store_id"], now), rows,
        {"store_daily": online_keys(main, ["store_id"])},
    )  # fmt: skip


def composite_subset(root: Path, now: datetime) -> Generated:
    rng = np.random.default_rng(3)
    # Many users and merchants (each in one or two pairs): what is served, their latest
    # values, then comes from the same distribution as the values training joined.
    users = np.arange(1, 401, dtype=np.int64)
    merchants = [f"M{i:03d}" for i in range(400)]
    pairs = sorted({(int(rng.choice(users)), str(rng.choice(merchants))) for _ in range(900)})
    pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), N, replace=False))]
    keys = pd.DataFrame(pairs, columns=["user_id", "merchant_code"])
    keys["user_id"] = keys["user_id"].astype(np.int64)
    pair_feats = {"pair_count": i64(0, 30), "pair_amount": f64(20, 50)}
    main = view_rows(keys, pair_feats, now, rng, main=True)
    user_feats = {"age": i32(18, 80), "tier": pick("a", "b", "c")}
    user_keys = pd.DataFrame({"user_id": sorted(keys["user_id"].unique())})
    user_rows = view_rows(user_keys, user_feats, now, rng, main=False)
    merchant_feats = {"risk": f32(1.0)}
    merchant_keys = pd.DataFrame({"merchant_code": sorted(keys["merchant_code"].unique())})
    merchant_rows = view_rows(merchant_keys, merchant_feats, now, rng, main=False)
    labels = label_events(main, ["user_id", "merchant_code"], rng)
    labels["label"] = sigmoid_label((labels["pair_amount"].to_numpy() - 50) / 20, rng)
    definitions = """
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    merchant = Entity(name="merchant", join_keys=["merchant_code"], value_type=ValueType.STRING)
    user_merchant = FeatureView(
        name="user_merchant",
        entities=[user, merchant],  # composite key
        ttl=timedelta(hours=3),
        schema=[
            Field(name="user_id", dtype=Int64),
            Field(name="merchant_code", dtype=String),
            Field(name="pair_count", dtype=Int64),
            Field(name="pair_amount", dtype=Float64),
        ],
        source=FileSource(path="$src/user_merchant.parquet", timestamp_field="event_timestamp"),
    )
    user_profile = FeatureView(  # keyed by a subset of the service's keys
        name="user_profile",
        entities=[user],
        ttl=None,
        schema=[
            Field(name="user_id", dtype=Int64),
            Field(name="age", dtype=Int32),
            Field(name="tier", dtype=String),
        ],
        source=FileSource(path="$src/user_profile.parquet", timestamp_field="event_timestamp"),
    )
    merchant_profile = FeatureView(
        name="merchant_profile",
        entities=[merchant],
        ttl=timedelta(days=7),
        schema=[Field(name="merchant_code", dtype=String), Field(name="risk", dtype=Float32)],
        source=FileSource(
            path="$src/merchant_profile.parquet", timestamp_field="event_timestamp"
        ),
    )
    pair_service = FeatureService(
        name="pair_service", features=[user_merchant, user_profile, merchant_profile]
    )
    """
    k = ["user_id", "merchant_code"]
    lab = labels[[*k, "event_timestamp", "label"]]
    repo = write_shape(
        root, "composite_subset", definitions,
        {"user_merchant.parquet": main, "user_profile.parquet": user_rows,
         "merchant_profile.parquet": merchant_rows}, lab,
        lambda p: spec_toml("composite_subset_model", "pair_service", "classification", p, k,
                            *CLASSIFIER, CLASSIFICATION_EXTRA),
    )  # fmt: skip
    rows, _ = traffic(main, k, {}, rng)
    return Generated(
        repo, "composite_subset_model", "pair_service", k, [], "classification",
        lab, probes(main, lab, k, now), rows,
        {"user_merchant": online_keys(main, k), "user_profile": online_keys(user_rows, ["user_id"]),
         "merchant_profile": online_keys(merchant_rows, ["merchant_code"])},
    )  # fmt: skip


def bytes_bool(root: Path, now: datetime) -> Generated:
    rng = np.random.default_rng(4)
    hashes = [hashlib.sha1(str(i).encode()).digest()[:8] for i in range(N)]
    keys = pd.DataFrame({"device_hash": hashes})
    feats = {
        "battery": f64(0.2, 0.5),
        "rooted": boolean(),
        "os": pick("android", "ios", "other"),
        "crashes": i32(0, 10),
    }
    main = view_rows(keys, feats, now, rng, main=True)
    labels = label_events(main, ["device_hash"], rng)
    score = labels["crashes"].to_numpy() / 3 - 1.5 + labels["rooted"].to_numpy() * 1.0
    labels["label"] = sigmoid_label(score, rng).astype(bool)  # a Bool label
    definitions = """
    device = Entity(name="device", join_keys=["device_hash"], value_type=ValueType.BYTES)
    device_stats = FeatureView(
        name="device_stats",
        entities=[device],
        ttl=timedelta(days=1),
        schema=[
            Field(name="device_hash", dtype=Bytes),
            Field(name="battery", dtype=Float64),
            Field(name="rooted", dtype=Bool),
            Field(name="os", dtype=String),
            Field(name="crashes", dtype=Int32),
        ],
        source=FileSource(path="$src/device_stats.parquet", timestamp_field="event_timestamp"),
    )
    device_service = FeatureService(name="device_service", features=[device_stats])
    """
    lab = labels[["device_hash", "event_timestamp", "label"]]
    repo = write_shape(
        root, "bytes_bool", definitions, {"device_stats.parquet": main}, lab,
        lambda p: spec_toml("bytes_bool_model", "device_service", "classification", p,
                            ["device_hash"], *CLASSIFIER, CLASSIFICATION_EXTRA),
    )  # fmt: skip
    rows, _ = traffic(main, ["device_hash"], {}, rng)
    return Generated(
        repo, "bytes_bool_model", "device_service", ["device_hash"], [], "classification",
        lab, probes(main, lab, ["device_hash"], now), rows,
        {"device_stats": online_keys(main, ["device_hash"])},
    )  # fmt: skip


def projections(root: Path, now: datetime) -> Generated:
    rng = np.random.default_rng(5)
    keys = pd.DataFrame({"account_id": np.arange(100_000, 100_000 + N, dtype=np.int64)})
    feats = {"a": f64(), "b": f64(), "c": i64(0, 5), "unused_d": f64()}
    main = view_rows(keys, feats, now, rng, main=True)
    prof_feats = {"region": pick("eu", "us", "apac"), "credit_limit": f32(100, 1000)}
    prof = view_rows(keys, prof_feats, now, rng, main=False)
    labels = label_events(main, ["account_id"], rng)
    labels["label"] = sigmoid_label(labels["a"].to_numpy() - labels["b"].to_numpy(), rng)
    definitions = """
    account = Entity(name="account", join_keys=["account_id"], value_type=ValueType.INT64)
    account_stats = FeatureView(
        name="account_stats",
        entities=[account],
        ttl=timedelta(hours=3),
        schema=[
            Field(name="account_id", dtype=Int64),
            Field(name="a", dtype=Float64),
            Field(name="b", dtype=Float64),
            Field(name="c", dtype=Int64),
            Field(name="unused_d", dtype=Float64),
        ],
        source=FileSource(path="$src/account_stats.parquet", timestamp_field="event_timestamp"),
    )
    account_profile = FeatureView(
        name="account_profile",
        entities=[account],
        ttl=timedelta(days=30),
        schema=[
            Field(name="account_id", dtype=Int64),
            Field(name="region", dtype=String),
            Field(name="credit_limit", dtype=Float32),
        ],
        source=FileSource(
            path="$src/account_profile.parquet", timestamp_field="event_timestamp"
        ),
    )
    account_service = FeatureService(
        name="account_service",
        features=[
            account_stats[["a", "b"]],  # a subset of a view
            account_profile.with_name("profile_alias"),  # a renamed view
            # (Projecting account_stats a second time under another name is legal but
            # breaks Feast itself: FeatureService.__eq__ sorts projections and compares
            # a name_alias None with a str, so its own online read fails.)
        ],
    )
    """
    lab = labels[["account_id", "event_timestamp", "label"]]
    repo = write_shape(
        root, "projections", definitions,
        {"account_stats.parquet": main, "account_profile.parquet": prof}, lab,
        lambda p: spec_toml("projections_model", "account_service", "classification", p,
                            ["account_id"], *CLASSIFIER, CLASSIFICATION_EXTRA),
    )  # fmt: skip
    rows, _ = traffic(main, ["account_id"], {}, rng)
    return Generated(
        repo, "projections_model", "account_service", ["account_id"], [], "classification",
        lab, probes(main, lab, ["account_id"], now), rows,
        {"account_stats": online_keys(main, ["account_id"]),
         "account_profile": online_keys(prof, ["account_id"])},
    )  # fmt: skip


def join_key_map(root: Path, now: datetime) -> Generated:
    """Two projections of one location view, mapped onto a route's origin and destination;
    a regression spec left at its defaults (task-aware defaults must apply)."""
    rng = np.random.default_rng(6)
    locations = np.arange(1, 601, dtype=np.int64)  # each in about two routes
    pairs = sorted({(int(a), int(b)) for a, b in rng.choice(locations, (2 * N, 2)) if a != b})[:N]
    keys = pd.DataFrame(pairs, columns=["origin_id", "dest_id"]).astype(np.int64)
    route_feats = {"distance": f64(5, 20)}
    main = view_rows(keys, route_feats, now, rng, main=True)
    loc_feats = {"temp": f64(8, 15), "zone": pick("urban", "rural"), "population": i64(1, 1000)}
    loc = view_rows(pd.DataFrame({"location_id": locations}), loc_feats, now, rng, main=False)
    labels = label_events(main, ["origin_id", "dest_id"], rng)
    labels["label"] = 1.5 * labels["distance"] + rng.normal(0, 1, len(labels))
    definitions = """
    origin = Entity(name="origin", join_keys=["origin_id"], value_type=ValueType.INT64)
    dest = Entity(name="dest", join_keys=["dest_id"], value_type=ValueType.INT64)
    location = Entity(name="location", join_keys=["location_id"], value_type=ValueType.INT64)
    route_stats = FeatureView(
        name="route_stats",
        entities=[origin, dest],
        ttl=timedelta(hours=3),
        schema=[
            Field(name="origin_id", dtype=Int64),
            Field(name="dest_id", dtype=Int64),
            Field(name="distance", dtype=Float64),
        ],
        source=FileSource(path="$src/route_stats.parquet", timestamp_field="event_timestamp"),
    )
    location_stats = FeatureView(
        name="location_stats",
        entities=[location],
        ttl=timedelta(days=7),
        schema=[
            Field(name="location_id", dtype=Int64),
            Field(name="temp", dtype=Float64),
            Field(name="zone", dtype=String),
            Field(name="population", dtype=Int64),
        ],
        source=FileSource(
            path="$src/location_stats.parquet", timestamp_field="event_timestamp"
        ),
    )
    route_service = FeatureService(
        name="route_service",
        features=[
            route_stats,
            location_stats.with_name("origin_loc")
            .with_join_key_map({"location_id": "origin_id"})[["temp", "zone"]],
            location_stats.with_name("dest_loc")
            .with_join_key_map({"location_id": "dest_id"})[["population"]],
        ],
    )
    """
    k = ["origin_id", "dest_id"]
    lab = labels[[*k, "event_timestamp", "label"]]
    repo = write_shape(
        root, "join_key_map", definitions,
        {"route_stats.parquet": main, "location_stats.parquet": loc}, lab,
        # Only what a regression needs; every other field at its default.
        lambda p: spec_toml("join_key_map_model", "route_service", "regression", p, k,
                            *REGRESSOR),
    )  # fmt: skip
    rows, _ = traffic(main, k, {}, rng)
    return Generated(
        repo, "join_key_map_model", "route_service", k, [], "regression",
        lab, probes(main, lab, k, now), rows,
        {"route_stats": online_keys(main, k), "location_stats": online_keys(loc, ["location_id"])},
    )  # fmt: skip


def field_mapping(root: Path, now: datetime) -> Generated:
    rng = np.random.default_rng(7)
    keys = pd.DataFrame({"customer_id": np.arange(1, N + 1, dtype=np.int64)})
    feats = {"risk_score": f64(), "orders": i64(0, 20)}
    main = view_rows(keys, feats, now, rng, main=True, created="ingested")
    labels = label_events(main, ["customer_id"], rng)
    labels["label"] = sigmoid_label(labels["risk_score"].to_numpy(), rng)
    source = with_losing_twins(main, feats, "ingested", rng).rename(
        columns={"customer_id": "cust", "risk_score": "raw_score", "event_timestamp": "ts"}
    )
    definitions = """
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    customer_scores = FeatureView(
        name="customer_scores",
        entities=[customer],
        ttl=timedelta(days=1),
        schema=[
            Field(name="customer_id", dtype=Int64),
            Field(name="risk_score", dtype=Float64),
            Field(name="orders", dtype=Int64),
        ],
        source=FileSource(
            path="$src/customer_scores.parquet",
            timestamp_field="ts",
            created_timestamp_column="ingested",
            field_mapping={"cust": "customer_id", "raw_score": "risk_score"},  # a key and a feature
        ),
    )
    score_service = FeatureService(name="score_service", features=[customer_scores])
    """
    lab = labels[["customer_id", "event_timestamp", "label"]]
    repo = write_shape(
        root, "field_mapping", definitions, {"customer_scores.parquet": source}, lab,
        lambda p: spec_toml("field_mapping_model", "score_service", "classification", p,
                            ["customer_id"], *CLASSIFIER, CLASSIFICATION_EXTRA),
    )  # fmt: skip
    rows, _ = traffic(main, ["customer_id"], {}, rng)
    return Generated(
        repo, "field_mapping_model", "score_service", ["customer_id"], [], "classification",
        lab, probes(main, lab, ["customer_id"], now), rows,
        {"customer_scores": online_keys(main, ["customer_id"])},
    )  # fmt: skip


def odfv_complex(root: Path, now: datetime) -> Generated:
    """An on-demand view with request data over a view that also holds Map, Json, Struct and
    list columns the model never uses (the on-demand view reads them all)."""
    rng = np.random.default_rng(8)
    keys = pd.DataFrame({"user_id": [f"u-{i:04d}" for i in range(N)]})

    def attrs(rng: np.random.Generator, n: int) -> list[dict[str, str]]:
        return [
            {"colour": c, "size": s}
            for c, s in zip(pick("red", "blue")(rng, n), pick("s", "m", "l")(rng, n), strict=True)
        ]

    def config(rng: np.random.Generator, n: int) -> list[str]:
        return [
            json.dumps({"limit": int(v), "zones": ["a", "b"][: int(v) % 3]})
            for v in rng.integers(0, 100, n)
        ]

    def meta(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        return [
            {"tier": t, "level": int(v)}
            for t, v in zip(pick("x", "y")(rng, n), rng.integers(0, 9, n), strict=True)
        ]

    def history(rng: np.random.Generator, n: int) -> list[list[float]]:
        return [list(np.round(rng.normal(0, 1, int(k)), 3)) for k in rng.integers(0, 4, n)]

    feats: dict[str, Gen] = {
        "base": f64(), "attrs": attrs, "config": config, "meta": meta, "history": history,
    }  # fmt: skip
    main = view_rows(keys, feats, now, rng, main=True)
    request = {"factor": lambda rng, n: rng.uniform(0.5, 2.0, n), "bonus": i64(0, 3)}
    labels = label_events(main, ["user_id"], rng)
    add_request(labels, request, rng)
    adjusted = labels["base"] * labels["factor"] + labels["bonus"]
    labels["label"] = sigmoid_label(adjusted.to_numpy() - 1.0, rng)
    definitions = """
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    user_profile = FeatureView(
        name="user_profile",
        entities=[user],
        ttl=None,
        schema=[
            Field(name="user_id", dtype=String),
            Field(name="base", dtype=Float64),
            Field(name="attrs", dtype=Map),
            Field(name="config", dtype=Json),
            Field(name="meta", dtype=Struct({"tier": String, "level": Int64})),
            Field(name="history", dtype=Array(Float64)),
        ],
        source=FileSource(path="$src/user_profile.parquet", timestamp_field="event_timestamp"),
    )
    adjust_request = RequestSource(
        name="adjust_request",
        schema=[Field(name="factor", dtype=Float64), Field(name="bonus", dtype=Int64)],
    )


    @on_demand_feature_view(
        sources=[user_profile, adjust_request],  # the whole view, Map/Json/Struct included
        schema=[Field(name="adjusted", dtype=Float64)],
    )
    def adjusted_base(inputs: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame()
        out["adjusted"] = inputs["base"] * inputs["factor"] + inputs["bonus"]
        return out


    adjusted_service = FeatureService(
        name="adjusted_service", features=[user_profile[["base"]], adjusted_base]
    )
    """
    lab = labels[["user_id", "event_timestamp", "factor", "bonus", "label"]]
    repo = write_shape(
        root, "odfv_complex", definitions, {"user_profile.parquet": main}, lab,
        lambda p: spec_toml("odfv_complex_model", "adjusted_service", "classification", p,
                            ["user_id"], *CLASSIFIER, CLASSIFICATION_EXTRA),
    )  # fmt: skip
    rows, _ = traffic(main, ["user_id"], request, rng)
    probe = probes(main, lab, ["user_id"], now)
    add_request(probe, request, rng)
    return Generated(
        repo, "odfv_complex_model", "adjusted_service", ["user_id"], ["factor", "bonus"],
        "classification", lab, probe, rows, {"user_profile": online_keys(main, ["user_id"])},
    )  # fmt: skip


def multiclass(root: Path, now: datetime) -> Generated:
    rng = np.random.default_rng(9)
    keys = pd.DataFrame({"item_id": np.arange(1, N + 1, dtype=np.int64)})
    feats = {"weight": f64(), "colour": pick("r", "g", "b")}
    main = view_rows(keys, feats, now, rng, main=True)
    labels = label_events(main, ["item_id"], rng)
    labels["label"] = np.digitize(labels["weight"] + rng.normal(0, 0.2, len(labels)), [-0.5, 0.5])
    definitions = """
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
    item_stats = FeatureView(
        name="item_stats",
        entities=[item],
        ttl=timedelta(days=1),
        schema=[
            Field(name="item_id", dtype=Int64),
            Field(name="weight", dtype=Float64),
            Field(name="colour", dtype=String),
        ],
        source=FileSource(path="$src/item_stats.parquet", timestamp_field="event_timestamp"),
    )
    item_service = FeatureService(name="item_service", features=[item_stats])
    """
    lab = labels[["item_id", "event_timestamp", "label"]]
    repo = write_shape(
        root, "multiclass", definitions, {"item_stats.parquet": main}, lab,
        lambda p: spec_toml("multiclass_model", "item_service", "classification", p,
                            ["item_id"], *CLASSIFIER, CLASSIFICATION_EXTRA),
    )  # fmt: skip
    rows, _ = traffic(main, ["item_id"], {}, rng)
    return Generated(
        repo, "multiclass_model", "item_service", ["item_id"], [], "classification",
        lab, probes(main, lab, ["item_id"], now), rows,
        {"item_stats": online_keys(main, ["item_id"])}, multiclass=True,
    )  # fmt: skip


def ttl_mix(root: Path, now: datetime) -> Generated:
    """A short-TTL view with created-timestamp ties next to a view without TTL; a linear
    model (scaled features)."""
    rng = np.random.default_rng(10)
    keys = pd.DataFrame({"driver_id": np.arange(5000, 5000 + N, dtype=np.int64)})
    fresh_feats = {"speed": f32(10, 50), "trips": i64(0, 12), "status": pick("on", "off")}
    fresh = view_rows(keys, fresh_feats, now, rng, main=True, created="created_at")
    static_feats = {"rating": f64(0.5, 4.0), "years": i32(0, 30)}
    static = view_rows(keys, static_feats, now, rng, main=False)
    labels = label_events(fresh, ["driver_id"], rng)
    labels["label"] = sigmoid_label((labels["speed"].to_numpy() - 50) / 10, rng)
    definitions = """
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    driver_fresh = FeatureView(
        name="driver_fresh",
        entities=[driver],
        ttl=timedelta(hours=3),
        schema=[
            Field(name="driver_id", dtype=Int64),
            Field(name="speed", dtype=Float32),
            Field(name="trips", dtype=Int64),
            Field(name="status", dtype=String),
        ],
        source=FileSource(
            path="$src/driver_fresh.parquet",
            timestamp_field="event_timestamp",
            created_timestamp_column="created_at",
        ),
    )
    driver_static = FeatureView(
        name="driver_static",
        entities=[driver],
        ttl=timedelta(0),
        schema=[
            Field(name="driver_id", dtype=Int64),
            Field(name="rating", dtype=Float64),
            Field(name="years", dtype=Int32),
        ],
        source=FileSource(path="$src/driver_static.parquet", timestamp_field="event_timestamp"),
    )
    driver_service = FeatureService(name="driver_service", features=[driver_fresh, driver_static])
    """
    lab = labels[["driver_id", "event_timestamp", "label"]]
    repo = write_shape(
        root, "ttl_mix", definitions,
        {"driver_fresh.parquet": with_losing_twins(fresh, fresh_feats, "created_at", rng),
         "driver_static.parquet": static}, lab,
        lambda p: spec_toml("ttl_mix_model", "driver_service", "classification", p,
                            ["driver_id"], "sklearn.linear_model.LogisticRegression",
                            "{ max_iter = 500 }", CLASSIFICATION_EXTRA),
    )  # fmt: skip
    rows, _ = traffic(fresh, ["driver_id"], {}, rng)
    return Generated(
        repo, "ttl_mix_model", "driver_service", ["driver_id"], [], "classification",
        lab, probes(fresh, lab, ["driver_id"], now), rows,
        {"driver_fresh": online_keys(fresh, ["driver_id"]),
         "driver_static": online_keys(static, ["driver_id"])},
    )  # fmt: skip


def feast_init(root: Path, now: datetime) -> Generated:
    """The repository ``feast init`` generates, used as it is: its data (timestamps up to
    the hour before now), its on-demand view ``transformed_conv_rate`` over a view with
    Map, Json and Struct columns, and its feature service ``driver_activity_v1``. Only a
    labels file and a model spec are added."""
    import contextlib
    import io
    import warnings

    from feast.repo_operations import init_repo

    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        init_repo("driver_demo", "local", repo_path=str(root / "driver_demo"))
    repo = root / "driver_demo" / "feature_repo"
    rng = np.random.default_rng(11)
    stats = pd.read_parquet(repo / "data" / "driver_stats.parquet")
    stats = stats[stats["event_timestamp"] >= pd.Timestamp(now - timedelta(days=20))]
    stats = stats.drop_duplicates(["driver_id", "event_timestamp"])
    latest = stats.groupby("driver_id")["event_timestamp"].transform("max")
    history = stats[stats["event_timestamp"] < latest].reset_index(drop=True)
    request = {"val_to_add": i64(0, 10), "val_to_add_2": i64(0, 10)}
    labels = pd.DataFrame(
        {
            "driver_id": history["driver_id"].astype(np.int64),
            # Half an hour after an hourly row: that row is the one joined (TTL is a day).
            "event_timestamp": history["event_timestamp"] + pd.Timedelta(minutes=30),
            "label": (history["conv_rate"] > 0.5).astype(np.int64),
        }
    )
    add_request(labels, request, rng)
    labels_path = root / "labels.parquet"
    labels.to_parquet(labels_path, index=False)
    spec = spec_toml(
        "driver_model", "driver_activity_v1", "classification", labels_path, ["driver_id"],
        *CLASSIFIER, CLASSIFICATION_EXTRA,
    )  # fmt: skip
    (repo / "models").mkdir()
    (repo / "models" / "driver_model.toml").write_text(spec)
    drivers = sorted(int(d) for d in stats["driver_id"].unique())
    rows = []
    for _ in range(120):  # 600 requests over the five drivers
        for d in drivers:
            rows.append(
                {
                    "entity_keys": {"driver_id": d},
                    "request_data": {k: int(g(rng, 1)[0]) for k, g in request.items()},
                }
            )
    # Only probes Feast can be compared on: on this repository Feast 0.67's
    # get_historical_features drops entity rows that find no feature row (20 of 20 rows
    # 40 days back) and rows repeating another's key and time, so neither is probed here;
    # the generated shapes cover both.
    stale = labels.head(20).assign(
        event_timestamp=labels.head(20)["event_timestamp"] + pd.Timedelta(days=2, minutes=15)
    )
    probe = stale.drop(columns=["label"])
    return Generated(
        repo, "driver_model", "driver_activity_v1", ["driver_id"], list(request),
        "classification", labels, probe, rows,
        {"driver_hourly_stats": [{"driver_id": d} for d in drivers]},
    )  # fmt: skip


GENERATED = [
    Shape("string_keys", "String key with leading zeros ('007') and numeric-looking ('02139') "
          "values; no TTL; created-timestamp ties; Float32/Float64/Int64/String", string_keys),
    Shape("int32_regression", "Int32 key and Int32 feature; short TTL; regression with explicit "
          "settings", int32_regression),
    Shape("composite_subset", "composite key (Int64 user_id + String merchant_code), views keyed "
          "by a subset of the service's keys (no TTL, 7 days)", composite_subset),
    Shape("bytes_bool", "Bytes key; Bool feature; Bool label", bytes_bool),
    Shape("projections", "view[['a','b']] (c, unused_d left out) and another view "
          ".with_name('profile_alias')", projections),
    Shape("join_key_map", "one view twice through .with_name().with_join_key_map() onto a "
          "composite key; regression spec at its defaults", join_key_map),
    Shape("field_mapping", "field_mapping on the join key and a feature, custom timestamp and "
          "created columns", field_mapping),
    Shape("odfv_complex", "on-demand view with request data over a view with Map, Json, Struct "
          "and list columns", odfv_complex),
    Shape("multiclass", "a three-class label (trained end to end, or refused in one line "
          "before any join)", multiclass),
    Shape("ttl_mix", "short-TTL view with created ties next to a no-TTL view; a linear model",
          ttl_mix),
]  # fmt: skip
FEAST_INIT = Shape("feast_init", "the repository `feast init` generates, as it is", feast_init)
SHAPES = [*GENERATED, FEAST_INIT]
