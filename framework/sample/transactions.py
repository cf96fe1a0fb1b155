"""The sample's transactions: habitual spending, compromised cards, hidden fraud labels.

One call (:func:`chunk_transactions`) draws every transaction of one slice of users
from that slice's own random stream, in a fixed order of draws: changing the order
changes every file a seed produces (bump ``GENERATOR_VERSION`` if it must change).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from framework.sample.scenario import (
    CATEGORIES,
    CATEGORY_AMOUNT_OFFSET,
    CATEGORY_ONLINE_SHARE,
    COUNTRIES,
    COUNTRY_WEIGHTS,
    DAY_US,
    DISPUTE_WINDOW_DAYS,
    FRAUD_CATEGORIES,
    FRAUD_INTERCEPT,
    HOUR_US,
    HOUR_WEIGHTS,
    GenerationConfig,
)
from framework.sample.world import Merchants, Users, rng_for, to_us


@dataclass
class _Draft:
    """A slice's transactions as drawn so far, one array per column (``owner`` is the
    user's index within the slice)."""

    owner: np.ndarray
    ts: np.ndarray
    category: np.ndarray
    country: np.ndarray
    amount: np.ndarray
    online_share: np.ndarray
    fraud_burst: np.ndarray

    @property
    def n(self) -> int:
        return len(self.owner)


def chunk_transactions(
    cfg: GenerationConfig, index: int, users: slice, u: Users, m: Merchants
) -> dict[str, np.ndarray]:
    """All transactions of one slice of users, with their hidden fraud labels."""
    rng = rng_for(cfg, 3, index)
    drift_us = to_us(cfg.drift_start)
    per_user = cfg.transactions / cfg.n_users
    draft = _legitimate(rng, cfg, users, u, per_user)
    _add_bursts(rng, cfg, users, u, draft, per_user)
    if "amount_inflation" in cfg.drift:
        draft.amount = np.where(draft.ts >= drift_us, draft.amount * 1.6, draft.amount)
    draft.amount = np.maximum(np.round(draft.amount, 2), 0.5)
    merchant = _merchants(rng, m, draft)
    # The merchant decides the category and country actually seen.
    category, country = m.category[merchant], m.country[merchant]
    online = rng.random(draft.n) < draft.online_share
    channel = np.where(online, 1, np.where(rng.random(draft.n) < 0.5, 0, 2))

    # --- order by (user, time): velocity is a count over each user's history
    order = np.lexsort((draft.ts, draft.owner))
    columns: list[np.ndarray] = [
        a[order]
        for a in (draft.owner, draft.ts, category, country, draft.amount, merchant, channel, online)
    ]
    owner, ts, category, country, amount, merchant, channel, online = columns
    key = owner * (cfg.days * DAY_US + 2 * HOUR_US) + (ts - to_us(cfg.start) + HOUR_US)
    velocity_1h = np.searchsorted(key, key, "right") - np.searchsorted(key, key - HOUR_US, "left")

    # --- the hidden fraud function, the same for every transaction
    habit = u.habits[users][owner, np.minimum(category, len(CATEGORIES) - 1)]
    unhabitual = (category >= len(CATEGORIES)) | (habit < 0.05)
    inflation = np.where(("amount_inflation" in cfg.drift) & (ts >= drift_us), 1.6, 1.0)
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
    is_fraud, delay = _labels(rng, logit)
    return {
        "user_id": u.ids[users][owner],
        "merchant_id": m.ids[merchant],
        "transaction_timestamp": ts,
        "amount": amount,
        "channel": channel,
        "is_fraud": is_fraud,
        "label_timestamp": ts + delay,
    }


def _legitimate(
    rng: np.random.Generator, cfg: GenerationConfig, users: slice, u: Users, per_user: float
) -> _Draft:
    """Legitimate spending, following each user's habits."""
    start_us, drift_us = to_us(cfg.start), to_us(cfg.drift_start)
    counts = rng.poisson(u.activity[users] * per_user)
    owner = np.repeat(np.arange(len(u.ids[users])), counts)
    n = len(owner)
    ts = _timestamps(rng, n, start_us, cfg.days)
    cum = np.cumsum(u.habits[users], axis=1)
    category = np.minimum((rng.random(n)[:, None] > cum[owner]).sum(axis=1), len(CATEGORIES) - 1)
    home = u.home[users][owner]
    abroad_p = np.full(n, 0.08)
    if "country_mix_shift" in cfg.drift:
        abroad_p[ts >= drift_us] = 0.32
    abroad = rng.random(n) < abroad_p
    country = np.where(abroad, rng.choice(len(COUNTRIES), n, p=COUNTRY_WEIGHTS), home)
    if "new_merchant_category" in cfg.drift:
        to_new = (ts >= drift_us) & (rng.random(n) < 0.08)
        category[to_new] = len(CATEGORIES)
    amount_mu = u.amount_mu[users][owner] + _category_offset(category)
    amount = rng.lognormal(amount_mu, 0.6)
    return _Draft(
        owner, ts, category, country, amount, _online_share(category), np.zeros(n, dtype=bool)
    )


