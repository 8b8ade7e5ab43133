"""One place that hands out model clients and closes them all at shutdown."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from evalstack.egress import EgressPolicy
from evalstack.errors import InvalidInputError
from evalstack.inference.base import ModelClient, ModelEndpoint
from evalstack.inference.breaker import BreakerSettings, CircuitBreaker
from evalstack.inference.cache import through_active_cache
from evalstack.inference.openai_http import OpenAIClient, api_root

logger = logging.getLogger(__name__)


def _default_embedded() -> ModelClient:
    from evalstack.inference.embedded import EmbeddedModel  # no torch import until the model is used

    return EmbeddedModel()


class ModelClientPool:
    """Caches one client per endpoint and settings; every embedded endpoint shares one model.

    HTTP clients hold a connection pool sized by ``max_connections`` (the caller's parallelism), so jobs
    with different parallelism get different clients. Every client of one API root shares one
    :class:`~evalstack.inference.breaker.CircuitBreaker` (``breaker_settings``), so an outage pauses
    every job on that endpoint and one probe at a time tests it. The embedded model is created on first
    use by ``embedded_loader`` (default: :class:`~evalstack.inference.embedded.EmbeddedModel`), which
    loads its weights lazily too. HTTP clients connect only to addresses ``egress`` passes for models.
    """

    def __init__(
        self,
        *,
        embedded_loader: Callable[[], ModelClient] | None = None,
        breaker_settings: BreakerSettings | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.egress = egress
        self._embedded_loader = embedded_loader or _default_embedded
        self._embedded: ModelClient | None = None
        self._clients: dict[tuple[ModelEndpoint, int, float, int], ModelClient] = {}
        self.breaker_settings = breaker_settings or BreakerSettings()
        self._breakers: dict[str, CircuitBreaker] = {}

    def breaker(self, endpoint: ModelEndpoint) -> CircuitBreaker:
        """The circuit breaker shared by every client of ``endpoint``'s API root."""
        root = api_root(endpoint.base_url)
        breaker = self._breakers.get(root)
        if breaker is None:
            breaker = self._breakers[root] = CircuitBreaker(root, self.breaker_settings)
        return breaker

    def __getstate__(self) -> dict[str, Any]:
        """A pool travels (to a Ray worker, inside a plan's metrics) as an empty pool: clients hold
        connections and models that belong to one process, so the receiver makes its own."""
        return {
            "_embedded_loader": self._embedded_loader,
            "_embedded": None,
            "_clients": {},
            "breaker_settings": self.breaker_settings,
            "egress": self.egress,
            "_breakers": {},
        }

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
                endpoint,
                max_retries=max_retries,
                timeout=timeout,
                max_connections=max_connections,
                breaker=self.breaker(endpoint),
                egress=self.egress,
            )
            self._clients[key] = client
        return through_active_cache(client, endpoint)

    async def aclose(self) -> None:
        """Close every client handed out (the pool can be used again afterwards)."""
        clients = list(self._clients.values())
        if self._embedded is not None:
            clients.append(self._embedded)
        self._clients.clear()
        self._breakers.clear()
        self._embedded = None
        for client in clients:
            try:
                await client.aclose()
            except Exception:
                logger.exception("closing model client %r failed", client)
