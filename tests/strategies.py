"""Reusable raw datasets for the feature pipeline's tests, and Hypothesis strategies for them.

Times are integers: microseconds since the Unix epoch, UTC. That keeps reference
implementations exact (no float or time-zone arithmetic) and matches the
precision of the Parquet files (``pa.timestamp("us", tz="UTC")``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from framework.sample.data import (
    LABELS_SCHEMA,
    MERCHANTS_SCHEMA,
    TRANSACTIONS_SCHEMA,
    USERS_SCHEMA,
)

US = 1
SECOND = 1_000_000 * US
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

#: Midnight UTC, 1 January 2026: day 0 of every dataset built here.
EPOCH_DAY0 = datetime(2026, 1, 1, tzinfo=UTC)


def to_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch of a tz-aware datetime (exact, no float)."""
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * SECOND + delta.microseconds


BASE = to_us(EPOCH_DAY0)


def day(k: int) -> int:
    """Midnight UTC of day ``k`` (day 0 is 1 January 2026), in microseconds."""
    return BASE + k * DAY


def floor_day(ts: int) -> int:
    """Midnight UTC at or before ``ts``."""
    return ts - ts % DAY


@dataclass(frozen=True)
class User:
    user_id: int
    signup_ts: int
    home_country: str = "US"
    card_type: str = "debit"
    credit_limit: float = 1000.0


@dataclass(frozen=True)
class Merchant:
    merchant_id: int
    created_ts: int
    category: str = "grocery"
    country: str = "US"


@dataclass(frozen=True)
class Txn:
    """A transaction and its label (one row in transactions and one in labels)."""

    transaction_id: int
    user_id: int
    merchant_id: int
    ts: int
    amount: float = 10.0
    is_fraud: int = 0
    #: When the label became known; defaults to 45 days after the transaction.
    label_ts: int | None = None
    channel: str = "pos"

    @property
    def label_at(self) -> int:
        return self.ts + 45 * DAY if self.label_ts is None else self.label_ts


@dataclass(frozen=True)
class RawDataset:
    users: tuple[User, ...]
    merchants: tuple[Merchant, ...]
    transactions: tuple[Txn, ...] = field(default=())

    def write(self, raw_dir: Path) -> None:
        """Write ``users``, ``merchants``, ``transactions`` and ``labels`` Parquet files."""
        raw_dir.mkdir(parents=True, exist_ok=True)
        ts = pa.timestamp("us", tz="UTC")
        users = pa.table(
            {
                "user_id": pa.array([u.user_id for u in self.users], pa.int64()),
                "signup_timestamp": pa.array([u.signup_ts for u in self.users], ts),
                "home_country": pa.array([u.home_country for u in self.users], pa.string()),
                "card_type": pa.array([u.card_type for u in self.users], pa.string()),
                "credit_limit": pa.array([u.credit_limit for u in self.users], pa.float64()),
            },
            schema=USERS_SCHEMA,
        )
        merchants = pa.table(
            {
                "merchant_id": pa.array([m.merchant_id for m in self.merchants], pa.int64()),
                "created_timestamp": pa.array([m.created_ts for m in self.merchants], ts),
                "category": pa.array([m.category for m in self.merchants], pa.string()),
                "country": pa.array([m.country for m in self.merchants], pa.string()),
            },
            schema=MERCHANTS_SCHEMA,
        )
        txns = self.transactions
        common = {
            "transaction_id": pa.array([t.transaction_id for t in txns], pa.int64()),
            "user_id": pa.array([t.user_id for t in txns], pa.int64()),
            "merchant_id": pa.array([t.merchant_id for t in txns], pa.int64()),
            "transaction_timestamp": pa.array([t.ts for t in txns], ts),
        }
        transactions = pa.table(
            {
                **common,
                "amount": pa.array([t.amount for t in txns], pa.float64()),
                "channel": pa.array([t.channel for t in txns], pa.string()),
            },
            schema=TRANSACTIONS_SCHEMA,
        )
        labels = pa.table(
            {
                **common,
                "is_fraud": pa.array([t.is_fraud for t in txns], pa.int8()),
                "label_timestamp": pa.array([t.label_at for t in txns], ts),
            },
            schema=LABELS_SCHEMA,
        )
        for name, table in (
            ("users", users),
            ("merchants", merchants),
            ("transactions", transactions),
            ("labels", labels),
        ):
            pq.write_table(table, raw_dir / f"{name}.parquet")


# ------------------------------------------------------------------ strategies

