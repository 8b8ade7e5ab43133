"""The log-likelihood machinery for multiple-choice benchmarks, as lm-evaluation-harness does it.

One completion request per choice with ``echo: true, logprobs: 1, max_tokens: 1``; the choice's
log-likelihood is the sum of the log-probabilities of the tokens after the context (a token that
straddles the context's end counts to the choice). Scores ``acc`` and, where lm-eval reports it,
``acc_norm`` (log-likelihood divided by the choice's length in bytes). TruthfulQA reports ``mc1``
and ``mc2`` (the normalised probability mass of the true answers). The endpoint must return
``logprobs`` with ``tokens``, ``token_logprobs`` and ``text_offset`` (vLLM, llama.cpp, TGI and
OpenAI-compatible legacy completions do).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from evalstack.engine.benchmarks.base import Context
from evalstack.engine.plan import SampleOutput
from evalstack.errors import InvalidInputError
from evalstack.inference.base import InferenceRequest

if TYPE_CHECKING:
    from evalstack.engine.benchmarks.multiple_choice import McSpec


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
    if not len(tokens) == len(values) == len(offsets):
        raise InvalidInputError(
            f"the endpoint's logprobs have {len(tokens)} tokens, {len(values)} token_logprobs and "
            f"{len(offsets)} text_offset entries; they must be as many"
        )
    start = offsets[0] if offsets else 0
    begin = start + len(context)
    end = begin + len(continuation)
    total = 0.0
    counted = 0
    for token, value, offset in zip(tokens, values, offsets, strict=True):
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
            mc2_true = [" " + c for c in item["mc2_true"]]
            mc2_false = [" " + c for c in item["mc2_false"]]
        lls = await self._all(item, output, continuations + mc2_true + mc2_false)
        mc_lls = lls[: len(continuations)]
        gold = int(item["answer"])
        best = max(range(len(mc_lls)), key=lambda i: mc_lls[i])
        scores: dict[str, Any] = {self.spec.acc_key: 1.0 if best == gold else 0.0}
        if self.spec.norm:
            normed = [ll / max(len(c.encode()), 1) for ll, c in zip(mc_lls, continuations, strict=True)]
            best_norm = max(range(len(normed)), key=lambda i: normed[i])
            scores["acc_norm"] = 1.0 if best_norm == gold else 0.0
        if self.spec.mc2:
            # no true answers: 0, as lm-eval; no answers at all, or every probability underflowing: None
            rest = lls[len(continuations) :]
            true_p = [math.exp(v) for v in rest[: len(mc2_true)]]
            false_p = [math.exp(v) for v in rest[len(mc2_true) :]]
            total = sum(true_p) + sum(false_p)
            scores["mc2"] = sum(true_p) / total if total > 0 else None
        return scores
