"""A client for OpenAI-compatible model servers (vLLM, NIM, Ollama, TGI, OpenAI itself).

One :class:`OpenAIClient` per endpoint holds one pool of keep-alive connections sized to the caller's
parallelism. Transient failures (connection errors, timeouts, HTTP 408/429/5xx, bodies that are not an
OpenAI response) are retried with exponential backoff and jitter, honouring ``Retry-After``; other 4xx
answers fail at once with the server's message. Cancellation is never retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from evalstack.egress import EgressPolicy
from evalstack.errors import InvalidInputError
from evalstack.inference.base import InferenceError, InferenceRequest, InferenceResult, ModelEndpoint
from evalstack.inference.breaker import UNREACHABLE_STATUSES, BreakerSettings, CircuitBreaker
from evalstack.inference.feedback import OVERLOAD_STATUSES, report_overload
from evalstack.inference.transport import AiohttpTransport, Transport, TransportError
from evalstack.retry_after import parse_retry_after

logger = logging.getLogger(__name__)

T = TypeVar("T")

_CHAT = "/chat/completions"
_COMPLETIONS = "/completions"
_RETRY_STATUSES = frozenset({408, 429})
_encode = json.JSONEncoder(separators=(",", ":")).encode
_PARSE_ERRORS = (ValueError, KeyError, IndexError, TypeError, AttributeError)


class OpenAIClient:
    """Sends chat and completion requests to one OpenAI-compatible endpoint.

    ``endpoint.base_url`` is either the API root (``http://host:8000/v1``) or a full route ending in
    ``/chat/completions`` or ``/completions`` (as NeMo targets give it); the other route is derived.
    An empty ``endpoint.model`` is discovered once from ``GET {root}/models`` (the first id).
    Requests go through :class:`~evalstack.inference.transport.AiohttpTransport` (proxies from the
    environment are honoured) unless another ``transport`` is given. Every attempt passes through
    ``breaker`` (``inference.breaker``; the pool shares one per endpoint): while it is open the request
    waits for the endpoint instead of spending its retries. Without one, nothing ever waits. With
    ``egress``, connections go only to addresses that policy passed (checked when each is opened).
    """

    def __init__(
        self,
        endpoint: ModelEndpoint,
        *,
        max_retries: int = 5,
        timeout: float = 600.0,
        max_connections: int = 256,
        connect_timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 60.0,
        transport: Transport | None = None,
        breaker: CircuitBreaker | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        if max_retries < 0:
            raise InvalidInputError(f"max_retries must be 0 or more, got {max_retries}")
        if timeout <= 0:
            raise InvalidInputError(f"timeout must be positive, got {timeout}")
        self.endpoint = endpoint
        self.chat_url, self.completions_url, self.models_url = _routes(endpoint.base_url)
        self._chat_target = _target(self.chat_url)
        self._completions_target = _target(self.completions_url)
        self._models_target = _target(self.models_url)
        self._max_retries = max_retries
        self._timeout = timeout
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._retry_after_max = retry_after_max
        self._model = endpoint.model
        self.breaker = breaker or CircuitBreaker(api_root(endpoint.base_url), BreakerSettings(enabled=False))
        self._discovery: asyncio.Future[str] | None = None
        self._connections = (max_connections, connect_timeout)
        self._egress = egress
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
        self._transport: Transport = transport or AiohttpTransport(
            self.chat_url,
            headers=headers,
            max_connections=max_connections,
            connect_timeout=connect_timeout,
            egress=egress,
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """A client travels (to a Ray worker, inside a judge metric) as its settings and egress policy: the
        receiver opens its own connections (and has its own breaker); the key travels only inside
        ``endpoint``."""
        max_connections, connect_timeout = self._connections
        settings = (self._max_retries, self._timeout, max_connections, connect_timeout)
        backoff = (self._backoff_base, self._backoff_max, self._retry_after_max)
        return _reopened, (self.endpoint, settings, backoff, self._egress)

    @property
    def model(self) -> str:
        """The model name sent with requests ("" until discovered)."""
        return self._model

    async def generate(self, request: InferenceRequest) -> InferenceResult:
        """Send one chat or completion request; raise InferenceError when it cannot be answered."""
        model = self._model or await self.discover_model()
        payload = request_body(model, request)
        if request.kind == "chat":
            target, url, parse = self._chat_target, self.chat_url, _parse_chat
        else:
            target, url, parse = self._completions_target, self.completions_url, _parse_completion
        try:
            body = _encode(payload).encode()
        except (TypeError, ValueError) as exc:
            raise InferenceError(f"request for {url} cannot be sent as JSON: {exc}") from None
        return await self._call("POST", target, url, body, parse)

    @property
    def identity(self) -> str:
        """Which model this is: the API root and the model name, ``http://host:8000/v1#name``."""
        return f"{api_root(self.endpoint.base_url)}#{self._model}"  # no query: it may hold a key

    async def discover_model(self) -> str:
        """Ask the server which model it serves (``GET {root}/models``, first id), once.

        Concurrent callers share one lookup and are all woken together when it ends (a lock would
        hand the answer from waiter to waiter, one event-loop turn each, and stagger the first requests
        of a job). A failed lookup is not kept: the next caller asks again.
        """
        if self._model:
            return self._model
        lookup = self._discovery
        if lookup is None or lookup.get_loop() is not asyncio.get_running_loop():
            lookup = self._discovery = asyncio.ensure_future(self._lookup_model())
        return await asyncio.shield(lookup)  # one caller cancelled does not cancel the others' lookup

    async def _lookup_model(self) -> str:
        try:
            self._model = await self._call("GET", self._models_target, self.models_url, None, _parse_models)
        finally:
            self._discovery = None
        logger.info("%s serves model %r", self.models_url, self._model)
        return self._model

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    async def _call(
        self, method: str, target: str, url: str, body: bytes | None, parse: Callable[[Any], T]
    ) -> T:
        breaker = self.breaker
        attempts = 0
        while True:
            probe = await breaker.admit()
            retry_after: float | None = None
            unreachable = False
            timeout = breaker.probe_timeout(self._timeout) if probe else self._timeout
            sent_at = breaker.clock()
            try:
                resp = await self._transport.request(method, target, body, timeout)
            except TransportError as exc:
                if exc.kind in ("closed", "refused"):  # nothing to retry
                    raise InferenceError(f"{method} {url} not sent: {exc}") from None
                problem = str(exc)
                unreachable = True
            else:
                status = resp.status
                unreachable = status in UNREACHABLE_STATUSES
                if not unreachable:
                    breaker.record_answer(sent_at)
                if 200 <= status < 300:
                    try:
                        return parse(json.loads(resp.body))
                    except _PARSE_ERRORS as exc:
                        problem = (
                            f"unparseable response body ({type(exc).__name__}: {exc}): {_snippet(resp.body)}"
                        )
                elif status >= 500 or status in _RETRY_STATUSES:
                    problem = f"HTTP {status}: {_server_message(resp.body)}"
                    retry_after = parse_retry_after(resp.headers.get("retry-after"))
                    if status in OVERLOAD_STATUSES:
                        report_overload(status)  # adaptive concurrency backs off
                else:
                    raise InferenceError(
                        f"{method} {url} was rejected with HTTP {status}: {_server_message(resp.body)}"
                        f"{_hint(status)}"
                    )
            finally:
                if probe:
                    if unreachable:
                        breaker.record_unreachable(problem, probe=True)
                    breaker.end_probe()
            if unreachable:
                if not probe:
                    breaker.record_unreachable(problem)
                if breaker.is_open:
                    continue  # caught by an outage: wait for the endpoint, not an attempt of this request
            attempts += 1
            if attempts > self._max_retries:
                if unreachable and breaker.trip_if_silent_since(sent_at):
                    continue  # nobody got an answer since this last attempt went out: an outage, so wait
                raise InferenceError(
                    f"{method} {url} failed after {attempts} attempt(s); last error: {problem}"
                )
            if retry_after is not None:
                delay = min(retry_after, self._retry_after_max) * (1.0 + 0.1 * random.random())
            else:
                delay = min(self._backoff_max, self._backoff_base * 2.0 ** (attempts - 1))
                delay *= 0.5 + 0.5 * random.random()
            logger.info(
                "retrying %s %s in %.2fs (attempt %d of %d): %s",
                method,
                url,
                delay,
                attempts + 1,
                self._max_retries + 1,
                problem,
            )
            await asyncio.sleep(delay)


def request_body(model: str, request: InferenceRequest) -> dict[str, Any]:
    """The JSON body sent for ``request``: ``model``, the messages or prompt, and every set parameter
    (``stream`` is never sent: responses are read whole)."""
    if request.kind == "chat":
        payload: dict[str, Any] = {"model": model, "messages": request.messages}
    elif request.kind == "completion":
        payload = {"model": model, "prompt": request.prompt}
    else:
        raise InferenceError(f"unknown request kind {request.kind!r}; expected 'chat' or 'completion'")
    for key, value in request.params.items():
        if value is not None and key != "stream":
            payload[key] = value
    return payload


def api_root(base_url: str | None) -> str:
    """The API root of an endpoint (``http://host:8000/v1``): what one circuit breaker guards."""
    root = _routes(base_url)[0].partition("?")[0]  # the query is dropped: it may hold a key
    return root.removesuffix(_CHAT)


def _routes(base_url: str | None) -> tuple[str, str, str]:
    """Chat, completions and models URLs from an API root or a full route."""
    if not base_url or not isinstance(base_url, str):
        raise InvalidInputError("an OpenAI-compatible endpoint needs a base_url such as http://host:8000/v1")
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInputError(
            f"base_url must be an http(s) URL such as http://host:8000/v1 (or a full .../chat/completions "
            f"route), got {base_url!r}"
        )
    path = parts.path.rstrip("/")
    for route in (_CHAT, _COMPLETIONS):
        if path.endswith(route):
            path = path[: -len(route)]
            break
    root = f"{parts.scheme}://{parts.netloc}{path}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{root}{_CHAT}{query}", f"{root}{_COMPLETIONS}{query}", f"{root}/models{query}"


def _target(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path or '/'}{'?' + parts.query if parts.query else ''}"


def _parse_chat(data: Any) -> InferenceResult:
    choice = data["choices"][0]
    content = choice["message"].get("content")
    if content is None:  # tool calls or a refusal carry no text
        text = ""
    elif isinstance(content, str):
        text = content
    else:  # a list of content parts
        text = "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return InferenceResult(text, choice.get("finish_reason"), data)


def _parse_completion(data: Any) -> InferenceResult:
    choice = data["choices"][0]
    text = choice["text"]
    if not isinstance(text, str):
        raise TypeError(f"choices[0].text is {type(text).__name__}, not a string")
    return InferenceResult(text, choice.get("finish_reason"), data)


def _parse_models(data: Any) -> str:
    models = data["data"]
    if not models:
        raise InferenceError("the server lists no models; give the model name explicitly")
    model = models[0]["id"]
    if not isinstance(model, str) or not model:
        raise TypeError("data[0].id is not a model name")
    return model


def _server_message(body: bytes) -> str:
    """The error message a server put in its body (OpenAI, FastAPI and plain-text shapes)."""
    try:
        data = json.loads(body)
    except ValueError:
        return _snippet(body) or "(empty body)"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        for key in ("message", "detail"):
            value = data.get(key)
            if value:
                return value if isinstance(value, str) else json.dumps(value)[:500]
    return json.dumps(data)[:500]


def _snippet(body: bytes, limit: int = 300) -> str:
    text = body[: limit + 1].decode("utf-8", errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."


def _hint(status: int) -> str:
    if status == 404:
        return (
            " (check the endpoint URL: it should be the API root such as http://host:8000/v1, or a full "
            "/chat/completions or /completions route, and the model name must exist there)"
        )
    if status in (401, 403):
        return " (check the API key)"
    return ""


def _reopened(
    endpoint: ModelEndpoint,
    settings: tuple[int, float, int, float],
    backoff: tuple[float, float, float],
    egress: EgressPolicy | None,
) -> OpenAIClient:
    max_retries, timeout, max_connections, connect_timeout = settings
    backoff_base, backoff_max, retry_after_max = backoff
    return OpenAIClient(
        endpoint,
        max_retries=max_retries,
        timeout=timeout,
        max_connections=max_connections,
        connect_timeout=connect_timeout,
        backoff_base=backoff_base,
        backoff_max=backoff_max,
        retry_after_max=retry_after_max,
        egress=egress,
    )
