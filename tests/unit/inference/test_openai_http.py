"""The OpenAI-compatible HTTP client against our fake server: answers, retries, errors, cancellation."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from evalstack.errors import InvalidInputError
from evalstack.inference.base import InferenceError, InferenceRequest, ModelEndpoint
from evalstack.inference.openai_http import OpenAIClient, _routes
from evalstack.inference.transport import Response
from evalstack.retry_after import parse_retry_after
from tests.fakes.model_server import FakeModelServer, default_logprob, fake_tokens


def chat(text: str, **params: object) -> InferenceRequest:
    return InferenceRequest(kind="chat", messages=[{"role": "user", "content": text}], params=dict(params))


def client_for(
    server: FakeModelServer,
    *,
    model: str = "fake-model",
    api_key: str | None = None,
    base_url: str | None = None,
    **kwargs: float,
) -> OpenAIClient:
    endpoint = ModelEndpoint(
        kind="openai", model=model, base_url=base_url or server.base_url, api_key=api_key
    )
    settings: dict[str, float] = {"backoff_base": 0.01, "max_retries": 3, "timeout": 10.0}
    settings.update(kwargs)
    return OpenAIClient(endpoint, **settings)  # type: ignore[arg-type]


@pytest.fixture
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as srv:
        yield srv


async def test_chat_and_completion_answers_and_request_body(server: FakeModelServer) -> None:
    client = client_for(server)
    try:
        result = await client.generate(chat("Hello there", max_tokens=12, temperature=None, top_p=0.9))
        assert result.text == "Hello there"
        assert result.finish_reason == "stop"
        assert result.raw["object"] == "chat.completion"
        completion = await client.generate(
            InferenceRequest(kind="completion", prompt="2 + 2 =", params={"stop": ["\n"]})
        )
        assert completion.text == "2 + 2 ="
        assert completion.raw["object"] == "text_completion"
    finally:
        await client.aclose()
    assert server.paths == ["/v1/chat/completions", "/v1/completions"]
    first, second = server.requests
    # None-valued params are dropped; the rest go through as given.
    assert first == {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "Hello there"}],
        "max_tokens": 12,
        "top_p": 0.9,
    }
    assert second == {"model": "fake-model", "prompt": "2 + 2 =", "stop": ["\n"]}


async def test_full_route_base_url_derives_the_other_route(server: FakeModelServer) -> None:
    client = client_for(server, base_url=server.base_url + "/chat/completions")
    try:
        await client.generate(InferenceRequest(kind="completion", prompt="x"))
        await client.generate(chat("y"))
    finally:
        await client.aclose()
    assert server.paths == ["/v1/completions", "/v1/chat/completions"]


def test_route_forms() -> None:
    assert _routes("http://h:8000/v1/") == (
        "http://h:8000/v1/chat/completions",
        "http://h:8000/v1/completions",
        "http://h:8000/v1/models",
    )
    assert (
        _routes("https://h/v1/completions?api-version=2")[0] == "https://h/v1/chat/completions?api-version=2"
    )
    with pytest.raises(InvalidInputError, match="http"):
        _routes("localhost:8000/v1")


async def test_retries_429_honouring_retry_after_seconds(server: FakeModelServer) -> None:
    server.fail_next(1, status=429, retry_after=0.4)
    client = client_for(server)
    try:
        start = time.monotonic()
        result = await client.generate(chat("after the wait"))
        waited = time.monotonic() - start
    finally:
        await client.aclose()
    assert result.text == "after the wait"
    assert len(server.requests) == 2
    assert 0.4 <= waited < 2.0  # the server's Retry-After, not the 10 ms backoff


def test_retry_after_accepts_an_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    seconds = parse_retry_after(format_datetime(when, usegmt=True))
    assert seconds is not None and 28 <= seconds <= 31
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("soon") is None


async def test_retry_after_is_capped(server: FakeModelServer) -> None:
    server.fail_next(1, status=503, retry_after=3600)
    client = client_for(server, retry_after_max=0.2)
    try:
        start = time.monotonic()
        await client.generate(chat("capped"))
        assert time.monotonic() - start < 2.0
    finally:
        await client.aclose()


async def test_server_error_then_success(server: FakeModelServer) -> None:
    server.fail_next(2, status=500)
    client = client_for(server)
    try:
        result = await client.generate(chat("third time lucky"))
    finally:
        await client.aclose()
    assert result.text == "third time lucky"
    assert len(server.requests) == 3


async def test_garbage_body_is_retried(server: FakeModelServer) -> None:
    server.fail_next(1, status=200, body=b'{"choices": [ this is not json')
    server.fail_next(1, status=200, body=b'{"object": "something else"}')
    client = client_for(server)
    try:
        result = await client.generate(chat("clean answer"))
    finally:
        await client.aclose()
    assert result.text == "clean answer"
    assert len(server.requests) == 3


async def test_gives_up_after_max_retries_saying_what_happened(server: FakeModelServer) -> None:
    server.fail_next(10, status=503, message="model is loading")
    client = client_for(server, max_retries=2)
    try:
        with pytest.raises(InferenceError) as info:
            await client.generate(chat("never"))
    finally:
        await client.aclose()
    message = str(info.value)
    assert "3 attempt" in message and "503" in message and "model is loading" in message
    assert server.base_url + "/chat/completions" in message
    assert len(server.requests) == 3


async def test_bad_request_is_not_retried_and_keeps_the_server_message(
    server: FakeModelServer,
) -> None:
    server.fail_next(1, status=400, message="max_tokens must be at most 4096")
    client = client_for(server)
    try:
        with pytest.raises(InferenceError, match=r"400.*max_tokens must be at most 4096"):
            await client.generate(chat("too long", max_tokens=100000))
    finally:
        await client.aclose()
    assert len(server.requests) == 1


async def test_connection_refused_names_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        endpoint = ModelEndpoint(kind="openai", model="m", base_url=f"http://127.0.0.1:{port}/v1")
        client = OpenAIClient(endpoint, max_retries=1, backoff_base=0.01)
        try:
            with pytest.raises(InferenceError) as info:
                await client.generate(chat("anyone?"))
        finally:
            await client.aclose()
    message = str(info.value)
    assert f"http://127.0.0.1:{port}/v1/chat/completions" in message
    assert "2 attempt" in message and "connect" in message


async def test_timeout_is_retried_then_reported(server: FakeModelServer) -> None:
    server.latency = 0.5
    client = client_for(server, timeout=0.1, max_retries=1)
    try:
        with pytest.raises(InferenceError, match=r"2 attempt.*within 0\.1s"):
            await client.generate(chat("slow"))
    finally:
        await client.aclose()


async def test_cancellation_propagates_promptly_while_the_server_hangs(
    server: FakeModelServer,
) -> None:
    server.hang = True
    client = client_for(server)
    try:
        task = asyncio.create_task(client.generate(chat("hang on")))
        deadline = time.monotonic() + 5
        while server.in_flight == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert server.in_flight == 1
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - start < 0.5
        # The connection was dropped, so the server sees the client go away; nothing was retried.
        while server.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert server.in_flight == 0
        assert len(server.requests) == 1
        server.hang = False
        assert (await client.generate(chat("still usable"))).text == "still usable"
    finally:
        server.hang = False
        await client.aclose()


async def test_api_key_is_sent_as_bearer_token(server: FakeModelServer) -> None:
    client = client_for(server, api_key="sk-secret")
    try:
        await client.generate(chat("auth"))
    finally:
        await client.aclose()
    assert server.headers[0]["authorization"] == "Bearer sk-secret"


async def test_model_is_discovered_once_when_not_given(server: FakeModelServer) -> None:
    client = client_for(server, model="")
    try:
        results = await asyncio.gather(*(client.generate(chat(f"q{i}")) for i in range(5)))
    finally:
        await client.aclose()
    assert [r.text for r in results] == [f"q{i}" for i in range(5)]
    assert server.models_requests == 1
    assert client.model == "fake-model"
    assert {body["model"] for body in server.requests} == {"fake-model"}


class ScriptedTransport:
    """A transport whose ``/models`` requests wait for :meth:`answer_models`; chat answers echo at once."""

    def __init__(self) -> None:
        self.models_waiting: list[asyncio.Future[Response]] = []
        self.models_requests = 0
        self.sent: list[str] = []

    def answer_models(self, response: Response) -> None:
        self.models_waiting.pop(0).set_result(response)

    async def request(self, method: str, target: str, body: bytes | None, timeout: float) -> Response:
        if target.endswith("/models"):
            self.models_requests += 1
            answer = asyncio.get_running_loop().create_future()
            self.models_waiting.append(answer)
            return await answer
        assert body is not None
        prompt = json.loads(body)["messages"][0]["content"]
        self.sent.append(prompt)
        message = {"role": "assistant", "content": prompt}
        data = {"choices": [{"index": 0, "finish_reason": "stop", "message": message}]}
        return Response(200, {}, json.dumps(data).encode())

    async def aclose(self) -> None:
        pass


def models_response(status: int = 200) -> Response:
    return Response(status, {}, json.dumps({"data": [{"id": "served-model"}]}).encode())


def undiscovered_client(transport: ScriptedTransport) -> OpenAIClient:
    endpoint = ModelEndpoint(kind="openai", model="", base_url="http://model.invalid/v1")
    return OpenAIClient(endpoint, max_retries=0, transport=transport)


async def turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_requests_waiting_for_model_discovery_are_all_sent_together() -> None:
    # A job's first wave waits for the model name; once known, the whole wave must go out at once,
    # not one request per event-loop turn (that staggering kept a 1,024-wide job at ~120 in flight).
    transport = ScriptedTransport()
    client = undiscovered_client(transport)
    calls = [asyncio.ensure_future(client.generate(chat(f"q{i}"))) for i in range(500)]
    await turns(3)
    assert transport.models_requests == 1 and transport.sent == []
    transport.answer_models(models_response())
    await turns(5)
    assert len(transport.sent) == 500
    assert [r.text for r in await asyncio.gather(*calls)] == [f"q{i}" for i in range(500)]
    assert transport.models_requests == 1 and client.model == "served-model"


async def test_failed_model_discovery_fails_its_waiters_and_is_asked_again() -> None:
    transport = ScriptedTransport()
    client = undiscovered_client(transport)
    calls = [asyncio.ensure_future(client.generate(chat(f"q{i}"))) for i in range(3)]
    await turns(3)
    transport.answer_models(models_response(503))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(o, InferenceError) and "HTTP 503" in str(o) for o in outcomes)
    retry = asyncio.ensure_future(client.generate(chat("again")))
    await turns(3)
    transport.answer_models(models_response())
    assert (await retry).text == "again"
    assert transport.models_requests == 2


async def test_cancelling_one_caller_does_not_cancel_the_shared_model_lookup() -> None:
    transport = ScriptedTransport()
    client = undiscovered_client(transport)
    first = asyncio.ensure_future(client.generate(chat("first")))
    second = asyncio.ensure_future(client.generate(chat("second")))
    await turns(3)
    first.cancel()
    await turns(2)
    transport.answer_models(models_response())
    assert (await second).text == "second"
    assert first.cancelled() and transport.models_requests == 1


async def test_pool_keeps_requests_concurrent_up_to_its_size() -> None:
    with FakeModelServer(latency=0.2) as srv:
        client = client_for(srv, max_connections=4)
        try:
            results = await asyncio.gather(*(client.generate(chat(str(i))) for i in range(12)))
        finally:
            await client.aclose()
    assert sorted(int(r.text) for r in results) == list(range(12))
    assert srv.max_in_flight == 4


async def test_tool_call_answer_without_content_gives_empty_text() -> None:
    body = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
            }
        ]
    }
    with FakeModelServer() as srv:
        srv.fail_next(1, status=200, body=json.dumps(body).encode())
        client = client_for(srv)
        try:
            result = await client.generate(chat("call a tool"))
        finally:
            await client.aclose()
    assert result.text == ""
    assert result.finish_reason == "tool_calls"
    assert result.raw["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "f"


async def test_echo_logprobs_from_the_fake_server(server: FakeModelServer) -> None:
    client = client_for(server)
    try:
        result = await client.generate(
            InferenceRequest(
                kind="completion",
                prompt="The sky is blue",
                params={"echo": True, "logprobs": 1, "max_tokens": 0},
            )
        )
    finally:
        await client.aclose()
    logprobs = result.raw["choices"][0]["logprobs"]
    assert logprobs["tokens"] == fake_tokens("The sky is blue") == ["The", " sky", " is", " blue"]
    assert logprobs["token_logprobs"] == [None, *(default_logprob(t) for t in [" sky", " is", " blue"])]
    assert logprobs["text_offset"] == [0, 3, 7, 10]
