"""NeMo Evaluator shapes as the Llama Stack API returns them; both eval providers use these.

The local engine (whose jobs use NeMo's status vocabulary) and a remote NeMo Evaluator report the
same things the same way, so a client reads a NeMo-config benchmark alike whichever provider ran it.

Job statuses (:data:`STATUS_MAP`): created/pending -> scheduled, running/cancelling -> in_progress,
completed, failed, cancelled. A status not in the map is the caller's to handle (the nvidia provider
reports it as failed).

Per-sample rows of a NeMo-config benchmark:

- generation: ``{"task", "item", "generated_answer"}`` (+ ``"error"`` when the sample failed)
- score row: ``{"task", "metrics": {metric: {score: value}}}`` plus ``"score"`` when the sample has
  exactly one score (+ ``"error"`` and ``"score": None`` when it failed)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalstack.providers.base import JobStatus

STATUS_MAP: dict[str, JobStatus] = {
    "created": JobStatus.scheduled,
    "pending": JobStatus.scheduled,
    "running": JobStatus.in_progress,
    "cancelling": JobStatus.in_progress,
    "completed": JobStatus.completed,
    "failed": JobStatus.failed,
    "cancelled": JobStatus.cancelled,
}
"""NeMo job status (lowercase, as NeMo and evalstack's own job records spell it) -> Llama Stack job status."""


def generation_row(task: str, item: Any, output_text: str | None, error: str | None = None) -> dict[str, Any]:
    """One sample's generation."""
    row: dict[str, Any] = {"task": task, "item": item, "generated_answer": output_text}
    if error:
        row["error"] = error
    return row


def score_row(
    task: str, metrics: Mapping[str, Mapping[str, Any]], error: str | None = None
) -> dict[str, Any]:
    """One sample's scores, nested by metric, with ``score`` set when there is exactly one."""
    row: dict[str, Any] = {"task": task, "metrics": {m: dict(scores) for m, scores in metrics.items()}}
    if error:
        row.update(score=None, error=error)
        return row
    values = [value for scores in metrics.values() for value in scores.values()]
    if len(values) == 1:
        row["score"] = values[0]
    return row
