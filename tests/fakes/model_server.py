"""Our fake OpenAI-compatible model server for tests: a real HTTP server on a loopback port.

    with FakeModelServer(answer="echo", latency=0.0) as server:
        client = OpenAIClient(ModelEndpoint(kind="openai", model="fake", base_url=server.base_url))

Answers are deterministic: ``"echo"`` returns the last user message (chat) or the prompt
(completion); a callable ``answer(prompt) -> str`` computes the text; any other string is
returned as is. Faults: ``fail_next(n, status, retry_after)`` answers the next ``n`` requests
with that status (``body=`` sends those raw bytes instead, e.g. broken JSON with status 200;
``message=`` sets the error message); ``fail_first`` and ``status_sequence`` queue faults at
start (a 200 in the sequence is a normal answer). ``hang = True`` makes requests wait until the
client disconnects or ``hang`` is cleared. ``requests`` holds every JSON body received (``paths``
and ``headers`` the matching route and lower-cased headers); ``models_requests`` counts
``GET /v1/models``; ``max_in_flight`` is the most requests seen at once.

Outages: ``go_down()`` stops the server (connections to its port are refused, as when a model server
is redeployed or its pod crashed); ``go_down(gateway=True)`` instead answers every request 502 on
the same port, as a proxy whose model server is gone, counting them in ``gateway_requests``.
``come_back()`` serves again on the same port, with the same answers and counters.

Log-probabilities: a completion request with ``echo`` and ``logprobs`` gets, like OpenAI's legacy
completions, ``choices[0].text`` = prompt + generated text and ``choices[0].logprobs`` with
``tokens``, ``token_logprobs``, ``top_logprobs`` and ``text_offset`` over both. Tokens are
``fake_tokens(text)`` (each run of non-space characters with the whitespace before it); the first
token's log-probability is ``None`` (nothing precedes it), every other token's is
``logprob_fn(token)`` (default ``default_logprob``), and each token is its own top choice. The
generated part is the answer cut to ``max_tokens`` tokens (``max_tokens: 0`` generates nothing).
A chat request with ``logprobs: true`` gets ``choices[0].logprobs.content`` for the answer tokens.

Token-id prompts (``prompt`` a list of ids, or a batch of such lists, as lm-eval's ``local-completions``
sends them): ``decode`` (ids -> text) gives the text the answer is computed from; an echo request gets
the ids as tokens, then one generated id, with log-probabilities from ``token_id_logprob(previous,
id)`` and top choices in which some tokens are not the most likely one. ``apply_stop`` cuts generated
text at the first ``stop`` string, as real servers do.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.serving import BackgroundServer, free_port

Answer = str | Callable[[str], str]
LogprobFn = Callable[[str], float]

_TOKEN = re.compile(r"\s*\S+|\s+")


def fake_tokens(text: str) -> list[str]:
    """How the fake server splits text into tokens: each word with the whitespace before it."""
    return _TOKEN.findall(text)


def default_logprob(token: str) -> float:
    """A deterministic log-probability in [-5, -1) for a token."""
    digest = int(hashlib.sha256(token.encode()).hexdigest()[:8], 16)
    return -1.0 - (digest % 1000) / 250.0


def token_id_logprob(previous: int, token: int) -> float:
    """A deterministic log-probability in (-5, 0) for ``token`` after ``previous``."""
    return -0.01 - ((previous * 7919 + token * 104729) % 997) / 200.0


def _token_prompts(prompt: Any) -> list[list[int]] | None:
    """The id lists of a token-id prompt (one or a batch); None for a text prompt."""
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
        return [list(p) for p in prompt]
    return None


def prompt_of(body: dict[str, Any]) -> str:
    """The text a request asks about: the last user message, or the prompt."""
    messages = body.get("messages")
    if isinstance(messages, list):
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        last = users[-1] if users else (messages[-1] if messages else {})
        content = last.get("content", "") if isinstance(last, dict) else ""
        if isinstance(content, list):
            content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        return str(content)
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else str(prompt)


class _Fault:
    """One injected failure."""

    def __init__(
        self,
        status: int,
        retry_after: float | str | None = None,
        body: bytes | None = None,
        message: str | None = None,
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        self.body = body
        self.message = message


class FakeModelServer:
    """A controllable OpenAI-compatible server running in a background thread."""

    def __init__(
        self,
        answer: Answer = "echo",
        latency: float = 0.0,
        fail_first: int = 0,
        status_sequence: list[int] | None = None,
        model_id: str = "fake-model",
        logprob_fn: LogprobFn | None = None,
        decode: Callable[[list[int]], str] | None = None,
        apply_stop: bool = False,
    ) -> None:
        self.decode = decode
        self.apply_stop = apply_stop
        self.answer: Answer = answer
        self.latency = latency
        self.model_id = model_id
        self.hang = False
        self.logprob_fn: LogprobFn = logprob_fn or default_logprob
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.models_requests = 0
        self.gateway_requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._faults: list[_Fault | None] = [_Fault(500)] * fail_first
        self._faults += [None if status == 200 else _Fault(status) for status in status_sequence or []]
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._server: BackgroundServer | None = None

    # ---- control -------------------------------------------------------------------------

    def set_answer(self, answer: Answer) -> None:
        self.answer = answer

    def fail_next(
        self,
        n: int,
        status: int = 500,
        retry_after: float | str | None = None,
        *,
        body: bytes | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (and ``Retry-After``, raw ``body``, ``message``)."""
        with self._lock:
            self._faults.extend([_Fault(status, retry_after, body, message)] * n)

    def reset_stats(self) -> None:
        with self._lock:
            self.requests.clear()
            self.paths.clear()
            self.headers.clear()
            self.models_requests = 0
            self.max_in_flight = 0

    def text_for(self, body: dict[str, Any], prompt: str | None = None) -> str:
        prompt = prompt_of(body) if prompt is None else prompt
        if callable(self.answer):
            text = self.answer(prompt)
        else:
            text = prompt if self.answer == "echo" else self.answer
        stop = body.get("stop")
        if self.apply_stop and stop:
            for term in [stop] if isinstance(stop, str) else stop:
                if term:
                    text = text.split(term)[0]
        return text

    # ---- HTTP ----------------------------------------------------------------------------

    async def _generate(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": {"message": "request body is not JSON"}}, 400)
        with self._lock:
            self.requests.append(body)
            self.paths.append(request.url.path)
            self.headers.append({k.lower(): v for k, v in request.headers.items()})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            fault = self._faults.pop(0) if self._faults else None
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            while self.hang and not await request.is_disconnected():
                await asyncio.sleep(0.02)
            if fault is not None:
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                if fault.body is not None:
                    return Response(fault.body, fault.status, headers=headers, media_type="application/json")
                message = fault.message or f"injected {fault.status}"
                error = {"message": message, "type": "injected", "code": fault.status}
                return JSONResponse({"error": error}, fault.status, headers=headers)
            token_prompts = _token_prompts(body.get("prompt"))
            if token_prompts is not None and not request.url.path.endswith("/chat/completions"):
                return JSONResponse(self._token_completion(body, token_prompts))
            text = self.text_for(body)
            return JSONResponse(self._completion(request.url.path, body, text))
        finally:
            with self._lock:
                self.in_flight -= 1

    def _completion(self, path: str, body: dict[str, Any], text: str) -> dict[str, Any]:
        usage = {"prompt_tokens": 10, "completion_tokens": max(1, len(text.split()))}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        common = {"created": int(time.time()), "model": body.get("model", self.model_id), "usage": usage}
        if path.endswith("/chat/completions"):
            message = {"role": "assistant", "content": text}
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "message": message}
            if body.get("logprobs"):
                content = [
                    {"token": t, "logprob": self.logprob_fn(t), "bytes": list(t.encode()), "top_logprobs": []}
                    for t in fake_tokens(text)
                ]
                choice["logprobs"] = {"content": content}
            return {"id": "chatcmpl-fake", "object": "chat.completion", "choices": [choice], **common}
        logprobs = None
        if body.get("echo") and body.get("logprobs") not in (None, False):
            prompt = body.get("prompt", "")
            prompt = prompt if isinstance(prompt, str) else str(prompt)
            max_tokens = body.get("max_tokens")
            generated = fake_tokens(text)
            if isinstance(max_tokens, int):
                generated = generated[:max_tokens]
            text = prompt + "".join(generated)
            logprobs = self._echo_logprobs(text)
        choice = {"index": 0, "finish_reason": "stop", "text": text, "logprobs": logprobs}
        return {"id": "cmpl-fake", "object": "text_completion", "choices": [choice], **common}

    def _token_completion(self, body: dict[str, Any], prompts: list[list[int]]) -> dict[str, Any]:
        choices = []
        for index, ids in enumerate(prompts):
            if body.get("echo") and body.get("logprobs") not in (None, False):
                generated = sum(ids) % 97
                everything = [*ids, generated]
                values: list[float | None] = [None]
                top: list[dict[str, float] | None] = [None]
                for previous, token in itertools.pairwise(everything):
                    value = token_id_logprob(previous, token)
                    values.append(value)
                    rival = value + (0.25 if (previous + token) % 4 == 0 else -0.25)
                    top.append({str(token): value, "other": rival})
                tokens = [str(t) for t in everything]
                offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
                logprobs = {
                    "tokens": tokens,
                    "token_logprobs": values,
                    "top_logprobs": top,
                    "text_offset": offsets,
                }
                choices.append(
                    {"index": index, "finish_reason": "length", "text": "".join(tokens), "logprobs": logprobs}
                )
            else:
                prompt = self.decode(ids) if self.decode else " ".join(map(str, ids))
                text = self.text_for(body, prompt)
                choices.append({"index": index, "finish_reason": "stop", "text": text, "logprobs": None})
        usage = {
            "prompt_tokens": sum(map(len, prompts)),
            "completion_tokens": len(prompts),
            "total_tokens": 0,
        }
        common = {"created": int(time.time()), "model": body.get("model", self.model_id), "usage": usage}
        return {"id": "cmpl-fake", "object": "text_completion", "choices": choices, **common}

    def _echo_logprobs(self, text: str) -> dict[str, Any]:
        tokens = fake_tokens(text)
        values: list[float | None] = [None] + [self.logprob_fn(t) for t in tokens[1:]]
        offsets, at = [], 0
        for token in tokens:
            offsets.append(at)
            at += len(token)
        top = [None if v is None else {t: v} for t, v in zip(tokens, values, strict=True)]
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": top, "text_offset": offsets}

    async def _models(self, request: Request) -> Response:
        with self._lock:
            self.models_requests += 1
        data = [{"id": self.model_id, "object": "model", "created": 0, "owned_by": "fake"}]
        return JSONResponse({"object": "list", "data": data})

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._generate, methods=["POST"]),
                Route("/v1/completions", self._generate, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
            ]
        )

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeModelServer:
        self._server = BackgroundServer(self._app(), self.port, name="fake model server").start()
        return self

    def stop(self) -> None:
        self.hang = False
        if self._server is not None:
            self._server.stop()
            self._server = None

    def go_down(self, *, gateway: bool = False) -> None:
        """Stop answering: connections are refused, or (``gateway``) every request gets a 502."""
        self.stop()
        if gateway:
            self._server = BackgroundServer(self._gateway_app(), self.port, name="fake gateway").start()

    def come_back(self) -> None:
        """Serve model answers again on the same port."""
        self.stop()
        self.start()

    def _gateway_app(self) -> Starlette:
        async def bad_gateway(request: Request) -> Response:
            with self._lock:
                self.gateway_requests += 1
            return JSONResponse({"error": {"message": "upstream connect error"}}, 502)

        return Starlette(routes=[Route("/{path:path}", bad_gateway, methods=["GET", "POST"])])

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
