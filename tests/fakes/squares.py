"""The "What is N squared?" job that the NeMo end-to-end tests run: its rows and the fake model's answers."""

from __future__ import annotations

import re
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
