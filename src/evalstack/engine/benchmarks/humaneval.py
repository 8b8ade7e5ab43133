"""HumanEval: Python function synthesis checked by unit tests (Chen et al., 2021), pass@k.

Completion endpoints get the problem's prompt (signature and docstring) and complete the body;
greedy, ``max_tokens`` 512, stopping at ``\\nclass``, ``\\ndef``, ``\\n#``, ``\\nif`` (the Codex
paper's stops; OpenAI allows four). Chat endpoints get ``Complete the following Python function ...``
and the prompt; the first fenced code block of the reply is taken and placed after the prompt, so
a reply with the whole function redefines the stub and an indented body completes it.

``params.extra.n_samples`` (default 1) completions per problem; each problem is one row per sample.
With ``n_samples`` above 1 the default ``temperature`` is 0.8 (the Codex paper's for pass@k, k > 1),
else 0. Scores ``pass@k`` for k in 1, 10, 100 up to ``n_samples``, with the unbiased estimator
``1 - C(n-c, k) / C(n, k)`` per problem, averaged over problems (with statistics and CI).

Each program (prompt + completion + the tests + ``check(<entry_point>)``) runs in
:mod:`evalstack.engine.benchmarks.sandbox`: a separate process with a timeout
(``params.extra.sandbox_timeout``, default 10 s), memory and CPU limits, no network and a throwaway
directory. A program that fails, times out or breaks a limit scores 0; the job goes on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from math import comb
from typing import Any

from evalstack.engine.benchmarks.base import Compiled, Context, Rows
from evalstack.engine.benchmarks.common import DataSource, chat_request, completion_request, request_params
from evalstack.engine.benchmarks.extract import extract_code, strip_reasoning
from evalstack.engine.benchmarks.results import ScoreLists, TaskSummary
from evalstack.engine.benchmarks.sandbox import run_program
from evalstack.engine.plan import SampleOutput, TaskPlan
from evalstack.inference.base import InferenceRequest
from evalstack.store.records import SampleRecord

STOP = ["\nclass", "\ndef", "\n#", "\nif"]
_SANDBOXES = asyncio.Semaphore(max(1, (os.cpu_count() or 2)))


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from ``n`` samples of which ``c`` passed."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def program_for(item: Mapping[str, Any], completion: str, *, chat: bool) -> str:
    """The program that checks one completion."""
    body = (
        extract_code(completion)
        if chat
        else strip_reasoning(completion)
        if "<think" in completion
        else completion
    )
    separator = "\n" if chat else ""
    return f"{item['prompt']}{separator}{body}\n\n{item['test']}\n\ncheck({item['entry_point']})\n"


def _row(row: Mapping[str, Any], position: int) -> dict[str, Any]:
    return {
        "id": str(row["task_id"]),
        "task_id": str(row["task_id"]),
        "prompt": str(row["prompt"]),
        "entry_point": str(row["entry_point"]),
        "test": str(row["test"]),
        "canonical_solution": str(row.get("canonical_solution", "")),
    }


class _ExecutionMetric:
    name = "execution"

    def __init__(self, *, chat: bool, timeout: float) -> None:
        self.chat = chat
        self.timeout = timeout

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        program = program_for(item, output.text or "", chat=self.chat)
        async with _SANDBOXES:
            result = await run_program(program, timeout=self.timeout)
        return {"passed": 1.0 if result.passed else 0.0}


def _pass_at_k_scores(ks: Sequence[int]) -> Any:
    def unit_scores(samples: Sequence[SampleRecord]) -> ScoreLists:
        by_problem: dict[str, list[float]] = {}
        for sample in samples:
            passed = (sample.scores.get("execution") or {}).get("passed")
            by_problem.setdefault(str(sample.item["task_id"]), []).append(float(passed or 0.0))
        out: ScoreLists = {f"pass@{k}": [] for k in ks}
        for results in by_problem.values():
            n, c = len(results), int(sum(results))
            for k in ks:
                out[f"pass@{k}"].append(pass_at_k(n, c, k) if n >= k else None)
        return out

    return unit_scores


class HumanEval:
    name = "humaneval"
    summary = "HumanEval: Python function synthesis, pass@k in a sandbox (Chen et al., 2021)"
    test = DataSource(
        "humaneval/HumanEval.jsonl.gz", "hf://datasets/openai/openai_humaneval/openai_humaneval?split=test"
    )

    def compile(self, ctx: Context) -> Compiled:
        opts = ctx.opts
        n = opts.n_samples
        rows = Rows(self.name, ctx, self.test, _row)
        chat = opts.endpoint_type == "chat"

        async def load() -> list[dict[str, Any]]:
            problems = await rows.rows()
            if opts.limit is not None:
                problems = problems[: opts.limit]
            return [{**problem, "sample": j} for problem in problems for j in range(n)]

        def build(item: Mapping[str, Any]) -> InferenceRequest:
            params = request_params(
                opts, max_tokens=512, stop=None if chat else STOP, temperature=0.8 if n > 1 else 0.0
            )
            if chat:
                user = (
                    "Complete the following Python function. Reply with the complete function "
                    f"(signature included) in one ```python code block.\n\n```python\n{item['prompt']}```"
                )
                return chat_request(opts, [], user, params)
            return completion_request(opts, str(item["prompt"]), params)

        ks = [k for k in (1, 10, 100) if k <= n]
        info = {"benchmark": self.name, "endpoint_type": opts.endpoint_type, "n_samples": n, "num_fewshot": 0}
        metric = _ExecutionMetric(chat=chat, timeout=opts.sandbox_timeout)
        plan = TaskPlan(name=ctx.task_name, rows=load, metrics=[metric], build_request=build)
        summary = TaskSummary(name=ctx.task_name, unit_scores=_pass_at_k_scores(ks), info=info)
        return Compiled(plans=[plan], summaries=[summary])


HUMANEVAL = HumanEval()
