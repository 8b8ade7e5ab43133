"""The services evalstack is made of, built once per process and passed to whoever uses them.

``build_services(settings)`` builds (but does not open) the store, registry, model clients,
scoring, job worker and the eval providers of the settings (:data:`PROVIDER_TYPES`);
``Services.start`` opens them in order (the worker resumes unfinished jobs) and ``stop`` closes
them in reverse. The app factory (``server.py``) and ``evalstack run`` (``local_run.py``) build
them; each router gets the services it uses.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import ValidationError

from evalstack.config import ProviderEntry, RayExecutorSettings, Settings
from evalstack.errors import InvalidInputError

if TYPE_CHECKING:
    from evalstack.engine.plan import EvalPlan
    from evalstack.engine.runner import JobWorker
    from evalstack.engine.runner.executor import PlanExecutor
    from evalstack.engine.scoring import ScoringService
    from evalstack.inference.clients import ModelClientPool
    from evalstack.nemo_jobs import NemoJobService
    from evalstack.providers.base import EvalProvider
    from evalstack.registry import Registry
    from evalstack.store.records import JobRecord
    from evalstack.store.repository import Store

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything the API layer and the providers share; built by :func:`build_services`."""

    settings: Settings
    store: Store
    registry: Registry
    clients: ModelClientPool
    scoring: ScoringService
    worker: JobWorker
    nemo_jobs: NemoJobService
    providers: dict[str, EvalProvider] = field(default_factory=dict)

    async def start(self) -> None:
        """Open the store, load the registry, resume jobs, then start the providers.

        If a step fails, whatever was started is closed again before the error propagates.
        """
        try:
            await self.store.open()
            await self.registry.initialize()
            await self.worker.start()
            for provider_id, provider in self.providers.items():
                logger.info("Starting eval provider %s (%s)", provider_id, provider.provider_type)
                await provider.initialize()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close everything in the reverse order of :meth:`start`, logging (not raising) failures."""
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            (f"provider {pid}", p.shutdown) for pid, p in reversed(self.providers.items())
        ]
        steps += [
            ("worker", self.worker.stop),
            ("model clients", self.clients.aclose),
            ("store", self.store.close),
        ]
        for name, step in steps:
            try:
                await step()
            except Exception:
                logger.exception("Shutting down %s failed", name)


def _local_provider(entry: ProviderEntry, services: Services) -> EvalProvider:
    from evalstack.providers.local import LocalEvalProvider

    return LocalEvalProvider(
        services.registry, services.worker, services.scoring, services.settings, provider_id=entry.provider_id
    )


def _nvidia_provider(entry: ProviderEntry, services: Services) -> EvalProvider:
    from evalstack.providers.nvidia import NVIDIAEvalConfig, NVIDIAEvalImpl

    try:
        config = NVIDIAEvalConfig(**entry.config)
    except ValidationError as exc:
        reasons = "; ".join(str(e["msg"]) for e in exc.errors())
        raise InvalidInputError(
            f"Eval provider '{entry.provider_id}' (remote::nvidia) has an invalid config: {reasons}"
        ) from exc
    return NVIDIAEvalImpl(config, provider_id=entry.provider_id)


PROVIDER_TYPES: dict[str, Callable[[ProviderEntry, Services], EvalProvider]] = {
    "inline::local": _local_provider,
    "remote::nvidia": _nvidia_provider,
}
"""Eval provider type (as settings name it) -> the factory of such a provider."""


def _build_provider(entry: ProviderEntry, services: Services) -> EvalProvider | None:
    """The eval provider of one settings entry; ``None`` (with a warning) for an unknown type."""
    factory = PROVIDER_TYPES.get(entry.provider_type)
    if factory is None:
        logger.warning(
            "Unknown eval provider type %r for %s; skipped (known: %s)",
            entry.provider_type,
            entry.provider_id,
            ", ".join(PROVIDER_TYPES),
        )
        return None
    return factory(entry, services)


def build_executor(settings: Settings) -> PlanExecutor | None:
    """The executor the settings ask for; ``None`` for the local one (the worker's default)."""
    chosen = settings.executor
    if not isinstance(chosen, RayExecutorSettings):
        return None
    from evalstack.engine.runner.ray_executor import RayExecutor, RayOptions  # no `import ray` yet

    return RayExecutor(
        RayOptions(
            address=chosen.address,
            shard_size=chosen.shard_size,
            max_actors=chosen.max_actors,
            num_cpus=chosen.num_cpus,
            object_store_memory=chosen.object_store_memory,
            model_replicas=chosen.model_replicas,
        )
    )


def build_services(settings: Settings) -> Services:
    """Build (but do not open) every service the server needs."""
    from evalstack.engine.compile import compile_job
    from evalstack.engine.rescore import RESCORE_OF, replay_stored_outputs
    from evalstack.engine.runner import JobWorker
    from evalstack.engine.scoring import ScoringService
    from evalstack.inference.breaker import BreakerSettings
    from evalstack.inference.cache import ResponseCache
    from evalstack.inference.clients import ModelClientPool
    from evalstack.nemo_jobs import NemoJobService
    from evalstack.registry import Registry
    from evalstack.store.repository import Store

    store = Store(settings.db_url)
    registry = Registry(store, settings)
    clients = ModelClientPool(
        breaker_settings=BreakerSettings(**settings.circuit_breaker.model_dump()),
        egress=settings.egress.policy(),
    )
    scoring = ScoringService(registry, clients)

    async def compile_for_worker(job: JobRecord) -> EvalPlan:
        plan = await compile_job(job, registry, scoring, settings, clients)
        if job.spec.get(RESCORE_OF):  # re-scoring: stored outputs instead of model requests
            plan = await replay_stored_outputs(plan, store, str(job.spec[RESCORE_OF]))
        return plan

    worker = JobWorker(
        store,
        clients,
        compile_for_worker,
        adaptive_concurrency=settings.adaptive_concurrency,
        max_outage=settings.max_outage,
        executor=build_executor(settings),
        response_cache=ResponseCache(store, ttl=settings.cache_ttl),
        cache_every_job=settings.response_cache,
    )
    services = Services(
        settings=settings,
        store=store,
        registry=registry,
        clients=clients,
        scoring=scoring,
        worker=worker,
        nemo_jobs=NemoJobService(store, worker, registry, clients, settings),
    )
    for entry in settings.providers:
        if entry.provider_id in services.providers:
            raise ValueError(f"Two eval providers are configured with provider_id {entry.provider_id!r}")
        provider = _build_provider(entry, services)
        if provider is not None:
            services.providers[entry.provider_id] = provider
    return services
