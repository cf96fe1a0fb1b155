"""Drift statistics: known answers computed by hand, agreement with scipy on raw samples,
no false alarms between samples of one distribution, and the shifts they must catch."""

from __future__ import annotations

import math

import numpy as np
import pytest

from framework.errors import ConfigError, DataError
from framework.models.reference_stats import categorical_profile, numeric_profile
from framework.monitoring import drift
from framework.monitoring.drift import EPSILON, DriftThresholds

# ------------------------------------------------------------------ known answers


def test_psi_known_answer() -> None:
    # shares 0.5/0.5 -> 0.25/0.75: (0.25-0.5)ln(0.25/0.5) + (0.75-0.5)ln(0.75/0.5)
    expected = -0.25 * math.log(0.5) + 0.25 * math.log(1.5)
    assert drift.psi([50, 50], [25, 75]) == pytest.approx(expected)
    assert round(expected, 4) == 0.2747
    assert drift.psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)  # shares equal


def test_psi_replaces_an_empty_bin_by_one_fixed_epsilon() -> None:
    # reference 100/0, current 50/50: the empty reference bin counts as EPSILON.
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - EPSILON) * math.log(0.5 / EPSILON)
    assert drift.psi([100, 0], [50, 50]) == pytest.approx(expected)
    # empty on both sides contributes nothing
    assert drift.psi([50, 50, 0], [25, 75, 0]) == pytest.approx(drift.psi([50, 50], [25, 75]))


def test_psi_bad_input_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="same bins"):
        drift.psi([1, 2], [1, 2, 3])
    with pytest.raises(DataError, match="at least one counted value"):
        drift.psi([0, 0], [1, 2])


def test_ks_known_answer() -> None:
    # [1,2,3,4] vs [3,4,5,6]: the empirical CDFs differ by at most 0.5 (at 2 and at 4).
    assert drift.ks_samples(np.array([1, 2, 3, 4.0]), np.array([3, 4, 5, 6.0])).statistic == 0.5
    # The binned version on edges 2 and 4 sees the same gap.
    ref = [2, 2, 0]  # (-inf, 2], (2, 4], (4, inf)
    cur = [0, 2, 2]
    assert drift.ks_binned(ref, cur).statistic == 0.5


def test_ks_binned_equals_scipy_when_the_edges_hold_every_value() -> None:
    from scipy import stats

    rng = np.random.default_rng(3)
    a = rng.integers(0, 20, 3_000).astype(float)
    b = rng.integers(2, 22, 2_000).astype(float)
    edges = np.arange(0, 22, dtype=float)  # every value is an edge: the CDFs are exact
    from framework.models.reference_stats import bin_counts

    binned = drift.ks_binned(bin_counts(a, edges), bin_counts(b, edges))
    full = stats.ks_2samp(a, b, method="asymp")
    assert binned.statistic == pytest.approx(full.statistic)
    assert binned.p_value == pytest.approx(full.pvalue, rel=0.05)


def test_chi_square_known_answer() -> None:
    # [[10, 20], [20, 10]]: every expected count is 15, chi2 = 4 * 5^2 / 15 = 6.667, 1 dof.
    result = drift.chi_square([10, 20], [20, 10])
    assert result.statistic == pytest.approx(20 / 3)
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(20 / 3 / 2)))  # chi2(1) tail
    assert drift.chi_square([5, 0], [7, 0]) == drift.TestResult(0.0, 1.0)  # one bin: no test


def test_js_distance_known_answers() -> None:
    assert drift.js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert drift.js_distance([3, 1], [6, 2]) == pytest.approx(0.0, abs=1e-7)
    # p=(1,0), q=(1/2,1/2): m=(3/4,1/4); JS = 1/2 KL(p|m) + 1/2 KL(q|m) in bits
    js = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5 * math.log2(2))
    assert drift.js_distance([2, 0], [1, 1]) == pytest.approx(math.sqrt(js))


def test_open_ended_bins_catch_values_outside_the_training_range() -> None:
    profile = numeric_profile(np.linspace(0, 1, 1_000))
    result = drift.feature_drift("x", profile, np.full(1_000, 5.0))  # all above the max
    assert result.current_share[-1] == 1.0  # the last, open-ended bin
    assert result.status == drift.DRIFT


# ------------------------------------------------------------------ thresholds


def test_thresholds_validate_their_fields() -> None:
    with pytest.raises(ConfigError, match="'psi_drift' must be a finite non-negative"):
        DriftThresholds(psi_drift=-1)
    with pytest.raises(ConfigError, match="'psi_warn' must not exceed 'psi_drift'"):
        DriftThresholds(psi_warn=0.5, psi_drift=0.2)
    with pytest.raises(ConfigError, match="'p_value' must be at most 1"):
        DriftThresholds(p_value=2)


def test_too_few_rows_give_no_verdict() -> None:
    rng = np.random.default_rng(0)
    profile = numeric_profile(rng.normal(size=5_000))
    result = drift.feature_drift("x", profile, rng.normal(5, 1, size=100))  # shifted, but few
    assert result.status == drift.INSUFFICIENT and result.psi is None
    assert "min_rows 500" in result.reasons[0]
    verdict = drift.dataset_verdict([result])
    assert verdict.status == drift.INSUFFICIENT and verdict.drift_share is None


