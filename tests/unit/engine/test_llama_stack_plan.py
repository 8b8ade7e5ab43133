"""Llama Stack benchmarks compiled into plans: rows to requests, sampling params, results."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from evalstack.api.llama_stack.models import (
    Benchmark,
    BenchmarkConfig,
    ParamType,
    SamplingParams,
    ScoringFn,
    SystemMessage,
)
from evalstack.config import Settings
from evalstack.engine.llama_stack_plan import build_request, compile_llama_stack_plan, sampling_to_params
from evalstack.engine.plan import SampleOutput
from evalstack.engine.runner import group_samples, run_plan
from evalstack.errors import InvalidInputError, NotFoundError
from evalstack.inference.base import (
    InferenceError,
    InferenceRequest,
    InferenceResult,
    ModelClient,
    ModelEndpoint,
)
from evalstack.store.records import SampleRecord

# ---- row -> request ------------------------------------------------------------------------------


def test_completion_input_as_json_string_or_plain_string() -> None:
    assert build_request({"completion_input": json.dumps("2+2=")}, {}).prompt == "2+2="
    assert build_request({"completion_input": "Complete: the sky is"}, {}).prompt == "Complete: the sky is"
    assert build_request({"completion_input": "42"}, {}).prompt == "42"
    item = json.dumps({"type": "text", "text": "Once upon"})
    request = build_request({"completion_input": item}, {"max_tokens": 4})
    assert request.kind == "completion"
    assert request.prompt == "Once upon"
    assert request.params == {"max_tokens": 4}
    assert request.messages is None


def test_chat_completion_input_as_json_string_or_list() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    for value in (json.dumps(messages), messages):
        request = build_request({"chat_completion_input": value}, {"temperature": 0.0})
        assert request.kind == "chat"
        assert request.messages == messages
        assert request.params == {"temperature": 0.0}


def test_input_query_is_one_user_message() -> None:
    request = build_request({"input_query": "What is 2+2?", "expected_answer": "4"}, {})
    assert request.kind == "chat"
    assert request.messages == [{"role": "user", "content": "What is 2+2?"}]


def test_system_messages_come_first_candidate_before_row() -> None:
    row = {
        "chat_completion_input": json.dumps(
            [
                {"role": "user", "content": "Q1"},
                {"role": "system", "content": "row system"},
                {"role": "assistant", "content": "A1"},
                {"role": "user", "content": "Q2"},
            ]
        )
    }
    request = build_request(row, {}, SystemMessage(content="candidate system"))
    assert [(m["role"], m["content"]) for m in request.messages or []] == [
        ("system", "candidate system"),
        ("system", "row system"),
        ("user", "Q1"),
        ("assistant", "A1"),
        ("user", "Q2"),
    ]
    query = build_request({"input_query": "Q"}, {}, SystemMessage(content="Be brief."))
    assert query.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}]


def test_candidate_system_message_does_not_apply_to_completions() -> None:
    request = build_request({"completion_input": "Go"}, {}, SystemMessage(content="sys"))
    assert request.prompt == "Go"


def test_completion_input_wins_when_a_row_has_several_inputs() -> None:
    row: dict[str, Any] = {"completion_input": "prompt", "chat_completion_input": "[]", "input_query": "q"}
    assert build_request(row, {}).kind == "completion"
    row = {"chat_completion_input": [{"role": "user", "content": "c"}], "input_query": "q"}
    assert build_request(row, {}).messages == [{"role": "user", "content": "c"}]


def test_content_items_become_openai_content_parts() -> None:
    row = {
        "chat_completion_input": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "image": {"url": {"uri": "https://example.com/cat.png"}}},
                ],
            }
        ]
    }
    request = build_request(row, {})
    assert request.messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            ],
        }
    ]


def test_a_row_without_input_names_the_accepted_fields() -> None:
    with pytest.raises(InvalidInputError) as info:
        build_request({"question": "q", "expected_answer": "a"}, {})
    message = info.value.message
    for name in ("completion_input", "chat_completion_input", "input_query", "question"):
        assert name in message


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("not json [", "not valid JSON"),
        ("[]", "non-empty list of messages"),
        ([{"role": "robot", "content": "x"}], "role 'robot'"),
        (["just a string"], "must be a message object"),
    ],
)
def test_bad_chat_input_fails_with_what_is_accepted(value: Any, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        build_request({"chat_completion_input": value}, {})


# ---- sampling params -------------------------------------------------------------------------------


def params_of(data: dict[str, Any]) -> dict[str, Any]:
    return sampling_to_params(SamplingParams.model_validate(data))


def test_greedy_is_temperature_zero_and_unset_max_tokens_is_left_out() -> None:
    assert params_of({}) == {"temperature": 0.0}
    assert params_of({"strategy": {"type": "greedy"}, "max_tokens": 0}) == {"temperature": 0.0}
    assert params_of({"strategy": {"type": "greedy"}, "max_tokens": 16, "stop": ["\n"]}) == {
        "temperature": 0.0,
        "max_tokens": 16,
        "stop": ["\n"],
    }


def test_top_p_and_top_k_strategies() -> None:
    assert params_of({"strategy": {"type": "top_p", "temperature": 0.7}}) == {
        "temperature": 0.7,
        "top_p": 0.95,
    }
    assert params_of({"strategy": {"type": "top_p", "temperature": 1.2, "top_p": 0.5}}) == {
        "temperature": 1.2,
        "top_p": 0.5,
    }
    assert params_of({"strategy": {"type": "top_k", "top_k": 40}, "max_tokens": 8}) == {
        "top_k": 40,
        "max_tokens": 8,
    }


def test_repetition_penalty_only_when_it_changes_something() -> None:
    assert "repetition_penalty" not in params_of({"repetition_penalty": 1.0})
    assert "repetition_penalty" not in params_of({"repetition_penalty": None})
    assert params_of({"repetition_penalty": 1.3})["repetition_penalty"] == 1.3
    assert "stop" not in params_of({"stop": []})


# ---- compiling and running -------------------------------------------------------------------------


class FakeRegistry:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.limits: list[int | None] = []

    async def resolve_model(self, name: str) -> ModelEndpoint:
        if name != "my-model":
            raise NotFoundError(
                f"Model '{name}' not found. Use 'client.models.list()' to list available Models."
            )
        return ModelEndpoint(kind="openai", model="served-name", base_url="http://model.invalid/v1")

    async def get_dataset(self, dataset_id: str) -> dict[str, Any]:
        if dataset_id != "qa":
            raise NotFoundError(f"Dataset '{dataset_id}' not found")
        return {"identifier": dataset_id}

    async def dataset_rows(self, dataset_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        self.limits.append(limit)
        return self.rows[:limit] if limit is not None else list(self.rows)


class Equality:
    def __init__(self, name: str) -> None:
        self.name = name

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        if "expected_answer" not in item:
            raise InvalidInputError("row has no 'expected_answer'")
        return {"score": 1.0 if output.text == item["expected_answer"] else 0.0}


class FakeScoring:
    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.aggregated: list[list[dict[str, Any]]] = []

    async def get_function(self, fn_id: str) -> ScoringFn:
        if not fn_id.startswith("basic::"):
            raise NotFoundError(f"Scoring function '{fn_id}' not found")
        return ScoringFn(identifier=fn_id, provider_id="basic", return_type=ParamType(type="number"))

    async def metric(self, fn_id: str, params: Any) -> Equality:
        if not fn_id.startswith("basic::"):
            raise InvalidInputError(f"Scoring function '{fn_id}' is not supported.")
        self.params[fn_id] = params
        return Equality(fn_id)

    def aggregate(self, fn: ScoringFn, params: Any, score_rows: list[dict[str, Any]]) -> dict[str, Any]:
        self.aggregated.append(score_rows)
        total = sum(row["score"] for row in score_rows)
        return {
            "accuracy": {
                "accuracy": total / len(score_rows),
                "num_correct": total,
                "num_total": len(score_rows),
            }
        }


class EchoClient:
    """Answers the last user message (or prompt) upper-cased; ``DOWN`` raises InferenceError."""

    def __init__(self) -> None:
        self.requests: list[InferenceRequest] = []

    async def generate(self, request: InferenceRequest) -> InferenceResult:
        self.requests.append(request)
        text = request.prompt if request.kind == "completion" else (request.messages or [{}])[-1]["content"]
        if text == "down":
            raise InferenceError("connection refused")
        return InferenceResult(text=str(text).upper())

    async def aclose(self) -> None:
        return None


class Pool:
    def __init__(self, client: EchoClient) -> None:
        self.client = client
        self.endpoints: list[ModelEndpoint] = []

    def get(
        self,
        endpoint: ModelEndpoint,
        *,
        max_retries: int = 5,
        timeout: float = 600.0,
        max_connections: int = 256,
    ) -> ModelClient:
        self.endpoints.append(endpoint)
        return self.client


ROWS = [
    {"input_query": "a", "expected_answer": "A"},
    {"input_query": "b", "expected_answer": "wrong"},
    {"input_query": "down", "expected_answer": "DOWN"},
    {"chat_completion_input": json.dumps([{"role": "user", "content": "d"}]), "expected_answer": "D"},
    {"nothing": "here"},
    {"completion_input": "f", "expected_answer": "F"},
]


def benchmark(**changes: Any) -> Benchmark:
    data: dict[str, Any] = {
        "identifier": "qa-bench",
        "provider_id": "local",
        "dataset_id": "qa",
        "scoring_functions": ["basic::equality"],
    }
    data.update(changes)
    return Benchmark.model_validate(data)


def config(**changes: Any) -> BenchmarkConfig:
    data: dict[str, Any] = {
        "eval_candidate": {
            "type": "model",
            "model": "my-model",
            "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 32},
            "system_message": {"role": "system", "content": "Answer in capitals."},
        },
        "scoring_params": {"basic::equality": {"type": "basic", "aggregation_functions": ["accuracy"]}},
    }
    data.update(changes)
    return BenchmarkConfig.model_validate(data)


async def run(plan: Any, pool: Pool) -> dict[str, list[SampleRecord]]:
    samples: list[SampleRecord] = []

    async def sink(sample: SampleRecord) -> None:
        samples.append(sample)

    await run_plan(plan, pool, sink=sink)
    return group_samples(samples)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, default_parallelism=3, embedded_model=False)


async def test_a_benchmark_runs_into_an_evaluate_response(settings: Settings) -> None:
    scoring = FakeScoring()
    client = EchoClient()
    plan = await compile_llama_stack_plan(
        benchmark(), config(), registry=FakeRegistry(ROWS), scoring=scoring, settings=settings
    )
    assert plan.model == ModelEndpoint(kind="openai", model="served-name", base_url="http://model.invalid/v1")
    assert plan.parallelism == 3
    assert scoring.params["basic::equality"].aggregation_functions == ["accuracy"]

    result = plan.summarize(await run(plan, Pool(client)))

    assert result["generations"] == [
        {"generated_answer": "A"},
        {"generated_answer": "B"},
        {"generated_answer": None, "error": "connection refused"},
        {"generated_answer": "D"},
        {
            "generated_answer": None,
            "error": "Invalid input row: it has none of the input fields completion_input, "
            "chat_completion_input, input_query (row keys: nothing)",
        },
        {"generated_answer": "F"},
    ]
    equality = result["scores"]["basic::equality"]
    assert [row["score"] for row in equality["score_rows"]] == [1.0, 0.0, None, 1.0, None, 1.0]
    assert equality["score_rows"][2]["error"] == "connection refused"
    # failed samples are not wrong answers: they are left out of the aggregation
    assert equality["aggregated_results"]["accuracy"] == {
        "accuracy": 0.75,
        "num_correct": 3.0,
        "num_total": 4,
    }

    chat = [r for r in client.requests if r.kind == "chat"]
    assert all(
        r.messages and r.messages[0] == {"role": "system", "content": "Answer in capitals."} for r in chat
    )
    assert all(r.params == {"temperature": 0.0, "max_tokens": 32} for r in client.requests)


async def test_num_examples_limits_the_rows(settings: Settings) -> None:
    registry = FakeRegistry(ROWS)
    plan = await compile_llama_stack_plan(
        benchmark(), config(num_examples=2), registry=registry, scoring=FakeScoring(), settings=settings
    )
    result = plan.summarize(await run(plan, Pool(EchoClient())))
    assert len(result["generations"]) == 2
    assert registry.limits == [2]


async def test_unknown_model_dataset_or_function_fails_at_compile(settings: Settings) -> None:
    registry = FakeRegistry(ROWS)
    bad_model = config()
    bad_model.eval_candidate.model = "nope"  # type: ignore[union-attr]
    with pytest.raises(NotFoundError, match=re.escape("Model 'nope' not found. Use 'client.models.list()'")):
        await compile_llama_stack_plan(
            benchmark(), bad_model, registry=registry, scoring=FakeScoring(), settings=settings
        )
    with pytest.raises(NotFoundError, match="Dataset 'other' not found"):
        await compile_llama_stack_plan(
            benchmark(dataset_id="other"),
            config(),
            registry=registry,
            scoring=FakeScoring(),
            settings=settings,
        )
    with pytest.raises(InvalidInputError, match="Scoring function 'x::y' is not supported"):
        await compile_llama_stack_plan(
            benchmark(scoring_functions=["x::y"]),
            config(),
            registry=registry,
            scoring=FakeScoring(),
            settings=settings,
        )


async def test_inline_rows_and_functions_override_the_benchmark(settings: Settings) -> None:
    rows = [{"input_query": "x", "expected_answer": "X"}]
    plan = await compile_llama_stack_plan(
        benchmark(),
        config(),
        registry=FakeRegistry([]),
        scoring=FakeScoring(),
        settings=settings,
        rows=rows,
        scoring_functions=["basic::subset_of", "basic::subset_of"],
        parallelism=9,
    )
    assert plan.parallelism == 9
    result = plan.summarize(await run(plan, Pool(EchoClient())))
    assert list(result["scores"]) == ["basic::subset_of"]
    assert result["scores"]["basic::subset_of"]["score_rows"] == [{"score": 1.0}]


async def test_an_empty_dataset_is_a_clear_error(settings: Settings) -> None:
    plan = await compile_llama_stack_plan(
        benchmark(), config(), registry=FakeRegistry([]), scoring=FakeScoring(), settings=settings
    )
    with pytest.raises(InvalidInputError, match="Dataset 'qa' has no rows"):
        await run(plan, Pool(EchoClient()))


async def test_agent_candidate_uses_its_config_model(settings: Settings) -> None:
    agent = BenchmarkConfig.model_validate(
        {"eval_candidate": {"type": "agent", "config": {"model": "my-model", "instructions": "Be nice."}}}
    )
    client = EchoClient()
    plan = await compile_llama_stack_plan(
        benchmark(), agent, registry=FakeRegistry(ROWS[:1]), scoring=FakeScoring(), settings=settings
    )
    await run(plan, Pool(client))
    assert client.requests[0].messages == [
        {"role": "system", "content": "Be nice."},
        {"role": "user", "content": "a"},
    ]
