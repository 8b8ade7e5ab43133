"""The model client interface shared by the engine, the metrics and the providers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

RequestKind = Literal["chat", "completion"]


@dataclass(frozen=True)
class ModelEndpoint:
    """Where and how to reach a model.

    ``kind`` is ``"openai"`` for an OpenAI-compatible HTTP server (``base_url`` ends in ``/v1``,
    e.g. ``http://host:8000/v1``) or ``"embedded"`` for the in-process model.
    ``model`` is the name the endpoint knows the model by (sent as ``model`` in requests).
    """

    kind: Literal["openai", "embedded"]
    model: str
    base_url: str | None = None
    api_key: str | None = None


@dataclass
class InferenceRequest:
    """One request: ``messages`` for chat, ``prompt`` for completion.

    ``params`` are OpenAI request fields (``max_tokens``, ``temperature``, ``top_p``, ``stop``,
    ``tools``, ``tool_choice``, ``logprobs``...) passed through as given; non-OpenAI sampling
    fields (``top_k``, ``repetition_penalty``) are passed too, for servers such as vLLM that accept them.
    ``sample_id`` names which draw of the job this is (task and row); it is never sent, but keeps two
    sampled draws of the same prompt apart in the response cache.
    """

    kind: RequestKind
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    sample_id: str | None = None


@dataclass
class InferenceResult:
    """What a model answered: the text, why it stopped, and the raw response body."""

    text: str
    finish_reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


class InferenceError(Exception):
    """The endpoint failed after retries (connection, 429, 5xx, timeout, unparseable body).

    This is an infrastructure error, never a wrong answer: the engine records it apart.
    """


class ModelClient(Protocol):
    """Sends requests to one model endpoint."""

    async def generate(self, request: InferenceRequest) -> InferenceResult:
        """Answer one request, retrying transient failures; raise InferenceError when it gives up."""
        ...

    async def aclose(self) -> None:
        """Release connections and other resources."""
        ...
