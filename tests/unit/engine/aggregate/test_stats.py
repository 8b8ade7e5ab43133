"""Score statistics (population variance, NaNs counted apart) and bootstrap confidence intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

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


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).random(20_000),  # continuous: index resampling
        (np.random.default_rng(2).random(20_000) < 0.3).astype(float),  # 0/1 scores: multinomial draws
        np.random.default_rng(3).integers(1, 11, 20_000).astype(float),  # ratings 1-10
    ],
)
def test_bootstrap_interval_matches_the_normal_approximation(values: np.ndarray) -> None:
    low, high = bootstrap_ci(list(values), confidence=0.95, resamples=1000, seed=0)
    assert low is not None and high is not None
    mean = float(values.mean())
    half = 1.96 * float(values.std()) / math.sqrt(values.size)
    assert low < mean < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)


def test_bootstrap_is_deterministic_per_seed_and_skips_missing_values() -> None:
    values = [float(v) for v in np.random.default_rng(5).random(3000)] + [None]
    assert bootstrap_ci(values, seed=4) == bootstrap_ci(values, seed=4)
    assert bootstrap_ci(values, seed=4) != bootstrap_ci(values, seed=5)
    assert bootstrap_ci([None]) == (None, None)
    assert bootstrap_ci([2.0, 2.0]) == (2.0, 2.0)


def test_bootstrap_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], confidence=1.5)
