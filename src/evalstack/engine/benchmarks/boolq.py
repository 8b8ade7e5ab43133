"""BoolQ: yes/no questions about a passage (Clark et al., 2019), as lm-evaluation-harness.

Prompt: ``<passage>\\nQuestion: <question>?\\nAnswer:``, choices `` no``/`` yes``; 0-shot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalstack.engine.benchmarks.common import DataSource
from evalstack.engine.benchmarks.multiple_choice import McSpec


def _boolq_row(row: Mapping[str, Any], position: int) -> dict[str, Any]:
    answer = row.get("answer", row.get("label"))
    if isinstance(answer, str):
        if answer.strip().lower() not in ("true", "false"):
            raise ValueError(f"answer {answer!r} is not True or False")
        gold = answer.strip().lower() == "true"
    else:
        gold = bool(answer)
    return {
        "id": str(row.get("idx", position)),
        "question": str(row["question"]),
        "passage": str(row["passage"]),
        "choices": ["no", "yes"],
        "answer": 1 if gold else 0,
    }


def _boolq_stem(item: Mapping[str, Any]) -> str:
    return f"{item['passage']}\nQuestion: {str(item['question']).rstrip('?')}?"


BOOLQ = McSpec(
    name="boolq",
    summary="BoolQ: yes/no questions about a passage (Clark et al., 2019)",
    test=DataSource("boolq/dev.jsonl", "hf://datasets/google/boolq?split=validation"),
    fewshot=DataSource("boolq/train.jsonl", "hf://datasets/google/boolq?split=train"),
    normalize=_boolq_row,
    ll_context=lambda item: f"{_boolq_stem(item)}\nAnswer:",
    gen_stem=_boolq_stem,
    ll_continuation=lambda item, i: " " + str(item["choices"][i]),
    yes_no=True,
)