#: Distances that sit exactly on (or 1 µs either side of) a window boundary:
#: the 1 h, 24 h and 7 d user windows and the 30 d merchant window.
BOUNDARY_OFFSETS = tuple(
    w + eps for w in (0, HOUR, 24 * HOUR, 7 * DAY, 30 * DAY) for eps in (-US, 0, US) if w + eps >= 0
)
GRID_STEP = 30 * MINUTE
SPAN_DAYS = 40


def _grid_time() -> st.SearchStrategy[int]:
    """A time on a coarse 30-minute grid within ``SPAN_DAYS`` days of day 0."""
    return st.integers(0, SPAN_DAYS * DAY // GRID_STEP).map(lambda k: BASE + k * GRID_STEP)


def _near_midnight() -> st.SearchStrategy[int]:
    """Midnight of some day, or 1 µs either side (the merchant snapshot boundary)."""
    return st.builds(
        lambda k, eps: day(k) + eps, st.integers(0, SPAN_DAYS), st.sampled_from((-US, 0, US))
    )


@st.composite
def _transaction_times(draw: st.DrawFn, n: int) -> list[int]:
    """``n`` times: grid points, midnights, and exact boundary distances from earlier ones."""
    times: list[int] = []
    for _ in range(n):
        kind = draw(st.sampled_from(("grid", "midnight", "relative")) if times else st.just("grid"))
        if kind == "grid":
            times.append(draw(_grid_time()))
        elif kind == "midnight":
            times.append(draw(_near_midnight()))
        else:
            anchor = draw(st.sampled_from(times))
            offset = draw(st.sampled_from(BOUNDARY_OFFSETS))
            sign = draw(st.sampled_from((1, -1)))
            times.append(anchor + sign * offset)
    return times


@st.composite
def _label_time(draw: st.DrawFn, ts: int) -> int:
    """When a label arrives: 0-40 days after ``ts``, often exactly at (or 1 µs off) a midnight."""
    if draw(st.booleans()):
        delay = draw(st.integers(0, 40)) * DAY + draw(st.integers(0, 47)) * GRID_STEP
        return ts + min(delay, 40 * DAY)
    # The k-th midnight after the transaction's day, or 1 µs either side:
    # never before the transaction itself.
    k = draw(st.integers(1, 40))
    eps = draw(st.sampled_from((-US, 0, US)))
    return max(ts, floor_day(ts) + k * DAY + eps)


@st.composite
def raw_datasets(
    draw: st.DrawFn,
    *,
    max_users: int = 4,
    max_merchants: int = 3,
    max_transactions: int = 40,
) -> RawDataset:
    """Small random raw datasets dense in equal timestamps and exact window boundaries.

    1-``max_users`` users, 1-``max_merchants`` merchants (opened long before
    the data or somewhere within it, possibly exactly at midnight) and
    1-``max_transactions`` transactions on a coarse grid over about 40 days,
    each with a random fraud flag and a label arriving 0-40 days later.
    """
    n_users = draw(st.integers(1, max_users))
    n_merchants = draw(st.integers(1, max_merchants))
    n_txns = draw(st.integers(1, max_transactions))
    users = tuple(
        User(
            user_id=i,
            signup_ts=BASE - draw(st.integers(1, 1000)) * DAY,
            home_country=draw(st.sampled_from(("US", "GB", "DE"))),
            card_type=draw(st.sampled_from(("debit", "credit", "prepaid"))),
            credit_limit=draw(st.sampled_from((500.0, 1000.0, 2500.0))),
        )
        for i in range(1, n_users + 1)
    )
    merchants = tuple(
        Merchant(
            merchant_id=i,
            created_ts=draw(
                st.one_of(
                    st.just(BASE - 60 * DAY),
                    st.integers(1, 500).map(lambda d: BASE - d * DAY),
                    _grid_time(),
                    _near_midnight(),
                )
            ),
            category=draw(st.sampled_from(("grocery", "travel"))),
        )
        for i in range(1, n_merchants + 1)
    )
    times = draw(_transaction_times(n_txns))
    txns = []
    for i, ts in enumerate(times, start=1):
        is_fraud = draw(st.integers(0, 1))
        txns.append(
            Txn(
                transaction_id=i,
                user_id=draw(st.integers(1, n_users)),
                merchant_id=draw(st.integers(1, n_merchants)),
                ts=ts,
                amount=draw(st.integers(1, 20_000)) / 100,
                is_fraud=is_fraud,
                label_ts=draw(_label_time(ts)),
            )
        )
    return RawDataset(users=users, merchants=merchants, transactions=tuple(txns))


# ------------------------------------- generated Feast repositories (training sets)
#
# Small random Feast repositories, described as plain data, for the point-in-time
# join's parity and property tests (tests/features/test_training_set_parity.py writes the
# Parquet sources and applies the definitions). Times are microseconds since the
# Unix epoch, UTC, like everything above.

#: Join keys of the two generated entities ("driver" and "rider", both int64).
TS_ENTITIES = {"driver_id": "driver", "rider_id": "rider"}
#: Key combinations a generated view is keyed by: one entity or a composite key.
TS_VIEW_KEYS = (("driver_id",), ("rider_id",), ("driver_id", "rider_id"), ("rider_id", "driver_id"))
#: TTLs in microseconds; with many rows on an hourly grid, exact boundaries are common.
TS_TTLS = (SECOND, MINUTE, HOUR, 2 * HOUR, DAY, 10 * DAY)
#: Far beyond every generated feature row: 50 years after day 0.
TS_FAR_FUTURE = BASE + 50 * 365 * DAY


@dataclass(frozen=True)
class FeatureRow:
    """One row of a generated view's source."""

    keys: tuple[int, ...]  # in the order of the view's join keys
    ts: int
    created: int | None
    row_id: int  # unique over all sources of a case
    count: int | None
    score: float | None
    tag: str | None

    def values(self) -> tuple[int, int | None, float | None, str | None]:
        """The feature values, in the order of :attr:`ViewSpec.features`."""
        return (self.row_id, self.count, self.score, self.tag)


@dataclass(frozen=True)
class ViewSpec:
    """A feature view over its own Parquet source with features row_id, count, score, tag."""

    name: str
    keys: tuple[str, ...]
    #: Microseconds; None: no TTL given; 0: ``timedelta(0)``.
    ttl: int | None
    timestamp_field: str
    created_field: str | None
    #: Prefix of the feature names: "" when full feature names keep views apart.
    prefix: str
    rows: tuple[FeatureRow, ...]

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(f"{self.prefix}{f}" for f in ("row_id", "count", "score", "tag"))

    @property
    def window(self) -> int | None:
        """How far back a feature row may lie, or None for no limit (TTL unset or 0)."""
        return self.ttl or None

    def table(self) -> pa.Table:
        """The source as Arrow, in the generated (shuffled) row order."""
        ts = pa.timestamp("us", tz="UTC")
        rows = self.rows
        columns: dict[str, pa.Array] = {
            key: pa.array([r.keys[i] for r in rows], pa.int64()) for i, key in enumerate(self.keys)
        }
        columns[self.timestamp_field] = pa.array([r.ts for r in rows], ts)
        if self.created_field:
            columns[self.created_field] = pa.array([r.created for r in rows], ts)
        kinds = (pa.int64(), pa.int64(), pa.float64(), pa.string())
        for i, (name, kind) in enumerate(zip(self.features, kinds, strict=True)):
            columns[name] = pa.array([r.values()[i] for r in rows], kind)
        return pa.table(columns)


@dataclass(frozen=True)
class EntityRow:
    driver_id: int | None
    rider_id: int | None
    ts: int

    def key(self, columns: tuple[str, ...]) -> tuple[int | None, ...]:
        return tuple(getattr(self, c) for c in columns)


@dataclass(frozen=True)
class TrainingCase:
    """A generated repository, an entity frame and the features to join."""

    views: tuple[ViewSpec, ...]
    entities: tuple[EntityRow, ...]
    refs: tuple[str, ...]
    full_feature_names: bool
    #: Entity frame columns, in frame order (join keys, event_timestamp, row_idx).
    columns: tuple[str, ...]
    #: Time zone of the entity timestamps; None: naive (which means UTC).
    tz: str | None
    #: Hand the entity frame to parity as a pyarrow Table instead of pandas.
    as_arrow: bool

    def view(self, name: str) -> ViewSpec:
        return next(v for v in self.views if v.name == name)

    def output_name(self, view: str, feature: str) -> str:
        return f"{view}__{feature}" if self.full_feature_names else feature

    def row_id_refs(self) -> tuple[str, ...]:
        """``refs`` plus every view's row_id (for finding the joined row)."""
        extra = [f"{v.name}:{v.features[0]}" for v in self.views]
        return self.refs + tuple(r for r in extra if r not in self.refs)

    def entity_frame(self) -> pd.DataFrame:
        """The entity frame as pandas: int64 keys (Int64 when null), datetime64 timestamps."""
        data: dict[str, Any] = {}
        for col in self.columns:
            if col == "event_timestamp":
                ts = pd.to_datetime([e.ts for e in self.entities], unit="us", utc=True)
                data[col] = ts.tz_localize(None) if self.tz is None else ts.tz_convert(self.tz)
            elif col == "row_idx":
                data[col] = pd.array(range(len(self.entities)), "int64")
            else:
                values = [getattr(e, col) for e in self.entities]
                data[col] = pd.array(values, "Int64" if None in values else "int64")
        return pd.DataFrame(data)


@st.composite
def _feature_time(draw: st.DrawFn, earlier: list[int], ttl: int | None) -> int:
    """An hourly grid time, or one 1 µs / 1 s / one TTL away from an earlier row's time."""
    kinds = ["grid"]
    if earlier:
        kinds += ["near", "ttl"] if ttl else ["near"]
    kind = draw(st.sampled_from(kinds))
    if kind == "grid":
        return BASE + draw(st.integers(0, 48)) * HOUR
    anchor = draw(st.sampled_from(earlier))
    if kind == "near":
        return anchor + draw(st.sampled_from((-SECOND, -US, US, SECOND)))
    assert ttl
    return anchor + draw(st.sampled_from((-1, 1))) * ttl


@st.composite
def view_specs(
    draw: st.DrawFn, name: str, first_row_id: int, full_feature_names: bool, max_rows: int = 10
) -> ViewSpec:
    """A view with a random TTL, key and source rows, dense in ties and exact boundaries.

    With a created-timestamp column, rows repeat (key, event time) with other
    created times (at most one of them null); without, (key, event time) is
    unique: anything else is a tie even Feast breaks arbitrarily.
    """
    keys = draw(st.sampled_from(TS_VIEW_KEYS))
    ttl = draw(
        st.one_of(
            st.none(),
            st.just(0),
            st.sampled_from(TS_TTLS),
            st.integers(1, 10 * 86_400).map(lambda s: s * SECOND),
        )
    )
    created_field = draw(st.sampled_from((None, "created", "created_ts")))
    timestamp_field = draw(st.sampled_from(("ts", "event_timestamp", "feature_time")))
    rows: list[FeatureRow] = []
    seen: set[tuple[Any, ...]] = set()
    for _ in range(draw(st.integers(0, max_rows))):
        if rows and created_field and draw(st.integers(0, 2)) == 0:
            tied = draw(st.sampled_from(rows))  # same key and event time, another created time
            key, ts = tied.keys, tied.ts
        else:
            key = tuple(draw(st.integers(1, 3)) for _ in keys)
            ts = draw(_feature_time([r.ts for r in rows], ttl))
        created = None
        if created_field and draw(st.integers(0, 5)):
            created = ts + draw(st.integers(-2, 4)) * MINUTE
        ident = (key, ts, created)
        if ident in seen or (not created_field and (key, ts, None) in seen):
            continue
        seen.add(ident)
        rows.append(
            FeatureRow(
                keys=key,
                ts=ts,
                created=created,
                row_id=first_row_id + len(rows),
                count=draw(st.one_of(st.none(), st.integers(-5, 1_000))),
                score=draw(
                    st.one_of(
                        st.none(),
                        st.just(float("nan")),
                        st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
                    )
                ),
                tag=draw(st.one_of(st.none(), st.sampled_from(("", "a", "b", "ü ß")))),
            )
        )
    order = draw(st.permutations(range(len(rows))))
    return ViewSpec(
        name=name,
        keys=keys,
        ttl=ttl,
        timestamp_field=timestamp_field,
        created_field=created_field,
        prefix="" if full_feature_names else f"{name}_",
        rows=tuple(rows[i] for i in order),
    )


@st.composite
def _entity_rows(draw: st.DrawFn, views: tuple[ViewSpec, ...], max_rows: int) -> list[EntityRow]:
    """Entity rows at, just before, and exactly on the TTL edge of feature rows; before
    every feature row, far in the future, on the grid; some keys null; some duplicated."""
    anchors = [(v, r) for v in views for r in v.rows]
    first = min((r.ts for _, r in anchors), default=BASE)
    out: list[EntityRow] = []
    for _ in range(draw(st.integers(1, max_rows))):
        kinds = ["before_all", "future", "grid"]
        if anchors:
            kinds += ["exact", "exact", "just_before", "ttl_edge", "ttl_edge"]
        kind = draw(st.sampled_from(kinds))
        key = {c: draw(st.integers(1, 4)) for c in TS_ENTITIES}
        if kind == "before_all":
            ts = first - draw(st.sampled_from((US, SECOND, DAY, 400 * DAY)))
        elif kind == "future":
            ts = TS_FAR_FUTURE
        elif kind == "grid":
            ts = BASE + draw(st.integers(-2, 60)) * HOUR
        else:
            view, row = draw(st.sampled_from(anchors))
            key.update(zip(view.keys, row.keys, strict=True))
            if kind == "exact":
                ts = row.ts
            elif kind == "just_before":
                ts = row.ts - US
            else:
                ttl = view.ttl or draw(st.sampled_from(TS_TTLS))
                ts = row.ts + ttl + draw(st.sampled_from((-US, 0, US)))
        for c in TS_ENTITIES:
            if draw(st.integers(0, 19)) == 0:
                key[c] = None
        out.append(EntityRow(driver_id=key["driver_id"], rider_id=key["rider_id"], ts=ts))
    duplicates = draw(st.lists(st.sampled_from(out), max_size=4))
    rows = out + duplicates
    order = draw(st.permutations(range(len(rows))))
    return [rows[i] for i in order]


@st.composite
def training_cases(
    draw: st.DrawFn, *, max_views: int = 3, max_rows: int = 10, max_entities: int = 12
) -> TrainingCase:
    """1-``max_views`` views (single or composite keys, random TTLs), an entity frame of
    1-``max_entities`` rows (plus duplicates) and a random selection of their features."""
    full_feature_names = draw(st.booleans())
    views = tuple(
        draw(view_specs(f"fv{i}", 1_000 * (i + 1), full_feature_names, max_rows))
        for i in range(draw(st.integers(1, max_views)))
    )
    entities = draw(_entity_rows(views, max_entities))
    refs: list[str] = []
    for v in views:
        chosen = draw(st.lists(st.sampled_from(v.features), min_size=1, unique=True))
        refs += [f"{v.name}:{f}" for f in chosen]
    refs = draw(st.permutations(refs))
    used = {k for v in views for k in v.keys}
    keys = [k for k in TS_ENTITIES if k in used or draw(st.booleans())]
    columns = draw(st.permutations([*keys, "event_timestamp", "row_idx"]))
    return TrainingCase(
        views=views,
        entities=tuple(entities),
        refs=tuple(refs),
        full_feature_names=full_feature_names,
        columns=tuple(columns),
        tz=draw(st.sampled_from((None, "UTC", "Asia/Kolkata"))),
        as_arrow=draw(st.booleans()),
    )


# ------------------------------------------------- serving requests (protobuf)
#
# Requests for parity.v1.PredictionService and the Open Inference Protocol, from
# valid to nonsense: what a careful, careless or hostile client sends. The caller
# names what a valid request holds (model names, a strategy of valid values per
# entity key, request field or input tensor); each request first draws how many
# of its parts are wrong (`_wrongness`: none, about one in ten, or about half), so
# the server's happy path is exercised as much as its refusals.

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Every V2 datatype, with the numpy type of its raw little-endian encoding.
V2_RAW_DTYPES = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP32": "<f4",
    "FP64": "<f8", "BYTES": None,
}  # fmt: skip
#: The typed ``contents`` field of each V2 datatype.
V2_CONTENTS = {
    "BOOL": "bool_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "INT8": "int_contents",
    "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip

#: A strategy of valid values for one field (a ``parity.v1.Value``, or a tensor element).
Valid = st.SearchStrategy[Any]


def _wrongness() -> st.SearchStrategy[int]:
    """In tenths: how often each part of a request is wrong (0, 1 or 5)."""
    return st.sampled_from((0, 1, 5))


def _pick(draw: st.DrawFn, wrong: int, valid: Valid, other: Valid) -> Any:
    """``other`` in about ``wrong`` tenths of the draws, else ``valid``."""
    return draw(other) if wrong and draw(st.integers(0, 9)) < wrong else draw(valid)


def texts(huge: bool = True) -> st.SearchStrategy[str]:
    """Short text of any characters, or (``huge``) 20 000 repetitions of one awkward one:
    longer than a gRPC header may be, so an error message echoing it must be clipped."""
    short = st.text(max_size=30)
    if not huge:
        return short
    return st.one_of(
        short, st.sampled_from(["x", "é", "\x00", "😀", "%", "\n"]).map(lambda c: c * 20_000)
    )


def ints(low: int = INT64_MIN, high: int = INT64_MAX) -> st.SearchStrategy[int]:
    """Integers in [low, high], often small (ids that exist), often at the edges."""
    return st.one_of(
        st.integers(max(low, 0), min(high, 3_000)),
        st.integers(low, high),
        st.sampled_from([low, high]),
    )


def doubles() -> st.SearchStrategy[float]:
    return st.one_of(
        st.floats(-1e4, 1e4),
        st.floats(),
        st.sampled_from([float("nan"), float("inf"), -0.0, 1e308]),
    )


def values(huge: bool = True) -> st.SearchStrategy[Any]:
    """``parity.v1.Value`` of every kind, and unset."""
    from serving.stubs.parity.v1 import prediction_pb2 as pb

    return st.one_of(
        st.just(pb.Value()),
        ints().map(lambda v: pb.Value(int64_value=v)),
        doubles().map(lambda v: pb.Value(double_value=v)),
        texts(huge).map(lambda v: pb.Value(string_value=v)),
        st.booleans().map(lambda v: pb.Value(bool_value=v)),
        st.binary(max_size=40).map(lambda v: pb.Value(bytes_value=v)),
    )


def model_names(known: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(st.just(""), texts(), st.sampled_from(["../x", "a/b", *known]))


def versions() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["1", "0", "01", "2", "-1", "1 ", "٣", "1e3", "9" * 40]),
        st.from_regex(r"[0-9]{1,12}", fullmatch=True),
        texts(),
    )