# ------------------------------------------------------------------ no false alarms


def _mixed_sample(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Features shaped like the sample's: skewed amounts, counts, a 0/1 flag, categories,
    some nulls."""
    amount = rng.lognormal(3.5, 1.0, n)
    amount[rng.random(n) < 0.05] = np.nan
    return {
        "amount": amount,
        "count": rng.poisson(3, n).astype(float),
        "flag": (rng.random(n) < 0.2).astype(float),
        "normal": rng.normal(0, 1, n),
        "category": rng.choice(
            ["grocery", "travel", "online", "fuel", "dining", "rare"],
            p=[0.4, 0.2, 0.2, 0.1, 0.098, 0.002],
            size=n,
        ).astype(object),
    }


def _profiles(sample: dict[str, np.ndarray]) -> dict[str, dict[str, object]]:
    return {
        k: categorical_profile(v) if v.dtype == object else numeric_profile(v)
        for k, v in sample.items()
    }


@pytest.mark.parametrize("current_rows", [500, 5_000])
def test_no_drift_between_samples_of_one_distribution(current_rows: int) -> None:
    """Over many seeds, nothing is flagged as drift at the default thresholds."""
    seeds = range(60)
    warned = 0
    for seed in seeds:
        rng = np.random.default_rng(seed)
        profiles = _profiles(_mixed_sample(rng, 10_000))
        current = _mixed_sample(rng, current_rows)
        results = [drift.feature_drift(k, profiles[k], current[k]) for k in current]
        flagged = [(r.feature, r.reasons) for r in results if r.drifted]
        assert not flagged, f"seed {seed}: {flagged}"
        assert drift.dataset_verdict(results).status == "no_drift"
        warned += sum(r.status == drift.WARN for r in results)
    # Warnings are the tests' false-positive rate at p < 0.05 and rare new categories:
    # they happen, but for a small share of the 5 x 60 checks.
    assert warned < 0.15 * 5 * len(seeds)


# ------------------------------------------------------------------ shifts caught


def test_inflated_amounts_drift_and_others_do_not() -> None:
    rng = np.random.default_rng(1)
    profiles = _profiles(_mixed_sample(rng, 10_000))
    current = _mixed_sample(rng, 3_000)
    current["amount"] = current["amount"] * 1.6
    results = {k: drift.feature_drift(k, profiles[k], current[k]) for k in current}
    assert results["amount"].status == drift.DRIFT
    assert results["amount"].psi is not None and results["amount"].psi >= 0.1
    assert [k for k, r in results.items() if r.drifted] == ["amount"]


def test_a_new_category_is_detected_and_drifts() -> None:
    rng = np.random.default_rng(2)
    profiles = _profiles(_mixed_sample(rng, 10_000))
    current = _mixed_sample(rng, 3_000)
    current["category"][:240] = "crypto_exchange"  # 8 % of the traffic
    result = drift.feature_drift("category", profiles["category"], current["category"])
    assert result.new_categories == {"crypto_exchange": 240}
    assert result.new_category_share == pytest.approx(0.08)
    assert result.status == drift.DRIFT
    assert any("new categories crypto_exchange" in r for r in result.reasons)


def test_a_feature_going_missing_online_drifts() -> None:
    rng = np.random.default_rng(4)
    profile = numeric_profile(rng.normal(size=5_000))
    values = rng.normal(size=2_000)
    values[:1_000] = np.nan  # half the live values missing
    result = drift.feature_drift("x", profile, values)
    assert result.current_null_rate == pytest.approx(0.5)
    assert result.status == drift.DRIFT
    assert result.reasons[0] == "null rate 0.0% -> 50.0%"
    assert result.psi is not None and result.psi < 0.1  # the values present did not move


def test_categories_beyond_the_reference_top_list_are_not_called_new() -> None:
    profile = {"kind": "categorical", "count": 1_000, "null_rate": 0.0,
               "categories": {"a": 600, "b": 300}, "other_count": 100}  # fmt: skip
    result = drift.categorical_drift("c", profile, {"a": 600, "b": 300, "zz": 100})
    assert result.new_categories == {}
    assert result.bins == ["a", "b", "(other)"]
    assert result.status == drift.OK


def test_dataset_verdict_counts_the_share_of_drifted_features() -> None:
    rng = np.random.default_rng(5)
    profiles = _profiles(_mixed_sample(rng, 10_000))
    current = _mixed_sample(rng, 3_000)
    for k in ("amount", "count", "normal"):
        current[k] = current[k] * 3 + 5
    results = [drift.feature_drift(k, profiles[k], current[k]) for k in current]
    verdict = drift.dataset_verdict(results)
    assert sorted(verdict.drifted_features) == ["amount", "count", "normal"]
    assert verdict.drift_share == pytest.approx(3 / 5)
    assert verdict.status == "drift"
    assert drift.dataset_verdict(results, DriftThresholds(dataset_drift_share=0.8)).status == (
        "no_drift"
    )
