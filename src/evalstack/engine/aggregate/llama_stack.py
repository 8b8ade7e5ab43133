"""Aggregation functions of the Llama Stack Scoring API: per-sample score rows to summary numbers.

Each function takes the score rows of one scoring function (dicts with a ``score`` key, and
``weight`` for ``weighted_average``) and returns ``{name: result}`` with the shapes of the spec:

============================  =====================================================================
``accuracy``                  ``{"accuracy": mean, "num_correct": float sum, "num_total": int}``
``average``                   ``{"average": mean of the non-null scores}``
``weighted_average``          ``{"weighted_average": sum(score * weight) / sum(weight)}``
``median``                    ``{"median": median of the non-null scores}``
``categorical_count``         ``{"categorical_count": {str(score): count}}``
============================  =====================================================================

Choices where the reference crashes or is silent:

- ``accuracy`` counts every row in ``num_total``; a null score (a judge verdict that could not be
  parsed) is not correct. ``average``, ``weighted_average`` and ``median`` skip null scores.
- ``weighted_average`` uses weight 1.0 for a row without ``weight``.
- With nothing to aggregate the mean, median and weighted average are ``None`` (never a division by zero).
- ``categorical_count`` counts null scores under the key ``"None"``.
- A non-numeric score (such as a judge's ``"A"``) in a numeric aggregation is an ``InvalidInputError``
  that points to ``categorical_count``.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evalstack.errors import InvalidInputError

ScoreRows = Sequence[Mapping[str, Any]]


def _numeric(value: Any, aggregation: str, index: int) -> float:
    """A score as a float, or a clear error naming the row and the aggregation."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    raise InvalidInputError(
        f"Aggregation '{aggregation}' needs numeric scores, but score row {index} has score {value!r}. "
        "Use 'categorical_count' for non-numeric scores."
    )


def _non_null(rows: ScoreRows, aggregation: str) -> list[float]:
    return [
        _numeric(row.get("score"), aggregation, i)
        for i, row in enumerate(rows)
        if row.get("score") is not None
    ]


def accuracy(rows: ScoreRows) -> dict[str, Any]:
    """Fraction correct over all rows; ``num_correct`` is the float sum of the scores."""
    num_correct = math.fsum(_non_null(rows, "accuracy"))
    num_total = len(rows)
    value = num_correct / num_total if num_total else None
    return {"accuracy": {"accuracy": value, "num_correct": num_correct, "num_total": num_total}}


def average(rows: ScoreRows) -> dict[str, Any]:
    """Mean of the non-null scores."""
    values = _non_null(rows, "average")
    return {"average": {"average": math.fsum(values) / len(values) if values else None}}


def weighted_average(rows: ScoreRows) -> dict[str, Any]:
    """``sum(score * weight) / sum(weight)`` over rows with a non-null score; weight defaults to 1."""
    total = 0.0
    weights = 0.0
    for i, row in enumerate(rows):
        if row.get("score") is None:
            continue
        score = _numeric(row["score"], "weighted_average", i)
        raw_weight = row.get("weight", 1.0)
        if raw_weight is None:
            raw_weight = 1.0
        if isinstance(raw_weight, bool) or not isinstance(raw_weight, int | float):
            raise InvalidInputError(
                f"Aggregation 'weighted_average' needs a numeric 'weight', "
                f"but score row {i} has {raw_weight!r}."
            )
        total += score * float(raw_weight)
        weights += float(raw_weight)
    return {"weighted_average": {"weighted_average": total / weights if weights else None}}


def median(rows: ScoreRows) -> dict[str, Any]:
    """Median of the non-null scores."""
    values = _non_null(rows, "median")
    return {"median": {"median": statistics.median(values) if values else None}}


def categorical_count(rows: ScoreRows) -> dict[str, Any]:
    """How often each score occurs, keyed by ``str(score)`` (``"1.0"``, ``"A"``, ``"None"``)."""
    counts = Counter(str(row.get("score")) for row in rows)
    return {"categorical_count": {"categorical_count": dict(counts)}}


AGGREGATIONS: dict[str, Callable[[ScoreRows], dict[str, Any]]] = {
    "accuracy": accuracy,
    "average": average,
    "weighted_average": weighted_average,
    "median": median,
    "categorical_count": categorical_count,
}


def check_aggregations(names: Sequence[str]) -> None:
    """Raise ``InvalidInputError`` naming the accepted functions if any name is unknown."""
    unknown = [name for name in names if name not in AGGREGATIONS]
    if unknown:
        raise InvalidInputError(
            f"Unknown aggregation function(s): {', '.join(repr(n) for n in unknown)}. "
            f"Accepted: {', '.join(AGGREGATIONS)}."
        )


def aggregate(rows: ScoreRows, names: Sequence[str]) -> dict[str, Any]:
    """Apply each named aggregation to ``rows``; results are merged into one dict in the given order."""
    check_aggregations(names)
    result: dict[str, Any] = {}
    for name in dict.fromkeys(names):
        result.update(AGGREGATIONS[name](rows))
    return result
