"""Feature definitions for the card-fraud sample: the single source of truth.

Training (point-in-time joins over the offline Parquet sources) and serving
(online store lookups) both resolve features through these definitions and the
``fraud_model_v1`` feature service.

Offline sources are written by ``parity data generate`` (see
``framework/sample/pipeline.py`` for how each column is computed) under
``../data/offline/`` next to this repository. Each view's TTL matches the
window or cadence of its values: a 1-hour count older than an hour no longer
describes the last hour, so it must read as missing, not as a stale number.
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

# Absolute paths, resolved from this file: Feast's DuckDB offline store reads
# relative paths against the working directory, not the repository.
OFFLINE = Path(__file__).resolve().parent.parent / "data" / "offline"

# --------------------------------------------------------------------- entities

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A card holder.",
)
merchant = Entity(
    name="merchant",
    join_keys=["merchant_id"],
    value_type=ValueType.INT64,
    description="A merchant accepting card payments.",
)

# ---------------------------------------------------------------------- sources

user_profile_source = FileSource(
    name="user_profile_source",
    path=str(OFFLINE / "user_profile.parquet"),
    timestamp_field="event_timestamp",
    description="Static user attributes, stamped at sign-up.",
)
merchant_profile_source = FileSource(
    name="merchant_profile_source",
    path=str(OFFLINE / "merchant_profile.parquet"),
    timestamp_field="event_timestamp",
    description="Static merchant attributes, stamped when the merchant opened.",
)
user_transactions_source = FileSource(
    name="user_transactions_source",
    path=str(OFFLINE / "user_transaction_features.parquet"),
    timestamp_field="event_timestamp",
    description="User aggregates over [t - w, t] at each of the user's transaction times t.",
)
merchant_risk_source = FileSource(
    name="merchant_risk_source",
    path=str(OFFLINE / "merchant_risk_features.parquet"),
    timestamp_field="event_timestamp",
    description="Daily merchant snapshots over [D - 30 d, D) using chargebacks arrived by D.",
)

# ------------------------------------------------------------------ feature views

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=None,  # static attributes never expire
    schema=[
        Field(
            name="home_country", dtype=String, description="ISO country code of the card holder."
        ),
        Field(name="card_type", dtype=String, description="debit, credit or prepaid."),
        Field(name="credit_limit", dtype=Float64, description="Credit limit in EUR."),
    ],
    source=user_profile_source,
)

merchant_profile = FeatureView(
    name="merchant_profile",
    entities=[merchant],
    ttl=None,
    schema=[
        Field(name="category", dtype=String, description="Merchant category."),
        Field(name="country", dtype=String, description="ISO country code of the merchant."),
    ],
    source=merchant_profile_source,
)

user_txn_1h = FeatureView(
    name="user_txn_1h",
    entities=[user],
    ttl=timedelta(hours=1),
    schema=[Field(name="txn_count_1h", dtype=Int64, description="Transactions in the last hour.")],
    source=user_transactions_source,
)

user_txn_24h = FeatureView(
    name="user_txn_24h",
    entities=[user],
    ttl=timedelta(hours=24),
    schema=[Field(name="txn_count_24h", dtype=Int64, description="Transactions in the last 24 h.")],
    source=user_transactions_source,
)

user_txn_7d = FeatureView(
    name="user_txn_7d",
    entities=[user],
    ttl=timedelta(days=7),
    schema=[
        Field(name="txn_count_7d", dtype=Int64, description="Transactions in the last 7 days."),
        Field(name="amount_mean_7d", dtype=Float64, description="Mean amount over 7 days."),
        Field(
            name="amount_std_7d",
            dtype=Float64,
            description="Sample standard deviation of amounts over 7 days (null below 2).",
        ),
        Field(
            name="distinct_merchants_7d",
            dtype=Int64,
            description="Distinct merchants over 7 days.",
        ),
    ],
    source=user_transactions_source,
)

merchant_risk_30d = FeatureView(
    name="merchant_risk_30d",
    entities=[merchant],
    # Daily snapshots: two days of grace, then a missing snapshot reads as missing.
    ttl=timedelta(days=2),
    schema=[
        Field(name="merchant_txn_count_30d", dtype=Int64, description="Transactions, 30 days."),
        Field(
            name="merchant_chargeback_count_30d",
            dtype=Int64,
            description="Of those, chargebacks that had arrived by the snapshot.",
        ),
        Field(
            name="merchant_fraud_rate_30d",
            dtype=Float64,
            description="Chargebacks over transactions (null without transactions).",
        ),
    ],
    source=merchant_risk_source,
)

# ------------------------------------------------------------- on-demand features

transaction = RequestSource(
    name="transaction",
    schema=[
        Field(name="amount", dtype=Float64, description="Amount of the transaction being scored."),
        Field(name="hour_of_day", dtype=Int64, description="Hour (0-23, UTC) of the transaction."),
    ],
)


@on_demand_feature_view(
    sources=[user_txn_7d, transaction],
    schema=[
        Field(name="amount_to_mean_7d", dtype=Float64),
        Field(name="amount_zscore_7d", dtype=Float64),
        Field(name="is_night", dtype=Int64),
    ],
    mode="python",
    description="This transaction against the user's recent habits.",
)
def transaction_context(inputs: dict) -> dict:  # type: ignore[type-arg]
    # Self-contained on purpose: Feast stores this function's source in the
    # registry and re-creates it from there, on the training and serving path
    # alike, so it may use nothing defined outside its own body.
    ratio, zscore, night = [], [], []
    for amount, mean, std, hour in zip(
        inputs["amount"],
        inputs["amount_mean_7d"],
        inputs["amount_std_7d"],
        inputs["hour_of_day"],
        strict=True,
    ):
        ratio.append(amount / mean if amount is not None and mean else None)
        zscore.append(
            (amount - mean) / std if amount is not None and mean is not None and std else None
        )
        night.append(None if hour is None else int(0 <= hour < 6))
    return {"amount_to_mean_7d": ratio, "amount_zscore_7d": zscore, "is_night": night}


# ------------------------------------------------------------------ feature service

fraud_model_v1 = FeatureService(
    name="fraud_model_v1",
    features=[
        user_profile,
        merchant_profile,
        user_txn_1h,
        user_txn_24h,
        user_txn_7d,
        merchant_risk_30d,
        transaction_context,
    ],
    description="Everything the card-fraud model reads, online and offline.",
)
