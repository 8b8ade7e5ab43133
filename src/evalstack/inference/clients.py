"""One place that hands out model clients and closes them all at shutdown."""

from __future__ import annotations

import logging
from collections.abc import Callable

from evalstack.errors import InvalidInputError
from evalstack.inference.base import ModelClient, ModelEndpoint
from evalstack.inference.cache import through_active_cache
from evalstack.inference.openai_http import OpenAIClient

logger = logging.getLogger(__name__)


def _default_embedded() -> ModelClient:
    from evalstack.inference.embedded import EmbeddedModel  # no torch import until the model is used

    return EmbeddedModel()


class ModelClientPool:
    """Caches one client per endpoint and settings; every embedded endpoint shares one model.

    HTTP clients hold a connection pool sized by ``max_connections`` (the caller's parallelism), so jobs
    with different parallelism get different clients. The embedded model is created on first use by
    ``embedded_loader`` (default: :class:`~evalstack.inference.embedded.EmbeddedModel`), which loads its
    weights lazily too.
    """

    def __init__(self, *, embedded_loader: Callable[[], ModelClient] | None = None) -> None:
        self._embedded_loader = embedded_loader or _default_embedded
        self._embedded: ModelClient | None = None
        self._clients: dict[tuple[ModelEndpoint, int, float, int], ModelClient] = {}

    def get(
        self,
        endpoint: ModelEndpoint,
        *,
        max_retries: int = 5,
        timeout: float = 600.0,
        max_connections: int = 256,
    ) -> ModelClient:
        """The client for ``endpoint`` (created on first request for these settings), behind the
        response cache when the calling task's job uses one (``cache.ResponseCache.scope``)."""
        if endpoint.kind == "embedded":
            if self._embedded is None:
                self._embedded = self._embedded_loader()
            return through_active_cache(self._embedded, endpoint)
        if endpoint.kind != "openai":
            raise InvalidInputError(
                f"unknown model endpoint kind {endpoint.kind!r}; expected 'openai' or 'embedded'"
            )
        key = (endpoint, max_retries, timeout, max_connections)
        client = self._clients.get(key)
        if client is None:
            client = OpenAIClient(
                endpoint, max_retries=max_retries, timeout=timeout, max_connections=max_connections
            )
            self._clients[key] = client
        return through_active_cache(client, endpoint)

    async def aclose(self) -> None:
        """Close every client handed out (the pool can be used again afterwards)."""
        clients = list(self._clients.values())
        if self._embedded is not None:
            clients.append(self._embedded)
        self._clients.clear()
        self._embedded = None
        for client in clients:
            try:
                await client.aclose()
            except Exception:
                logger.exception("closing model client %r failed", client)
