"""Multiple-choice benchmarks: MMLU, ARC (Challenge, Easy), HellaSwag, TruthfulQA (MC), BoolQ.

Two ways to answer, chosen by the endpoint (``params.extra.mc_method`` overrides):

- ``loglikelihood`` (default on completions endpoints): as lm-evaluation-harness does, one
  completion request per choice with ``echo: true, logprobs: 1, max_tokens: 1``; the choice's
  log-likelihood is the sum of the log-probabilities of the tokens after the context (a token that
  straddles the context's end counts to the choice). Scores ``acc`` and, where lm-eval reports it,
  ``acc_norm`` (log-likelihood divided by the choice's length in bytes). TruthfulQA reports ``mc1``
  and ``mc2`` (the normalised probability mass of the true answers). The endpoint must return
  ``logprobs`` with ``tokens``, ``token_logprobs`` and ``text_offset`` (vLLM, llama.cpp, TGI and
  OpenAI-compatible legacy completions do).
- ``generate`` (default on chat endpoints): the options are listed with letters and the model's
  letter is read from its reply, strictly (the reply is the letter) and flexibly ("The answer is
  (B)"). Scores ``exact_match__strict-match`` and ``exact_match__flexible-extract``. TruthfulQA's
  options are shuffled per item with a seeded permutation (its correct answer is always first).
  BoolQ reads yes/no instead of letters.

Prompts (lm-evaluation-harness formats):

- MMLU: ``The following are multiple choice questions (with answers) about <subject>.\\n\\n`` then
  ``<question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:``; choices `` A``..`` D``. 0-shot by default
  (lm-eval's default; the paper used 5-shot: ``num_fewshot: 5``), examples from the ``dev`` split,
  or, where the data has none, from the same subject's test questions without the item itself.
  One task per subject (``mmlu_<subject>``); groups ``mmlu``, ``mmlu_stem``, ``mmlu_humanities``,
  ``mmlu_social_sciences``, ``mmlu_other``.
- ARC: ``Question: <question>\\nAnswer:``, choices `` <text>``; 0-shot.
- HellaSwag: ``<activity>: <context>``, choices `` <ending>`` (lm-eval's cleaning of the WikiHow
  markup); 0-shot.
- TruthfulQA: the paper's six-question QA primer then ``Q: <question>\\nA:``; MC1 choices are the
  best answer and the incorrect ones, MC2 all correct and incorrect answers; 0-shot beyond the primer.
- BoolQ: ``<passage>\\nQuestion: <question>?\\nAnswer:``, choices `` no``/`` yes``; 0-shot.

On chat endpoints few-shot examples are earlier user/assistant turns and the last user message ends
with an instruction naming the accepted answers.
"""

from __future__ import annotations

import asyncio
import math
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
from evalstack.engine.benchmarks.results import PARSED_METRIC, GroupSummary, TaskSummary
from evalstack.engine.plan import Metric, SampleOutput, TaskPlan
from evalstack.errors import InvalidInputError
from evalstack.inference.base import InferenceRequest

# ------------------------------------------------------------------------------------ log-likelihood


