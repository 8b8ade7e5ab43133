"""Log-likelihood scoring: which tokens of an echo response count, the errors a user sees, and
the scores (acc, acc_norm, mc1, mc2) computed from known log-probabilities."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evalstack.config import Settings
from evalstack.engine.benchmarks.base import Context
from evalstack.engine.benchmarks.common import Options
from evalstack.engine.benchmarks.hellaswag import HELLASWAG
from evalstack.engine.benchmarks.loglikelihood import (
    LoglikelihoodMetric,
    continuation_loglikelihood,
    loglikelihood_request,
)
from evalstack.engine.benchmarks.multiple_choice import McSpec
from evalstack.engine.benchmarks.truthfulqa import TRUTHFULQA
from evalstack.engine.plan import SampleOutput
from evalstack.errors import InvalidInputError
from evalstack.inference.base import ModelEndpoint
from evalstack.inference.clients import ModelClientPool
from tests.fakes.model_server import FakeModelServer

CONTEXT = "Q: capital?\nA:"
CHOICE = " Paris"

Pieces = list[tuple[str, float | None]]


def echo(pieces: Pieces, start: int = 0) -> dict[str, Any]:
    """An echo response whose tokens are ``pieces`` (text, log-probability), offsets from ``start``."""
    offsets, at = [], start
    for text, _ in pieces:
        offsets.append(at)
        at += len(text)
    logprobs = {
        "tokens": [text for text, _ in pieces],
        "token_logprobs": [value for _, value in pieces],
        "text_offset": offsets,
    }
    return {"choices": [{"text": "".join(text for text, _ in pieces), "logprobs": logprobs}]}


# The prompt's tokens (the first has no log-probability, as servers send it), the choice's two
# tokens, then the one generated token, which is not part of the choice.
PROMPT: Pieces = [("Q", None), (":", -1.0), (" capital", -2.0), ("?\n", -4.0), ("A:", -8.0)]
PARIS: Pieces = [(" Par", -0.5), ("is", -0.25)]
GENERATED: Pieces = [(" next", -16.0)]


def test_request_echoes_the_prompt_and_choice_for_one_greedy_token_with_logprobs() -> None:
    request = loglikelihood_request(CONTEXT, CHOICE)
    assert request.kind == "completion"
    assert request.prompt == "Q: capital?\nA: Paris"
    assert request.params == {"max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 1}


@pytest.mark.parametrize("start", [0, 37])  # some servers count offsets from elsewhere than 0
def test_only_the_choices_tokens_count(start: int) -> None:
    response = echo(PROMPT + PARIS + GENERATED, start=start)
    assert continuation_loglikelihood(response, CONTEXT, CHOICE) == -0.75


def test_a_token_straddling_the_end_of_the_context_counts_to_the_choice() -> None:
    # "A: P" holds the end of the context and the start of the choice (lm-eval counts it to the choice)
    response = echo([("Q: capital?\n", None), ("A: P", -3.0), ("aris", -0.5), (" next", -16.0)])
    assert continuation_loglikelihood(response, CONTEXT, CHOICE) == -3.5


def test_tokens_that_end_where_the_choice_begins_or_begin_where_it_ends_do_not_count() -> None:
    # exact boundaries on both sides: "A:" ends at the choice's first character, " next" starts after its last
    response = echo([*PROMPT, (" Paris", -0.5), *GENERATED])
    assert continuation_loglikelihood(response, CONTEXT, CHOICE) == -0.5


def test_an_empty_choice_has_log_likelihood_zero() -> None:
    assert continuation_loglikelihood(echo(PROMPT + GENERATED), CONTEXT, "") == 0.0


def test_a_choice_token_without_a_log_probability_is_a_clear_error() -> None:
    response = echo([*PROMPT, (" Par", None), ("is", -0.25), *GENERATED])
    with pytest.raises(
        InvalidInputError, match=r"^the endpoint returned no log-probability for a token of the choice$"
    ):
        continuation_loglikelihood(response, CONTEXT, CHOICE)


@pytest.mark.parametrize("pieces", [GENERATED, []])  # only the generated token, or no tokens at all
def test_a_response_that_did_not_echo_the_prompt_is_a_clear_error(pieces: Pieces) -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"^the echoed text does not contain the choice; the server did not echo the prompt$",
    ):
        continuation_loglikelihood(echo(pieces), "x" * 100, CHOICE)


@pytest.mark.parametrize(
    "response",
    [
        None,
        {},
        {"choices": []},
        {"choices": [{"text": "x"}]},
        {"choices": [{"logprobs": None}]},
        {"choices": [{"logprobs": {"tokens": ["x"], "token_logprobs": [-1.0]}}]},
        {"choices": [{"logprobs": {"tokens": ["x"], "text_offset": [0]}}]},
        {"choices": [{"logprobs": {"token_logprobs": [-1.0], "text_offset": [0]}}]},
    ],
)
def test_a_response_without_logprobs_says_what_is_needed(response: Any) -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"^the endpoint returned no logprobs \(tokens, token_logprobs, text_offset\) for an echo "
        r"request; use a server that supports echo with logprobs, "
        r"or set params\.extra\.mc_method to 'generate'$",
    ):
        continuation_loglikelihood(response, CONTEXT, CHOICE)


def test_logprob_lists_of_different_lengths_are_a_clear_error() -> None:
    response = echo(PROMPT + PARIS)
    response["choices"][0]["logprobs"]["text_offset"].pop()
    with pytest.raises(
        InvalidInputError,
        match=r"^the endpoint's logprobs have 7 tokens, 7 token_logprobs and 6 text_offset entries; "
        r"they must be as many$",
    ):
        continuation_loglikelihood(response, CONTEXT, CHOICE)


# ---- the metric, against the fake server's echo log-probabilities ---------------------------------

QUESTION = "Q: x\nA:"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as fake:
        yield fake


async def score_item(
    server: FakeModelServer, spec: McSpec, item: dict[str, Any], logprobs: dict[str, float], tmp_path: Path
) -> dict[str, Any]:
    """The metric's scores of ``item``, the fake model giving each token the log-probability listed."""
    server.set_answer(" next")  # one generated token after the echoed prompt and choice
    server.logprob_fn = lambda token: logprobs.get(token, -1.0)
    clients = ModelClientPool()
    endpoint = ModelEndpoint(kind="openai", model=server.model_id, base_url=server.base_url)
    options = Options(endpoint_type="completion", mc_method="loglikelihood")
    ctx = Context("t", options, Settings(data_dir=tmp_path), endpoint, clients, max_retries=0)
    try:
        first = await ctx.client().generate(loglikelihood_request(QUESTION, spec.ll_continuation(item, 0)))
        metric = LoglikelihoodMetric(spec, ctx, lambda _: QUESTION)
        return await metric.score(item, SampleOutput(first.text, first.raw))
    finally:
        await clients.aclose()


