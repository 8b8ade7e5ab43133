"""Summary entries of one score over its units, as the NeMo results object reports them.

``score_value`` is ``{"value": mean, "stats": ScoreStats}`` (custom NeMo tasks); ``score_entry`` adds a
95% percentile bootstrap interval of the mean (academic benchmarks); ``macro_entry`` is the mean of
several tasks' means with a normal-approximation 95% interval from their standard errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from evalstack.engine.aggregate.stats import bootstrap_ci, score_stats


def score_value(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"value", "stats"}`` for one score over its units (None and NaN counted in ``nan_count``)."""
    stats = score_stats(values)
    return {"value": stats["mean"], "stats": stats}


def score_entry(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"value", "stats", "ci"}`` for one score over its units."""
    entry = score_value(values)
    lower, upper = bootstrap_ci(values)
    entry["ci"] = {"level": 0.95, "lower": lower, "upper": upper, "method": "bootstrap"}
    return entry


def macro_entry(task_stats: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The mean of the task means (ScoreStats each) with a normal 95% CI; None when no task has a mean."""
    means = [s["mean"] for s in task_stats if s["mean"] is not None]
    if not means:
        return None
    value = sum(means) / len(means)
    errors = [s["stderr"] or 0.0 for s in task_stats if s["mean"] is not None]
    stderr = math.sqrt(sum(e * e for e in errors)) / len(means)
    stats = score_stats(means)
    stats["stderr"] = stderr
    return {
        "value": value,
        "stats": stats,
        "ci": {
            "level": 0.95,
            "lower": value - 1.96 * stderr,
            "upper": value + 1.96 * stderr,
            "method": "normal",
        },
    }
