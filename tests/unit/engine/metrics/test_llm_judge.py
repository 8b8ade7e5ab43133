"""llm-judge: a judge on the fake model server, given as an api_endpoint or a registered model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from evalstack.config import Settings
from evalstack.engine.metrics.nemo import nemo_metric
from evalstack.engine.metrics.nemo_base import MetricDeps
from evalstack.engine.plan import SampleOutput
from evalstack.errors import InvalidInputError, NotFoundError
from evalstack.inference.base import InferenceError
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