async def test_acc_norm_divides_by_the_length_in_bytes_of_the_space_and_choice(
    server: FakeModelServer, tmp_path: Path
) -> None:
    # An empty ending is the one-byte continuation " ": -1 / 1 loses to -3 / 4 (" xyz"), though its
    # log-likelihood alone wins; lm-eval divides by the continuation's length, 1, the same way.
    item = {"choices": ["", "xyz"], "answer": 1}
    scores = await score_item(server, HELLASWAG, item, {" ": -1.0, " xyz": -3.0}, tmp_path)
    assert scores == {"acc": 0.0, "acc_norm": 1.0}


async def test_mc2_is_the_normalised_probability_mass_of_the_true_answers(
    server: FakeModelServer, tmp_path: Path
) -> None:
    item = {"choices": ["yes", "no"], "answer": 0, "mc2_true": ["yes", "sure"], "mc2_false": ["no"]}
    lps = {" yes": math.log(0.2), " sure": math.log(0.1), " no": math.log(0.6)}
    scores = await score_item(server, TRUTHFULQA, item, lps, tmp_path)
    assert scores["mc1"] == 0.0  # " no" is likelier than " yes"
    assert scores["mc2"] == pytest.approx(0.3 / 0.9)


async def test_mc2_without_true_answers_is_zero_as_in_lm_eval(
    server: FakeModelServer, tmp_path: Path
) -> None:
    item = {"choices": ["yes", "no"], "answer": 0, "mc2_true": [], "mc2_false": ["no"]}
    scores = await score_item(server, TRUTHFULQA, item, {}, tmp_path)
    assert scores["mc2"] == 0.0


async def test_mc2_is_not_a_number_when_every_probability_underflows(
    server: FakeModelServer, tmp_path: Path
) -> None:
    item = {"choices": ["yes", "no"], "answer": 0, "mc2_true": ["yes"], "mc2_false": ["no"]}
    scores = await score_item(server, TRUTHFULQA, item, {" yes": -1000.0, " no": -2000.0}, tmp_path)
    assert scores == {"mc1": 1.0, "mc2": None}
