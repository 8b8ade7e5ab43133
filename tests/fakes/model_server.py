"""Our fake OpenAI-compatible model server for tests: a real HTTP server on a loopback port.

    with FakeModelServer(answer="echo", latency=0.0) as server:
        client = OpenAIClient(ModelEndpoint(kind="openai", model="fake", base_url=server.base_url))

Answers are deterministic: ``"echo"`` returns the last user message (chat) or the prompt
(completion); a callable ``answer(prompt) -> str`` computes the text; any other string is
returned as is. Faults: ``fail_next(n, status, retry_after)`` answers the next ``n`` requests
with that status; ``hang = True`` makes requests wait until the client gives up or
``hang`` is cleared. ``requests`` holds every JSON body received; ``max_in_flight`` the most
requests seen at once.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

Answer = str | Callable[[str], str]


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


class FakeModelServer:
    """A controllable OpenAI-compatible server running in a background thread."""

    def __init__(
        self,
        answer: Answer = "echo",
        latency: float = 0.0,
        fail_first: int = 0,
        status_sequence: list[int] | None = None,
        model_id: str = "fake-model",
    ) -> None:
        self.answer: Answer = answer
        self.latency = latency
        self.model_id = model_id
        self.hang = False
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._faults: list[tuple[int, float | None]] = [(500, None)] * fail_first
        self._faults += [(status, None) for status in status_sequence or []]
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ---- control -------------------------------------------------------------------------

    def set_answer(self, answer: Answer) -> None:
        self.answer = answer

    def fail_next(self, n: int, status: int = 500, retry_after: float | None = None) -> None:
        with self._lock:
            self._faults.extend([(status, retry_after)] * n)

    def reset_stats(self) -> None:
        with self._lock:
            self.requests.clear()
            self.max_in_flight = 0

    def text_for(self, body: dict[str, Any]) -> str:
        prompt = prompt_of(body)
        if callable(self.answer):
            return self.answer(prompt)
        return prompt if self.answer == "echo" else self.answer

    # ---- HTTP ----------------------------------------------------------------------------

    async def _generate(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            fault = self._faults.pop(0) if self._faults else None
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            while self.hang:
                await asyncio.sleep(0.02)
            if fault is not None:
                status, retry_after = fault
                headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
                return JSONResponse({"error": {"message": f"injected {status}"}}, status, headers=headers)
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
            choice = {"index": 0, "finish_reason": "stop", "message": message}
            return {"id": "chatcmpl-fake", "object": "chat.completion", "choices": [choice], **common}
        choice = {"index": 0, "finish_reason": "stop", "text": text, "logprobs": None}
        return {"id": "cmpl-fake", "object": "text_completion", "choices": [choice], **common}

    async def _models(self, request: Request) -> Response:
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
        config = uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake model server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.hang = False
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
