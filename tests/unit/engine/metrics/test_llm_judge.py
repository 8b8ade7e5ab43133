"""llm-judge: a judge on the fake model server, given as an api_endpoint or a registered model."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from evalstack.config import Settings
from evalstack.engine.metrics.llm_judge import ScoreParser
from evalstack.engine.metrics.nemo import nemo_metric
from evalstack.engine.metrics.nemo_base import MetricDeps
from evalstack.engine.plan import SampleOutput
from evalstack.errors import InvalidInputError, NotFoundError
from evalstack.inference.base import InferenceError
from evalstack.inference.breaker import BreakerSettings
from evalstack.inference.clients import ModelClientPool
from evalstack.registry import Registry
from evalstack.store.repository import Store
from tests.fakes.model_server import FakeModelServer, prompt_of

TEMPLATE = {
    "messages": [
        {"role": "system", "content": "Rate the candidate from 1 to 10."},
        {"role": "user", "content": "REF: {{ item.reference }} CAND: {{ sample.output_text }}"},
    ],
    "max_tokens": 20,
}


def judge_spec(model: object, scores: Mapping[str, Any] | None = None) -> dict[str, object]:
    scores = scores or {
        "similarity": {"type": "int", "parser": {"type": "regex", "pattern": r"RATING:\s*(\d+)"}}
    }
    return {"type": "llm-judge", "params": {"model": model, "template": TEMPLATE, "scores": scores}}


@pytest.fixture
async def pool() -> AsyncIterator[ModelClientPool]:
    clients = ModelClientPool()
    yield clients
    await clients.aclose()


async def test_judge_by_api_endpoint_parses_int_and_float_scores(
    fake_model: FakeModelServer, pool: ModelClientPool
) -> None:
    fake_model.set_answer(lambda prompt: "RATING: 7 CONFIDENCE=0.75" if "Paris" in prompt else "no idea")
    endpoint = {"api_endpoint": {"url": f"{fake_model.base_url}/chat/completions", "model_id": "judge-model"}}
    scores = {
        "similarity": {"type": "int", "parser": {"type": "regex", "pattern": r"RATING:\s*(\d+)"}},
        "confidence": {"type": "float", "parser": {"type": "regex", "pattern": r"CONFIDENCE=([0-9.]+)"}},
    }
    metric = await nemo_metric("judge", judge_spec(endpoint, scores), MetricDeps(clients=pool))
    judged = SampleOutput("Paris, France")
    assert await metric.score({"reference": "Paris"}, judged) == {"similarity": 7, "confidence": 0.75}
    assert judged.extra["judgement"] == {"judge": "RATING: 7 CONFIDENCE=0.75"}  # as the judge answered
    body = fake_model.requests[-1]
    assert body["model"] == "judge-model" and body["max_tokens"] == 20
    assert body["messages"][1]["content"] == "REF: Paris CAND: Paris, France"
    assert prompt_of(body).startswith("REF: Paris")
    # an answer the regex does not match is a NaN, not an error
    assert await metric.score({"reference": "Rome"}, SampleOutput("x")) == {
        "similarity": None,
        "confidence": None,
    }


async def test_judge_by_registered_model(
    tmp_path: Path, fake_model: FakeModelServer, pool: ModelClientPool
) -> None:
    fake_model.set_answer("RATING: 9")
    settings = Settings(data_dir=tmp_path, embedded_model=False)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    await store.open()
    try:
        registry = Registry(store, settings)
        await registry.register_model("meta/judge", "served-judge", {"base_url": fake_model.base_url})
        deps = MetricDeps(registry=registry, clients=pool)
        metric = await nemo_metric("judge", judge_spec("meta/judge"), deps)
        assert await metric.score({"reference": "a"}, SampleOutput("b")) == {"similarity": 9}
        assert fake_model.requests[-1]["model"] == "served-judge"
        with pytest.raises(NotFoundError):
            await nemo_metric("judge", judge_spec("meta/unknown"), deps)
    finally:
        await store.close()


async def test_a_failing_judge_fails_the_sample(fake_model: FakeModelServer, pool: ModelClientPool) -> None:
    endpoint = {"api_endpoint": {"url": fake_model.base_url, "model_id": "judge"}}
    metric = await nemo_metric("judge", judge_spec(endpoint), MetricDeps(clients=pool, max_retries=0))
    fake_model.fail_next(1, 500)
    with pytest.raises(InferenceError):
        await metric.score({"reference": "a"}, SampleOutput("b"))


async def test_judge_config_errors_name_the_problem(pool: ModelClientPool) -> None:
    endpoint = {"api_endpoint": {"url": "http://127.0.0.1:9/v1", "model_id": "judge"}}
    bad_regex = {"s": {"type": "int", "parser": {"type": "regex", "pattern": "("}}}
    with pytest.raises(InvalidInputError, match="not a valid regex"):
        await nemo_metric("j", judge_spec(endpoint, bad_regex), MetricDeps(clients=pool))
    bad_type = {"s": {"type": "bool", "parser": {"type": "regex", "pattern": "x"}}}
    with pytest.raises(InvalidInputError, match="type must be one of int, float"):
        await nemo_metric("j", judge_spec(endpoint, bad_type), MetricDeps(clients=pool))
    with pytest.raises(InvalidInputError, match=r"api_endpoint\.model_id is required"):
        await nemo_metric("j", judge_spec({"api_endpoint": {"url": "http://x/v1"}}), MetricDeps(clients=pool))


@pytest.mark.parametrize(
    ("pattern", "score_type", "answer", "expected"),
    [
        (r"RATING:\s*(\d+)", "int", "RATING: 3, then RATING: 9", 3),  # the first match
        (r"\d+(?:\.\d+)?", "float", "about 7.5 out of 10", 7.5),  # no group: the whole match
        (r"(\d+)/10|(\d+) of 10", "int", "8 of 10", 8),  # the first group that took part
        (r"SCORE:([^\n]*)", "float", "SCORE:  0.25 \nbecause", 0.25),  # spaces around the number
        (r"SCORE: (\d+(?:\.\d+)?)", "int", "SCORE: 7.0", 7),
        (r"SCORE: (\d+(?:\.\d+)?)", "int", "SCORE: 7.5", None),  # an int score that is not whole
        (r"SCORE: (\w+)", "float", "SCORE: high", None),  # not a number
        (r"SCORE: (\d+)?", "float", "SCORE: none", None),  # the only group did not take part
        (r"RATING: (\d+)", "int", "no rating here", None),
    ],
)
def test_the_score_parser(pattern: str, score_type: str, answer: str, expected: float | None) -> None:
    parsed = ScoreParser("s", score_type, re.compile(pattern)).parse(answer)
    assert parsed == expected
    assert type(parsed) is type(expected)  # an int score is an int, a float score a float


async def test_a_completion_judge_with_default_types_and_extra_fields(
    fake_model: FakeModelServer, pool: ModelClientPool
) -> None:
    fake_model.set_answer("SCORE 0.5")
    endpoint = {"api_endpoint": {"url": fake_model.base_url, "model_id": "judge"}}
    params = {
        "model": endpoint,
        "template": {"prompt": "Grade {{ sample.output_text }}:", "max_tokens": 5},
        "scores": {
            "grade": {"parser": {"pattern": r"SCORE (\S+)"}},  # type float and parser regex by default
            "whole": {"type": "int", "parser": {"type": "regex", "pattern": r"SCORE (\S+)"}},
        },
        "extra": {"seed": 7},
    }
    metric = await nemo_metric("j", {"type": "llm-judge", "params": params}, MetricDeps(clients=pool))
    assert metric.score_names == ("grade", "whole")  # what the task's results report
    assert await metric.score({}, SampleOutput("42")) == {"grade": 0.5, "whole": None}  # 0.5 is no int
    assert fake_model.paths[-1].endswith("/completions") and not fake_model.paths[-1].endswith(
        "chat/completions"
    )
    body = fake_model.requests[-1]
    assert (body["prompt"], body["max_tokens"], body["seed"]) == ("Grade 42:", 5, 7)


async def test_a_judge_slower_than_the_request_timeout_fails_the_sample(fake_model: FakeModelServer) -> None:
    endpoint = {"api_endpoint": {"url": fake_model.base_url, "model_id": "judge"}}
    pool = ModelClientPool(breaker_settings=BreakerSettings(enabled=False))  # fail, not wait for an outage
    try:
        deps = MetricDeps(clients=pool, max_retries=0, request_timeout=0.2)
        metric = await nemo_metric("judge", judge_spec(endpoint), deps)
        fake_model.latency = 1.0
        with pytest.raises(InferenceError):
            await metric.score({"reference": "a"}, SampleOutput("b"))
    finally:
        await pool.aclose()


async def test_a_template_that_renders_to_bad_messages_names_the_metric(pool: ModelClientPool) -> None:
    endpoint = {"api_endpoint": {"url": "http://127.0.0.1:9/v1", "model_id": "judge"}}
    spec = judge_spec(endpoint)
    spec["params"]["template"] = {"messages": "{{ item.messages }}"}  # type: ignore[index]
    metric = await nemo_metric("j", spec, MetricDeps(clients=pool))
    with pytest.raises(
        InvalidInputError, match=r"^Metric 'j' \(llm-judge\): template\.messages rendered to text"
    ):
        await metric.score({"messages": "[not json"}, SampleOutput("b"))


SCORES_SHAPE = (
    'params.scores must map score names to {"type": "int"|"float", '
    '"parser": {"type": "regex", "pattern": "..."}}'
)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"template": {"max_tokens": 5}}, 'params.template must be an object with "messages" (or "prompt")'),
        ({"template": "Rate it"}, 'params.template must be an object with "messages" (or "prompt")'),
        ({"extra": ["seed"]}, "params.extra must be an object"),
        ({"scores": {}}, SCORES_SHAPE),
        ({"scores": ["s"]}, SCORES_SHAPE),
        ({"scores": {"s": "int"}}, "scores.s must be an object with type and parser"),
        (
            {"scores": {"s": {"type": "bool", "parser": {"pattern": "x"}}}},
            "scores.s.type must be one of int, float",
        ),
        ({"scores": {"s": {"type": "int"}}}, 'scores.s.parser must be {"type": "regex", "pattern": "..."}'),
        (
            {"scores": {"s": {"parser": {"type": "json", "pattern": "x"}}}},
            'scores.s.parser must be {"type": "regex", "pattern": "..."}',
        ),
        ({"scores": {"s": {"parser": {"type": "regex"}}}}, "scores.s.parser.pattern is required"),
        ({"scores": {"s": {"parser": {"pattern": ""}}}}, "scores.s.parser.pattern is required"),
        ({"model": None}, "params.model (the judge) is required"),
    ],
)
async def test_each_config_error_says_what_is_wrong(
    pool: ModelClientPool, change: dict[str, Any], message: str
) -> None:
    spec = judge_spec({"api_endpoint": {"url": "http://127.0.0.1:9/v1", "model_id": "judge"}})
    params: dict[str, Any] = {**spec["params"], **change}  # type: ignore[dict-item]
    if change.get("model", "") is None:
        del params["model"]
    with pytest.raises(InvalidInputError) as info:
        await nemo_metric("j", {"type": "llm-judge", "params": params}, MetricDeps(clients=pool))
    assert info.value.message == f"Metric 'j' (llm-judge): {message}."


async def test_a_judge_needs_model_clients_and_a_valid_model_names_the_metric() -> None:
    endpoint = {"api_endpoint": {"url": "http://127.0.0.1:9/v1", "model_id": "judge"}}
    with pytest.raises(InvalidInputError) as info:
        await nemo_metric("j", judge_spec(endpoint), MetricDeps(clients=None))
    assert info.value.message == "Metric 'j' (llm-judge): no model clients are available to call the judge."
    with pytest.raises(InvalidInputError, match=r"^Metric 'j' \(llm-judge\): "):
        await nemo_metric("j", judge_spec({"api_endpoint": {"url": "http://x/v1"}}), MetricDeps())


async def test_a_broken_judge_template_is_rejected_when_the_metric_is_built(pool: ModelClientPool) -> None:
    spec = judge_spec({"api_endpoint": {"url": "http://127.0.0.1:9/v1", "model_id": "judge"}})
    spec["params"]["template"] = {"messages": [{"role": "user", "content": "{{ item.reference"}]}  # type: ignore[index]
    with pytest.raises(InvalidInputError, match="is not valid Jinja"):
        await nemo_metric("j", spec, MetricDeps(clients=pool))
