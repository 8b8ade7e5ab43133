"""The response cache: never pay twice for the same model answer.

:class:`ResponseCache` keeps successful answers in the store (``response_cache`` table), and
:class:`CachedModelClient` puts it in front of a model client. The key is a SHA-256 of canonical
JSON (sorted keys, no spaces) of

- the endpoint's model identity: the API root and model name (``http://host:8000/v1#name``), or
  ``embedded:<name>`` for the in-process model;
- the request body exactly as it is sent (``openai_http.request_body``: messages or prompt and every
  parameter, the ``seed`` included);
- for sampled requests (``temperature`` above 0, or not set, which leaves the server's default),
  also the request's ``sample_id`` (task and row of the job), so two draws of one prompt (HumanEval's
  ``n_samples``, repeated rows) never share an answer. A sampled request without a ``sample_id`` is
  not cached.

Only answers are cached: a request that fails (after its retries) raises as before and leaves
nothing behind. Entries older than ``ttl`` seconds are not served. Writes are batched in the
background; :meth:`ResponseCache.flush` writes what is pending.

A job turns the cache on with :meth:`ResponseCache.scope` around the code that creates its tasks:
inside it (a :class:`contextvars.ContextVar`, so per task, like ``feedback.overload_listener``)
``clients.ModelClientPool`` hands out clients through the cache. That covers the candidate's
requests and those metrics send while scoring (log-likelihoods of the other choices); clients a
metric took when it was compiled (judges) are not covered. A scope with ``cached_only`` never asks the
model: a request it cannot answer raises :class:`NotCached` (the Ray coordinator records what the cache
answers and sends the rest to the cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from evalstack.inference.base import (
    InferenceError,
    InferenceRequest,
    InferenceResult,
    ModelClient,
    ModelEndpoint,
)
from evalstack.inference.openai_http import OpenAIClient, request_body
from evalstack.store.records import CachedResponse

logger = logging.getLogger(__name__)

_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


class CacheStore(Protocol):
    """The part of ``store.repository.Store`` the cache uses."""

    async def get_cached_responses(
        self, keys: Collection[str], max_age: float | None = None
    ) -> dict[str, CachedResponse]: ...

    async def put_cached_responses(self, entries: Sequence[CachedResponse]) -> None: ...


@dataclass
class CacheStats:
    """One job's use of the cache: answers served from it, requests sent, and their bytes."""

    hits: int = 0
    misses: int = 0
    bytes_served: int = 0
    bytes_stored: int = 0

    def snapshot(self) -> dict[str, int]:
        """A JSON-ready copy for ``job.progress["cache"]``."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "bytes_served": self.bytes_served,
            "bytes_stored": self.bytes_stored,
        }


class NotCached(InferenceError):
    """The cache holds no answer to a request, and its scope is ``cached_only``: the model is not asked."""


_active: contextvars.ContextVar[tuple[ResponseCache, CacheStats, bool] | None] = contextvars.ContextVar(
    "evalstack_response_cache", default=None
)


def through_active_cache(client: ModelClient, endpoint: ModelEndpoint) -> ModelClient:
    """``client`` behind the cache of the current task's job, if its job uses one."""
    active = _active.get()
    if active is None:
        return client
    cache, stats, cached_only = active
    return CachedModelClient(client, endpoint, cache, stats, cached_only=cached_only)


def is_sampled(body: dict[str, Any]) -> bool:
    """Whether the answer is drawn at random: ``temperature`` above 0 or left to the server."""
    temperature = body.get("temperature")
    return not isinstance(temperature, int | float) or temperature > 0


def cache_key(identity: str, body: dict[str, Any], sample_id: str | None) -> str | None:
    """The cache key of one request, or None when it must not be cached (sampled, no sample id)."""
    material: dict[str, Any] = {"model": identity, "body": body}
    if is_sampled(body):
        if sample_id is None:
            return None
        material["sample"] = sample_id
    return hashlib.sha256(_canonical(material).encode()).hexdigest()


