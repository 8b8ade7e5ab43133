"""The paired statistics against scipy (the reference) and against cases worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from evalstack.analysis import paired


def _binary_pair(n: int, p_base: float, p_cand: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.random(n) < p_base).astype(float), (rng.random(n) < p_cand).astype(float)


@pytest.mark.parametrize(("n", "seed"), [(3, 1), (30, 2), (500, 3)])
def test_paired_ci_matches_scipy_ttest_rel(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    baseline = rng.normal(0.5, 0.2, n)
    candidate = baseline + rng.normal(0.03, 0.1, n)
    result = paired.paired_difference(baseline, candidate)
    reference = stats.ttest_rel(candidate, baseline)
    interval = reference.confidence_interval(0.95)
    assert result.delta == pytest.approx(float(np.mean(candidate - baseline)), rel=1e-12)
    assert result.se == pytest.approx(result.delta / reference.statistic, rel=1e-9)
    assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-9)
    assert result.df == n - 1 and not result.clustered


def test_paired_ci_on_binary_scores_matches_scipy() -> None:
    baseline, candidate = _binary_pair(200, 0.6, 0.7, seed=4)
    result = paired.paired_difference(baseline, candidate, confidence=0.9)
    interval = stats.ttest_rel(candidate, baseline).confidence_interval(0.9)
    assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-9)
    assert result.baseline_mean == pytest.approx(baseline.mean())
    assert result.candidate_mean == pytest.approx(candidate.mean())


def test_identical_runs_differ_by_nothing_with_p_one() -> None:
    scores = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    result = paired.paired_difference(scores, scores.copy())
    assert (result.delta, result.se, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0, 0.0)
    assert paired.mcnemar_exact_p(0, 0) == 1.0
    assert paired.sign_flip_p(scores, scores.copy()) == 1.0
    assert paired.bootstrap_interval(scores, scores.copy()) == (0.0, 0.0)


def test_tiny_n_worked_by_hand() -> None:
    # d = [1, 0, 1]: mean 2/3, sd = sqrt(1/3), se = 1/3, t(0.975, 2) = 4.302652729...
    baseline = np.array([0.0, 1.0, 0.0])
    candidate = np.array([1.0, 1.0, 1.0])
    result = paired.paired_difference(baseline, candidate)
    assert result.delta == pytest.approx(2 / 3)
    assert result.se == pytest.approx(1 / 3)
    assert result.ci_low == pytest.approx(2 / 3 - 4.302652729749464 / 3)
    assert result.ci_high == pytest.approx(2 / 3 + 4.302652729749464 / 3)
    # McNemar: n01 = 2, n10 = 0: two-sided exact p = 2 * 0.5**2 = 0.5
    assert paired.mcnemar_exact_p(0, 2) == pytest.approx(0.5)
    # Sign flips of [1, 1] (the zero drops out): |sum| >= 2 in 2 of 4 patterns
    assert paired.sign_flip_p(baseline, candidate) == pytest.approx(0.5)


def test_fewer_than_two_pairs_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired.paired_difference(np.array([1.0]), np.array([0.0]))
    with pytest.raises(ValueError, match="same length"):
        paired.paired_difference(np.array([1.0, 0.0]), np.array([0.0, 1.0, 1.0]))


@pytest.mark.parametrize(("n10", "n01"), [(0, 1), (3, 9), (10, 10), (40, 61), (0, 25), (700, 820)])
def test_mcnemar_exact_p_matches_scipy_binomtest(n10: int, n01: int) -> None:
    expected = stats.binomtest(n10, n10 + n01, 0.5, alternative="two-sided").pvalue
    assert paired.mcnemar_exact_p(n10, n01) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_sign_flip_p_is_exact_for_small_n_like_scipy() -> None:
    rng = np.random.default_rng(5)
    baseline = rng.random(12)
    candidate = baseline + rng.normal(0.15, 0.3, 12)
    reference = stats.permutation_test(
        (candidate - baseline,),
        np.mean,
        permutation_type="samples",
        n_resamples=np.inf,
        alternative="two-sided",
    )
    assert paired.sign_flip_p(baseline, candidate) == pytest.approx(reference.pvalue, rel=1e-12)


def test_sign_flip_p_monte_carlo_is_close_to_scipy_and_reproducible() -> None:
    rng = np.random.default_rng(6)
    baseline = rng.random(300)
    candidate = baseline + rng.normal(0.02, 0.25, 300)
    ours = paired.sign_flip_p(baseline, candidate, resamples=20_000, seed=1)
    assert paired.sign_flip_p(baseline, candidate, resamples=20_000, seed=1) == ours
    reference = stats.permutation_test(
        (candidate - baseline,),
        np.mean,
        permutation_type="samples",
        n_resamples=20_000,
        alternative="two-sided",
        rng=np.random.default_rng(2),
    ).pvalue
    assert 0.05 < reference < 0.95  # a case where Monte Carlo error is what matters
    assert ours == pytest.approx(reference, abs=0.02)


def test_bootstrap_interval_agrees_with_scipy_paired_bootstrap() -> None:
    rng = np.random.default_rng(7)
    baseline = rng.random(400)
    candidate = baseline + rng.normal(0.05, 0.2, 400)
    low, high = paired.bootstrap_interval(baseline, candidate, resamples=10_000, seed=3)
    assert paired.bootstrap_interval(baseline, candidate, resamples=10_000, seed=3) == (low, high)
    reference = stats.bootstrap(
        (baseline, candidate),
        lambda b, c, axis: np.mean(c - b, axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=10_000,
        method="percentile",
        rng=np.random.default_rng(8),
    ).confidence_interval
    width = reference.high - reference.low
    assert low == pytest.approx(reference.low, abs=0.03 * width)
    assert high == pytest.approx(reference.high, abs=0.03 * width)


def test_singleton_clusters_give_the_plain_paired_interval() -> None:
    rng = np.random.default_rng(9)
    baseline = rng.random(50)
    candidate = baseline + rng.normal(0.0, 0.1, 50)
    plain = paired.paired_difference(baseline, candidate)
    clustered = paired.paired_difference(baseline, candidate, np.arange(50))
    assert clustered.clustered and clustered.clusters == 50
    assert clustered.se == pytest.approx(plain.se, rel=1e-12)
    assert (clustered.ci_low, clustered.ci_high) == pytest.approx((plain.ci_low, plain.ci_high), rel=1e-12)


def test_clustered_se_worked_by_hand() -> None:
    # d = [1, 1 | 0, 0 | -1, 1]: mean 1/3; centred cluster sums 4/3, -2/3, -2/3;
    # V = 3/2 * (16/9 + 4/9 + 4/9) / 36 = 1/9, so se = 1/3 on 2 degrees of freedom.
    baseline = np.zeros(6)
    candidate = np.array([1.0, 1.0, 0.0, 0.0, -1.0, 1.0])
    result = paired.paired_difference(baseline, candidate, np.array([0, 0, 1, 1, 2, 2]))
    assert result.clustered and result.clusters == 3 and result.df == 2
    assert result.se == pytest.approx(1 / 3)
    assert result.ci_high - result.delta == pytest.approx(stats.t.ppf(0.975, 2) / 3)


def test_correlated_clusters_widen_the_interval() -> None:
    rng = np.random.default_rng(10)
    clusters = np.repeat(np.arange(20), 25)
    shift = rng.normal(0.0, 0.3, 20)[clusters]  # items of one cluster move together
    baseline = rng.random(500)
    candidate = baseline + shift + rng.normal(0.0, 0.05, 500)
    plain = paired.paired_difference(baseline, candidate)
    clustered = paired.paired_difference(baseline, candidate, clusters)
    assert clustered.se > 2 * plain.se
    low, high = paired.bootstrap_interval(baseline, candidate, clusters, seed=0)
    plain_low, plain_high = paired.bootstrap_interval(baseline, candidate, seed=0)
    assert high - low > 2 * (plain_high - plain_low)


def test_one_cluster_falls_back_to_the_plain_interval() -> None:
    baseline, candidate = _binary_pair(40, 0.5, 0.6, seed=11)
    result = paired.paired_difference(baseline, candidate, np.zeros(40, dtype=np.int64))
    assert not result.clustered
    assert result.se == pytest.approx(paired.paired_difference(baseline, candidate).se)


def test_minimum_detectable_effect_at_80_percent_power() -> None:
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)
    assert paired.minimum_detectable_effect(0.01) == pytest.approx(z * 0.01)
    # a two-sided 5% test on Δ with that standard error rejects with 80% probability (plus the
    # negligible chance of rejecting on the wrong side) when Δ equals the MDE
    mde = paired.minimum_detectable_effect(0.02)
    critical = stats.norm.ppf(0.975)
    right_side = stats.norm.sf(critical - mde / 0.02)
    wrong_side = stats.norm.cdf(-critical - mde / 0.02)
    assert right_side == pytest.approx(0.8, abs=1e-12)
    assert 0 < wrong_side < 1e-5


def test_binary_null_se_is_the_discordant_rate_over_n() -> None:
    # 1,000 pairs, 100 discordant: Var(d) under no difference = 0.1, se = sqrt(0.1 / 1000) = 0.01
    assert paired.binary_null_se(40, 60, 1000) == pytest.approx(0.01)


def test_holm_adjustment_worked_by_hand() -> None:
    # sorted: 0.01*4 = 0.04, 0.02*3 = 0.06, 0.03*2 = 0.06 (monotone), 0.5*1 = 0.5
    assert paired.holm_adjust([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert paired.holm_adjust([0.9, 0.8]) == pytest.approx([1.0, 1.0])
    assert paired.holm_adjust([]) == []


def test_holm_never_rejects_more_than_bonferroni_allows_and_keeps_order() -> None:
    rng = np.random.default_rng(12)
    p_values = list(rng.random(30) ** 3)
    adjusted = paired.holm_adjust(p_values)
    for raw, adj in zip(p_values, adjusted, strict=True):
        assert raw <= adj <= min(1.0, raw * 30)
    order = np.argsort(p_values)
    assert all(np.diff(np.array(adjusted)[order]) >= 0)
    assert not any(math.isnan(a) for a in adjusted)
