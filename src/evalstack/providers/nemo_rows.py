"""Per-sample rows of a NeMo-config benchmark as the Llama Stack API returns them.

Both providers (the local engine and a remote NeMo Evaluator) shape them the same way, so a client
reads ``generations`` and ``score_rows`` of a NeMo-config benchmark alike whichever ran it:

- generation: ``{"task", "item", "generated_answer"}`` (+ ``"error"`` when the sample failed)
- score row: ``{"task", "metrics": {metric: {score: value}}}`` plus ``"score"`` when the sample has
  exactly one score (+ ``"error"`` and ``"score": None`` when it failed)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
