"""NeMo evaluation results (``/v1/evaluation/results``): those of completed jobs, computed from their
samples, and result entities created through the API (kept as store resources)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evalstack.api.nemo.convert import result_view
from evalstack.api.nemo.listing import ListQuery, paginate, result_getter
from evalstack.api.nemo.models import (
    DEFAULT_NAMESPACE,
    SERVER_FIELDS,
    DeleteResponse,
    EvaluationResult,
    EvaluationResultBody,
    EvaluationResultPatch,
    isoformat,
    job_id_for_result,
    new_entity_id,
    utc_now,
)
from evalstack.errors import ConflictError, NotFoundError, UnsupportedError

if TYPE_CHECKING:
    from evalstack.nemo_jobs import NemoJobService
    from evalstack.store.repository import Store

RESULT_KIND = "nemo_result"
"""Store resource kind of result entities created through ``POST /v1/evaluation/results``."""


class NemoResults:
    """Results of jobs and result entities."""

    def __init__(self, store: Store, jobs: NemoJobService) -> None:
        self.store = store
        self.jobs = jobs

    async def _stored_results(self) -> list[dict[str, Any]]:
        try:
            return await self.store.list_resources(RESULT_KIND)
        except ValueError:  # this store does not keep result entities
            return []

    async def list_results(self, query: ListQuery, base_url: str) -> dict[str, Any]:
        derived = [
            result_view(job, job.result or {}, base_url)
            for job in await self.jobs.list_jobs()
            if job.status == "completed"
        ]
        stored = [
            EvaluationResult.model_validate(r).model_dump(mode="json") for r in await self._stored_results()
        ]
        return paginate(derived + stored, query, result_getter)

    async def get_result(self, result_id: str, base_url: str) -> dict[str, Any]:
        job_id = job_id_for_result(result_id)
        if job_id is not None:
            job = await self.store.get_job(job_id)
            if job is not None and job.front == "nemo" and job.status == "completed":
                return result_view(job, await self.jobs.result(job), base_url)
        stored = await self._get_stored_result(result_id)
        if stored is None:
            raise NotFoundError(f"Evaluation result '{result_id}' not found")
        return EvaluationResult.model_validate(stored).model_dump(mode="json")

    async def _get_stored_result(self, result_id: str) -> dict[str, Any] | None:
        try:
            return await self.store.get_resource(RESULT_KIND, result_id)
        except ValueError:
            return None

    async def _put_stored_result(self, result: dict[str, Any]) -> None:
        try:
            await self.store.put_resource(RESULT_KIND, result["id"], result)
        except ValueError:
            raise UnsupportedError(
                "This server keeps only the results of its own jobs; results cannot be created or changed"
            ) from None

    async def _is_derived(self, result_id: str) -> bool:
        job_id = job_id_for_result(result_id)
        return job_id is not None and await self.store.get_job(job_id) is not None

    async def create_result(self, body: EvaluationResultBody) -> dict[str, Any]:
        now = isoformat(utc_now())
        given = {k: v for k, v in body.model_dump(mode="json", exclude_unset=True).items() if v is not None}
        result = {k: v for k, v in given.items() if k not in SERVER_FIELDS}
        result.update(
            id=new_entity_id("result"),
            namespace=given.get("namespace") or DEFAULT_NAMESPACE,
            created_at=now,
            updated_at=now,
        )
        await self._put_stored_result(result)
        return EvaluationResult.model_validate(result).model_dump(mode="json")

    async def update_result(self, result_id: str, body: EvaluationResultPatch) -> dict[str, Any]:
        if await self._is_derived(result_id):
            raise ConflictError(
                f"Evaluation result '{result_id}' is computed from its job's samples and cannot be changed"
            )
        stored = await self._get_stored_result(result_id)
        if stored is None:
            raise NotFoundError(f"Evaluation result '{result_id}' not found")
        changes = {k: v for k, v in body.model_dump(mode="json", exclude_unset=True).items() if v is not None}
        updated = {**stored, **changes, "updated_at": isoformat(utc_now())}
        await self._put_stored_result(updated)
        return EvaluationResult.model_validate(updated).model_dump(mode="json")

    async def delete_result(self, result_id: str) -> dict[str, Any]:
        if await self._is_derived(result_id):
            raise ConflictError(
                f"Evaluation result '{result_id}' belongs to job '{job_id_for_result(result_id)}'; "
                "delete the job to remove it"
            )
        if await self._get_stored_result(result_id) is None:
            raise NotFoundError(f"Evaluation result '{result_id}' not found")
        await self.store.delete_resource(RESULT_KIND, result_id)
        return DeleteResponse(
            id=result_id, deleted_at=isoformat(utc_now()), message=f"Evaluation result '{result_id}' deleted"
        ).model_dump(mode="json")
