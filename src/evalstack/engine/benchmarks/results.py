"""Results of academic benchmarks: per-task scores with statistics and a 95% CI, groups, counts.

Shape (the NeMo Evaluator results object)::

    {"tasks": {task: {"metrics": {score: {"scores": {score: {"value", "stats", "ci"}}}},
                      "data": {"samples", "samples_failed", "unparsed", "truncated", ...}}},
     "groups": {group: {"metrics": {score: {"scores": {score: {...}, score + "_macro": {...}}}},
                        "data": {"tasks", "samples"}}}}

Each score a metric returns is reported as a metric of its own name (``acc``, ``acc_norm``,
``exact_match__strict-match``, ``exact_match__flexible-extract``, ``pass@1``, ``bleu``...), as
NeMo reports lm-evaluation-harness scores. ``value`` is the mean over the task's units (questions;
HumanEval problems), ``stats`` NeMo's ScoreStats and ``ci`` a 95% percentile bootstrap interval of
the mean (1000 resamples, seed 0). Corpus-level scores (corpus BLEU and chrF) have a value only.

``data.unparsed`` counts, per extraction, the answers no answer could be read from (scored as
wrong); ``data.truncated`` the outputs cut by ``max_tokens`` (finish reason ``length``);
``data.samples_failed`` the samples that failed for infrastructure reasons (left out of the scores).

A group pools its tasks' units: ``score`` is the micro average (every question counts once) with
bootstrap statistics, ``score_macro`` the mean of the task means with a normal-approximation 95% CI
(its standard error from the tasks' standard errors).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evalstack.engine.aggregate import macro_entry, score_entry
from evalstack.store.records import SampleRecord

PARSED_METRIC = "parsed"
"""Per-sample diagnostic metric: 1 when the extraction found an answer, 0 when not; not a score."""

ScoreLists = dict[str, list[float | None]]
UnitScores = Callable[[Sequence[SampleRecord]], ScoreLists]
CorpusScores = Callable[[Sequence[SampleRecord]], dict[str, float | None]]


def per_sample_scores(samples: Sequence[SampleRecord]) -> ScoreLists:
    """Every score of every metric (but the diagnostics), one value per sample."""
    out: ScoreLists = {}
    for sample in samples:
        for metric, scores in sample.scores.items():
            if metric == PARSED_METRIC:
                continue
            for key, value in scores.items():
                out.setdefault(key, []).append(value)
    return out


@dataclass
class TaskSummary:
    """How to summarise one task: unit scores (default per sample), corpus scores, fixed info."""

    name: str
    unit_scores: UnitScores = per_sample_scores
    corpus_scores: CorpusScores | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class GroupSummary:
    """A group of tasks read together (MMLU overall and its four categories)."""

    name: str
    tasks: list[str]


def _counts(samples: Sequence[SampleRecord]) -> dict[str, Any]:
    unparsed: dict[str, int] = {}
    for sample in samples:
        if sample.error is not None:
            continue
        for key, value in sample.scores.get(PARSED_METRIC, {}).items():
            unparsed[key] = unparsed.get(key, 0) + (1 if value == 0 else 0)
    return {
        "samples": len(samples),
        "samples_failed": sum(1 for s in samples if s.error is not None),
        "unparsed": unparsed,
        "truncated": sum(1 for s in samples if s.error is None and s.finish_reason == "length"),
    }


def summarize(
    tasks: Sequence[TaskSummary],
    groups: Sequence[GroupSummary],
    samples: Mapping[str, Sequence[SampleRecord]],
) -> dict[str, Any]:
    """The results object (see the module docstring) from the stored samples."""
    result_tasks: dict[str, Any] = {}
    unit_values: dict[str, ScoreLists] = {}
    task_stats: dict[str, dict[str, Any]] = {}
    for task in tasks:
        records = list(samples.get(task.name, ()))
        ok = [s for s in records if s.error is None]
        values = task.unit_scores(ok)
        unit_values[task.name] = values
        metrics: dict[str, Any] = {}
        for key, vals in values.items():
            entry = score_entry(vals)
            task_stats.setdefault(task.name, {})[key] = entry["stats"]
            metrics[key] = {"scores": {key: entry}}
        if task.corpus_scores is not None and ok:
            for key, value in task.corpus_scores(ok).items():
                metrics[key] = {"scores": {key: {"value": value}}}
        result_tasks[task.name] = {"metrics": metrics, "data": {**_counts(records), **task.info}}
    result_groups: dict[str, Any] = {}
    for group in groups:
        members = [t for t in group.tasks if t in unit_values]
        if not members:
            continue
        shared = set.intersection(*(set(unit_values[t]) for t in members))
        metrics = {}
        for key in sorted(shared):
            pooled = [v for t in members for v in unit_values[t][key]]
            scores: dict[str, Any] = {key: score_entry(pooled)}
            macro = macro_entry([task_stats[t][key] for t in members])
            if macro is not None:
                scores[f"{key}_macro"] = macro
            metrics[key] = {"scores": scores}
        data = {"tasks": len(members), "samples": sum(len(samples.get(t, ())) for t in members)}
        result_groups[group.name] = {"metrics": metrics, "data": data}
    return {"tasks": result_tasks, "groups": result_groups}
