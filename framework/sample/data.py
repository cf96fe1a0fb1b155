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
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from framework.errors import ConfigError
from framework.progress import Progress
from framework.sample.scenario import (
    CARD_TYPES,
    CATEGORIES,
    CHANNELS,
    COUNTRIES,
    GENERATOR_VERSION,
    NEW_CATEGORY,
    GenerationConfig,
)
from framework.sample.transactions import chunk_transactions
from framework.sample.world import Merchants, Users, make_merchants, make_users

__all__ = [
    "LABELS_SCHEMA",
    "MERCHANTS_SCHEMA",
    "TRANSACTIONS_SCHEMA",
    "USERS_SCHEMA",
    "GenerationSummary",
    "drift_names",
    "generate",
    "parse_scale",
]

#: Target number of transactions per chunk: bounds memory whatever the scale.
CHUNK_TRANSACTIONS = 250_000
#: The task :func:`generate` reports its chunks under.
TASK = "raw sample"


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


def _user_slices(cfg: GenerationConfig) -> Iterator[slice]:
    per_chunk = max(1, math.ceil(cfg.n_users * CHUNK_TRANSACTIONS / cfg.transactions))
    for lo in range(0, cfg.n_users, per_chunk):
        yield slice(lo, min(lo + per_chunk, cfg.n_users))


# ------------------------------------------------------------------- writing


def generate(
    cfg: GenerationConfig, out: Path, progress: Progress | None = None
) -> GenerationSummary:
    """Write the raw sample under ``out/raw/`` and return what was written.

    ``progress`` hears of each chunk of users whose transactions are written (task
    ``raw sample``, unit ``chunks``), with the transactions so far.

    Examples
    --------
    >>> from pathlib import Path; import tempfile
    >>> s = generate(GenerationConfig(seed=1, transactions=2000), Path(tempfile.mkdtemp()))
    >>> 0.01 <= s.fraud_rate <= 0.03
    True
    """
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    users, merchants = make_users(cfg), make_merchants(cfg)
    files = {
        "users": raw / "users.parquet",
        "merchants": raw / "merchants.parquet",
        "transactions": raw / "transactions.parquet",
        "labels": raw / "labels.parquet",
    }
    _write_world(users, merchants, files)
    # Files are written to temporary names and renamed at the end, so a killed
    # run never leaves a half-written file under the final name.
    tmp = {
        k: p.with_suffix(".parquet.tmp")
        for k, p in files.items()
        if k in ("transactions", "labels")
    }
    n_tx, n_fraud = _write_transactions(cfg, users, merchants, tmp, progress or Progress())
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


def _write_world(users: Users, merchants: Merchants, files: dict[str, Path]) -> None:
    """``users.parquet`` and ``merchants.parquet``."""
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


def _write_transactions(
    cfg: GenerationConfig,
    users: Users,
    merchants: Merchants,
    tmp: dict[str, Path],
    progress: Progress,
) -> tuple[int, int]:
    """Every chunk's transactions and labels, a row group each; (transactions, frauds)."""
    n_tx = n_fraud = 0
    slices = list(_user_slices(cfg))
    progress.start(TASK, len(slices), "chunks", "generating")
    with (
        pq.ParquetWriter(tmp["transactions"], TRANSACTIONS_SCHEMA) as tx_writer,
        pq.ParquetWriter(tmp["labels"], LABELS_SCHEMA) as label_writer,
    ):
        for index, users_slice in enumerate(slices):
            c = chunk_transactions(cfg, index, users_slice, users, merchants)
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
            progress.advance(TASK, 1, f"{n_tx:,} transactions")
    progress.finish(TASK)
    return n_tx, n_fraud


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
