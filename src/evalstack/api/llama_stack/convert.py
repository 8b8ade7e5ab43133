"""Llama Stack wire shapes to and from the engine's and the registry's types.

Most Llama Stack shapes are the engine's own (``engine.types``: benchmarks, candidates, sampling,
scoring functions; ``resources``: models, datasets), re-exported by ``models``, so a request body
already is what the providers and the registry take and their answers are what the API returns.
What differs is converted here, and every resource leaves through :func:`public`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from evalstack.api.llama_stack.models import ProviderInfo, RegisterBenchmarkRequest
from evalstack.engine.scoring import BASIC_PROVIDER, JUDGE_PROVIDER
from evalstack.engine.types import Benchmark
from evalstack.redaction import drop_secrets
from evalstack.registry import EMBEDDED_PROVIDER_ID, HTTP_PROVIDER_ID

if TYPE_CHECKING:
    from evalstack.config import Settings
    from evalstack.providers.base import EvalProvider

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


_HEALTH_OK: dict[str, Any] = {"status": "OK"}


def _eval_provider_info(settings: Settings, provider: EvalProvider) -> ProviderInfo:
    """An eval provider as listed: its config (no secrets) and, for remote ones, an unchecked health."""
    config: Any = getattr(provider, "config", None)
    if hasattr(config, "model_dump"):
        shown = config.model_dump(mode="json")
    else:
        entry = next((e for e in settings.providers if e.provider_id == provider.provider_id), None)
        shown = dict(entry.config) if entry is not None else {}
    if provider.provider_type.startswith("remote::"):
        health: dict[str, Any] = {
            "status": "Not Implemented",
            "message": "The remote service is not probed when providers are listed.",
        }
    else:
        health = dict(_HEALTH_OK)
    return ProviderInfo(
        api="eval",
        provider_id=provider.provider_id,
        provider_type=provider.provider_type,
        config=drop_secrets(shown),
        health=health,
    )


def provider_infos(providers: Mapping[str, EvalProvider], settings: Settings) -> list[ProviderInfo]:
    """Every provider this server routes to: eval, scoring, datasetio and inference."""
    infos = [_eval_provider_info(settings, p) for p in providers.values()]
    fixed: list[tuple[str, str, str]] = [
        ("scoring", BASIC_PROVIDER, "inline::basic"),
        ("scoring", JUDGE_PROVIDER, "inline::llm-as-judge"),
        ("datasetio", "localfs", "inline::localfs"),
        ("datasetio", "huggingface", "remote::huggingface"),
        ("inference", HTTP_PROVIDER_ID, "remote::openai"),
    ]
    if settings.embedded_model:
        fixed.append(("inference", EMBEDDED_PROVIDER_ID, "inline::embedded"))
    infos += [
        ProviderInfo(api=api, provider_id=pid, provider_type=ptype, config={}, health=dict(_HEALTH_OK))
        for api, pid, ptype in fixed
    ]
    return infos
