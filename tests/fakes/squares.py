"""The "What is N squared?" job that the NeMo end-to-end tests run: rows, answers, config, score."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any


def answer(prompt: str) -> str:
    """The fake model: right for even N, wrong for odd N, lost on anything else."""
    match = re.search(r"What is (\d+) squared\?", prompt)
    if match is None:
        return "I do not understand."
    n = int(match.group(1))
    return str(n * n) if n % 2 == 0 else "no idea"


def square_rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    """Rows ``{"question": "What is N squared?", "answer": "N*N"}`` for N from ``start``."""
    return [{"question": f"What is {n} squared?", "answer": str(n * n)} for n in range(start, start + count)]


def expected_accuracy(rows: list[dict[str, Any]]) -> float:
    """The string-check accuracy the fake model earns on ``rows``."""
    return sum(answer(r["question"]) == r["answer"] for r in rows) / len(rows)


def squares_config(dataset: Path, *, parallelism: int, **params: Any) -> dict[str, Any]:
    """A NeMo custom config over ``dataset``: one chat task (the question), string-check on the answer.

    ``params`` are added to the config's params (``limit_samples``, ``max_retries``...).
    """
    return {
        "type": "custom",
        "params": {"parallelism": parallelism, "max_tokens": 16, **params},
        "tasks": {
            "qa": {
                "type": "chat-completion",
                "params": {"template": {"messages": [{"role": "user", "content": "{{item.question}}"}]}},
                "dataset": {"files_url": dataset.as_uri()},
                "metrics": {
                    "accuracy": {
                        "type": "string-check",
                        "params": {"check": ["{{sample.output_text | trim}}", "equals", "{{item.answer}}"]},
                    }
                },
            }
        },
    }