class ResponseCache:
    """Answers kept in the store, served again for the same request to the same model.

    ``ttl`` (seconds, None for no expiry) bounds the age of a served answer. Writes are buffered and
    flushed every ``flush_interval`` seconds or ``batch_size`` answers, and by :meth:`flush`.
    """

    def __init__(
        self,
        store: CacheStore,
        *,
        ttl: float | None = None,
        batch_size: int = 256,
        flush_interval: float = 0.25,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._pending: list[CachedResponse] = []
        self._flusher: asyncio.Future[None] | None = None
        self._hurry = asyncio.Event()  # write the pending answers now
        self._lookups: list[tuple[str, asyncio.Future[CachedResponse | None]]] = []
        self._reader: asyncio.Future[None] | None = None

    @contextlib.contextmanager
    def scope(self, stats: CacheStats, *, cached_only: bool = False) -> Iterator[None]:
        """Inside, the model clients handed out (``through_active_cache``) use this cache, counting in
        ``stats``; tasks created inside keep it after the block ends. With ``cached_only`` they raise
        ``NotCached`` instead of asking the model (and count no misses)."""
        token = _active.set((self, stats, cached_only))
        try:
            yield
        finally:
            _active.reset(token)

    async def lookup(self, key: str) -> CachedResponse | None:
        """The fresh answer under ``key``, or None.

        Lookups made while another is being read are read together, in one query: the store is one
        thread, and a job's workers all look up at once. A store failure is logged and is a miss.
        """
        future: asyncio.Future[CachedResponse | None] = asyncio.get_running_loop().create_future()
        self._lookups.append((key, future))
        if self._reader is None or self._reader.done():
            self._reader = asyncio.ensure_future(self._read_lookups())
        return await future

    async def _read_lookups(self) -> None:
        await asyncio.sleep(0)  # the other workers of this turn add their keys first
        while self._lookups:
            batch, self._lookups = self._lookups, []
            try:
                found = await self.store.get_cached_responses({key for key, _ in batch}, self.ttl)
            except Exception:
                logger.warning("reading the response cache failed; asking the model", exc_info=True)
                found = {}
            for key, future in batch:
                if not future.done():
                    future.set_result(found.get(key))

    def add(self, entry: CachedResponse) -> None:
        """Queue one answer for writing."""
        self._pending.append(entry)
        if len(self._pending) >= self.batch_size:
            self._hurry.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), self.flush_interval)
        self._hurry.clear()
        await self._write()

    async def _write(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self.store.put_cached_responses(batch)
        except Exception:  # the samples are the truth; a lost cache entry only costs a request later
            logger.warning("writing %d answers to the response cache failed", len(batch), exc_info=True)

    async def flush(self) -> None:
        """Write every pending answer now (and wait for a write under way: never cancel one, or a
        batch still queued for the store's thread would be lost)."""
        self._hurry.set()
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            await asyncio.shield(flusher)
        self._hurry.clear()
        await self._write()


class CachedModelClient:
    """A model client that answers from the cache when it can and fills it when it cannot."""

    def __init__(
        self,
        client: ModelClient,
        endpoint: ModelEndpoint,
        cache: ResponseCache,
        stats: CacheStats,
        *,
        cached_only: bool = False,
    ) -> None:
        self.client = client
        self.endpoint = endpoint
        self.cache = cache
        self.stats = stats
        self.cached_only = cached_only

    async def _identity(self) -> tuple[str, str]:
        """The model identity and the model name sent in the body."""
        client = self.client
        if isinstance(client, OpenAIClient):
            model = client.model or await client.discover_model()
            return client.identity, model
        name = self.endpoint.model or str(getattr(client, "model_name", ""))
        if self.endpoint.kind == "embedded":
            return f"embedded:{name}", name
        return f"{self.endpoint.base_url}#{name}", name

    async def generate(self, request: InferenceRequest) -> InferenceResult:
        """The cached answer to ``request``, else the model's (then cached)."""
        identity, model = await self._identity()
        key = cache_key(identity, request_body(model, request), request.sample_id)
        hit = await self.cache.lookup(key) if key is not None else None
        if hit is not None:
            self.stats.hits += 1
            self.stats.bytes_served += hit.size
            return InferenceResult(hit.text, hit.finish_reason, hit.raw)
        if self.cached_only:
            raise NotCached("the response cache holds no answer to this request")
        if key is None:
            return await self.client.generate(request)
        self.stats.misses += 1
        result = await self.client.generate(request)  # a failure raises: errors are never cached
        size = len(result.text.encode()) + len(_canonical(result.raw).encode())
        self.stats.bytes_stored += size
        self.cache.add(CachedResponse(key, identity, result.text, result.finish_reason, result.raw, size))
        return result

    async def aclose(self) -> None:
        """The wrapped client belongs to the client pool, which closes it."""
