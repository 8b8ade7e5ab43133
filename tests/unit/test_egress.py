"""The egress policy: resolved addresses, allow and deny lists, and redirects on real downloads."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route

from evalstack.config import Settings
from evalstack.egress import EgressPolicy
from evalstack.engine.datasets import load_rows
from evalstack.engine.metrics.nemo_base import resolve_model_spec
from evalstack.errors import InvalidInputError
from evalstack.server import create_app
from tests.fakes.serving import BackgroundServer, free_port


def resolving_to(*addresses: str) -> Any:
    def resolve(_host: str, _port: int) -> list[str]:
        return list(addresses)

    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]/data.jsonl",
    ],
)
async def test_metadata_and_link_local_addresses_are_never_downloaded(url: str) -> None:
    with pytest.raises(InvalidInputError, match="link-local or cloud-metadata"):
        await EgressPolicy(allow=["0.0.0.0/0", "::/0"]).check_url(url)


async def test_a_name_is_checked_after_resolution() -> None:
    policy = EgressPolicy(resolver=resolving_to("93.184.216.34", "169.254.169.254"))
    with pytest.raises(InvalidInputError, match=r"metadata.example resolves to 169.254.169.254"):
        await policy.check_url("https://metadata.example/data.jsonl")


async def test_deny_and_allow_lists_take_hosts_and_cidrs() -> None:
    policy = EgressPolicy(
        allow=[".example.com", "10.0.0.0/8"], deny=["secret.example.com"], resolver=resolving_to("10.1.2.3")
    )
    await policy.check_url("https://data.example.com/x.csv")
    await policy.check_url("http://anything.internal/x.csv")  # resolves into the allowed 10.0.0.0/8
    with pytest.raises(InvalidInputError, match="in the egress deny list"):
        await policy.check_url("https://secret.example.com/x.csv")
    outside = EgressPolicy(allow=[".example.com"], resolver=resolving_to("192.0.2.1"))
    with pytest.raises(InvalidInputError, match=r"not in the egress allow list \(\.example\.com\)"):
        await outside.check_url("https://elsewhere.org/x.csv")


async def test_models_may_use_link_local_but_the_deny_list_still_applies() -> None:
    policy = EgressPolicy(deny=["192.0.2.0/24"], resolver=resolving_to("192.0.2.7"))
    await EgressPolicy().check_url("http://169.254.10.10:8000/v1", "model")
    with pytest.raises(InvalidInputError, match="deny list"):
        await policy.check_url("http://model.internal:8000/v1", "model")


@pytest.fixture(scope="module")
def files() -> Iterator[BackgroundServer]:
    async def data(_request: Any) -> PlainTextResponse:
        return PlainTextResponse('{"q": "1+1", "a": "2"}\n', media_type="application/jsonl")

    async def to_metadata(_request: Any) -> RedirectResponse:
        return RedirectResponse("http://169.254.169.254/latest/meta-data/iam/data.jsonl")

    async def to_data(_request: Any) -> RedirectResponse:
        return RedirectResponse("/data.jsonl")

    app = Starlette(
        routes=[
            Route("/data.jsonl", data),
            Route("/moved.jsonl", to_metadata),
            Route("/renamed.jsonl", to_data),
        ]
    )
    with BackgroundServer(app, free_port(), name="file server") as server:
        yield server


async def test_every_redirect_is_checked(files: BackgroundServer, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedded_model=False)
    assert await load_rows(f"{files.url}/renamed.jsonl", settings=settings) == [{"q": "1+1", "a": "2"}]
    with pytest.raises(InvalidInputError, match=r"169.254.169.254.*link-local or cloud-metadata"):
        await load_rows(f"{files.url}/moved.jsonl", settings=settings)


async def test_dataset_urls_and_hf_endpoints_obey_the_deny_list(
    files: BackgroundServer, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, embedded_model=False, egress={"deny": ["127.0.0.0/8"]})
    with pytest.raises(InvalidInputError, match=r"127.0.0.1 is in the egress deny list"):
        await load_rows(f"{files.url}/data.jsonl", settings=settings)
    with pytest.raises(InvalidInputError, match="deny list"):
        await load_rows("hf://datasets/org/name", settings=settings, hf_endpoint=files.url)


def test_model_registration_obeys_the_policy(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedded_model=False, egress={"allow": ["models.example.com"]})
    with TestClient(create_app(settings)) as client:
        refused = client.post(
            "/v1/models", json={"model_id": "m", "metadata": {"base_url": "http://10.0.0.5:8000/v1"}}
        )
        assert refused.status_code == 400
        assert "not in the egress allow list" in refused.json()["error"]["message"]
        registry = client.app.state.services.registry  # type: ignore[attr-defined]
        judge = {"api_endpoint": {"url": "http://10.0.0.5:8000/v1", "model_id": "judge"}}
        with pytest.raises(InvalidInputError, match="not in the egress allow list"):
            asyncio.run(resolve_model_spec(judge, registry, "Metric 'judge' (llm-judge)"))
        with pytest.raises(InvalidInputError, match="not in the egress allow list"):
            asyncio.run(registry.resolve_model("http://10.0.0.5:8000/v1#judge"))
