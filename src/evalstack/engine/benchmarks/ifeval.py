"""IFEval: verifiable instruction following (Zhou et al., 2023), with lm-evaluation-harness's checkers.

The instruction checkers are Google's, as maintained in the ``lm-eval`` package
(``lm_eval.tasks.ifeval``); they need ``langdetect``, ``immutabledict`` and ``nltk`` (with its
``punkt_tab`` data for the sentence-counting instructions). They are imported on first use, so the
server starts without them; a missing package fails the samples with a message saying what to install.

Prompt: the instruction prompt as is (chat: the user message), greedy, ``max_tokens`` 1280
(lm-eval's). Reasoning blocks are removed before checking. Scores, as lm-eval:
``prompt_level_strict_acc``, ``prompt_level_loose_acc`` (every instruction of the prompt followed),
``inst_level_strict_acc``, ``inst_level_loose_acc`` (each instruction counted on its own; the loose
variants also accept the reply without its first or last line and without ``*`` markup).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evalstack.engine.benchmarks.base import Compiled, Context, Rows
from evalstack.engine.benchmarks.common import DataSource, chat_request, completion_request, request_params
from evalstack.engine.benchmarks.extract import strip_reasoning
from evalstack.engine.benchmarks.results import ScoreLists, TaskSummary
from evalstack.engine.plan import SampleOutput, TaskPlan
from evalstack.errors import UnsupportedError
from evalstack.inference.base import InferenceRequest
from evalstack.store.records import SampleRecord


@functools.cache
def _checker() -> Callable[[dict[str, Any], list[str]], dict[str, Any]]:
    try:
        from lm_eval.tasks.ifeval.utils import process_results
    except ImportError as exc:
        raise UnsupportedError(
            f"IFEval needs the lm-eval package and its IFEval extras (pip install lm-eval langdetect "
            f"immutabledict): {exc}"
        ) from exc
    return process_results


def _row(row: Mapping[str, Any], position: int) -> dict[str, Any]:
    kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} for kw in row["kwargs"]]
    return {
        "id": str(row.get("key", position)),
        "key": row.get("key", position),
        "prompt": str(row["prompt"]),
        "instruction_id_list": list(row["instruction_id_list"]),
        "kwargs": kwargs,
    }


class _Metric:
    name = "ifeval"

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        response = strip_reasoning(output.text)
        checker = await asyncio.to_thread(_checker)
        doc = {
            "key": item["key"],
            "instruction_id_list": item["instruction_id_list"],
            "prompt": item["prompt"],
            "kwargs": item["kwargs"],
        }
        result = await asyncio.to_thread(checker, doc, [response])
        strict = [bool(v) for v in result["inst_level_strict_acc"]]
        loose = [bool(v) for v in result["inst_level_loose_acc"]]
        return {
            "prompt_level_strict_acc": float(result["prompt_level_strict_acc"]),
            "prompt_level_loose_acc": float(result["prompt_level_loose_acc"]),
            "instructions": float(len(strict)),
            "instructions_strict_followed": float(sum(strict)),
            "instructions_loose_followed": float(sum(loose)),
        }


def _unit_scores(samples: Sequence[SampleRecord]) -> ScoreLists:
    out: ScoreLists = {
        "prompt_level_strict_acc": [],
        "prompt_level_loose_acc": [],
        "inst_level_strict_acc": [],
        "inst_level_loose_acc": [],
    }
    for sample in samples:
        scores = sample.scores.get("ifeval") or {}
        out["prompt_level_strict_acc"].append(scores.get("prompt_level_strict_acc"))
        out["prompt_level_loose_acc"].append(scores.get("prompt_level_loose_acc"))
        total = int(scores.get("instructions") or 0)
        for key, followed in (
            ("inst_level_strict_acc", "instructions_strict_followed"),
            ("inst_level_loose_acc", "instructions_loose_followed"),
        ):
            ok = int(scores.get(followed) or 0)
            out[key].extend([1.0] * ok + [0.0] * (total - ok))
    return out


class IfEval:
    name = "ifeval"
    summary = "IFEval: verifiable instruction following, strict and loose (Zhou et al., 2023)"
    test = DataSource("ifeval/input_data.jsonl", "hf://datasets/google/IFEval/ifeval_input_data.jsonl")

    def compile(self, ctx: Context) -> Compiled:
        opts = ctx.opts
        rows = Rows(self.name, ctx, self.test, _row)

        async def load() -> list[dict[str, Any]]:
            items = await rows.rows()
            return items[: opts.limit]  # a None limit keeps every row

        def build(item: Mapping[str, Any]) -> InferenceRequest:
            params = request_params(opts, max_tokens=1280, stop=None)
            if opts.endpoint_type == "chat":
                return chat_request(opts, [], str(item["prompt"]), params)
            return completion_request(opts, str(item["prompt"]), params)

        info = {"benchmark": self.name, "endpoint_type": opts.endpoint_type, "num_fewshot": 0}
        plan = TaskPlan(name=ctx.task_name, rows=load, metrics=[_Metric()], build_request=build)
        return Compiled(
            plans=[plan], summaries=[TaskSummary(name=ctx.task_name, unit_scores=_unit_scores, info=info)]
        )


IFEVAL = IfEval()
