"""Llama Stack wire shapes to and from the engine's and the registry's types.

Most Llama Stack shapes are the engine's own (``engine.types``: benchmarks, candidates, sampling,
scoring functions; ``resources``: models, datasets), re-exported by ``models``, so a request body
already is what the providers and the registry take and their answers are what the API returns.
What differs is converted here, and every resource leaves through :func:`public`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

from evalstack.api.llama_stack.models import RegisterBenchmarkRequest
from evalstack.engine.types import Benchmark
from evalstack.redaction import drop_secrets

_Resource = TypeVar("_Resource", bound=BaseModel)


def benchmark(body: RegisterBenchmarkRequest, provider_id: str) -> Benchmark:
    """The benchmark a registration request describes, served by ``provider_id``."""
    return Benchmark(
        identifier=body.benchmark_id,
        provider_resource_id=body.provider_benchmark_id or body.benchmark_id,
        provider_id=provider_id,
        dataset_id=body.dataset_id,
        scoring_functions=body.scoring_functions,
        metadata=body.metadata or {},
    )


def data_list(items: list[Any]) -> dict[str, Any]:
    """A list response: ``{"data": [...]}``."""
    return {"data": [i.model_dump(mode="json") if isinstance(i, BaseModel) else i for i in items]}


def public(resource: _Resource) -> _Resource:
    """A resource as the API shows it: secret keys dropped from its metadata (and custom metadata)."""
    fields = ("metadata", "custom_metadata")
    update = {name: drop_secrets(getattr(resource, name)) for name in fields if hasattr(resource, name)}
    return resource.model_copy(update=update)
