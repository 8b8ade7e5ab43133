"""The NeMo results object (``tasks`` and ``groups``) computed from a job's recorded samples."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalstack.engine.aggregate import score_value
from evalstack.engine.metrics.nemo_base import NemoMetric
from evalstack.engine.nemo_plan.config import NemoGroup
from evalstack.engine.plan import SampleOutput
from evalstack.store.records import SampleRecord


@dataclass
class CompiledTask:
    """A compiled task as its results need it: its name and metrics."""

    name: str
    metrics: list[NemoMetric]


def _scores_for(parts: Sequence[tuple[NemoMetric, Sequence[SampleRecord]]]) -> dict[str, Any]:
    """The ``scores`` object of one metric name over the scored samples of one or more tasks."""
    first = parts[0][0]
    score_names: list[str] = []
    for metric, _ in parts:
        score_names.extend(n for n in metric.score_names if n not in score_names)
    scores: dict[str, Any] = {}
    for score_name in score_names:
        values = [
            (record.scores.get(metric.name) or {}).get(score_name)
            for metric, records in parts
            if score_name in metric.score_names
            for record in records
        ]
        scores[score_name] = score_value(values)
    if first.corpus_score_names and all(type(metric) is type(first) for metric, _ in parts):
        pooled = [
            (metric, [(r.item, SampleOutput(r.output_text, r.response)) for r in records])
            for metric, records in parts
        ]
        for score_name, value in type(first).pooled_corpus_scores(pooled).items():
            scores[score_name] = {"value": value}
    return scores


def summarize_results(
    tasks: Mapping[str, CompiledTask],
    groups: Mapping[str, NemoGroup],
    samples: Mapping[str, Sequence[SampleRecord]],
) -> dict[str, Any]:
    """The NeMo results object (``tasks`` and ``groups``) from the recorded samples."""
    scored: dict[str, list[SampleRecord]] = {}
    tasks_out: dict[str, Any] = {}
    for name, task in tasks.items():
        records = list(samples.get(name, []))
        ok = [r for r in records if r.error is None]
        scored[name] = ok
        tasks_out[name] = {
            "metrics": {m.name: {"scores": _scores_for([(m, ok)])} for m in task.metrics},
            "data": {"samples": len(records), "samples_failed": len(records) - len(ok)},
        }

    def group_tasks(group: NemoGroup) -> list[str]:
        names = list(group.tasks or [])
        for nested in (group.groups or {}).values():
            names.extend(n for n in group_tasks(nested) if n not in names)
        if not group.tasks and not group.groups:
            names = list(tasks)
        return names

    def group_result(group: NemoGroup) -> dict[str, Any]:
        members = group_tasks(group)
        by_metric: dict[str, list[tuple[NemoMetric, Sequence[SampleRecord]]]] = {}
        for task_name in members:
            for metric in tasks[task_name].metrics:
                by_metric.setdefault(metric.name, []).append((metric, scored[task_name]))
        wanted = set(group.metrics) if group.metrics else None
        result: dict[str, Any] = {
            "metrics": {
                name: {"scores": _scores_for(parts)}
                for name, parts in by_metric.items()
                if wanted is None or name in wanted
            }
        }
        if group.groups:
            result["groups"] = {name: group_result(nested) for name, nested in group.groups.items()}
        return result

    return {"tasks": tasks_out, "groups": {name: group_result(group) for name, group in groups.items()}}