def aliases() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["champion", "challenger", "CHAMPION", ""]), texts())


def request_ids() -> st.SearchStrategy[str]:
    return st.one_of(st.just(""), texts())


@st.composite
def _fields(
    draw: st.DrawFn, wrong: int, valid: dict[str, Valid], others: list[str], huge: bool
) -> dict[str, Any]:
    """A map of Values: each expected field valid, of any value or missing; maybe
    strangers too (fields of the other map, or made up)."""
    out = {}
    anything = st.one_of(values(huge), st.none())
    for name, strategy in valid.items():
        value = _pick(draw, wrong, strategy, anything)
        if value is not None:
            out[name] = value
    if _pick(draw, wrong, st.just(False), st.booleans()):
        names = st.one_of(st.sampled_from(others), texts(huge)) if others else texts(huge)
        out.update(draw(st.dictionaries(names, values(huge), min_size=1, max_size=2)))
    return out


@st.composite
def rows(
    draw: st.DrawFn, wrong: int, keys: dict[str, Valid], request: dict[str, Valid], huge: bool
) -> Any:
    """A ``parity.v1.Row``; ``keys``/``request``: valid Values per field."""
    from serving.stubs.parity.v1 import prediction_pb2 as pb

    row = pb.Row()
    for name, value in draw(_fields(wrong, keys, list(request), huge)).items():
        row.entity_keys[name].CopyFrom(value)
    for name, value in draw(_fields(wrong, request, list(keys), huge)).items():
        row.request_data[name].CopyFrom(value)
    return row


