"""The engine's ports: what it needs from the world outside it, declared once.

The runner, the plan compilers, the metrics and the benchmarks depend on these only; ``services.py``
passes in the real implementations (``inference.clients.ModelClientPool``,
``registry.Registry``, ``store.repository.Store``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Protocol

from evalstack.inference.base import ModelClient, ModelEndpoint
from evalstack.store.records import JobRecord, SampleRecord

RowSource = Callable[[], Awaitable[list[dict[str, Any]]]]
"""Loads a task's rows when the task runs (so a plan compiles without touching the data)."""


class ClientSource(Protocol):
    """Where the engine gets model clients (``inference.clients.ModelClientPool``): the runner, the
    log-likelihood requests of benchmarks, and metrics that call a model (judges)."""

    def get(
        self,
        endpoint: ModelEndpoint,
        *,
        max_retries: int = 5,
        timeout: float = 600.0,
        max_connections: int = 256,
    ) -> ModelClient: ...


class ModelResolver(Protocol):
    """The part of the registry that names models: a registered id (or ``ns/name``) to an endpoint."""

    async def resolve_model(self, name_or_url: str) -> ModelEndpoint: ...


class JobStore(Protocol):
    """The part of ``store.repository.Store`` the worker uses."""

    async def create_job(self, job: JobRecord) -> JobRecord: ...

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def list_jobs(self, front: str | None = None) -> list[JobRecord]: ...

    async def update_job(
        self, job_id: str, *, expected_status: Collection[str] | None = None, **changes: Any
    ) -> JobRecord: ...

    async def job_ids(self, statuses: Collection[str]) -> list[str]: ...

    async def job_statuses(self, job_ids: Collection[str]) -> dict[str, str]: ...

    async def claim_job(
        self, job_id: str, owner: str, ttl: float, *, owner_gone: Callable[[str], bool] | None = None
    ) -> bool: ...

    async def renew_job_leases(self, owner: str, job_ids: Collection[str], ttl: float) -> set[str]: ...

    async def release_job(self, job_id: str, owner: str) -> None: ...

    async def add_samples(self, job_id: str, samples: Sequence[SampleRecord]) -> None: ...

    async def read_samples(
        self, job_id: str, task: str | None = None, *, fields: Collection[str] | None = None
    ) -> list[SampleRecord]: ...

    async def recorded_indices(self, job_id: str) -> dict[str, set[int]]: ...

    async def failed_sample_keys(self, job_id: str, error_kind: str) -> list[tuple[str, int]]: ...

    async def reopen_job(
        self, job_id: str, *, expected_status: Collection[str], drop: Sequence[tuple[str, int]]
    ) -> JobRecord: ...
