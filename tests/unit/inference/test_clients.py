"""The model client pool: one client per endpoint and settings, one shared embedded model, closing all."""

from __future__ import annotations

import pytest

from evalstack.errors import InvalidInputError
from evalstack.inference.base import InferenceError, InferenceRequest, InferenceResult, ModelEndpoint
from evalstack.inference.clients import ModelClientPool
from evalstack.inference.openai_http import OpenAIClient
from tests.fakes.model_server import FakeModelServer


class StubEmbedded:
    def __init__(self) -> None:
        self.closed = False

    async def generate(self, request: InferenceRequest) -> InferenceResult:
        return InferenceResult("stub")

    async def aclose(self) -> None:
        self.closed = True


async def test_clients_are_cached_per_endpoint_and_settings(fake_model: FakeModelServer) -> None:
    pool = ModelClientPool()
    endpoint = ModelEndpoint(kind="openai", model="fake-model", base_url=fake_model.base_url)
    first = pool.get(endpoint, max_connections=16)
    assert (
        pool.get(
            ModelEndpoint(kind="openai", model="fake-model", base_url=fake_model.base_url), max_connections=16
        )
        is first
    )
    assert pool.get(endpoint, max_connections=64) is not first
    assert (
        pool.get(
            ModelEndpoint(kind="openai", model="other", base_url=fake_model.base_url), max_connections=16
        )
        is not first
    )
    assert isinstance(first, OpenAIClient)
    result = await first.generate(InferenceRequest(kind="chat", messages=[{"role": "user", "content": "hi"}]))
    assert result.text == "hi"
    await pool.aclose()
    # A closed client refuses work at once; the pool hands out a fresh one afterwards.
    with pytest.raises(InferenceError, match="closed"):
        await first.generate(InferenceRequest(kind="chat", messages=[{"role": "user", "content": "late"}]))
    fresh = pool.get(endpoint, max_connections=16)
    assert fresh is not first
    result = await fresh.generate(
        InferenceRequest(kind="chat", messages=[{"role": "user", "content": "again"}])
    )
    assert result.text == "again"
    await pool.aclose()


async def test_embedded_endpoints_share_one_lazily_created_model() -> None:
    created: list[StubEmbedded] = []

    def loader() -> StubEmbedded:
        created.append(StubEmbedded())
        return created[-1]

    pool = ModelClientPool(embedded_loader=loader)
    assert created == []
    a = pool.get(ModelEndpoint(kind="embedded", model="SmolLM2-135M-Instruct"))
    b = pool.get(ModelEndpoint(kind="embedded", model="embedded"), max_connections=4)
    assert a is b and len(created) == 1
    await pool.aclose()
    assert created[0].closed


def test_openai_endpoint_without_base_url_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="base_url"):
        ModelClientPool().get(ModelEndpoint(kind="openai", model="m"))
