"""The app factory: the HTTP app over the services (``services.py``) with every API family's routes.

``create_app(settings)`` returns a FastAPI app whose lifespan opens the services in order (store,
registry, worker, which resumes unfinished jobs, providers) and closes them in reverse. The
services are built once per app and kept on ``app.state.services``; nothing is module-level state.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from evalstack import __version__
from evalstack.api.access import AccessMiddleware
from evalstack.api.admission import ReadAdmission
from evalstack.api.analysis import analysis_router
from evalstack.api.jobs import jobs_router
from evalstack.api.listings import listings_router
from evalstack.api.llama_stack.routes import include_llama_stack_api
from evalstack.api.nemo.routes import include_nemo_api
from evalstack.api.openapi import install_openapi
from evalstack.auth import Authenticator
from evalstack.config import Settings
from evalstack.services import Services, build_services
from evalstack.viewer.pages import mount_viewer

logger = logging.getLogger(__name__)


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

    app = FastAPI(title="evalstack", version=__version__, lifespan=lifespan)
    app.state.services = services
    include_llama_stack_api(app, services)
    app.include_router(listings_router(services.store), prefix="/v1")
    app.include_router(jobs_router(services.store, services.worker), prefix="/v1")
    app.include_router(analysis_router(services.store), prefix="/v1")
    include_nemo_api(app, services)
    mount_viewer(app, services.store)
    app.add_middleware(ReadAdmission)  # inside AccessMiddleware: a refused request never takes a slot
    app.add_middleware(
        AccessMiddleware, authenticator=Authenticator(settings.auth), max_body_bytes=settings.max_body_bytes
    )
    install_openapi(app)
    return app


def _safe_url(url: str) -> str:
    """A database URL with any password hidden, for logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"
