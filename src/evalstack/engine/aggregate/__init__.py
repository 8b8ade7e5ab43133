"""Aggregation, in one place: per-sample scores to the numbers a result reports.

- ``stats``: score statistics (NeMo Evaluator's ScoreStats) and bootstrap confidence intervals.
- ``scores``: the ``{value, stats[, ci]}`` entries of the NeMo results object, task and group (macro).
- ``llama_stack``: the aggregation functions of the Llama Stack Scoring API (accuracy, average, ...).

The result shapes around them (which tasks and groups, which counts) belong to each front door's plan.
"""

from evalstack.engine.aggregate.llama_stack import AGGREGATIONS, aggregate, check_aggregations
from evalstack.engine.aggregate.scores import macro_entry, score_entry, score_value
from evalstack.engine.aggregate.stats import ScoreStats, bootstrap_ci, score_stats

__all__ = [
    "AGGREGATIONS",
    "ScoreStats",
    "aggregate",
    "bootstrap_ci",
    "check_aggregations",
    "macro_entry",
    "score_entry",
    "score_stats",
    "score_value",
]
