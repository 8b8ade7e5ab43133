"""Paired statistics for comparing two runs on the same items: pure functions on numpy arrays.

Every function takes the per-item scores of the baseline and the candidate in the same order
(item ``i`` of one is item ``i`` of the other) and works on the differences ``d = candidate -
baseline``:

- :func:`paired_difference`: mean difference, its standard error and a t-based confidence interval
  (the interval ``scipy.stats.ttest_rel(...).confidence_interval()`` gives), or, with a cluster per
  item, a cluster-robust standard error (CR1: ``G/(G-1)`` times the sum of squared cluster sums of
  the centred differences, over ``n**2``) with ``G - 1`` degrees of freedom.
- :func:`bootstrap_interval`: percentile bootstrap of the mean difference, resampling pairs (or
  whole clusters), vectorised and deterministic for a seed.
- :func:`mcnemar_exact_p`: McNemar's exact two-sided test for 0/1 scores (a binomial test of ``n10``
  among ``n10 + n01`` discordant pairs at p = 0.5).
- :func:`sign_flip_p`: a two-sided sign-flip permutation test of the mean difference for continuous
  scores, exact up to :data:`EXACT_SIGN_FLIP_MAX_N` non-zero differences, Monte Carlo beyond.
- :func:`minimum_detectable_effect`: the smallest true difference a two-sided test at level alpha
  detects with the given power, in the metric's own units.
- :func:`holm_adjust`: Holm's step-down adjustment of a family of p-values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from evalstack.engine.aggregate.stats import bootstrap_ci

if TYPE_CHECKING:
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]
    LabelArray = npt.NDArray[np.int64]

EXACT_SIGN_FLIP_MAX_N = 16
"""Up to this many non-zero differences the sign-flip test enumerates all ``2**n`` sign patterns."""

_SIGN_FLIP_CHUNK = 2_000_000  # draws per chunk in the Monte Carlo test and the bootstrap (bounded memory)
# engine.aggregate.stats.bootstrap_ci draws multinomial counts per distinct value (exact, fast for 0/1-like
# differences) up to this many values, and resamples indices beyond; between, when the values are
# nearly as many as the pairs, resampling indices here is cheaper than per-value binomials.
_MANY_LEVELS = 512
_FEW_LEVELS_PER_PAIR = 16


@dataclass(frozen=True)
class PairedDifference:
    """Mean scores of both runs and the paired difference with its standard error and interval."""

    n: int
    baseline_mean: float
    candidate_mean: float
    delta: float
    se: float
    ci_low: float
    ci_high: float
    df: int
    clustered: bool
    clusters: int


def _check_pairs(baseline: FloatArray, candidate: FloatArray) -> FloatArray:
    if baseline.shape != candidate.shape or baseline.ndim != 1:
        raise ValueError(
            f"baseline and candidate must be 1-d arrays of the same length, got {baseline.shape} "
            f"and {candidate.shape}"
        )
    if baseline.size < 2:
        raise ValueError(f"a paired comparison needs at least 2 pairs, got {baseline.size}")
    return np.asarray(candidate, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)


def t_quantile(probability: float, df: int) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.special import stdtrit  # imported on use: scipy is heavy and only statistics need it

    return float(stdtrit(df, probability))


def cluster_labels(values: list[str]) -> LabelArray:
    """Integer labels ``0..G-1`` for per-item cluster names."""
    _, labels = np.unique(np.array(values, dtype=object).astype(str), return_inverse=True)
    return labels.astype(np.int64)


def _cluster_se(d: FloatArray, labels: LabelArray) -> tuple[float, int]:
    """CR1 cluster-robust standard error of the mean of ``d`` and the number of clusters."""
    groups = int(labels.max()) + 1 if labels.size else 0
    sums = np.bincount(labels, weights=d - d.mean(), minlength=groups)
    present = int(np.count_nonzero(np.bincount(labels, minlength=groups)))
    if present < 2:
        return math.nan, present
    variance = present / (present - 1) * float(np.dot(sums, sums)) / d.size**2
    return math.sqrt(variance), present


def paired_difference(
    baseline: FloatArray,
    candidate: FloatArray,
    clusters: LabelArray | None = None,
    confidence: float = 0.95,
) -> PairedDifference:
    """Δ = mean(candidate - baseline), its standard error and a t-based ``confidence`` interval.

    Without ``clusters`` (or with fewer than two distinct ones) the standard error is
    ``std(d, ddof=1) / sqrt(n)`` on ``n - 1`` degrees of freedom, as in ``scipy.stats.ttest_rel``.
    With them it is the CR1 cluster-robust standard error on ``G - 1`` degrees of freedom.
    """
    d = _check_pairs(baseline, candidate)
    n = int(d.size)
    delta = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n)
    df = n - 1
    clustered = False
    groups = 0
    if clusters is not None:
        if clusters.shape != d.shape:
            raise ValueError(f"clusters must have one label per pair, got {clusters.shape} for {d.shape}")
        cluster_se, groups = _cluster_se(d, clusters)
        if groups >= 2:
            se, df, clustered = cluster_se, groups - 1, True
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    return PairedDifference(
        n=n,
        baseline_mean=float(np.mean(baseline)),
        candidate_mean=float(np.mean(candidate)),
        delta=delta,
        se=se,
        ci_low=delta - half,
        ci_high=delta + half,
        df=df,
        clustered=clustered,
        clusters=groups,
    )


def bootstrap_interval(
    baseline: FloatArray,
    candidate: FloatArray,
    clusters: LabelArray | None = None,
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean paired difference.

    Pairs are resampled with replacement; with ``clusters`` (two or more), whole clusters are, and
    each resample's mean is its total difference over its total number of pairs. Deterministic for
    a given ``seed``.
    """
    d = _check_pairs(baseline, candidate)
    alpha = (1.0 - confidence) / 2.0
    if clusters is None or np.unique(clusters).size < 2:
        levels = np.unique(d).size
        if _FEW_LEVELS_PER_PAIR * levels <= d.size or levels > _MANY_LEVELS:
            low, high = bootstrap_ci(d.tolist(), confidence=confidence, resamples=resamples, seed=seed)
            assert low is not None and high is not None  # d has at least two finite values
            return low, high
        # a few thousand pairs with mostly distinct differences: resampling indices is cheapest
        rng = np.random.default_rng(seed)
        per_chunk = max(1, _SIGN_FLIP_CHUNK // d.size)
        means = np.concatenate(
            [
                d[rng.integers(0, d.size, size=(min(per_chunk, resamples - start), d.size))].mean(axis=1)
                for start in range(0, resamples, per_chunk)
            ]
        )
        low, high = np.quantile(means, [alpha, 1.0 - alpha])
        return float(low), float(high)
    _, labels = np.unique(clusters, return_inverse=True)
    groups = int(labels.max()) + 1
    sums = np.bincount(labels, weights=d, minlength=groups)
    sizes = np.bincount(labels, minlength=groups).astype(np.float64)
    weights = np.random.default_rng(seed).multinomial(groups, np.full(groups, 1.0 / groups), size=resamples)
    means = (weights @ sums) / (weights @ sizes)
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def mcnemar_exact_p(n10: int, n01: int) -> float:
    """McNemar's exact two-sided p-value: ``n10`` successes in ``n10 + n01`` trials at p = 0.5."""
    if n10 < 0 or n01 < 0:
        raise ValueError(f"counts must be >= 0, got n10={n10}, n01={n01}")
    discordant = n10 + n01
    if discordant == 0:
        return 1.0
    from scipy.special import bdtr  # the binomial CDF, accurate far into the tail

    return min(1.0, 2.0 * float(bdtr(min(n10, n01), discordant, 0.5)))


def sign_flip_p(
    baseline: FloatArray, candidate: FloatArray, *, resamples: int = 10_000, seed: int = 0
) -> float:
    """Two-sided sign-flip permutation p-value of the mean paired difference.

    Under the null hypothesis each difference is as likely to have either sign. The statistic is
    ``|sum(d)|``; zero differences do not change it and are left out. Up to
    :data:`EXACT_SIGN_FLIP_MAX_N` non-zero differences all sign patterns are enumerated (exact);
    beyond, ``resamples`` random patterns are drawn (seeded) and ``p = (1 + hits) / (1 + resamples)``.
    """
    d = _check_pairs(baseline, candidate)
    d = d[d != 0.0]
    n = int(d.size)
    if n == 0:
        return 1.0
    observed = abs(float(d.sum()))
    threshold = observed - 1e-9 * max(1.0, observed)  # equal sums must count despite rounding
    if n <= EXACT_SIGN_FLIP_MAX_N:
        patterns = (np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n)) & 1
        sums = (2.0 * patterns - 1.0) @ d
        return float(np.count_nonzero(np.abs(sums) >= threshold)) / 2**n
    return (1 + _sign_flip_hits(d, threshold, resamples, seed)) / (1 + resamples)


