"""Score statistics (population variance, NaNs counted apart) and bootstrap confidence intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from evalstack.engine.aggregate.stats import bootstrap_ci, score_stats


def test_stats_of_hand_worked_values() -> None:
    stats = score_stats([1.0, 2.0, 3.0, 4.0])
    assert stats["count"] == 4
    assert stats["sum"] == 10.0
    assert stats["sum_squared"] == 30.0
    assert (stats["min"], stats["max"], stats["mean"]) == (1.0, 4.0, 2.5)
    assert stats["variance"] == pytest.approx(1.25)  # population: ((1.5² + 0.5²) * 2) / 4
    assert stats["stddev"] == pytest.approx(math.sqrt(1.25))
    assert stats["stderr"] == pytest.approx(math.sqrt(1.25) / 2)
    assert stats["nan_count"] == 0


def test_none_and_nan_are_counted_and_left_out() -> None:
    stats = score_stats([1.0, None, float("nan"), 0.0, True])
    assert stats["nan_count"] == 2
    assert stats["count"] == 3
    assert stats["mean"] == pytest.approx(2 / 3)


def test_no_numbers_gives_zero_count_and_no_nan_in_the_output() -> None:
    stats = score_stats([None, None])
    assert stats["count"] == 0 and stats["nan_count"] == 2
    assert stats["mean"] is None and stats["stddev"] is None
    assert score_stats([])["count"] == 0


def test_single_value_has_zero_spread() -> None:
    stats = score_stats([7.0])
    assert stats["variance"] == 0.0 and stats["stderr"] == 0.0


@pytest.mark.parametrize("confidence", [0.95, 0.90])
@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).random(5_000),  # continuous: index resampling
        (np.random.default_rng(2).random(5_000) < 0.3).astype(float),  # 0/1 scores: multinomial draws
        np.random.default_rng(3).integers(1, 11, 5_000).astype(float),  # ratings 1-10
    ],
)
def test_bootstrap_interval_matches_the_normal_approximation(values: np.ndarray, confidence: float) -> None:
    # With 5,000 values the bootstrap distribution of the mean is normal; with 10,000 resamples the
    # interval's half-width is within about 2% of the normal one, while a 90% interval is 16% narrower
    # than a 95% one, so the wrong confidence level cannot pass.
    low, high = bootstrap_ci(list(values), confidence=confidence, resamples=10_000, seed=0)
    assert low is not None and high is not None
    mean = float(values.mean())
    half = stats.norm.ppf(0.5 + confidence / 2) * float(values.std()) / math.sqrt(values.size)
    assert (high - low) / 2 == pytest.approx(half, rel=0.05)
    assert (low + high) / 2 == pytest.approx(mean, abs=0.1 * half)


def test_bootstrap_interval_matches_scipy_on_a_small_skewed_sample() -> None:
    values = np.random.default_rng(7).exponential(size=60)
    low, high = bootstrap_ci(list(values), confidence=0.95, resamples=20_000, seed=1)
    reference = stats.bootstrap(
        (values,), np.mean, confidence_level=0.95, n_resamples=20_000, method="percentile", random_state=1
    ).confidence_interval
    width = reference.high - reference.low
    assert low == pytest.approx(reference.low, abs=0.03 * width)
    assert high == pytest.approx(reference.high, abs=0.03 * width)


def test_bootstrap_is_deterministic_per_seed_and_skips_missing_values() -> None:
    values = [float(v) for v in np.random.default_rng(5).random(3000)] + [None]
    assert bootstrap_ci(values, seed=4) == bootstrap_ci(values, seed=4)
    assert bootstrap_ci(values, seed=4) != bootstrap_ci(values, seed=5)
    assert bootstrap_ci([None]) == (None, None)
    assert bootstrap_ci([2.0, 2.0]) == (2.0, 2.0)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.5])
def test_bootstrap_rejects_a_confidence_outside_0_1(confidence: float) -> None:
    with pytest.raises(ValueError, match=f"confidence must be between 0 and 1, got {confidence}"):
        bootstrap_ci([1.0, 2.0], confidence=confidence)


def test_bootstrap_needs_at_least_one_resample() -> None:
    with pytest.raises(ValueError, match="resamples must be at least 1, got 0"):
        bootstrap_ci([1.0, 2.0], resamples=0)
    low, high = bootstrap_ci([1.0, 2.0], resamples=1)
    assert low == high and low in (1.0, 1.5, 2.0)


def test_no_numbers_gives_exactly_the_empty_statistics() -> None:
    assert score_stats([None, float("nan")]) == {
        "count": 0,
        "sum": 0.0,
        "sum_squared": 0.0,
        "min": None,
        "max": None,
        "mean": None,
        "variance": None,
        "stddev": None,
        "stderr": None,
        "nan_count": 2,
    }


def test_booleans_count_as_0_and_1() -> None:
    stats = score_stats([True, True, False])
    assert (stats["sum"], stats["sum_squared"], stats["mean"]) == (2.0, 2.0, pytest.approx(2 / 3))
    assert isinstance(stats["sum_squared"], float)


@pytest.mark.parametrize("resamples", [50, 5_000])  # one chunk of resamples, and many chunks
def test_every_resampled_mean_is_a_mean_of_the_values(resamples: int) -> None:
    # 2,000 distinct values in [10, 11]: the index-resampling path. At a confidence of nearly 1 the
    # interval reaches the smallest and largest resampled means, which must lie within [10, 11].
    values = list(10.0 + np.random.default_rng(8).random(2_000))
    low, high = bootstrap_ci(values, confidence=0.9999, resamples=resamples, seed=3)
    assert low is not None and high is not None
    assert 10.0 < low < float(np.mean(values)) < high < 11.0


@pytest.mark.parametrize("outlier_first", [True, False])
def test_every_value_can_be_drawn_including_the_first_and_last(outlier_first: bool) -> None:
    # One huge value among 600 small distinct ones: each resample holds it about Poisson(1) times,
    # so the upper bound is about 3 x 1e6 / 601 (scipy agrees); a resampler that never draws the
    # first (or last) value would put it near 0.3.
    small = [i * 1e-3 for i in range(600)]
    values = np.array([1e6, *small] if outlier_first else [*small, 1e6])
    low, high = bootstrap_ci(list(values), confidence=0.95, resamples=4_000, seed=2)
    reference = stats.bootstrap(
        (values,), np.mean, confidence_level=0.95, n_resamples=4_000, method="percentile", random_state=2
    ).confidence_interval
    assert high == pytest.approx(reference.high, rel=0.05)
    assert high > 4_000
    assert low == pytest.approx(reference.low, rel=0.05)


def test_bootstrap_of_few_levels_is_deterministic_per_seed() -> None:
    values = [float(v) for v in np.random.default_rng(6).integers(1, 11, 300)]  # ratings: multinomial draws
    intervals = [bootstrap_ci(values, resamples=200, seed=seed) for seed in range(8)]
    assert intervals == [bootstrap_ci(values, resamples=200, seed=seed) for seed in range(8)]
    assert len(set(intervals)) > 4  # and the seed matters
