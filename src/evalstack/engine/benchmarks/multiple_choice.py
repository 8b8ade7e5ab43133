"""Multiple-choice benchmarks: the spec (``McSpec``) that MMLU, ARC, HellaSwag, TruthfulQA and BoolQ share.

Two ways to answer, chosen by the endpoint (``params.extra.mc_method`` overrides):

- ``loglikelihood`` (default on completions endpoints): the log-likelihood of each choice, see
  :mod:`evalstack.engine.benchmarks.loglikelihood`.
- ``generate`` (default on chat endpoints): the options are listed with letters and the model's
  letter is read from its reply, strictly (the reply is the letter) and flexibly ("The answer is
  (B)"). Scores ``exact_match__strict-match`` and ``exact_match__flexible-extract``. TruthfulQA's
  options are shuffled per item with a seeded permutation (its correct answer is always first).
  BoolQ reads yes/no instead of letters.

Prompts follow lm-evaluation-harness; each benchmark's module documents its own. On chat endpoints
few-shot examples are earlier user/assistant turns and the last user message ends with an
instruction naming the accepted answers.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evalstack.engine.benchmarks.base import Compiled, Context, Rows
from evalstack.engine.benchmarks.common import (
    DataSource,
    chat_request,
    completion_request,
    request_params,
    select_fewshot,
    stable_seed,
)
from evalstack.engine.benchmarks.extract import (
    extract_letter_flexible,
    extract_letter_strict,
    extract_regex,
    extract_yes_no_flexible,
    extract_yes_no_strict,
    letters_for,
)
from evalstack.engine.benchmarks.loglikelihood import LoglikelihoodMetric, loglikelihood_request
from evalstack.engine.benchmarks.results import PARSED_METRIC, GroupSummary, TaskSummary
from evalstack.engine.plan import Metric, SampleOutput, TaskPlan
from evalstack.inference.base import InferenceRequest


@dataclass
class McSpec:
    """One multiple-choice benchmark."""

    name: str
    summary: str
    test: DataSource
    normalize: Callable[[Mapping[str, Any], int], dict[str, Any]]
    ll_context: Callable[[Mapping[str, Any]], str]
    ll_continuation: Callable[[Mapping[str, Any], int], str]
    fewshot: DataSource | None = None
    description: Callable[[Mapping[str, Any]], str] = lambda item: ""
    # What the generate prompt shows before the options (before "Answer:" for a yes/no benchmark).
    gen_stem: Callable[[Mapping[str, Any]], str] = lambda item: str(item["question"]).strip()
    norm: bool = False
    mc2: bool = False
    acc_key: str = "acc"
    shuffle: bool = False
    yes_no: bool = False
    shot_separator: str = "\n\n"
    subjects: Mapping[str, str] = field(default_factory=dict)  # subject -> category (MMLU)

    def compile(self, ctx: Context) -> Compiled:
        rows = Rows(self.name, ctx, self.test, self.normalize, self.fewshot)
        compiled = Compiled()
        if self.subjects:
            by_category: dict[str, list[str]] = {}
            for subject, category in self.subjects.items():
                name = f"{ctx.task_name}_{subject}"
                self._add_task(ctx, rows, compiled, name, subject)
                by_category.setdefault(category, []).append(name)
            compiled.groups.append(GroupSummary(ctx.task_name, [p.name for p in compiled.plans]))
            for category in sorted(by_category):
                compiled.groups.append(GroupSummary(f"{ctx.task_name}_{category}", by_category[category]))
        else:
            self._add_task(ctx, rows, compiled, ctx.task_name, None)
        return compiled

    # ---- prompts -----------------------------------------------------------------------------

    def order(self, item: Mapping[str, Any], seed: int) -> list[int]:
        """The order the options are shown in (shuffled per item for TruthfulQA)."""
        indices = list(range(len(item["choices"])))
        if self.shuffle:
            random.Random(stable_seed(seed, self.name, item["id"])).shuffle(indices)
        return indices

    def gen_body(self, item: Mapping[str, Any], order: Sequence[int]) -> str:
        if self.yes_no:
            return self.gen_stem(item)  # the whole question: there are no options to list
        letters = letters_for(len(order))
        options = "\n".join(
            f"{letter}. {str(item['choices'][j]).strip()}" for letter, j in zip(letters, order, strict=True)
        )
        return f"{self.gen_stem(item)}\n{options}"

    def gen_answer(self, item: Mapping[str, Any], order: Sequence[int]) -> str:
        gold = int(item["answer"])
        if self.yes_no:
            return "yes" if gold == 1 else "no"
        return letters_for(len(order))[order.index(gold)]

    def instruction(self, count: int) -> str:
        if self.yes_no:
            return "Answer with yes or no."
        letters = letters_for(count)
        listed = ", ".join(letters[:-1]) + f" or {letters[-1]}"
        return f"Answer with the letter of the correct option ({listed})."

    # ---- tasks -------------------------------------------------------------------------------

    def _add_task(self, ctx: Context, rows: Rows, compiled: Compiled, name: str, subject: str | None) -> None:
        opts = ctx.opts
        k = opts.num_fewshot if opts.num_fewshot is not None else 0
        sampler = opts.fewshot_sampler or "random"
        state: dict[str, list[dict[str, Any]]] = {"pool": []}

        async def load() -> list[dict[str, Any]]:
            items = await rows.rows()
            if subject is not None:
                items = [item for item in items if item.get("subject") == subject]
            if k > 0:
                pool = await rows.pool()
                if subject is not None:
                    pool = [item for item in pool if item.get("subject") == subject]
                state["pool"] = pool
            return items[: opts.limit]  # a None limit keeps every row

        def shots(item: Mapping[str, Any]) -> list[dict[str, Any]]:
            return select_fewshot(
                state["pool"],
                k,
                seed=opts.fewshot_seed,
                key=f"{name}:{item['id']}",
                sampler=sampler,
                exclude=lambda row: row["id"] == item["id"],
            )

        def ll_full_context(item: Mapping[str, Any]) -> str:
            prefix = self.description(item)
            for shot in shots(item):
                gold = int(shot["answer"])
                prefix += self.ll_context(shot) + self.ll_continuation(shot, gold) + self.shot_separator
            context = prefix + self.ll_context(item)
            return f"{opts.system_prompt}\n\n{context}" if opts.system_prompt else context

        metrics: list[Metric]
        build: Callable[[Mapping[str, Any]], InferenceRequest]
        if opts.mc_method == "loglikelihood":

            def build_ll(item: Mapping[str, Any]) -> InferenceRequest:
                return loglikelihood_request(ll_full_context(item), self.ll_continuation(item, 0))

            build = build_ll
            metrics = [LoglikelihoodMetric(self, ctx, ll_full_context)]
        else:
            build = self._generate_builder(ctx, shots)
            metrics = [
                _GenerateMetric(self, opts.fewshot_seed, parsed=False, answer_regex=opts.answer_regex),
                _GenerateMetric(self, opts.fewshot_seed, parsed=True, answer_regex=opts.answer_regex),
            ]
        info = {
            "benchmark": self.name,
            "method": opts.mc_method,
            "endpoint_type": opts.endpoint_type,
            "num_fewshot": k,
        }
        if subject is not None:
            info["subject"] = subject
            info["category"] = self.subjects[subject]
        compiled.plans.append(TaskPlan(name=name, rows=load, metrics=metrics, build_request=build))
        compiled.summaries.append(TaskSummary(name=name, info=info))

    def _generate_builder(
        self, ctx: Context, shots: Callable[[Mapping[str, Any]], list[dict[str, Any]]]
    ) -> Callable[[Mapping[str, Any]], InferenceRequest]:
        opts = ctx.opts
        seed = opts.fewshot_seed

        def build(item: Mapping[str, Any]) -> InferenceRequest:
            description = self.description(item)
            order = self.order(item, seed)
            examples = shots(item)
            if opts.endpoint_type == "chat":
                turns: list[tuple[str, str]] = []
                for position, shot in enumerate(examples):
                    shot_order = self.order(shot, seed)
                    text = (
                        (description if position == 0 else "") + self.gen_body(shot, shot_order) + "\nAnswer:"
                    )
                    turns.append((text, self.gen_answer(shot, shot_order)))
                user = (description if not turns else "") + self.gen_body(item, order)
                user += "\n\n" + self.instruction(len(order))
                params = request_params(opts, max_tokens=256, stop=None)
                return chat_request(opts, turns, user, params)
            prompt = description
            for shot in examples:
                shot_order = self.order(shot, seed)
                prompt += (
                    f"{self.gen_body(shot, shot_order)}\nAnswer: {self.gen_answer(shot, shot_order)}\n\n"
                )
            prompt += self.gen_body(item, order) + "\nAnswer:"
            params = request_params(opts, max_tokens=8, stop=["\n"])
            return completion_request(opts, prompt, params)

        return build


class _GenerateMetric:
    """Strict and flexible exact match of the generated letter (or yes/no); ``parsed`` diagnostics."""

    def __init__(
        self, spec: McSpec, seed: int, *, parsed: bool, answer_regex: re.Pattern[str] | None = None
    ) -> None:
        self.spec = spec
        self.seed = seed
        self.parsed = parsed
        self.answer_regex = answer_regex  # replaces the flexible extraction when set
        self.name = PARSED_METRIC if parsed else "exact_match"

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        order = self.spec.order(item, self.seed)
        gold = self.spec.gen_answer(item, order)
        strict: str | None
        flexible: str | None
        if self.spec.yes_no:
            s, f = extract_yes_no_strict(output.text), extract_yes_no_flexible(output.text)
            strict = None if s is None else ("yes" if s else "no")
            flexible = None if f is None else ("yes" if f else "no")
        else:
            letters = letters_for(len(order))
            shown = [item["choices"][j] for j in order]
            strict = extract_letter_strict(output.text, letters)
            flexible = extract_letter_flexible(output.text, letters, shown)
        if self.answer_regex is not None:
            found = extract_regex(output.text, self.answer_regex)
            if found is None:
                flexible = None
            else:
                found = found.strip().strip("()").strip()
                flexible = found.lower() if self.spec.yes_no else found.upper()
        if self.parsed:
            return {
                "strict-match": 0.0 if strict is None else 1.0,
                "flexible-extract": 0.0 if flexible is None else 1.0,
            }
        output.note_extracted(self.name, {"strict-match": strict, "flexible-extract": flexible})
        return {
            "exact_match__strict-match": 1.0 if strict == gold else 0.0,
            "exact_match__flexible-extract": 1.0 if flexible == gold else 0.0,
        }


def answer_index(value: Any, count: int) -> int:
    """A gold answer given as an index, a letter or a digit label, as a 0-based index."""
    if isinstance(value, bool):
        raise ValueError(f"answer {value!r} is not a choice")
    if isinstance(value, int):
        index = value
    else:
        text = str(value).strip().upper()
        if text.isdecimal():
            index = int(text) - 1
        elif len(text) == 1 and "A" <= text <= "Z":
            index = ord(text) - ord("A")
        else:  # "", "AB", "?": not a choice (an empty answer must not read as A)
            raise ValueError(f"answer {value!r} is not a choice index, letter or 1-based number")
    if not 0 <= index < count:
        raise ValueError(f"answer {value!r} is not one of the {count} choices")
    return index
