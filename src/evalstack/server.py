"""The app factory: builds the store, registry, model clients, scoring, worker and providers, and the routers.

``create_app(settings)`` returns a FastAPI app whose lifespan opens everything in order (store,
registry, worker, which resumes unfinished jobs, providers) and closes it in reverse. The
services are built once per app and kept on ``app.state.services``; nothing is module-level state.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from evalstack import __version__
from evalstack.config import ProviderEntry, Settings
from evalstack.errors import InvalidInputError

if TYPE_CHECKING:
    from fastapi import FastAPI  # imported in create_app: `evalstack run` builds services without it

    from evalstack.engine.plan import EvalPlan
    from evalstack.engine.runner import JobWorker
    from evalstack.engine.scoring import ScoringService
    from evalstack.inference.clients import ModelClientPool
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


def _build_provider(entry: ProviderEntry, services: Services) -> EvalProvider | None:
    """The eval provider of one settings entry; ``None`` (with a warning) if it cannot be built."""
    if entry.provider_type == "inline::local":
        from evalstack.providers.local import LocalEvalProvider

        return LocalEvalProvider(
            services.registry,
            services.worker,
            services.scoring,
            services.settings,
            provider_id=entry.provider_id,
        )
    if entry.provider_type == "remote::nvidia":
        try:
            nvidia = importlib.import_module("evalstack.providers.nvidia")
        except ImportError as exc:
            logger.warning("Eval provider %s (remote::nvidia) is not available: %s", entry.provider_id, exc)
            return None
        try:
            config = nvidia.NVIDIAEvalConfig(**entry.config)
        except ValidationError as exc:
            reasons = "; ".join(str(e["msg"]) for e in exc.errors())
            raise InvalidInputError(
                f"Eval provider '{entry.provider_id}' (remote::nvidia) has an invalid config: {reasons}"
            ) from exc
        provider: EvalProvider = nvidia.NVIDIAEvalImpl(config, provider_id=entry.provider_id)
        return provider
    logger.warning("Unknown eval provider type %r for %s; skipped", entry.provider_type, entry.provider_id)
    return None


def build_services(settings: Settings) -> Services:
    """Build (but do not open) every service the server needs."""
    from evalstack.engine.compile import compile_job
    from evalstack.engine.runner import JobWorker
    from evalstack.engine.scoring import ScoringService
    from evalstack.inference.breaker import BreakerSettings
    from evalstack.inference.clients import ModelClientPool
    from evalstack.registry import Registry
    from evalstack.store.repository import Store

    store = Store(settings.db_url)
    registry = Registry(store, settings)
    clients = ModelClientPool(breaker_settings=BreakerSettings(**settings.circuit_breaker.model_dump()))
    scoring = ScoringService(registry, clients)

    async def compile_for_worker(job: JobRecord) -> EvalPlan:
        return await compile_job(job, registry, scoring, settings, clients)

    worker = JobWorker(
        store,
        clients,
        compile_for_worker,
        adaptive_concurrency=settings.adaptive_concurrency,
        max_outage=settings.max_outage,
    )
    services = Services(
        settings=settings, store=store, registry=registry, clients=clients, scoring=scoring, worker=worker
    )
    for entry in settings.providers:
        if entry.provider_id in services.providers:
            raise ValueError(f"Two eval providers are configured with provider_id {entry.provider_id!r}")
        provider = _build_provider(entry, services)
        if provider is not None:
            services.providers[entry.provider_id] = provider
    return services


def _include_nemo_api(app: FastAPI, services: Services) -> None:
    """Mount the NeMo Evaluator API (``/v1/evaluation/*``) if this build has it."""
    candidates = ["evalstack.api.nemo"]
    if importlib.util.find_spec("evalstack.api.nemo.routes") is not None:
        candidates.append("evalstack.api.nemo.routes")
    for name in candidates:
        module: Any = importlib.import_module(name)
        include = getattr(module, "include_nemo_api", None)
        if include is not None:
            include(app, services)
            return
        make_router = getattr(module, "router", None)
        if callable(make_router):
            app.include_router(make_router(services))
            return
    logger.warning("The NeMo Evaluator API is not part of this build; /v1/evaluation/* is not served")


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The evalstack HTTP app: Llama Stack routes under /v1, /v1alpha, /v1beta and the NeMo API."""
    services = services if services is not None else build_services(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await services.start()
        logger.info("evalstack %s ready; store %s", __version__, _safe_url(settings.db_url))
        try:
            yield
        finally:
            await services.stop()

    from fastapi import FastAPI

    from evalstack.api.jobs import jobs_router
    from evalstack.api.listings import listings_router
    from evalstack.api.llama_stack.routes import include_llama_stack_api
    from evalstack.api.openapi import install_openapi
    from evalstack.viewer.pages import mount_viewer

    app = FastAPI(title="evalstack", version=__version__, lifespan=lifespan)
    app.state.services = services
    include_llama_stack_api(app, services)
    app.include_router(listings_router(services.store), prefix="/v1")
    app.include_router(jobs_router(services), prefix="/v1")
    _include_nemo_api(app, services)
    mount_viewer(app, services.store)
    install_openapi(app)
    return app


def _safe_url(url: str) -> str:
    """A database URL with any password hidden, for logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"
