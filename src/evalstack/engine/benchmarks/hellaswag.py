"""HellaSwag: commonsense sentence completion (Zellers et al., 2019), as lm-evaluation-harness.

Prompt: ``<activity>: <context>``, choices `` <ending>`` (lm-eval's cleaning of the WikiHow markup);
0-shot. Scores ``acc`` and ``acc_norm``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from evalstack.engine.benchmarks.common import DataSource
from evalstack.engine.benchmarks.multiple_choice import McSpec, answer_index


def hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag cleaning: ``[title]`` becomes ``. ``, other ``[tags]`` go, spaces collapse."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag_row(row: Mapping[str, Any], position: int) -> dict[str, Any]:
    if "ctx_a" in row:  # Hub layout
        ctx = f"{row['activity_label']}: {row['ctx_a']} {str(row['ctx_b']).capitalize()}"
        ident = row.get("ind", position)
    else:
        ctx = str(row["ctx"])
        ident = row.get("id", position)
    endings = [hellaswag_clean(str(e)) for e in row["endings"]]
    return {
        "id": str(ident),
        "question": hellaswag_clean(ctx),
        "choices": endings,
        "answer": answer_index(int(row["label"]), len(endings)),
    }


HELLASWAG = McSpec(
    name="hellaswag",
    summary="HellaSwag: commonsense sentence completion (Zellers et al., 2019)",
    test=DataSource("hellaswag/val.jsonl", "hf://datasets/Rowan/hellaswag?split=validation"),
    fewshot=DataSource("hellaswag/train.jsonl", "hf://datasets/Rowan/hellaswag?split=train"),
    normalize=_hellaswag_row,
    ll_context=lambda item: str(item["question"]),
    ll_continuation=lambda item, i: " " + str(item["choices"][i]),
    gen_stem=lambda item: f"Choose the most plausible continuation.\n{item['question']}",
    norm=True,
)
