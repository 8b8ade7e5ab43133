"""The egress policy at connection time: the address connected to is the one checked, on every hop.

Names are answered by a scripted resolver (no DNS, no network): each lookup gets the next answer,
so a name can resolve to a public address for the check and to 169.254.169.254 for the connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route

from evalstack.config import Settings
from evalstack.egress import EgressPolicy, EgressRefusedError
from evalstack.egress_clients import download_client, hub_egress
from evalstack.engine.datasets import load_rows
from evalstack.errors import InvalidInputError
from evalstack.inference.base import InferenceError, InferenceRequest, ModelEndpoint
from evalstack.inference.openai_http import OpenAIClient
from tests.fakes.hf_hub import FakeHub
from tests.fakes.model_server import FakeModelServer
from tests.fakes.serving import BackgroundServer, free_port

ROW = '{"q": "1+1", "a": "2"}\n'


class ScriptedResolver:
    """Answers the n-th lookup with the n-th answer (the last one from then on); records the names."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    def __call__(self, host: str, _port: int) -> list[str]:
        self.lookups.append(host)
        return self.answers[min(len(self.lookups), len(self.answers)) - 1]


class Files:
    """A file server that records each request's path and Host header."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.server = BackgroundServer(self._app(), free_port(), name="file server")

    def _app(self) -> Starlette:
        async def data(request: Request) -> PlainTextResponse:
            self.seen.append((request.url.path, request.headers["host"]))
            return PlainTextResponse(ROW, media_type="application/jsonl")

        async def redirect(request: Request) -> RedirectResponse:
            self.seen.append((request.url.path, request.headers["host"]))
            return RedirectResponse(request.query_params["to"])

        return Starlette(routes=[Route("/data.jsonl", data), Route("/redirect", redirect)])


@pytest.fixture(scope="module")
def files() -> Iterator[Files]:
    running = Files()
    with running.server:
        yield running


@pytest.fixture(autouse=True)
def _fresh(files: Files) -> None:
    files.seen.clear()


async def test_a_download_connects_to_the_checked_address_and_keeps_the_name(files: Files) -> None:
    resolver = ScriptedResolver(["127.0.0.1"])
    url = f"http://files.test:{files.server.port}/data.jsonl"
    async with download_client(EgressPolicy(resolver=resolver), timeout=10) as client:
        response = await client.get(url)
    assert response.text == ROW
    assert files.seen == [("/data.jsonl", f"files.test:{files.server.port}")]  # Host is the name
    assert resolver.lookups == ["files.test"]  # resolved once, by the policy


async def test_a_name_that_resolves_elsewhere_after_the_check_is_refused_at_connection(files: Files) -> None:
    resolver = ScriptedResolver(["93.184.216.34"], ["169.254.169.254"])
    policy = EgressPolicy(resolver=resolver)
    url = f"http://rebind.test:{files.server.port}/data.jsonl"
    await policy.check_url(url)  # the first answer is public: the URL passes
    async with download_client(policy, timeout=10) as client:
        with pytest.raises(
            EgressRefusedError, match=r"rebind.test resolves to 169.254.169.254, a link-local"
        ):
            await client.get(url)
    assert resolver.lookups == ["rebind.test", "rebind.test"]


async def test_a_redirect_to_a_denied_host_is_never_connected_to(files: Files, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedded_model=False, egress={"deny": ["localhost"]})
    port = files.server.port
    allowed = f"http://127.0.0.1:{port}/redirect?to=http://127.0.0.1:{port}/data.jsonl"
    assert await load_rows(allowed, settings=settings) == [{"q": "1+1", "a": "2"}]
    files.seen.clear()
    denied = f"http://127.0.0.1:{port}/redirect?to=http://localhost:{port}/data.jsonl"
    with pytest.raises(InvalidInputError, match=r"localhost:\d+: localhost is in the egress deny list"):
        await load_rows(denied, settings=settings)
    assert [path for path, _host in files.seen] == ["/redirect"]  # the second hop was refused


async def test_model_requests_connect_only_to_addresses_the_policy_passed(tmp_path: Path) -> None:
    with FakeModelServer(answer="echo") as server:
        base = f"http://model.test:{server.port}/v1"
        request = InferenceRequest(kind="chat", messages=[{"role": "user", "content": "hi"}])
        resolver = ScriptedResolver(["127.0.0.1"])
        client = OpenAIClient(
            ModelEndpoint(kind="openai", model="fake", base_url=base), egress=EgressPolicy(resolver=resolver)
        )
        try:
            assert (await client.generate(request)).text == "hi"
        finally:
            await client.aclose()
        assert server.headers[-1]["host"] == f"model.test:{server.port}" and resolver.lookups == [
            "model.test"
        ]

        seen = len(server.requests)
        rebinding = ScriptedResolver(["127.0.0.1"], ["10.0.0.7"])
        policy = EgressPolicy(deny=["10.0.0.0/8"], resolver=rebinding)
        await policy.check_url(base, "model")  # registration sees 127.0.0.1
        refused = OpenAIClient(
            ModelEndpoint(kind="openai", model="fake", base_url=base), egress=policy, max_retries=3
        )
        try:
            with pytest.raises(InferenceError, match=r"model.test is in the egress deny list"):
                await refused.generate(request)
        finally:
            await refused.aclose()
        assert len(server.requests) == seen  # nothing was sent
        assert rebinding.lookups == ["model.test", "model.test"]  # refused once, not retried


# ---- huggingface_hub ----------------------------------------------------------------------------


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        running.add_file("org/data", "rows.jsonl", ROW)
        yield running


async def test_hub_redirects_are_followed_where_the_policy_allows(
    hub: FakeHub, files: Files, tmp_path: Path
) -> None:
    hub.add_redirect("org/data", "rows.jsonl", f"http://127.0.0.1:{files.server.port}/data.jsonl")
    settings = Settings(data_dir=tmp_path, embedded_model=False)
    rows = await load_rows("hf://datasets/org/data/rows.jsonl", settings=settings, hf_endpoint=hub.url)
    assert rows == [{"q": "1+1", "a": "2"}] and [p for p, _ in files.seen] == ["/data.jsonl"]


@pytest.mark.parametrize(
    ("target", "deny", "refusal"),
    [
        ("http://169.254.169.254/latest/meta-data/rows.jsonl", [], r"169.254.169.254, a link-local or cloud"),
        ("http://localhost:{port}/data.jsonl", ["localhost"], r"localhost is in the egress deny list"),
    ],
)
async def test_hub_redirects_to_a_denied_address_are_refused(
    hub: FakeHub, files: Files, tmp_path: Path, target: str, deny: list[str], refusal: str
) -> None:
    hub.add_redirect("org/data", "rows.jsonl", target.format(port=files.server.port))
    settings = Settings(data_dir=tmp_path, embedded_model=False, egress={"deny": deny})
    with pytest.raises(EgressRefusedError, match=refusal):
        await load_rows("hf://datasets/org/data/rows.jsonl", settings=settings, hf_endpoint=hub.url)
    assert files.seen == []
    assert not list((tmp_path / "huggingface").rglob("rows.jsonl"))  # nothing was stored


def test_the_hub_client_connects_to_the_address_its_policy_checked(hub: FakeHub, tmp_path: Path) -> None:
    resolver = ScriptedResolver(["127.0.0.1"])
    with hub_egress(EgressPolicy(resolver=resolver)):
        path = huggingface_hub.hf_hub_download(
            "org/data",
            "rows.jsonl",
            repo_type="dataset",
            endpoint=f"http://hub.test:{hub.port}",
            cache_dir=tmp_path,
        )
    assert Path(path).read_text() == ROW and set(resolver.lookups) == {"hub.test"}
    refusing = EgressPolicy(deny=["127.0.0.0/8"], resolver=resolver)
    with hub_egress(refusing), pytest.raises(Exception) as refused:  # pooled connections are per policy
        huggingface_hub.hf_hub_download(
            "org/data",
            "rows.jsonl",
            repo_type="dataset",
            endpoint=f"http://hub.test:{hub.port}",
            cache_dir=tmp_path / "again",
            force_download=True,
        )
    assert "egress deny list" in repr(refused.value) + repr(refused.value.__context__)


def test_hub_downloads_under_a_policy_ignore_the_environment_proxy_and_others_keep_it(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    dead = f"http://127.0.0.1:{free_port()}"  # a proxy that is not there
    monkeypatch.setenv("HTTP_PROXY", dead)
    monkeypatch.setenv("http_proxy", dead)
    resolver = ScriptedResolver(["127.0.0.1"])

    def download(endpoint: str, folder: str) -> str:
        return huggingface_hub.hf_hub_download(
            "org/data", "rows.jsonl", repo_type="dataset", endpoint=endpoint, cache_dir=tmp_path / folder
        )

    with hub_egress(EgressPolicy(resolver=resolver)):  # direct, to the address the policy checked
        assert Path(download(f"http://hub.test:{hub.port}", "governed")).read_text() == ROW
    hub.requests.clear()
    with pytest.raises(Exception):  # noqa: B017 - through the dead proxy, as huggingface_hub would
        download(hub.url, "other")  # (a direct connection would reach the hub)
    assert hub.requests == []
