"""NeMo score entries: a score's value, statistics and confidence interval; the macro average of tasks."""

from __future__ import annotations

import math

import pytest

from evalstack.engine.aggregate import macro_entry, score_entry, score_value
from evalstack.engine.aggregate.stats import bootstrap_ci, score_stats


def test_score_value_is_the_mean_with_its_statistics() -> None:
    values = [1.0, 0.0, None, 1.0]
    assert score_value(values) == {"value": pytest.approx(2 / 3), "stats": score_stats(values)}
    assert score_value([None]) == {"value": None, "stats": score_stats([None])}


def test_score_entry_adds_the_bootstrap_interval() -> None:
    values = [0.0, 1.0, 1.0, 0.5, None, 0.25]
    lower, upper = bootstrap_ci(values)
    assert score_entry(values) == {
        "value": pytest.approx(2.75 / 5),
        "stats": score_stats(values),
        "ci": {"level": 0.95, "lower": lower, "upper": upper, "method": "bootstrap"},
    }
    assert lower is not None and upper is not None and lower < 2.75 / 5 < upper


def task(mean: float | None, stderr: float | None) -> dict[str, float | None]:
    return {"mean": mean, "stderr": stderr}


def test_macro_entry_averages_the_task_means_with_a_normal_interval() -> None:
    entry = macro_entry([task(0.5, 0.1), task(1.0, 0.2), task(None, None), task(0.0, None)])
    assert entry is not None
    value = 1.5 / 3
    stderr = math.sqrt(0.1**2 + 0.2**2 + 0.0) / 3  # a task without a stderr adds none
    assert entry["value"] == pytest.approx(value)
    assert entry["stats"]["count"] == 3 and entry["stats"]["mean"] == pytest.approx(value)
    assert entry["stats"]["stderr"] == pytest.approx(stderr)
    assert entry["ci"] == {
        "level": 0.95,
        "lower": pytest.approx(value - 1.96 * stderr),
        "upper": pytest.approx(value + 1.96 * stderr),
        "method": "normal",
    }


def test_macro_entry_without_any_task_mean_is_none() -> None:
    assert macro_entry([task(None, None)]) is None
    assert macro_entry([]) is None
