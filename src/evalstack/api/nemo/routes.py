"""The NeMo Evaluator v1 REST API: ``/v1/evaluation/{configs,targets,jobs,results,live}``.

Configs and targets are entities kept by the registry (``entities``); a job stores its config and
target, resolved to full objects, in a ``NemoRunSpec`` and is created, cancelled, deleted and read
back through the NeMo job service (``evalstack.nemo_jobs``); results of jobs and result entities
live in ``results``; ``convert`` turns records into wire shapes. Errors are mapped by
``errors.NemoRoute``, on these routes only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request, Response

from evalstack.api.nemo import archive
from evalstack.api.nemo.convert import (
    entity_view,
    job_spec,
    job_view,
    live_failure_view,
    live_view,
    result_view,
    status_details,
)
from evalstack.api.nemo.entities import NemoEntities
from evalstack.api.nemo.errors import NemoRoute, invalid
from evalstack.api.nemo.listing import (
    FILTERS,
    SEARCHES,
    ListQuery,
    envelope,
    job_getter,
    paginate,
    parse_list_query,
)
from evalstack.api.nemo.models import (
    DEFAULT_NAMESPACE,
    EvaluationConfigBody,
    EvaluationConfigPatch,
    EvaluationResultBody,
    EvaluationResultPatch,
    EvaluationTargetBody,
    EvaluationTargetPatch,
    JobCreateBody,
    utc_now,
)
from evalstack.api.nemo.results import NemoResults
from evalstack.errors import ConflictError, InvalidInputError, NotFoundError, UnsupportedError
from evalstack.store.records import TERMINAL_STATUSES, new_job_id

if TYPE_CHECKING:
    from evalstack.nemo_jobs import NemoJobService
    from evalstack.services import Services

logger = logging.getLogger(__name__)

LIVE_MAX_ROWS = 100
"""Live evaluations run at most this many rows per task; a larger ``rows`` target is rejected."""


def _check_live(config: Mapping[str, Any], target: Mapping[str, Any]) -> None:
    """Live runs only score outputs rows hold: a ``custom`` config of ``data`` tasks, rows or a dataset."""
    if config.get("type") != "custom":
        raise invalid(
            "live evaluation needs a config of type 'custom' with 'data' tasks, got type "
            f"{config.get('type')!r}; create a job for other types",
            ["body", "config", "type"],
        )
    for name, task in (config.get("tasks") or {}).items():
        task_type = task.get("type") if isinstance(task, Mapping) else None
        if task_type != "data":
            raise invalid(
                "live evaluation runs only 'data' tasks (scoring outputs the rows already hold); "
                f"task {name!r} has type {task_type!r}; create a job to run inference",
                ["body", "config", "tasks", name, "type"],
            )
    if target.get("type") not in ("rows", "dataset"):
        raise invalid(
            f"live evaluation needs a target of type 'rows' or 'dataset', got {target.get('type')!r}",
            ["body", "target", "type"],
        )
    rows = target.get("rows")
    if isinstance(rows, list) and len(rows) > LIVE_MAX_ROWS:
        raise invalid(
            f"live evaluation takes at most {LIVE_MAX_ROWS} rows, got {len(rows)}; create a job for more",
            ["body", "target", "rows"],
        )


# ---- request helpers -------------------------------------------------------------------------------


def _base_url(request: Request) -> str:
    return str(request.base_url)


def _list_query(request: Request, resource: str) -> ListQuery:
    return parse_list_query(request.query_params, filters=FILTERS[resource], searches=SEARCHES[resource])


def _zip_response(content: bytes, filename: str) -> Response:
    return Response(
        content,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def router(entities: NemoEntities, jobs: NemoJobService, results: NemoResults) -> APIRouter:
    """The ``/v1/evaluation`` routes: each parses its request, calls one service and converts its answer."""
    r = APIRouter(prefix="/v1/evaluation", route_class=NemoRoute, tags=["NeMo Evaluator"])

    # ---- configs
    @r.post("/configs", summary="Create an evaluation config")
    async def create_config(body: EvaluationConfigBody) -> dict[str, Any]:
        return await entities.create_entity("config", body)

    @r.get("/configs", summary="List evaluation configs")
    async def list_configs(request: Request) -> dict[str, Any]:
        return await entities.list_entities("config", _list_query(request, "config"))

    @r.get("/configs/{namespace}/{name}", summary="Get an evaluation config")
    async def get_config(namespace: str, name: str) -> dict[str, Any]:
        return entity_view("config", await entities.get_entity("config", namespace, name))

    @r.patch("/configs/{namespace}/{name}", summary="Update an evaluation config")
    async def update_config(namespace: str, name: str, body: EvaluationConfigPatch) -> dict[str, Any]:
        return await entities.update_entity("config", namespace, name, body)

    @r.delete("/configs/{namespace}/{name}", summary="Delete an evaluation config")
    async def delete_config(namespace: str, name: str) -> dict[str, Any]:
        return await entities.delete_entity("config", namespace, name)

    # ---- targets
    @r.post("/targets", summary="Create an evaluation target")
    async def create_target(body: EvaluationTargetBody) -> dict[str, Any]:
        return await entities.create_entity("target", body)

    @r.get("/targets", summary="List evaluation targets")
    async def list_targets(request: Request) -> dict[str, Any]:
        return await entities.list_entities("target", _list_query(request, "target"))

    @r.get("/targets/{namespace}/{name}", summary="Get an evaluation target")
    async def get_target(namespace: str, name: str) -> dict[str, Any]:
        return entity_view("target", await entities.get_entity("target", namespace, name))

    @r.patch("/targets/{namespace}/{name}", summary="Update an evaluation target")
    async def update_target(namespace: str, name: str, body: EvaluationTargetPatch) -> dict[str, Any]:
        return await entities.update_entity("target", namespace, name, body)

    @r.delete("/targets/{namespace}/{name}", summary="Delete an evaluation target")
    async def delete_target(namespace: str, name: str) -> dict[str, Any]:
        return await entities.delete_entity("target", namespace, name)

    # ---- jobs
    @r.post("/jobs", summary="Create an evaluation job")
    async def create_job(body: JobCreateBody, request: Request) -> dict[str, Any]:
        namespace = body.namespace or DEFAULT_NAMESPACE
        config = await entities.resolve("config", body.config, namespace)
        target = await entities.resolve("target", body.target, namespace)
        job = await jobs.create(job_spec(body, config, target))
        return job_view(job, _base_url(request))

    @r.get("/jobs", summary="List evaluation jobs")
    async def list_jobs(request: Request) -> dict[str, Any]:
        query, base_url = _list_query(request, "job"), _base_url(request)
        records = await jobs.list_jobs()
        if query.filter or query.search:
            return paginate([job_view(j, base_url) for j in records], query, job_getter)
        # No conditions: page the records first and build only the views of that page.
        records.sort(key=lambda j: j.created_at or utc_now(), reverse=query.sort.startswith("-"))
        start = (query.page - 1) * query.page_size
        page = [job_view(j, base_url) for j in records[start : start + query.page_size]]
        return envelope(page, query, len(records))

    @r.get("/jobs/{job_id}", summary="Get an evaluation job")
    async def get_job(job_id: str, request: Request) -> dict[str, Any]:
        return job_view(await jobs.get(job_id), _base_url(request))

    @r.delete("/jobs/{job_id}", status_code=204, response_class=Response, summary="Delete an evaluation job")
    async def delete_job(job_id: str) -> Response:
        await jobs.delete(job_id)
        return Response(status_code=204)

    @r.post("/jobs/{job_id}/cancel", summary="Cancel an evaluation job")
    async def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
        return job_view(await jobs.cancel(job_id), _base_url(request))

    @r.get("/jobs/{job_id}/status", summary="Status details of an evaluation job")
    async def job_status(job_id: str) -> dict[str, Any]:
        return status_details(await jobs.get(job_id))

    @r.get("/jobs/{job_id}/results", summary="Results of a completed evaluation job")
    async def job_results(job_id: str, request: Request) -> dict[str, Any]:
        job = await jobs.get(job_id)
        if job.status != "completed":
            reason = f": {job.error}" if job.error else ""
            raise ConflictError(
                f"Evaluation job '{job_id}' is {job.status}{reason}; "
                "results are available once it is completed"
            )
        return result_view(job, await jobs.result(job), _base_url(request))

    @r.get("/jobs/{job_id}/download-results", response_class=Response, summary="Results and outputs as a ZIP")
    async def download_results(job_id: str, request: Request) -> Response:
        job = await jobs.get(job_id)
        if job.status not in TERMINAL_STATUSES:
            raise ConflictError(
                f"Evaluation job '{job_id}' is {job.status}; "
                "its results can be downloaded once it has finished"
            )
        samples = await jobs.samples(job_id)
        result = (
            result_view(job, await jobs.result(job), _base_url(request))
            if job.status == "completed"
            else None
        )
        spec = job.spec
        content = await asyncio.to_thread(
            archive.results_zip,
            config=spec.get("config") or {},
            target=spec.get("target") or {},
            result=result,
            samples=samples,
            log_lines=archive.job_log_lines(job, samples),
        )
        return _zip_response(content, f"{job_id}-results.zip")

    @r.get("/jobs/{job_id}/logs", response_class=Response, summary="The job's logs as a ZIP")
    async def job_logs(job_id: str) -> Response:
        job = await jobs.get(job_id)
        failed = [s for s in await jobs.samples(job_id) if s.error]
        return _zip_response(archive.logs_zip(archive.job_log_lines(job, failed)), f"{job_id}-logs.zip")

    # ---- results
    @r.post("/results", summary="Create an evaluation result")
    async def create_result(body: EvaluationResultBody) -> dict[str, Any]:
        return await results.create_result(body)

    @r.get("/results", summary="List evaluation results")
    async def list_results(request: Request) -> dict[str, Any]:
        return await results.list_results(_list_query(request, "result"), _base_url(request))

    @r.get("/results/{result_id}", summary="Get an evaluation result")
    async def get_result(result_id: str, request: Request) -> dict[str, Any]:
        return await results.get_result(result_id, _base_url(request))

    @r.patch("/results/{result_id}", summary="Update an evaluation result")
    async def update_result(result_id: str, body: EvaluationResultPatch) -> dict[str, Any]:
        return await results.update_result(result_id, body)

    @r.delete("/results/{result_id}", summary="Delete an evaluation result")
    async def delete_result(result_id: str) -> dict[str, Any]:
        return await results.delete_result(result_id)

    # ---- live
    @r.post("/live", summary="Run a small evaluation synchronously, in memory")
    async def live(body: JobCreateBody) -> dict[str, Any]:
        namespace = body.namespace or DEFAULT_NAMESPACE
        config = await entities.resolve("config", body.config, namespace)
        target = await entities.resolve("target", body.target, namespace)
        _check_live(config, target)
        try:
            run = await jobs.live(config, target, LIVE_MAX_ROWS)
        except (InvalidInputError, NotFoundError, UnsupportedError):
            raise
        except Exception as exc:
            logger.warning("Live evaluation failed: %s", exc)
            return live_failure_view(exc)
        return live_view(run, live_id=new_job_id(), namespace=namespace, project=body.project)

    return r


def include_nemo_api(app: FastAPI, services: Services) -> None:
    """Mount the NeMo Evaluator v1 API on ``app``."""
    jobs = services.nemo_jobs
    entities = NemoEntities(services.registry, services.clients)
    app.include_router(router(entities, jobs, NemoResults(services.store, jobs)))