def _add_bursts(
    rng: np.random.Generator,
    cfg: GenerationConfig,
    users: slice,
    u: Users,
    draft: _Draft,
    per_user: float,
) -> None:
    """Compromised cards: bursts of unusual spending, appended to ``draft``."""
    start_us, drift_us = to_us(cfg.start), to_us(cfg.drift_start)
    local = np.arange(len(u.ids[users]))
    compromised = local[rng.random(len(local)) < 0.10 * cfg.days / 90 * min(per_user / 40, 3)]
    if not len(compromised):
        return
    burst_len = 2 + rng.poisson(3, len(compromised))
    b_owner = np.repeat(compromised, burst_len)
    nb = len(b_owner)
    b_start = np.repeat(
        rng.integers(start_us, start_us + cfg.days * DAY_US - 4 * HOUR_US, len(compromised)),
        burst_len,
    )
    b_ts = b_start + rng.integers(0, 3 * HOUR_US, nb)
    b_cat = rng.choice(FRAUD_CATEGORIES, nb)
    if "new_merchant_category" in cfg.drift:
        b_cat[(b_ts >= drift_us) & (rng.random(nb) < 0.5)] = len(CATEGORIES)
    b_home = u.home[users][b_owner]
    b_country = np.where(rng.random(nb) < 0.5, rng.choice(len(COUNTRIES), nb), b_home)
    b_amount = rng.lognormal(u.amount_mu[users][b_owner] + _category_offset(b_cat) + 0.8, 0.7)
    draft.owner = np.concatenate([draft.owner, b_owner])
    draft.ts = np.concatenate([draft.ts, b_ts])
    draft.category = np.concatenate([draft.category, b_cat])
    draft.country = np.concatenate([draft.country, b_country])
    draft.amount = np.concatenate([draft.amount, b_amount])
    draft.online_share = np.concatenate([draft.online_share, np.full(nb, 0.8)])
    draft.fraud_burst = np.concatenate([draft.fraud_burst, np.ones(nb, dtype=bool)])


def _merchants(rng: np.random.Generator, m: Merchants, draft: _Draft) -> np.ndarray:
    """The merchant of each transaction: of its category and country; fraudsters
    favour the riskiest merchants open at the time."""
    merchant = _pick_merchants(rng, m, draft.category, draft.country)
    if draft.fraud_burst.any():
        risky = draft.fraud_burst & (rng.random(draft.n) < 0.4)
        riskiest = np.flatnonzero(m.risk >= np.quantile(m.risk, 0.95))
        picked = riskiest[rng.integers(0, len(riskiest), int(risky.sum()))]
        opened = m.created_us[picked] <= draft.ts[risky]
        merchant[np.flatnonzero(risky)[opened]] = picked[opened]
    return merchant


def _labels(rng: np.random.Generator, logit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each transaction is fraud, and how long until its label is known."""
    n = len(logit)
    is_fraud = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    delay = np.where(
        is_fraud,
        np.clip(2 * DAY_US + rng.gamma(2.0, 6.0, n) * DAY_US, 2 * DAY_US, 60 * DAY_US).astype(
            np.int64
        ),
        DISPUTE_WINDOW_DAYS * DAY_US,
    )
    return is_fraud, delay


def _pick_merchants(
    rng: np.random.Generator, m: Merchants, category: np.ndarray, country: np.ndarray
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


def _category_offset(category: np.ndarray) -> np.ndarray:
    return np.asarray(np.append(CATEGORY_AMOUNT_OFFSET, 0.8)[category])


def _online_share(category: np.ndarray) -> np.ndarray:
    return np.asarray(np.append(CATEGORY_ONLINE_SHARE, 1.0)[category])
