"""GSM8K: grade-school math word problems (Cobbe et al., 2021), as lm-evaluation-harness's ``gsm8k``.

Prompt: ``Question: <question>\\nAnswer:``, preceded by 5 solved train examples (``num_fewshot``,
default 5, lm-eval's default) in the same format, each answer the full reference solution ending
``#### <number>``. We take the first 5 train examples by default (``fewshot_sampler: first_n``, which
lm-eval offers too); lm-eval 0.4.13's ``gsm8k`` draws 5 at random with seed 1234, which
``fewshot_sampler: random`` (seeded by ``fewshot_seed``) does here.
On chat endpoints the examples are earlier user/assistant turns (lm-eval's
``fewshot_as_multiturn``). Greedy (``temperature`` 0), ``max_tokens`` 256, stop at ``Question:``,
``</s>``, ``<|im_end|>``.

Scores: ``exact_match__strict-match`` (the number after ``#### ``) and
``exact_match__flexible-extract`` (the last number in the reply, or what ``extra.answer_regex``
finds), as lm-eval. Reasoning blocks
(``<think>``) are removed first, and numbers compare by value after removing ``$``, ``,`` and a
trailing ``.`` (``$1,234.50`` equals ``1234.5``; lm-eval compares the strings).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from evalstack.engine.benchmarks.base import Compiled, Context, Rows
from evalstack.engine.benchmarks.common import (
    DataSource,
    chat_request,
    completion_request,
    request_params,
    select_fewshot,
)
from evalstack.engine.benchmarks.extract import (
    extract_number_flexible,
    extract_number_strict,
    extract_regex,
    normalize_number,
)
from evalstack.engine.benchmarks.results import PARSED_METRIC, TaskSummary
from evalstack.engine.plan import SampleOutput, TaskPlan
from evalstack.inference.base import InferenceRequest

STOP = ["Question:", "</s>", "<|im_end|>"]


def gold_answer(solution: str) -> str:
    """The number after ``#### `` in a reference solution, normalised."""
    value = normalize_number(solution.split("####")[-1])
    if value is None:
        raise ValueError("the reference solution has no '#### <number>' answer")
    return value


def _row(row: Mapping[str, Any], position: int) -> dict[str, Any]:
    solution = str(row["answer"])
    return {
        "id": str(position),
        "question": str(row["question"]),
        "solution": solution,
        "answer": gold_answer(solution),
    }


def question_text(item: Mapping[str, Any]) -> str:
    return f"Question: {item['question']}\nAnswer:"


class _Metric:
    def __init__(self, *, parsed: bool, answer_regex: re.Pattern[str] | None = None) -> None:
        self.parsed = parsed
        self.answer_regex = answer_regex  # replaces the flexible extraction when set
        self.name = PARSED_METRIC if parsed else "exact_match"

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        strict = normalize_number(extract_number_strict(output.text))
        if self.answer_regex is not None:
            flexible = normalize_number(extract_regex(output.text, self.answer_regex))
        else:
            flexible = normalize_number(extract_number_flexible(output.text))
        if self.parsed:
            return {
                "strict-match": float(strict is not None),
                "flexible-extract": float(flexible is not None),
            }
        output.note_extracted(self.name, {"strict-match": strict, "flexible-extract": flexible})
        gold = item["answer"]
        return {
            "exact_match__strict-match": float(strict == gold),
            "exact_match__flexible-extract": float(flexible == gold),
        }


class Gsm8k:
    name = "gsm8k"
    summary = "GSM8K: grade-school math, exact match of the final number (Cobbe et al., 2021)"
    test = DataSource("gsm8k/test.jsonl", "hf://datasets/openai/gsm8k/main?split=test")
    fewshot = DataSource("gsm8k/train_first500.jsonl", "hf://datasets/openai/gsm8k/main?split=train")

    def compile(self, ctx: Context) -> Compiled:
        opts = ctx.opts
        rows = Rows(self.name, ctx, self.test, _row, self.fewshot)
        k = opts.num_fewshot if opts.num_fewshot is not None else 5
        sampler = opts.fewshot_sampler or "first_n"
        state: dict[str, list[dict[str, Any]]] = {"pool": []}

        async def load() -> list[dict[str, Any]]:
            items = await rows.rows()
            if k > 0:
                state["pool"] = await rows.pool()
            return items[: opts.limit]  # a None limit keeps every row

        def build(item: Mapping[str, Any]) -> InferenceRequest:
            shots = select_fewshot(
                state["pool"],
                k,
                seed=opts.fewshot_seed,
                key=f"{ctx.task_name}:{item['id']}",
                sampler=sampler,
                exclude=lambda row: row["question"] == item["question"],
            )
            params = request_params(opts, max_tokens=256, stop=STOP)
            if opts.endpoint_type == "chat":
                turns = [(question_text(s), s["solution"]) for s in shots]
                return chat_request(opts, turns, question_text(item), params)
            prompt = "".join(f"{question_text(s)} {s['solution']}\n\n" for s in shots) + question_text(item)
            return completion_request(opts, prompt, params)

        info = {
            "benchmark": self.name,
            "endpoint_type": opts.endpoint_type,
            "num_fewshot": k,
            "fewshot_sampler": sampler,
        }
        plan = TaskPlan(
            name=ctx.task_name,
            rows=load,
            metrics=[
                _Metric(parsed=False, answer_regex=opts.answer_regex),
                _Metric(parsed=True, answer_regex=opts.answer_regex),
            ],
            build_request=build,
        )
        return Compiled(plans=[plan], summaries=[TaskSummary(name=ctx.task_name, info=info)])


GSM8K = Gsm8k()