@st.composite
def _model_ref(draw: st.DrawFn, wrong: int, message: Any) -> None:
    """Set ``model_version`` or ``model_alias`` of a parity.v1 request, or neither."""
    ref = _pick(draw, wrong, st.sampled_from(("none", "valid")), st.sampled_from(("v", "a")))
    if ref == "valid":
        if draw(st.booleans()):
            message.model_version = "1"
        else:
            message.model_alias = "champion"
    elif ref == "v":
        message.model_version = draw(versions())
    elif ref == "a":
        message.model_alias = draw(aliases())


@st.composite
def predict_requests(
    draw: st.DrawFn,
    models: list[str],
    keys: dict[str, Valid],
    request: dict[str, Valid],
    max_rows: int,
) -> Any:
    """``PredictRequest``: 1-3 rows; wrong, 0 rows, or one small row repeated up to and
    past ``max_rows``."""
    from serving.stubs.parity.v1 import prediction_pb2 as pb

    wrong = draw(_wrongness())
    message = pb.PredictRequest(
        model_name=_pick(draw, wrong, st.sampled_from(models), model_names(models)),
        request_id=_pick(draw, wrong, st.sampled_from(["", "r-1"]), request_ids()),
        return_features=draw(st.booleans()),
        explain_top_k=draw(ints(0, 2**32 - 1)),
    )
    draw(_model_ref(wrong, message))
    count = _pick(
        draw, wrong, st.integers(1, 3),
        st.sampled_from([0, 1, 2, max_rows, max_rows + 1, 5 * max_rows]),
    )  # fmt: skip
    if count <= 3:
        message.rows.extend(draw(rows(wrong, keys, request, True)) for _ in range(count))
    else:
        message.rows.extend([draw(rows(wrong, keys, request, False))] * count)
    message.explain = count <= 3 and draw(st.booleans())
    return message