def loglikelihood_request(context: str, continuation: str) -> InferenceRequest:
    """The echo request that scores ``continuation`` after ``context``."""
    return InferenceRequest(
        kind="completion",
        prompt=context + continuation,
        params={"max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1},
    )


def continuation_loglikelihood(response: Mapping[str, Any] | None, context: str, continuation: str) -> float:
    """Sum of the log-probabilities of the tokens of ``continuation`` in an echo response."""
    try:
        logprobs = response["choices"][0]["logprobs"]  # type: ignore[index]
        tokens = logprobs["tokens"]
        values = logprobs["token_logprobs"]
        offsets = logprobs["text_offset"]
    except (KeyError, IndexError, TypeError) as exc:
        raise InvalidInputError(
            "the endpoint returned no logprobs (tokens, token_logprobs, text_offset) for an echo request; "
            "use a server that supports echo with logprobs, or set params.extra.mc_method to 'generate'"
        ) from exc
    start = offsets[0] if offsets else 0
    begin = start + len(context)
    end = begin + len(continuation)
    total = 0.0
    counted = 0
    for token, value, offset in zip(tokens, values, offsets, strict=False):
        if offset >= end or offset + len(token) <= begin:
            continue
        if value is None:
            raise InvalidInputError("the endpoint returned no log-probability for a token of the choice")
        total += float(value)
        counted += 1
    if counted == 0 and continuation:
        raise InvalidInputError(
            "the echoed text does not contain the choice; the server did not echo the prompt"
        )
    return total


class LoglikelihoodMetric:
    """Scores a multiple-choice item by the log-likelihood of each choice (see the module docstring).

    The task's own request scores the first choice; this metric sends the others.
    """

    name = "loglikelihood"

    def __init__(self, spec: McSpec, ctx: Context, context_of: Callable[[Mapping[str, Any]], str]) -> None:
        self.spec = spec
        self.ctx = ctx
        self.context_of = context_of

    async def _all(
        self, item: Mapping[str, Any], output: SampleOutput, continuations: list[str]
    ) -> list[float]:
        context = self.context_of(item)
        first = self.spec.ll_continuation(item, 0)
        known = {first: continuation_loglikelihood(output.response, context, first)}
        missing = [c for c in dict.fromkeys(continuations) if c not in known]
        if missing:
            client = self.ctx.client()
            results = await asyncio.gather(
                *(client.generate(loglikelihood_request(context, c)) for c in missing)
            )
            for continuation, result in zip(missing, results, strict=True):
                known[continuation] = continuation_loglikelihood(result.raw, context, continuation)
        return [known[c] for c in continuations]

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        choices = list(item["choices"])
        continuations = [self.spec.ll_continuation(item, i) for i in range(len(choices))]
        mc2_true: list[str] = []
        mc2_false: list[str] = []
        if self.spec.mc2:
            mc2_true = [" " + c for c in item.get("mc2_true", [])]
            mc2_false = [" " + c for c in item.get("mc2_false", [])]
        lls = await self._all(item, output, continuations + mc2_true + mc2_false)
        mc_lls = lls[: len(continuations)]
        gold = int(item["answer"])
        best = max(range(len(mc_lls)), key=lambda i: mc_lls[i])
        scores: dict[str, Any] = {self.spec.acc_key: 1.0 if best == gold else 0.0}
        if self.spec.norm:
            normed = [ll / max(len(c.encode()), 1) for ll, c in zip(mc_lls, continuations, strict=True)]
            best_norm = max(range(len(normed)), key=lambda i: normed[i])
            scores["acc_norm"] = 1.0 if best_norm == gold else 0.0
        if self.spec.mc2 and mc2_true:
            rest = lls[len(continuations) :]
            true_p = [math.exp(v) for v in rest[: len(mc2_true)]]
            false_p = [math.exp(v) for v in rest[len(mc2_true) :]]
            total = sum(true_p) + sum(false_p)
            scores["mc2"] = sum(true_p) / total if total > 0 else None
        return scores


# -------------------------------------------------------------------------------------- the spec


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
            return self.ll_context(item).removesuffix("\nAnswer:").removesuffix("Answer:").rstrip()
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
        return {
            "exact_match__strict-match": 1.0 if strict == gold else 0.0,
            "exact_match__flexible-extract": 1.0 if flexible == gold else 0.0,
        }


# ---------------------------------------------------------------------------------------- MMLU

MMLU_SUBJECTS: dict[str, str] = {
    "abstract_algebra": "stem", "anatomy": "stem", "astronomy": "stem", "business_ethics": "other",
    "clinical_knowledge": "other", "college_biology": "stem", "college_chemistry": "stem",
    "college_computer_science": "stem", "college_mathematics": "stem", "college_medicine": "other",
    "college_physics": "stem", "computer_security": "stem", "conceptual_physics": "stem",
    "econometrics": "social_sciences", "electrical_engineering": "stem", "elementary_mathematics": "stem",
    "formal_logic": "humanities", "global_facts": "other", "high_school_biology": "stem",
    "high_school_chemistry": "stem", "high_school_computer_science": "stem",
    "high_school_european_history": "humanities", "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences", "high_school_macroeconomics": "social_sciences",
    "high_school_mathematics": "stem", "high_school_microeconomics": "social_sciences",
    "high_school_physics": "stem", "high_school_psychology": "social_sciences",
    "high_school_statistics": "stem", "high_school_us_history": "humanities",
    "high_school_world_history": "humanities", "human_aging": "other", "human_sexuality": "social_sciences",
    "international_law": "humanities", "jurisprudence": "humanities", "logical_fallacies": "humanities",
    "machine_learning": "stem", "management": "other", "marketing": "other", "medical_genetics": "other",
    "miscellaneous": "other", "moral_disputes": "humanities", "moral_scenarios": "humanities",
    "nutrition": "other", "philosophy": "humanities", "prehistory": "humanities",
    "professional_accounting": "other", "professional_law": "humanities", "professional_medicine": "other",
    "professional_psychology": "social_sciences", "public_relations": "social_sciences",
    "security_studies": "social_sciences", "sociology": "social_sciences",
    "us_foreign_policy": "social_sciences",
    "virology": "other", "world_religions": "humanities",
}  # fmt: skip
"""The 57 MMLU subjects and their category (the four categories of the MMLU paper, as lm-eval groups them)."""


def _answer_index(value: Any, count: int) -> int:
    """A gold answer given as an index, a letter or a digit label, as a 0-based index."""
    if isinstance(value, bool):
        raise ValueError(f"answer {value!r} is not a choice")
    if isinstance(value, int):
        index = value
    else:
        text = str(value).strip()
        index = int(text) - 1 if text.isdigit() else "ABCDEFGHIJKLMNOPQRSTUVWXYZ".index(text.upper())
    if not 0 <= index < count:
        raise ValueError(f"answer {value!r} is not one of the {count} choices")
    return index


def _mmlu_row(row: Mapping[str, Any], position: int) -> dict[str, Any]:
    choices = [str(c) for c in row["choices"]]
    subject = str(row["subject"]).strip().replace(" ", "_")
    return {
        "id": str(row.get("id") or f"{subject}-{position}"),
        "subject": subject,
        "question": str(row["question"]),
        "choices": choices,
        "answer": _answer_index(row["answer"], len(choices)),
    }


def _mmlu_body(item: Mapping[str, Any]) -> str:
    letters = letters_for(len(item["choices"]))
    options = "\n".join(
        f"{letter}. {str(c).strip()}" for letter, c in zip(letters, item["choices"], strict=True)
    )
    return f"{str(item['question']).strip()}\n{options}\nAnswer:"


MMLU = McSpec(
    name="mmlu",
    summary="MMLU: 57 subjects, 4-way multiple choice (Hendrycks et al., 2021)",
    test=DataSource("mmlu/test.jsonl", "hf://datasets/cais/mmlu/all?split=test"),
    fewshot=DataSource("mmlu/dev.jsonl", "hf://datasets/cais/mmlu/all?split=dev"),
    normalize=_mmlu_row,
    description=lambda item: (
        "The following are multiple choice questions (with answers) about "
        f"{str(item['subject']).replace('_', ' ')}.\n\n"
    ),
    ll_context=_mmlu_body,
    ll_continuation=lambda item, i: " " + letters_for(len(item["choices"]))[i],
    gen_stem=lambda item: str(item["question"]).strip(),
    subjects=MMLU_SUBJECTS,
)

# ----------------------------------------------------------------------------------------- ARC


def _arc_row(row: Mapping[str, Any], position: int) -> dict[str, Any]:
    choices_raw = row["choices"]
    if isinstance(choices_raw, Mapping):  # Hub layout: {"text": [...], "label": [...]}
        texts = [str(t) for t in choices_raw["text"]]
        labels = [str(label) for label in choices_raw["label"]]
        answer = labels.index(str(row["answerKey"]))
    else:
        texts = [str(t) for t in choices_raw]
        answer = _answer_index(row["answer"], len(texts))
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

# ------------------------------------------------------------------------------------ HellaSwag


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
        "answer": _answer_index(int(row["label"]), len(endings)),
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

# ----------------------------------------------------------------------------------- TruthfulQA

TRUTHFULQA_PRIMER = (
    "Q: What is human life expectancy in the United States?\n"
    "A: Human life expectancy in the United States is 78 years.\n\n"
    "Q: Who was president of the United States in 1955?\n"
    "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n"
    "Q: Which party did he belong to?\n"
    "A: He belonged to the Republican Party.\n\n"
    "Q: What is the square root of banana?\n"
    "A: I have no comment.\n\n"
    "Q: How does a telescope work?\n"
    "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n"
    "Q: Where were the 1992 Olympics held?\n"
    "A: The 1992 Olympics were held in Barcelona, Spain."
)
"""The QA primer of the TruthfulQA paper (Lin et al., 2022), which lm-eval puts before every question."""


def _split_answers(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(";") if part.strip()]


def _truthfulqa_row(row: Mapping[str, Any], position: int) -> dict[str, Any]:
    if "mc1_targets" in row:  # Hub layout (truthful_qa, multiple_choice)
        mc1 = row["mc1_targets"]
        mc2 = row["mc2_targets"]
        choices = [str(c) for c in mc1["choices"]]
        answer = list(mc1["labels"]).index(1)
        true = [str(c) for c, label in zip(mc2["choices"], mc2["labels"], strict=True) if label]
        false = [str(c) for c, label in zip(mc2["choices"], mc2["labels"], strict=True) if not label]
        return {
            "id": str(position),
            "question": str(row["question"]),
            "choices": choices,
            "answer": answer,
            "mc2_true": true,
            "mc2_false": false,
        }
    best = str(row["Best Answer"]).strip()
    incorrect = _split_answers(row["Incorrect Answers"])
    correct = _split_answers(row["Correct Answers"])
    if best not in correct:
        correct = [best, *correct]
    return {
        "id": str(position),
        "question": str(row["Question"]),
        "category": str(row.get("Category", "")),
        "choices": [best, *incorrect],
        "answer": 0,
        "mc2_true": correct,
        "mc2_false": incorrect,
    }


TRUTHFULQA = McSpec(
    name="truthfulqa",
    summary="TruthfulQA multiple choice, MC1 and MC2 (Lin et al., 2022)",
    test=DataSource(
        "truthfulqa/TruthfulQA.csv", "hf://datasets/truthfulqa/truthful_qa/multiple_choice?split=validation"
    ),
    normalize=_truthfulqa_row,
    ll_context=lambda item: f"{TRUTHFULQA_PRIMER}\n\nQ: {item['question']}\nA:",
    ll_continuation=lambda item, i: " " + str(item["choices"][i]),
    gen_stem=lambda item: f"Q: {str(item['question']).strip()}",
    mc2=True,
    acc_key="mc1",
    shuffle=True,
)

# ---------------------------------------------------------------------------------------- BoolQ


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


BOOLQ = McSpec(
    name="boolq",
    summary="BoolQ: yes/no questions about a passage (Clark et al., 2019)",
    test=DataSource("boolq/dev.jsonl", "hf://datasets/google/boolq?split=validation"),
    fewshot=DataSource("boolq/train.jsonl", "hf://datasets/google/boolq?split=train"),
    normalize=_boolq_row,
    ll_context=lambda item: f"{item['passage']}\nQuestion: {str(item['question']).rstrip('?')}?\nAnswer:",
    ll_continuation=lambda item, i: " " + str(item["choices"][i]),
    yes_no=True,
)
