"""Reusable raw datasets for the feature pipeline's tests, and Hypothesis strategies for them.

Times are integers: microseconds since the Unix epoch, UTC. That keeps reference
implementations exact (no float or time-zone arithmetic) and matches the
precision of the Parquet files (``pa.timestamp("us", tz="UTC")``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from framework.sample_data import (
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