@st.composite
def model_info_requests(draw: st.DrawFn, models: list[str]) -> Any:
    from serving.stubs.parity.v1 import prediction_pb2 as pb

    wrong = draw(_wrongness())
    message = pb.GetModelInfoRequest(
        model_name=_pick(draw, wrong, st.sampled_from(models), model_names(models))
    )
    draw(_model_ref(wrong, message))
    return message


@st.composite
def report_outcome_requests(draw: st.DrawFn, keys: dict[str, Valid]) -> Any:
    """``ReportOutcomeRequest``: ids, keys, times out of range, labels NaN, no result..."""
    from google.protobuf.timestamp_pb2 import Timestamp

    from serving.stubs.parity.v1 import prediction_pb2 as pb

    wrong = draw(_wrongness())
    message = pb.ReportOutcomeRequest(
        request_id=_pick(draw, wrong, st.sampled_from(["r-1", "r-2"]), request_ids())
    )
    for name, value in draw(_fields(wrong, keys, [], True)).items():
        message.entity_keys[name].CopyFrom(value)
    if draw(st.booleans()):
        seconds = _pick(draw, wrong, st.integers(0, 4_000_000_000), ints())
        nanos = _pick(draw, wrong, st.integers(0, 999_999_999), ints(-(2**31), 2**31 - 1))
        message.event_time.CopyFrom(Timestamp(seconds=seconds, nanos=nanos))
    result = _pick(draw, wrong, st.sampled_from(("label", "outcome")), st.just("none"))
    if result == "label":
        message.label = _pick(draw, wrong, st.sampled_from([0.0, 1.0]), doubles())
    elif result == "outcome":
        message.outcome.CopyFrom(draw(values()))
    if draw(st.booleans()):
        message.row_index = _pick(draw, wrong, st.integers(0, 3), ints(0, 2**32 - 1))
    return message


