"""ARC-Challenge and ARC-Easy: grade-school science (Clark et al., 2018), as lm-evaluation-harness.

Prompt: ``Question: <question>\\nAnswer:``, choices `` <text>``; 0-shot. Scores ``acc`` and ``acc_norm``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalstack.engine.benchmarks.common import DataSource
from evalstack.engine.benchmarks.multiple_choice import McSpec, answer_index


def _arc_row(row: Mapping[str, Any], position: int) -> dict[str, Any]:
    choices_raw = row["choices"]
    if isinstance(choices_raw, Mapping):  # Hub layout: {"text": [...], "label": [...]}
        texts = [str(t) for t in choices_raw["text"]]
        labels = [str(label) for label in choices_raw["label"]]
        answer = labels.index(str(row["answerKey"]))
    else:
        texts = [str(t) for t in choices_raw]
        answer = answer_index(row["answer"], len(texts))
    return {
        "id": str(row.get("id") or position),
        "question": str(row["question"]),
        "choices": texts,
        "answer": answer,
    }


def _arc(name: str, config: str, local: str, summary: str) -> McSpec:
    return McSpec(
        name=name,
        summary=summary,
        test=DataSource(local, f"hf://datasets/allenai/ai2_arc/{config}?split=test"),
        fewshot=DataSource(
            local.replace("_test", "_train"), f"hf://datasets/allenai/ai2_arc/{config}?split=train"
        ),
        normalize=_arc_row,
        ll_context=lambda item: f"Question: {item['question']}\nAnswer:",
        ll_continuation=lambda item, i: " " + str(item["choices"][i]),
        gen_stem=lambda item: f"Question: {str(item['question']).strip()}",
        norm=True,
    )


ARC_CHALLENGE = _arc(
    "arc_challenge",
    "ARC-Challenge",
    "arc/arc_challenge_test.jsonl",
    "ARC-Challenge: grade-school science (Clark et al., 2018)",
)
ARC_EASY = _arc(
    "arc_easy", "ARC-Easy", "arc/arc_easy_test.jsonl", "ARC-Easy: grade-school science (Clark et al., 2018)"
)
