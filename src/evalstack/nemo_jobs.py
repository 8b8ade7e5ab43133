"""NeMo Evaluator jobs on the local engine: create, cancel, delete, results and live evaluations.

The NeMo router parses HTTP and converts; this service does the work. A job's config and target
(full objects, references already resolved) are compiled once when the job is created, so that a bad
one fails the request, and that plan is the job's first run; a resumed job compiles its stored spec.
Errors are ``evalstack.errors`` types with the messages the API shows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalstack.engine.compile import job_max_outage
from evalstack.engine.metrics.nemo_base import resolve_model_spec
from evalstack.engine.nemo_plan import compile_nemo_plan
from evalstack.engine.spec import NemoRunSpec, new_job, read_spec
from evalstack.errors import ConflictError, NotFoundError
from evalstack.store.records import TERMINAL_STATUSES, JobRecord, SampleRecord

if TYPE_CHECKING:
    from evalstack.config import Settings
    from evalstack.engine.plan import EvalPlan
    from evalstack.engine.runner import JobWorker
    from evalstack.inference.clients import ModelClientPool
    from evalstack.registry import Registry
    from evalstack.store.repository import Store

logger = logging.getLogger(__name__)

DELETE_WAIT = 15.0
"""Seconds a delete waits for a running job to stop before answering 409."""


@dataclass
class LiveRun:
    """What a live evaluation produced: the samples by task and the results object."""

    samples: dict[str, list[SampleRecord]]
    aggregate: dict[str, Any]


class NemoJobService:
    """NeMo jobs kept in the store and run by the shared worker."""

    def __init__(
        self,
        store: Store,
        worker: JobWorker,
        registry: Registry,
        clients: ModelClientPool,
        settings: Settings,
    ) -> None:
        self.store = store
        self.worker = worker
        self.registry = registry
        self.clients = clients
        self.settings = settings

    async def compile(self, config: Mapping[str, Any], target: Mapping[str, Any]) -> EvalPlan:
        """The plan of a config and target; a model target must name a registered model or an endpoint."""
        model = target.get("model")
        if target.get("type") == "model" and isinstance(model, str):
            try:
                await resolve_model_spec(model, self.registry, "target.model")
            except NotFoundError:
                raise NotFoundError(
                    f"target.model: model {model!r} is not registered in evalstack; register it first "
                    '(POST /v1/models) or give the target an endpoint: {"api_endpoint": {"url": ..., '
                    '"model_id": ...}}'
                ) from None
        return await compile_nemo_plan(
            dict(config), dict(target), registry=self.registry, clients=self.clients, settings=self.settings
        )

    async def create(self, spec: NemoRunSpec) -> JobRecord:
        """Store and schedule a job; its plan is compiled here, once, and is its first run."""
        plan = await self.compile(spec.config, spec.target)
        job = new_job(spec)
        plan.max_outage = job_max_outage(job)  # a bad params.extra.max_outage fails the request
        job = await self.worker.submit(job, plan)
        logger.info("Created evaluation job %s", job.id)
        return job

    async def get(self, job_id: str) -> JobRecord:
        job = await self.store.get_job(job_id)
        if job is None or job.front != "nemo":
            raise NotFoundError(f"Evaluation job '{job_id}' not found")
        return job

    async def list_jobs(self) -> list[JobRecord]:
        return await self.store.list_jobs(front="nemo")

    async def cancel(self, job_id: str) -> JobRecord:
        job = await self.get(job_id)
        if job.status in TERMINAL_STATUSES:
            raise ConflictError(
                f"Evaluation job '{job_id}' is already {job.status}; only created, pending or running "
                "jobs can be cancelled"
            )
        return await self.worker.cancel(job_id)

    async def delete(self, job_id: str) -> None:
        """Delete a job and its samples, cancelling it first if it still runs."""
        job = await self.get(job_id)
        if job.status not in TERMINAL_STATUSES:
            await self.worker.cancel(job_id)
            job = await self.worker.wait(job_id, timeout=DELETE_WAIT)
            if job.status not in TERMINAL_STATUSES:
                raise ConflictError(
                    f"Evaluation job '{job_id}' is still {job.status}; try deleting it again shortly"
                )
        await self.store.delete_job(job_id)
        logger.info("Deleted evaluation job %s", job_id)

    async def samples(self, job_id: str) -> list[SampleRecord]:
        return await self.store.read_samples(job_id)

    async def result(self, job: JobRecord) -> dict[str, Any]:
        """The aggregate ``{tasks, groups}`` of a completed job, recomputed from its samples if not cached."""
        if job.result is not None:
            return job.result
        spec = read_spec(job)
        assert isinstance(spec, NemoRunSpec)
        plan = await self.compile(spec.config, spec.target)
        by_task: dict[str, list[SampleRecord]] = {}
        for sample in await self.store.read_samples(job.id):
            by_task.setdefault(sample.task, []).append(sample)
        return await asyncio.to_thread(plan.summarize, by_task)

    async def live(self, config: Mapping[str, Any], target: Mapping[str, Any], max_rows: int) -> LiveRun:
        """Run a config at once, without a job, on at most ``max_rows`` rows per task."""
        plan = await self.compile(config, target)
        for task in plan.tasks:
            task.limit = min(task.limit or max_rows, max_rows)
        samples = await self.worker.run_inline(plan)
        aggregate = await asyncio.to_thread(plan.summarize, samples)
        return LiveRun(samples, aggregate)
