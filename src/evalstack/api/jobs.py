"""evalstack's own read-only view of every job, whichever front door created it.

``GET /v1/evalstack/jobs/{job_id}`` shows one job with its cached result (the listings, with their
filters and paging, are in ``api/listings.py``); ``POST /v1/evalstack/jobs/{job_id}/resume`` runs
a failed or cancelled job again from its recorded samples (400 for any other status);
``POST .../retry`` also runs again a finished job's samples that failed on infrastructure, keeping
the others; ``POST .../rescore`` creates a job that scores a completed job's stored outputs again
(``engine.rescore``). The CLI's ``evalstack jobs`` uses these. ``GET /v1/evalstack/benchmarks[?search=WORD]``
lists what can run (native benchmarks and lm-eval tasks, each with its output type), as
``evalstack benchmarks`` does. Errors use the Llama Stack family's body (``{"error": {"message": ...}}``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from evalstack.api.llama_stack.errors import LlamaStackRoute, not_found_status
from evalstack.engine.catalog import catalog
from evalstack.errors import NotFoundError
from evalstack.redaction import scrub, secret_values

if TYPE_CHECKING:
    from evalstack.engine.runner import JobWorker
    from evalstack.store.records import JobRecord
    from evalstack.store.repository import Store


def job_summary(job: JobRecord) -> dict[str, Any]:
    """The fields of a job that a listing shows (any secret its spec carries masked where quoted)."""
    summary: dict[str, Any] = {
        "id": job.id,
        "front": job.front,
        "status": job.status,
        "benchmark_id": job.benchmark_id,
        "provider_id": job.provider_id,
        "error": job.error,
        "progress": job.progress,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "updated_at": job.updated_at.isoformat() if job.updated_at else None,
        "created_by": job.created_by,
    }
    return scrub(summary, secret_values(job.spec))


class RescoreRequest(BaseModel):
    """What to change when re-scoring; nothing changed re-scores with the same metrics."""

    model_config = ConfigDict(extra="forbid")

    metrics: list[str] | dict[str, Any] | None = None
    """Llama Stack jobs: scoring function ids (or id -> params); NeMo custom jobs: the metrics object."""

    params: dict[str, Any] | None = None
    """NeMo jobs: merged into the config's ``params`` (``{"extra": {"answer_regex": "..."}}``)."""


def jobs_router(store: Store, worker: JobWorker) -> APIRouter:
    """Routes under ``/evalstack/jobs`` (mounted at ``/v1``)."""
    router = APIRouter(route_class=LlamaStackRoute)

    @router.get("/evalstack/jobs/{job_id}", tags=["evalstack"])
    @not_found_status(404)
    async def get_job(job_id: str) -> dict[str, Any]:
        job = await store.get_job(job_id)
        if job is None:
            raise NotFoundError(f"Job {job_id} not found")
        return {
            **job_summary(job),
            "result": job.result,
            "samples_recorded": await store.count_samples(job_id),
        }

    @router.get("/evalstack/benchmarks", tags=["evalstack"])
    async def list_benchmarks(search: str | None = None) -> dict[str, Any]:
        """What evalstack can run: native benchmarks and lm-eval tasks, groups and tags."""
        entries = await asyncio.to_thread(catalog, search)
        return {"data": [entry.to_dict() for entry in entries]}

    @router.post("/evalstack/jobs/{job_id}/resume", tags=["evalstack"])
    @not_found_status(404)
    async def resume_job(job_id: str) -> dict[str, Any]:
        return job_summary(await worker.resume(job_id))

    @router.post("/evalstack/jobs/{job_id}/retry", tags=["evalstack"])
    @not_found_status(404)
    async def retry_job(job_id: str) -> dict[str, Any]:
        return job_summary(await worker.retry(job_id))

    @router.post("/evalstack/jobs/{job_id}/rescore", tags=["evalstack"])
    @not_found_status(404)
    async def rescore_job(job_id: str, body: RescoreRequest | None = None) -> dict[str, Any]:
        from evalstack.engine.rescore import submit_rescore

        body = body or RescoreRequest()
        job = await submit_rescore(store, worker, job_id, metrics=body.metrics, params=body.params)
        return {**job_summary(job), "rescore_of": job_id}

    return router