def _sign_flip_hits(d: FloatArray, threshold: float, resamples: int, seed: int) -> int:
    """How many of ``resamples`` random sign patterns give ``|sum(sign * d)| >= threshold``.

    Each sign is one random bit, and ``sum(sign * d) = 2 * sum(d where the bit is 1) - sum(d)``.
    The differences go in groups of four: a table holds, for each group, the sum of ``d`` over each
    of the 16 bit patterns, so one resample is ``n / 4`` table lookups on random nibbles.
    """
    n = int(d.size)
    groups = (n + 3) // 4
    padded = np.zeros(groups * 4)
    padded[:n] = d
    patterns = ((np.arange(16)[:, None] >> np.arange(4)) & 1).astype(np.float64)  # bit k of each nibble
    table = (padded.reshape(groups, 4) @ patterns.T).ravel()  # group g, nibble v -> table[16 g + v]
    offsets = np.arange(groups, dtype=np.intp) * 16
    total = float(d.sum())
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _SIGN_FLIP_CHUNK // groups)
    row_bytes = (groups + 1) // 2
    hits = 0
    for start in range(0, resamples, per_chunk):
        size = min(per_chunk, resamples - start)
        raw = np.frombuffer(rng.bytes(size * row_bytes), dtype=np.uint8).reshape(size, row_bytes)
        nibbles = np.empty((size, row_bytes * 2), dtype=np.intp)
        nibbles[:, 0::2] = raw & 15
        nibbles[:, 1::2] = raw >> 4
        positions = nibbles[:, :groups] + offsets
        sums = 2.0 * np.take(table, positions).sum(axis=1) - total
        hits += int(np.count_nonzero(np.abs(sums) >= threshold))
    return hits


def minimum_detectable_effect(se: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest |Δ| a two-sided level-``alpha`` test detects with ``power``, given Δ's standard error.

    ``(z(1 - alpha/2) + z(power)) * se`` in the units of ``se`` (the metric's units); with
    ``alpha = 0.05`` and ``power = 0.8`` that is ``2.80 * se``.
    """
    normal = NormalDist()
    return (normal.inv_cdf(1.0 - alpha / 2.0) + normal.inv_cdf(power)) * se


def binary_null_se(n10: int, n01: int, n: int) -> float:
    """Standard error of Δ for 0/1 scores under no difference: ``sqrt(discordant rate / n)``."""
    return math.sqrt((n10 + n01) / n) / math.sqrt(n)


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (each at most 1, never decreasing in p)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
