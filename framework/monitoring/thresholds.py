"""The alert thresholds of ``parity monitor`` and their ``NAME=VALUE`` settings."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from framework.errors import ConfigError
from framework.monitoring import drift


@dataclass(frozen=True)
class Thresholds:
    """Alert thresholds of ``parity monitor``; the drift ones are :class:`DriftThresholds`.

    Defaults: confidence drop 0.05 (mean confidence below the holdout's),
    p99 latency 0.25 s, FALLBACK rate 5 %, REVIEW rate 30 %, failed requests
    1 % by the server's fault (``INTERNAL``, ``UNAVAILABLE``, ...) and 5 % by the
    clients' (``INVALID_ARGUMENT``, ``NOT_FOUND``, ...), a feature's
    missing-or-stale rate 10 points above its training null rate, live
    ROC-AUC 0.05 below the holdout's (with at least ``min_labels`` outcomes
    of both classes), any skew mismatch. A drifted feature the model ignores — its mean
    absolute SHAP attribution on the window (else, clearly, its permutation importance
    at training) below ``ignored_importance_share`` (1 %) of the largest feature's — is
    reported but raises no ``feature_drift`` alert.
    A feature whose served values are older than its training 99th percentile in more
    than ``older_than_training_share`` (10 %, ten times the 1 % training had by
    definition) of the rows raises ``stale_features`` (:mod:`framework.monitoring.freshness`).
    """

    drift: drift.DriftThresholds = field(default_factory=drift.DriftThresholds)
    confidence_drop: float = 0.05
    latency_p99_seconds: float = 0.25
    fallback_rate: float = 0.05
    review_rate: float = 0.30
    server_error_rate: float = 0.01
    client_error_rate: float = 0.05
    missing_rate_increase: float = 0.10
    quality_drop: float = 0.05
    min_labels: int = 200
    skew_mismatch_rate: float = 0.0
    ignored_importance_share: float = 0.01
    older_than_training_share: float = 0.10

    @property
    def min_rows(self) -> int:
        return self.drift.min_rows

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("drift"))
        return out


def parse_thresholds(items: Sequence[str], base: Thresholds | None = None) -> Thresholds:
    """``NAME=VALUE`` settings (drift or alert thresholds) applied to ``base``."""
    base = base or Thresholds()
    drift_names = {f.name for f in fields(drift.DriftThresholds)}
    own = {f.name for f in fields(Thresholds)} - {"drift"}
    drift_changes: dict[str, Any] = {}
    changes: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep:
            raise ConfigError(f"--threshold: expected NAME=VALUE, got {item!r}.")
        if name not in drift_names | own:
            known = ", ".join(sorted(drift_names | own))
            raise ConfigError(f"--threshold: unknown threshold {name!r} (known: {known}).")
        try:
            value: float = float(text)
        except ValueError:
            raise ConfigError(f"--threshold {name}: must be a number, got {text!r}.") from None
        if name in ("min_rows", "min_labels"):
            if value != int(value):
                raise ConfigError(f"--threshold {name}: must be a whole number, got {text!r}.")
            value = int(value)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"--threshold {name}: must be a non-negative number, got {text!r}.")
        (drift_changes if name in drift_names else changes)[name] = value
    return replace(base, drift=replace(base.drift, **drift_changes), **changes)
