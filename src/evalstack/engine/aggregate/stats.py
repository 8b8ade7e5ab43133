"""Score statistics (NeMo Evaluator's ScoreStats) and bootstrap confidence intervals, with numpy.

``None`` and NaN values are not numbers: they are counted in ``nan_count`` and left out of
everything else. Variance and standard deviation are population statistics (divide by n);
``stderr`` is ``stddev / sqrt(n)``. With no numbers at all, ``count`` is 0, ``sum`` and
``sum_squared`` are 0.0 and the other statistics are ``None`` (JSON has no NaN).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy itself is imported when statistics are computed, not at start-up
    import numpy as np
    import numpy.typing as npt

ScoreStats = dict[str, float | int | None]

# Above this many distinct values the bootstrap resamples indices; below, it draws exact multinomial
# counts per distinct value, which is the same distribution at a fraction of the cost.
_MAX_LEVELS = 512
_CHUNK_ELEMENTS = 1_000_000  # indices drawn per chunk when resampling indices (4 MB, cache friendly)
_THREADS = min(4, os.cpu_count() or 1)


def finite_array(values: Sequence[float | None]) -> tuple[npt.NDArray[np.float64], int]:
    """The finite values as a float array, and how many values were None or NaN."""
    import numpy as np

    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    mask = np.isnan(array)
    return array[~mask], int(mask.sum())


def score_stats(values: Sequence[float | None]) -> ScoreStats:
    """``count, sum, sum_squared, min, max, mean, variance, stddev, stderr, nan_count`` of ``values``."""
    import numpy as np

    finite, nan_count = finite_array(values)
    n = int(finite.size)
    if n == 0:
        return {
            "count": 0,
            "sum": 0.0,
            "sum_squared": 0.0,
            "min": None,
            "max": None,
            "mean": None,
            "variance": None,
            "stddev": None,
            "stderr": None,
            "nan_count": nan_count,
        }
    total = float(finite.sum())
    mean = total / n
    variance = float(np.mean((finite - mean) ** 2))
    stddev = math.sqrt(variance)
    return {
        "count": n,
        "sum": total,
        "sum_squared": float(np.dot(finite, finite)),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "mean": mean,
        "variance": variance,
        "stddev": stddev,
        "stderr": stddev / math.sqrt(n),
        "nan_count": nan_count,
    }


def _resample_means(finite: npt.NDArray[np.float64], resamples: int, seed: int) -> npt.NDArray[np.float64]:
    """Means of ``resamples`` index resamples, in chunks spread over a few threads (numpy frees the GIL).

    Each chunk has its own generator spawned from ``seed``, so the result does not depend on scheduling.
    """
    import numpy as np

    n = int(finite.size)
    values = finite.astype(np.float32)  # half the memory traffic of the gather; sums stay float64
    per_chunk = max(1, _CHUNK_ELEMENTS // n)
    starts = list(range(0, resamples, per_chunk))
    seeds = np.random.SeedSequence(seed).spawn(len(starts))
    means = np.empty(resamples, dtype=np.float64)
    index_type = np.int32 if n < 2**31 else np.int64

    def chunk(position: int) -> None:
        start = starts[position]
        size = min(per_chunk, resamples - start)
        indices = np.random.default_rng(seeds[position]).integers(0, n, size=(size, n), dtype=index_type)
        means[start : start + size] = np.take(values, indices).sum(axis=1, dtype=np.float64) / n

    if len(starts) == 1:
        chunk(0)
    else:
        with ThreadPoolExecutor(max_workers=min(_THREADS, len(starts))) as pool:
            list(pool.map(chunk, range(len(starts))))
    return means


def bootstrap_ci(
    values: Sequence[float | None],
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap confidence interval of the mean; ``(None, None)`` without numbers.

    Deterministic for a given ``seed``. Values with few distinct levels (0/1 scores, judge ratings)
    are resampled through multinomial counts per level; others by resampling indices in chunks.
    """
    import numpy as np

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    finite, _ = finite_array(values)
    n = int(finite.size)
    if n == 0:
        return None, None
    levels, counts = np.unique(finite, return_counts=True)
    if levels.size == 1:
        only = float(levels[0])
        return only, only
    if levels.size <= _MAX_LEVELS:
        draws = np.random.default_rng(seed).multinomial(n, counts / n, size=resamples)
        means = draws @ levels / n
    else:
        means = _resample_means(finite, resamples, seed)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)