@st.composite
def model_ready_requests(draw: st.DrawFn, models: list[str]) -> Any:
    """``ModelReadyRequest`` or ``ModelMetadataRequest`` (the same fields)."""
    from serving.stubs.inference import grpc_predict_v2_pb2 as v2

    wrong = draw(_wrongness())
    kind = draw(st.sampled_from((v2.ModelReadyRequest, v2.ModelMetadataRequest)))
    return kind(
        name=_pick(draw, wrong, st.sampled_from(models), model_names(models)),
        version=_pick(draw, wrong, st.sampled_from(["", "1"]), versions()),
    )


def _elements(datatype: str) -> st.SearchStrategy[Any]:
    """Any value a ``datatype`` tensor may hold (BYTES: bytes, mostly UTF-8)."""
    if datatype == "BOOL":
        return st.booleans()
    if datatype.startswith("UINT"):
        return ints(0, 2 ** int(datatype[4:]) - 1)
    if datatype.startswith("INT"):
        bits = int(datatype[3:])
        return ints(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if datatype == "FP32":
        return st.one_of(st.floats(-1e4, 1e4, width=32), st.floats(width=32))
    if datatype == "FP64":
        return doubles()
    return st.one_of(texts(huge=False).map(str.encode), st.binary(max_size=8))


def _raw(datatype: str, values: list[Any]) -> bytes:
    import struct

    import numpy as np

    dtype = V2_RAW_DTYPES[datatype]
    if dtype is None:
        return b"".join(struct.pack("<I", len(v)) + v for v in values)
    return np.asarray(values, dtype=dtype).tobytes()


@st.composite
def _shape(draw: st.DrawFn, wrong: int, n: int) -> list[int]:
    odd = st.lists(
        st.one_of(st.integers(-2, 4), st.sampled_from([10**12, INT64_MAX, INT64_MIN])),
        max_size=3,
    )
    return list(_pick(draw, wrong, st.sampled_from(([n], [n, 1])), odd))


@st.composite
def infer_requests(
    draw: st.DrawFn,
    models: list[str],
    inputs: dict[str, tuple[str, Valid]],
    input_sets: list[list[str]],
    outputs: list[str],
    max_rows: int,
) -> Any:
    """``ModelInferRequest``. ``inputs``: per input name its datatype and valid elements;
    ``input_sets``: the sets of names a valid request sends (each set whole). Wrong
    parts: names missing, unknown or twice; other datatypes (or made up); shapes with
    zero, negative or huge (10**12) dimensions; typed contents in another field or of
    another length; raw contents cut short, one too many or too few, or sent beside
    typed ones; parameters of another kind; outputs that do not exist."""
    from serving.stubs.inference import grpc_predict_v2_pb2 as v2

    wrong = draw(_wrongness())
    message = v2.ModelInferRequest(
        model_name=_pick(draw, wrong, st.sampled_from(models), model_names(models)),
        model_version=_pick(draw, wrong, st.sampled_from(["", "1"]), versions()),
        id=_pick(draw, wrong, st.sampled_from(["", "i-1"]), request_ids()),
    )
    n = _pick(draw, wrong, st.integers(1, 4), st.sampled_from([0, max_rows, max_rows + 1]))
    names = list(draw(st.sampled_from(input_sets)))
    if wrong and draw(st.integers(0, 9)) < wrong:
        names = draw(st.lists(st.sampled_from(sorted(inputs)), unique=True))
        names += draw(st.lists(texts(huge=False), max_size=2))
        if names and draw(st.booleans()):
            names.append(names[0])  # the same input twice
    names = draw(st.permutations(names))
    mode = _pick(draw, wrong, st.sampled_from(("typed", "raw")), st.just("both"))
    raw: list[bytes] = []
    for name in names:
        valid, elements = inputs.get(name, ("FP64", st.floats(0, 1)))
        datatype = _pick(
            draw, wrong, st.just(valid),
            st.one_of(st.sampled_from(sorted(V2_RAW_DTYPES)), texts(huge=False)),
        )  # fmt: skip
        known = datatype if datatype in V2_RAW_DTYPES else valid
        if known != valid:
            elements = _elements(known)
        size = _pick(draw, wrong, st.just(n), st.integers(0, 4))
        values = draw(st.lists(_pick(draw, wrong, st.just(elements), st.just(_elements(known))),
                               min_size=size, max_size=size))  # fmt: skip
        tensor = message.inputs.add(name=name, datatype=datatype, shape=draw(_shape(wrong, n)))
        if mode != "typed":
            blob = _raw(known, values)
            cut = _pick(draw, wrong, st.just(0), st.sampled_from((1, 3)))
            raw.append(blob[: len(blob) - cut] if cut else blob)
        if mode != "raw":
            field = _pick(
                draw, wrong, st.just(V2_CONTENTS[known]), st.sampled_from(sorted(V2_CONTENTS))
            )
            if field != V2_CONTENTS[known]:  # another datatype's field
                values = draw(st.lists(_elements(field), min_size=size, max_size=size))
                field = V2_CONTENTS[field]
            getattr(tensor.contents, field).extend(values)
    if raw and _pick(draw, wrong, st.just(False), st.booleans()):
        raw = raw[:-1] if draw(st.booleans()) else [*raw, b"\x00" * 8]
    message.raw_input_contents.extend(raw)
    for key in _pick(
        draw, wrong, st.lists(st.just("explain"), max_size=1),
        st.lists(st.one_of(st.just("explain"), texts(huge=False)), max_size=2),
    ):  # fmt: skip
        parameter = message.parameters[key]
        kind = _pick(
            draw, wrong, st.just("bool"),
            st.sampled_from(("string", "int64", "double", "uint64", "unset")),
        )  # fmt: skip
        if kind == "bool":
            parameter.bool_param = draw(st.booleans()) and n <= 4
        elif kind == "string":
            parameter.string_param = draw(st.one_of(st.sampled_from(["true", "False"]), texts()))
        elif kind == "int64":
            parameter.int64_param = draw(ints())
        elif kind == "double":
            parameter.double_param = draw(doubles())
        elif kind == "uint64":
            parameter.uint64_param = draw(ints(0, 2**64 - 1))
    wanted = _pick(
        draw, wrong, st.lists(st.sampled_from(outputs[:4]), max_size=2),
        st.lists(st.one_of(st.sampled_from(outputs), texts(huge=False)), max_size=3),
    )  # fmt: skip
    for name in wanted:
        message.outputs.add(name=name)
    return message
