"""The deterministic sample data generator: a card-transaction fraud scenario.

It owns the *raw* side of the sample: users, merchants, transactions and the
ground-truth labels (chargebacks) that arrive days after a transaction. The
feature pipeline (:mod:`framework.sample.pipeline`) turns these into the
offline sources the Feast repository reads.

How the world works (documented for users in ``data/README.md``):

* Users have a home country, a card type, a credit limit, a typical spend
  (log-normal) and two or three habitual merchant categories.
* Merchants have a category, a country and a hidden riskiness; a few are
  notably risky.
* Legitimate transactions follow each user's habits: mostly home-country
  merchants in habitual categories, amounts around the typical spend, few at
  night.
* Some cards are compromised: a burst of transactions within a few hours,
  larger than usual, in categories the user never uses, often online, often
  abroad and at risky merchants.
* Whether a transaction is fraud is drawn from a *hidden* logistic function of
  behaviour (amount relative to the user's habit, velocity in the last hour,
  an unhabitual category, night hours, merchant riskiness, abroad, online),
  applied to every transaction alike, with 1-3 % positives overall.
* A fraudulent transaction's chargeback arrives 2-60 days later; a legitimate
  transaction's label becomes final when the 45-day dispute window closes.

Memory stays bounded at any scale: users are processed in chunks, each chunk
gets its own random stream derived from ``(seed, chunk index)`` and is written
as its own Parquet row group, so the same seed and scale always give identical
files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from framework.errors import ConfigError

#: Bumped whenever the generator's output for a given seed changes.
GENERATOR_VERSION = 1

START = datetime(2026, 1, 1, tzinfo=UTC)
US = 1_000_000  # microseconds per second
HOUR_US = 3600 * US
DAY_US = 24 * HOUR_US

COUNTRIES = ["US", "GB", "DE", "FR", "ES", "NL", "BR", "NG"]
COUNTRY_WEIGHTS = np.array([0.40, 0.15, 0.12, 0.10, 0.08, 0.07, 0.05, 0.03])
CATEGORIES = [
    "grocery",
    "restaurant",
    "fuel",
    "fashion",
    "pharmacy",
    "entertainment",
    "travel",
    "electronics",
    "digital_goods",
    "jewelry",
]
#: How much more (log scale) a purchase in each category costs than the user's habit.
CATEGORY_AMOUNT_OFFSET = np.array([0.0, -0.2, 0.1, 0.5, -0.3, 0.2, 1.3, 1.1, -0.4, 1.5])
#: Share of each category's purchases made online.
CATEGORY_ONLINE_SHARE = np.array([0.05, 0.1, 0.0, 0.4, 0.1, 0.5, 0.7, 0.5, 0.95, 0.3])
#: Categories fraudsters favour.
FRAUD_CATEGORIES = np.array(
    [CATEGORIES.index(c) for c in ("electronics", "digital_goods", "jewelry", "travel")]
)
#: The category that only the ``new_merchant_category`` drift introduces.
NEW_CATEGORY = "crypto_exchange"
CARD_TYPES = ["debit", "credit", "prepaid"]
CARD_WEIGHTS = np.array([0.55, 0.40, 0.05])
CHANNELS = ["pos", "online", "contactless"]
#: Relative frequency of legitimate transactions by hour of day (UTC).
HOUR_WEIGHTS = np.array(
    [0.2, 0.1, 0.1, 0.1, 0.15, 0.3, 0.8, 1.5, 2.0, 2.2, 2.3, 2.6,
     3.0, 2.8, 2.5, 2.4, 2.5, 2.8, 3.0, 2.8, 2.2, 1.6, 1.0, 0.5]
)  # fmt: skip

DRIFT_SCENARIOS = {
    "amount_inflation": "every amount is 60 % higher from the drift start on",
    "new_merchant_category": (
        f"merchants of a category never seen before ({NEW_CATEGORY!r}) open at the drift"
        " start, take ~8 % of transactions and attract fraud"
    ),
    "country_mix_shift": "users shop abroad four times as often from the drift start on",
}

#: Target number of transactions per chunk: bounds memory whatever the scale.
CHUNK_TRANSACTIONS = 250_000
#: Intercept of the hidden fraud function, tuned so that 1-3 % are fraud.
FRAUD_INTERCEPT = -5.9
DISPUTE_WINDOW_DAYS = 45


@dataclass(frozen=True)
class GenerationConfig:
    """What to generate. The same config always produces the same files."""

    seed: int = 7
    transactions: int = 20_000
    days: int = 90
    drift: tuple[str, ...] = ()
    #: Share of the period after which drift scenarios apply.
    drift_start_fraction: float = 0.75

    def __post_init__(self) -> None:
        if self.transactions < 100:
            raise ConfigError(
                f"The 'transactions' (scale) must be at least 100. Got {self.transactions}."
            )
        if not 7 <= self.days <= 3650:
            raise ConfigError(f"The 'days' must be between 7 and 3650. Got {self.days}.")
        if not 0.0 < self.drift_start_fraction < 1.0:
            raise ConfigError(
                "The 'drift_start_fraction' must be strictly between 0 and 1. "
                f"Got {self.drift_start_fraction}."
            )
        unknown = sorted(set(self.drift) - set(DRIFT_SCENARIOS))
        if unknown:
            raise ConfigError(
                f"Unknown drift scenario {unknown[0]!r}; choose from {', '.join(DRIFT_SCENARIOS)}."
            )

    @property
    def n_users(self) -> int:
        return max(50, self.transactions // 40)

    @property
    def n_merchants(self) -> int:
        return max(2 * len(CATEGORIES) * len(COUNTRIES), self.transactions // 400)

    @property
    def start(self) -> datetime:
        return START

    @property
    def end(self) -> datetime:
        return START + timedelta(days=self.days)

    @property
    def drift_start(self) -> datetime:
        return START + timedelta(days=self.days * self.drift_start_fraction)


@dataclass
class GenerationSummary:
    """What was generated; also written as ``raw/manifest.json``."""

    config: dict[str, object]
    generator_version: int
    start: str
    end: str
    drift_start: str | None
    users: int
    merchants: int
    transactions: int
    fraud: int
    fraud_rate: float
    files: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------- schemas

TS = pa.timestamp("us", tz="UTC")
USERS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("signup_timestamp", TS),
        ("home_country", pa.string()),
        ("card_type", pa.string()),
        ("credit_limit", pa.float64()),
    ]
)
MERCHANTS_SCHEMA = pa.schema(
    [
        ("merchant_id", pa.int64()),
        ("created_timestamp", TS),
        ("category", pa.string()),
        ("country", pa.string()),
    ]
)
TRANSACTIONS_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.int64()),
        ("user_id", pa.int64()),
        ("merchant_id", pa.int64()),
        ("transaction_timestamp", TS),
        ("amount", pa.float64()),
        ("channel", pa.string()),
    ]
)
LABELS_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.int64()),
        ("user_id", pa.int64()),
        ("merchant_id", pa.int64()),
        ("transaction_timestamp", TS),
        ("is_fraud", pa.int8()),
        ("label_timestamp", TS),
    ]
)


# ------------------------------------------------------------------ the world


@dataclass
class _Users:
    ids: np.ndarray
    signup_us: np.ndarray
    home: np.ndarray  # country index
    card: np.ndarray
    credit_limit: np.ndarray
    amount_mu: np.ndarray  # log typical spend
    activity: np.ndarray  # relative transaction rate, mean 1
    habits: np.ndarray  # (n, categories) preference weights


@dataclass
class _Merchants:
    ids: np.ndarray
    created_us: np.ndarray
    category: np.ndarray  # index into CATEGORIES (+ NEW_CATEGORY at len(CATEGORIES))
    country: np.ndarray
    risk: np.ndarray  # hidden riskiness in [0, 1]
    #: merchants sorted by (category, country); group_start[c, k] .. group_end[c, k]
    order: np.ndarray
    group_start: np.ndarray
    group_size: np.ndarray


def _rng(cfg: GenerationConfig, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, *stream]))


def _make_users(cfg: GenerationConfig) -> _Users:
    rng = _rng(cfg, 1)
    n = cfg.n_users
    start_us = _us(cfg.start)
    habits = np.zeros((n, len(CATEGORIES)))
    # Everyone buys groceries; two or three other habitual categories each.
    habits[:, 0] = rng.uniform(0.2, 0.5, n)
    for _ in range(3):
        cat = rng.integers(1, len(CATEGORIES) - 3, n)  # never habitually jewelry etc.
        habits[np.arange(n), cat] += rng.uniform(0.1, 0.4, n)
    habits /= habits.sum(axis=1, keepdims=True)
    activity = rng.lognormal(0.0, 0.6, n)
    return _Users(
        ids=np.arange(1, n + 1, dtype=np.int64),
        signup_us=start_us - rng.integers(30, 2000, n) * DAY_US - rng.integers(0, DAY_US, n),
        home=rng.choice(len(COUNTRIES), n, p=COUNTRY_WEIGHTS),
        card=rng.choice(len(CARD_TYPES), n, p=CARD_WEIGHTS),
        credit_limit=np.round(rng.choice([500.0, 1000, 2500, 5000, 10000], n), 2),
        amount_mu=rng.normal(3.4, 0.5, n),
        activity=activity / activity.mean(),
        habits=habits,
    )


def _make_merchants(cfg: GenerationConfig) -> _Merchants:
    rng = _rng(cfg, 2)
    n_cat, n_cty = len(CATEGORIES), len(COUNTRIES)
    n = cfg.n_merchants
    # At least one merchant for every (category, country), the rest at random.
    category = np.concatenate(
        [np.repeat(np.arange(n_cat), n_cty), rng.integers(0, n_cat, n - n_cat * n_cty)]
    )
    country = np.concatenate(
        [np.tile(np.arange(n_cty), n_cat), rng.choice(n_cty, n - n_cat * n_cty, p=COUNTRY_WEIGHTS)]
    )
    risk = rng.beta(1.2, 12.0, n)
    risky_categories = np.isin(category, FRAUD_CATEGORIES)
    risk[risky_categories] = np.minimum(1.0, risk[risky_categories] * 2.0)
    risk[rng.random(n) < 0.02] = rng.uniform(0.6, 0.95)  # a few notably risky merchants
    created = _us(cfg.start) - rng.integers(60, 3000, n) * DAY_US
    if "new_merchant_category" in cfg.drift:
        extra = max(n_cty, n // 20)
        category = np.concatenate([category, np.full(extra, n_cat)])
        country = np.concatenate([country, np.arange(extra) % n_cty])
        risk = np.concatenate([risk, rng.uniform(0.3, 0.7, extra)])
        created = np.concatenate([created, np.full(extra, _us(cfg.drift_start))])
        n += extra
    n_groups_cat = n_cat + 1
    order = np.lexsort((np.arange(n), country, category))
    keys = category[order] * n_cty + country[order]
    starts = np.searchsorted(keys, np.arange(n_groups_cat * n_cty), "left")
    ends = np.searchsorted(keys, np.arange(n_groups_cat * n_cty), "right")
    return _Merchants(
        ids=np.arange(1, n + 1, dtype=np.int64),
        created_us=created,
        category=category,
        country=country,
        risk=risk,
        order=order,
        group_start=starts.reshape(n_groups_cat, n_cty),
        group_size=(ends - starts).reshape(n_groups_cat, n_cty),
    )


def _us(ts: datetime) -> int:
    return int(ts.timestamp()) * US


def _pick_merchants(
    rng: np.random.Generator, m: _Merchants, category: np.ndarray, country: np.ndarray
) -> np.ndarray:
    """Index of a merchant of the given category in the given country (uniformly)."""
    size = m.group_size[category, country]
    # Where a (category, country) has no merchant (only possible for drifted
    # categories), fall back to the category's first country that has one.
    missing = size == 0
    if missing.any():
        fallback = np.argmax(m.group_size[category[missing]] > 0, axis=1)
        country = country.copy()
        country[missing] = fallback
        size = m.group_size[category, country]
    offset = (rng.random(len(category)) * size).astype(np.int64)
    return np.asarray(m.order[m.group_start[category, country] + offset])


def _timestamps(rng: np.random.Generator, n: int, start_us: int, days: int) -> np.ndarray:
    day = rng.integers(0, days, n)
    hour = rng.choice(24, n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    within = rng.integers(0, HOUR_US, n)
    return np.asarray(start_us + day * DAY_US + hour * HOUR_US + within)


def _chunk(
    cfg: GenerationConfig, index: int, users: slice, u: _Users, m: _Merchants
) -> dict[str, np.ndarray]:
    """All transactions of one slice of users, with their hidden fraud labels."""
    rng = _rng(cfg, 3, index)
    start_us, drift_us = _us(cfg.start), _us(cfg.drift_start)
    drifting = set(cfg.drift)
    ids = u.ids[users]
    n_u = len(ids)
    local = np.arange(n_u)

    # --- legitimate spending, following habits
    per_user = cfg.transactions / cfg.n_users
    counts = rng.poisson(u.activity[users] * per_user)
    owner = np.repeat(local, counts)
    n = len(owner)
    ts = _timestamps(rng, n, start_us, cfg.days)
    cum = np.cumsum(u.habits[users], axis=1)
    category = np.minimum((rng.random(n)[:, None] > cum[owner]).sum(axis=1), len(CATEGORIES) - 1)
    home = u.home[users][owner]
    abroad_p = np.full(n, 0.08)
    if "country_mix_shift" in drifting:
        abroad_p[ts >= drift_us] = 0.32
    abroad = rng.random(n) < abroad_p
    country = np.where(abroad, rng.choice(len(COUNTRIES), n, p=COUNTRY_WEIGHTS), home)
    if "new_merchant_category" in drifting:
        to_new = (ts >= drift_us) & (rng.random(n) < 0.08)
        category[to_new] = len(CATEGORIES)
    amount_mu = u.amount_mu[users][owner] + _category_offset(category)
    amount = rng.lognormal(amount_mu, 0.6)
    online_share = _online_share(category)
    fraud_burst = np.zeros(n, dtype=bool)

    # --- compromised cards: bursts of unusual spending
    compromised = local[rng.random(n_u) < 0.10 * cfg.days / 90 * min(per_user / 40, 3)]
    if len(compromised):
        burst_len = 2 + rng.poisson(3, len(compromised))
        b_owner = np.repeat(compromised, burst_len)
        nb = len(b_owner)
        b_start = np.repeat(
            rng.integers(start_us, start_us + cfg.days * DAY_US - 4 * HOUR_US, len(compromised)),
            burst_len,
        )
        b_ts = b_start + rng.integers(0, 3 * HOUR_US, nb)
        b_cat = rng.choice(FRAUD_CATEGORIES, nb)
        if "new_merchant_category" in drifting:
            b_cat[(b_ts >= drift_us) & (rng.random(nb) < 0.5)] = len(CATEGORIES)
        b_home = u.home[users][b_owner]
        b_country = np.where(rng.random(nb) < 0.5, rng.choice(len(COUNTRIES), nb), b_home)
        b_amount = rng.lognormal(u.amount_mu[users][b_owner] + _category_offset(b_cat) + 0.8, 0.7)
        owner = np.concatenate([owner, b_owner])
        ts = np.concatenate([ts, b_ts])
        category = np.concatenate([category, b_cat])
        country = np.concatenate([country, b_country])
        amount = np.concatenate([amount, b_amount])
        online_share = np.concatenate([online_share, np.full(nb, 0.8)])
        fraud_burst = np.concatenate([fraud_burst, np.ones(nb, dtype=bool)])
        n += nb

    if "amount_inflation" in drifting:
        amount = np.where(ts >= drift_us, amount * 1.6, amount)
    amount = np.maximum(np.round(amount, 2), 0.5)
    merchant = _pick_merchants(rng, m, category, country)
    if fraud_burst.any():  # fraudsters favour the riskiest merchants open at the time
        risky = fraud_burst & (rng.random(n) < 0.4)
        riskiest = np.flatnonzero(m.risk >= np.quantile(m.risk, 0.95))
        picked = riskiest[rng.integers(0, len(riskiest), int(risky.sum()))]
        opened = m.created_us[picked] <= ts[risky]
        merchant[np.flatnonzero(risky)[opened]] = picked[opened]
    # The merchant decides the category and country actually seen.
    category, country = m.category[merchant], m.country[merchant]
    online = rng.random(n) < online_share
    channel = np.where(online, 1, np.where(rng.random(n) < 0.5, 0, 2))

    # --- order by (user, time): velocity is a count over each user's history
    order = np.lexsort((ts, owner))
    columns: list[np.ndarray] = [
        a[order] for a in (owner, ts, category, country, amount, merchant, channel, online)
    ]
    owner, ts, category, country, amount, merchant, channel, online = columns
    key = owner * (cfg.days * DAY_US + 2 * HOUR_US) + (ts - start_us + HOUR_US)
    velocity_1h = np.searchsorted(key, key, "right") - np.searchsorted(key, key - HOUR_US, "left")

    # --- the hidden fraud function, the same for every transaction
    habit = u.habits[users][owner, np.minimum(category, len(CATEGORIES) - 1)]
    unhabitual = (category >= len(CATEGORIES)) | (habit < 0.05)
    inflation = np.where(("amount_inflation" in drifting) & (ts >= drift_us), 1.6, 1.0)
    typical = np.exp(u.amount_mu[users][owner] + _category_offset(category) + 0.18) * inflation
    hour = (ts // HOUR_US) % 24
    logit = (
        FRAUD_INTERCEPT
        + 1.3 * np.log(np.clip(amount / typical, 0.2, 50.0))
        + 0.9 * np.minimum(velocity_1h - 1, 6)
        + 1.4 * unhabitual
        + 1.0 * (hour < 6)
        + 5.0 * m.risk[merchant]
        + 0.8 * (country != u.home[users][owner])
        + 0.5 * online
    )
    is_fraud = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    delay = np.where(
        is_fraud,
        np.clip(2 * DAY_US + rng.gamma(2.0, 6.0, n) * DAY_US, 2 * DAY_US, 60 * DAY_US).astype(
            np.int64
        ),
        DISPUTE_WINDOW_DAYS * DAY_US,
    )
    return {
        "user_id": ids[owner],
        "merchant_id": m.ids[merchant],
        "transaction_timestamp": ts,
        "amount": amount,
        "channel": channel,
        "is_fraud": is_fraud,
        "label_timestamp": ts + delay,
    }


def _category_offset(category: np.ndarray) -> np.ndarray:
    return np.asarray(np.append(CATEGORY_AMOUNT_OFFSET, 0.8)[category])


def _online_share(category: np.ndarray) -> np.ndarray:
    return np.asarray(np.append(CATEGORY_ONLINE_SHARE, 1.0)[category])


def _user_slices(cfg: GenerationConfig) -> Iterator[slice]:
    per_chunk = max(1, math.ceil(cfg.n_users * CHUNK_TRANSACTIONS / cfg.transactions))
    for lo in range(0, cfg.n_users, per_chunk):
        yield slice(lo, min(lo + per_chunk, cfg.n_users))


# ------------------------------------------------------------------- writing


def generate(cfg: GenerationConfig, out: Path) -> GenerationSummary:
    """Write the raw sample under ``out/raw/`` and return what was written.

    Examples
    --------
    >>> from pathlib import Path; import tempfile
    >>> s = generate(GenerationConfig(seed=1, transactions=2000), Path(tempfile.mkdtemp()))
    >>> 0.01 <= s.fraud_rate <= 0.03
    True
    """
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    users, merchants = _make_users(cfg), _make_merchants(cfg)
    files = {
        "users": raw / "users.parquet",
        "merchants": raw / "merchants.parquet",
        "transactions": raw / "transactions.parquet",
        "labels": raw / "labels.parquet",
    }
    pq.write_table(
        pa.table(
            {
                "user_id": users.ids,
                "signup_timestamp": pa.array(users.signup_us, TS),
                "home_country": np.array(COUNTRIES)[users.home],
                "card_type": np.array(CARD_TYPES)[users.card],
                "credit_limit": users.credit_limit,
            },
            schema=USERS_SCHEMA,
        ),
        files["users"],
    )
    pq.write_table(
        pa.table(
            {
                "merchant_id": merchants.ids,
                "created_timestamp": pa.array(merchants.created_us, TS),
                "category": np.array([*CATEGORIES, NEW_CATEGORY])[merchants.category],
                "country": np.array(COUNTRIES)[merchants.country],
            },
            schema=MERCHANTS_SCHEMA,
        ),
        files["merchants"],
    )
    n_tx = n_fraud = 0
    # Files are written to temporary names and renamed at the end, so a killed
    # run never leaves a half-written file under the final name.
    tmp = {
        k: p.with_suffix(".parquet.tmp")
        for k, p in files.items()
        if k in ("transactions", "labels")
    }
    with (
        pq.ParquetWriter(tmp["transactions"], TRANSACTIONS_SCHEMA) as tx_writer,
        pq.ParquetWriter(tmp["labels"], LABELS_SCHEMA) as label_writer,
    ):
        for index, users_slice in enumerate(_user_slices(cfg)):
            c = _chunk(cfg, index, users_slice, users, merchants)
            k = len(c["user_id"])
            tx_id = np.arange(n_tx + 1, n_tx + k + 1, dtype=np.int64)
            ts = pa.array(c["transaction_timestamp"], TS)
            tx_writer.write_table(
                pa.table(
                    {
                        "transaction_id": tx_id,
                        "user_id": c["user_id"],
                        "merchant_id": c["merchant_id"],
                        "transaction_timestamp": ts,
                        "amount": c["amount"],
                        "channel": np.array(CHANNELS)[c["channel"]],
                    },
                    schema=TRANSACTIONS_SCHEMA,
                )
            )
            label_writer.write_table(
                pa.table(
                    {
                        "transaction_id": tx_id,
                        "user_id": c["user_id"],
                        "merchant_id": c["merchant_id"],
                        "transaction_timestamp": ts,
                        "is_fraud": c["is_fraud"].astype(np.int8),
                        "label_timestamp": pa.array(c["label_timestamp"], TS),
                    },
                    schema=LABELS_SCHEMA,
                )
            )
            n_tx += k
            n_fraud += int(c["is_fraud"].sum())
    for key, path in tmp.items():
        path.replace(files[key])
    summary = GenerationSummary(
        config={**asdict(cfg), "drift": list(cfg.drift)},
        generator_version=GENERATOR_VERSION,
        start=cfg.start.isoformat(),
        end=cfg.end.isoformat(),
        drift_start=cfg.drift_start.isoformat() if cfg.drift else None,
        users=len(users.ids),
        merchants=len(merchants.ids),
        transactions=n_tx,
        fraud=n_fraud,
        fraud_rate=n_fraud / max(n_tx, 1),
        files={k: str(v) for k, v in files.items()},
    )
    (raw / "manifest.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary


def parse_scale(text: str) -> int:
    """Parse a transaction count such as ``20000``, ``50k`` or ``10M``."""
    units = {"k": 1_000, "m": 1_000_000}
    t = text.strip().lower().replace("_", "")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise ConfigError(
            f"The '--scale' must be a transaction count such as 20000, 50k or 10M. Got {text!r}."
        ) from None


def drift_names(values: Sequence[str]) -> tuple[str, ...]:
    """Split comma-separated drift scenario names, keeping order, dropping repeats."""
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            if name.strip() and name.strip() not in names:
                names.append(name.strip())
    return tuple(names)
