"""``evalstack view``: the viewer alone over a store, without the evaluation APIs or a job worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from evalstack import __version__
from evalstack.api.access import AccessMiddleware
from evalstack.api.listings import listings_router
from evalstack.auth import Authenticator
from evalstack.config import Settings
from evalstack.store.repository import Store
from evalstack.viewer.pages import UI_PREFIX, mount_viewer


def create_viewer_app(settings: Settings) -> FastAPI:
    """The viewer's pages under ``/ui/`` and the JSON listings under ``/v1``, reading ``settings.db_url``.

    It asks for the same credentials as the server (``settings.auth``: API keys or JWTs, a Basic-auth
    prompt in a browser) with the same scope decisions and body limit.
    """
    store = Store(settings.db_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await store.open()
        try:
            yield
        finally:
            await store.close()

    app = FastAPI(title="evalstack viewer", version=__version__, lifespan=lifespan)
    app.include_router(listings_router(store), prefix="/v1")
    mount_viewer(app, store)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PREFIX}/")

    app.add_middleware(
        AccessMiddleware, authenticator=Authenticator(settings.auth), max_body_bytes=settings.max_body_bytes
    )
    return app
