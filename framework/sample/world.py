"""The sample's users and merchants: who shops, where, and how risky each merchant is.

Drawn once per dataset, each from its own random stream of the seed, so the same
config always gives the same world (see :mod:`framework.sample.data`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from framework.sample.scenario import (
    CARD_TYPES,
    CARD_WEIGHTS,
    CATEGORIES,
    COUNTRIES,
    COUNTRY_WEIGHTS,
    DAY_US,
    FRAUD_CATEGORIES,
    US,
    GenerationConfig,
)


@dataclass
class Users:
    ids: np.ndarray
    signup_us: np.ndarray
    home: np.ndarray  # country index
    card: np.ndarray
    credit_limit: np.ndarray
    amount_mu: np.ndarray  # log typical spend
    activity: np.ndarray  # relative transaction rate, mean 1
    habits: np.ndarray  # (n, categories) preference weights


@dataclass
class Merchants:
    ids: np.ndarray
    created_us: np.ndarray
    category: np.ndarray  # index into CATEGORIES (+ NEW_CATEGORY at len(CATEGORIES))
    country: np.ndarray
    risk: np.ndarray  # hidden riskiness in [0, 1]
    #: merchants sorted by (category, country); group_start[c, k] .. group_end[c, k]
    order: np.ndarray
    group_start: np.ndarray
    group_size: np.ndarray


def rng_for(cfg: GenerationConfig, *stream: int) -> np.random.Generator:
    """The random stream ``stream`` of the config's seed."""
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, *stream]))


def make_users(cfg: GenerationConfig) -> Users:
    rng = rng_for(cfg, 1)
    n = cfg.n_users
    start_us = to_us(cfg.start)
    habits = np.zeros((n, len(CATEGORIES)))
    # Everyone buys groceries; two or three other habitual categories each.
    habits[:, 0] = rng.uniform(0.2, 0.5, n)
    for _ in range(3):
        cat = rng.integers(1, len(CATEGORIES) - 3, n)  # never habitually jewelry etc.
        habits[np.arange(n), cat] += rng.uniform(0.1, 0.4, n)
    habits /= habits.sum(axis=1, keepdims=True)
    activity = rng.lognormal(0.0, 0.6, n)
    return Users(
        ids=np.arange(1, n + 1, dtype=np.int64),
        signup_us=start_us - rng.integers(30, 2000, n) * DAY_US - rng.integers(0, DAY_US, n),
        home=rng.choice(len(COUNTRIES), n, p=COUNTRY_WEIGHTS),
        card=rng.choice(len(CARD_TYPES), n, p=CARD_WEIGHTS),
        credit_limit=np.round(rng.choice([500.0, 1000, 2500, 5000, 10000], n), 2),
        amount_mu=rng.normal(3.4, 0.5, n),
        activity=activity / activity.mean(),
        habits=habits,
    )


def make_merchants(cfg: GenerationConfig) -> Merchants:
    rng = rng_for(cfg, 2)
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
    created = to_us(cfg.start) - rng.integers(60, 3000, n) * DAY_US
    if "new_merchant_category" in cfg.drift:
        extra = max(n_cty, n // 20)
        category = np.concatenate([category, np.full(extra, n_cat)])
        country = np.concatenate([country, np.arange(extra) % n_cty])
        risk = np.concatenate([risk, rng.uniform(0.3, 0.7, extra)])
        created = np.concatenate([created, np.full(extra, to_us(cfg.drift_start))])
        n += extra
    n_groups_cat = n_cat + 1
    order = np.lexsort((np.arange(n), country, category))
    keys = category[order] * n_cty + country[order]
    starts = np.searchsorted(keys, np.arange(n_groups_cat * n_cty), "left")
    ends = np.searchsorted(keys, np.arange(n_groups_cat * n_cty), "right")
    return Merchants(
        ids=np.arange(1, n + 1, dtype=np.int64),
        created_us=created,
        category=category,
        country=country,
        risk=risk,
        order=order,
        group_start=starts.reshape(n_groups_cat, n_cty),
        group_size=(ends - starts).reshape(n_groups_cat, n_cty),
    )


def to_us(ts: datetime) -> int:
    """Microseconds since the epoch, of a whole second."""
    return int(ts.timestamp()) * US
