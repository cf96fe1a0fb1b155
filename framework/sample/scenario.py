"""The fraud scenario's parameters, and what to generate (:class:`GenerationConfig`).

The constants describe the world the generator (:mod:`framework.sample.data`)
draws: countries, merchant categories and how each behaves, card types, the hours
people shop, the drift scenarios, and the hidden fraud function's intercept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

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
    "merchant_risk_outage": (
        "the merchant-risk job reads an empty table from the drift start on and still "
        "publishes: every merchant's 30-day transaction and chargeback counts read 0 and its "
        "fraud rate is missing (a silent pipeline failure, not a change in the world)"
    ),
}

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
