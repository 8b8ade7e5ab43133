"""The NeMo Evaluator v1 REST API: ``/v1/evaluation/{configs,targets,jobs,results,live}``.

Configs and targets are entities addressed by ``namespace/name`` and kept by the registry. A job
stores a snapshot of its config and target (``JobRecord(front="nemo", spec={"config", "target",
"meta"})``) and is run by the shared ``JobWorker``; its status, progress and results are read back
from the job record and its per-sample records. Errors are mapped by ``errors.NemoRoute``, on these
routes only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, FastAPI, Request, Response
from pydantic import BaseModel, ValidationError

from evalstack.api.nemo import archive
from evalstack.api.nemo.errors import NemoRoute, from_validation_error, invalid
from evalstack.api.nemo.listing import ListQuery, envelope, paginate, parse_list_query
from evalstack.api.nemo.models import (
    DEFAULT_NAMESPACE,
    SERVER_FIELDS,
    DeleteResponse,
    EvaluationConfig,
    EvaluationConfigBody,
    EvaluationConfigPatch,
    EvaluationJob,
    EvaluationResult,
    EvaluationResultBody,
    EvaluationResultPatch,
    EvaluationStatusDetails,
    EvaluationTarget,
    EvaluationTargetBody,
    EvaluationTargetPatch,
    JobCreateBody,
    LiveEvaluation,
    isoformat,
    job_id_for_result,
    new_entity_id,
    result_id_for_job,
    utc_now,
)
from evalstack.engine import nemo_plan
from evalstack.engine.compile import job_max_outage
from evalstack.engine.metrics.nemo import nemo_metric
from evalstack.engine.metrics.nemo_base import MetricDeps, resolve_model_spec
from evalstack.engine.templates import check_templates
from evalstack.errors import ConflictError, InvalidInputError, NotFoundError, UnsupportedError
from evalstack.redaction import redact, restore_redacted, scrub, secret_values
from evalstack.store.records import TERMINAL_STATUSES, JobRecord, SampleRecord, new_job_id

if TYPE_CHECKING:
    from evalstack.engine.plan import EvalPlan
    from evalstack.server import Services

logger = logging.getLogger(__name__)

Kind = Literal["config", "target"]

LIVE_MAX_ROWS = 100
"""Live evaluations run at most this many rows per task; a larger ``rows`` target is rejected."""

RESULT_KIND = "nemo_result"
"""Store resource kind of result entities created through ``POST /v1/evaluation/results``."""

_LABEL: dict[Kind, str] = {"config": "Evaluation config", "target": "Evaluation target"}
_BODY_MODELS: dict[Kind, type[BaseModel]] = {"config": EvaluationConfigBody, "target": EvaluationTargetBody}
_WIRE_MODELS: dict[Kind, type[BaseModel]] = {"config": EvaluationConfig, "target": EvaluationTarget}
_ENGINE_MODELS: dict[Kind, type[BaseModel]] = {"config": nemo_plan.NemoConfig, "target": nemo_plan.NemoTarget}

_COMMON_FILTERS = {"namespace", "project", "created_at", "custom_fields"}
_FILTERS: dict[str, set[str]] = {
    "config": _COMMON_FILTERS | {"name", "type"},
    "target": _COMMON_FILTERS | {"name", "type", "model"},
    "job": _COMMON_FILTERS | {"status", "config", "target"},
    "result": {"job_id", "namespace", "project", "created_at"},
}
_ENTITY_SEARCHES = {"id", "name", "namespace", "description", "project", "custom_fields", "ownership"}
_DATES = {"created_at", "updated_at"}
_SEARCHES: dict[str, set[str]] = {
    "config": _ENTITY_SEARCHES | _DATES | {"type", "params", "tasks", "groups"},
    "target": _ENTITY_SEARCHES
    | _DATES
    | {"type", "model", "rows", "dataset", "cached_outputs", "retriever", "rag"},
    "job": (_ENTITY_SEARCHES - {"name"})
    | _DATES
    | {"config", "target", "status", "status_details", "result", "output_files_url"},
    "result": {"id", "job", "namespace", "project", "description", "custom_fields", "ownership"}
    | _DATES
    | {"files_url", "tasks", "groups"},
}


def _ref(value: str, default_namespace: str) -> str:
    """``"ns/name"`` from a reference; a bare name is looked up in ``default_namespace``."""
    ref = value.strip()
    if not ref:
        raise invalid("a reference must be 'namespace/name'")
    return ref if "/" in ref else f"{default_namespace}/{ref}"


def _wire(kind: Kind, entity: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config or target as the SDK reads it, its secrets (api keys, ``hf_token``) redacted."""
    return redact(_WIRE_MODELS[kind].model_validate(entity).model_dump(mode="json", exclude_none=True))


class NemoEvaluatorAPI:
    """The handlers; one instance per app, holding the services."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._entity_lock = asyncio.Lock()

    # ---- validation ---------------------------------------------------------------------------

    async def check_engine_model(self, kind: Kind, body: Mapping[str, Any], loc: list[str | int]) -> None:
        """Validate a config or target with the engine's models: 422 naming the field and what is accepted.

        Checks the shape, the config ``type`` (against the engine's compilers), each task's ``params``,
        template syntax and metrics, and the target's type-specific fields (an ``api_endpoint`` model
        included). Model and dataset references are resolved, and dataset files located, when a job
        compiles: a stored config or target may name what is registered later.
        """
        part = {k: v for k, v in body.items() if k not in nemo_plan.ENTITY_FIELDS and v is not None}
        if "type" not in part:
            supported = nemo_plan.CONFIG_COMPILERS if kind == "config" else nemo_plan.TARGET_TYPES
            raise invalid(f"type is required; supported {kind} types: {', '.join(supported)}", [*loc, "type"])
        if kind == "config" and isinstance(part.get("tasks"), list):
            raise invalid(
                "tasks is a list (the early-access format); map task names to tasks: "
                '{"tasks": {"my-task": {"type": "completion", ...}}}',
                [*loc, "tasks"],
            )
        try:
            _ENGINE_MODELS[kind].model_validate(part)
        except ValidationError as exc:
            raise from_validation_error(exc, loc, model=_ENGINE_MODELS[kind]) from None
        if kind == "config":
            await self._check_config_parts(part, loc)
        else:
            try:
                parsed = nemo_plan.parse_target(part)
                if parsed.type == "model" and isinstance(parsed.model, Mapping):
                    await resolve_model_spec(parsed.model, None, "target.model")
            except InvalidInputError as exc:
                raise invalid(
                    exc.message, [*loc, "model"] if "target.model" in exc.message else loc
                ) from None

    async def _check_config_parts(self, part: Mapping[str, Any], loc: list[str | int]) -> None:
        """The config ``type``, and each task's params, template syntax and metrics."""
        supported = list(nemo_plan.CONFIG_COMPILERS)
        if part["type"] not in supported:
            raise invalid(
                f"config type {part['type']!r} is not supported by the local engine; "
                f"supported: {', '.join(supported)}",
                [*loc, "type"],
            )
        deps = MetricDeps(registry=self.services.registry, clients=self.services.clients)
        for name, task in (part.get("tasks") or {}).items():
            where = [*loc, "tasks", name]
            try:
                params = nemo_plan.NemoTaskParams.model_validate(task.get("params") or {})
            except ValidationError as exc:
                raise from_validation_error(exc, [*where, "params"], model=nemo_plan.NemoTaskParams) from None
            try:
                check_templates(params.template)
            except InvalidInputError as exc:
                raise invalid(f"task {name!r}: {exc.message}", [*where, "params", "template"]) from None
            if part["type"] != "custom":
                continue
            for metric_name, spec in (task.get("metrics") or {}).items():
                try:
                    await nemo_metric(metric_name, spec, deps)
                except NotFoundError:
                    pass  # a judge model registered later; the job's compile resolves it
                except InvalidInputError as exc:
                    raise invalid(f"task {name!r}: {exc.message}", [*where, "metrics", metric_name]) from None

    async def parse_inline(self, kind: Kind, body: Mapping[str, Any], loc: list[str | int]) -> dict[str, Any]:
        """An inline config or target of a job body, checked like a created entity (not stored)."""
        model = _BODY_MODELS[kind]
        try:
            parsed = model.model_validate(body)
        except ValidationError as exc:
            raise from_validation_error(exc, loc, accepted=list(model.model_fields), model=model) from None
        entity = {
            k: v for k, v in parsed.model_dump(mode="json", exclude_unset=True).items() if v is not None
        }
        await self.check_engine_model(kind, entity, loc)
        return {k: v for k, v in entity.items() if k not in SERVER_FIELDS}

    async def resolve(self, kind: Kind, value: str | dict[str, Any], namespace: str) -> dict[str, Any]:
        """A job's config or target as a full object: a stored entity by reference, or an inline one."""
        if isinstance(value, str):
            ref = _ref(value, namespace)
            try:
                return await self.services.registry.get_nemo(kind, ref)
            except NotFoundError:
                raise NotFoundError(
                    f"{_LABEL[kind]} '{ref}' not found; create it with POST /v1/evaluation/{kind}s "
                    f"or pass the {kind} inline"
                ) from None
        return await self.parse_inline(kind, value, ["body", kind])

    # ---- configs and targets ------------------------------------------------------------------

    async def get_entity(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        ref = f"{namespace}/{name}"
        try:
            return await self.services.registry.get_nemo(kind, ref)
        except NotFoundError:
            raise NotFoundError(f"{_LABEL[kind]} '{ref}' not found") from None

    async def create_entity(self, kind: Kind, body: BaseModel) -> dict[str, Any]:
        given = {k: v for k, v in body.model_dump(mode="json", exclude_unset=True).items() if v is not None}
        await self.check_engine_model(kind, given, ["body"])
        entity_id = new_entity_id(kind)
        now = isoformat(utc_now())
        entity = {k: v for k, v in given.items() if k not in SERVER_FIELDS}
        entity.update(
            id=entity_id,
            name=given.get("name") or entity_id,
            namespace=given.get("namespace") or DEFAULT_NAMESPACE,
            created_at=now,
            updated_at=now,
        )
        ref = f"{entity['namespace']}/{entity['name']}"
        try:
            await self.services.registry.put_nemo(kind, entity)
        except ConflictError:
            raise ConflictError(
                f"{_LABEL[kind]} '{ref}' already exists; choose another name or update it with "
                f"PATCH /v1/evaluation/{kind}s/{ref}"
            ) from None
        logger.info("Created %s %s (%s)", kind, ref, entity_id)
        return _wire(kind, entity)

    async def update_entity(self, kind: Kind, namespace: str, name: str, body: BaseModel) -> dict[str, Any]:
        changes = {k: v for k, v in body.model_dump(mode="json", exclude_unset=True).items() if v is not None}
        changes = {k: v for k, v in changes.items() if k not in SERVER_FIELDS}
        async with self._entity_lock:
            current = await self.get_entity(kind, namespace, name)
            changes = restore_redacted(changes, current)  # a masked key sent back keeps its value
            updated = {**current, **changes, "updated_at": isoformat(utc_now())}
            await self.check_engine_model(kind, updated, ["body"])
            old_ref, new_ref = f"{namespace}/{name}", f"{updated['namespace']}/{updated['name']}"
            if new_ref == old_ref:
                await self.services.registry.put_nemo(kind, updated, replace=True)
            else:
                try:
                    await self.services.registry.put_nemo(kind, updated)
                except ConflictError:
                    raise ConflictError(
                        f"{_LABEL[kind]} '{new_ref}' already exists; cannot rename '{old_ref}' to it"
                    ) from None
                await self.services.registry.delete_nemo(kind, old_ref)
        return _wire(kind, updated)

    async def delete_entity(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        async with self._entity_lock:
            entity = await self.get_entity(kind, namespace, name)
            await self.services.registry.delete_nemo(kind, f"{namespace}/{name}")
        return DeleteResponse(
            id=entity.get("id"),
            deleted_at=isoformat(utc_now()),
            message=f"{_LABEL[kind]} '{namespace}/{name}' deleted",
        ).model_dump(mode="json")

    async def list_entities(self, kind: Kind, query: ListQuery) -> dict[str, Any]:
        entities = [_wire(kind, e) for e in await self.services.registry.list_nemo(kind)]
        return paginate(entities, query, _target_getter if kind == "target" else _entity_getter)

    # ---- jobs ---------------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobRecord:
        job = await self.services.store.get_job(job_id)
        if job is None or job.front != "nemo":
            raise NotFoundError(f"Evaluation job '{job_id}' not found")
        return job

    async def compile(self, config: dict[str, Any], target: dict[str, Any]) -> EvalPlan:
        """The job's plan; compiled once at creation so a bad config or target fails the request."""
        services = self.services
        model = target.get("model")
        if target.get("type") == "model" and isinstance(model, str):
            try:
                await resolve_model_spec(model, services.registry, "target.model")
            except NotFoundError:
                raise NotFoundError(
                    f"target.model: model {model!r} is not registered in evalstack; register it first "
                    '(POST /v1/models) or give the target an endpoint: {"api_endpoint": {"url": ..., '
                    '"model_id": ...}}'
                ) from None
        return await nemo_plan.compile_nemo_plan(
            config, target, registry=services.registry, clients=services.clients, settings=services.settings
        )

    async def create_job(self, body: JobCreateBody, base_url: str) -> dict[str, Any]:
        namespace = body.namespace or DEFAULT_NAMESPACE
        config = await self.resolve("config", body.config, namespace)
        target = await self.resolve("target", body.target, namespace)
        await self.compile(config, target)
        meta = {
            "namespace": namespace,
            "project": body.project,
            "description": body.description,
            "custom_fields": body.custom_fields,
            "ownership": body.ownership.model_dump(exclude_none=True) if body.ownership else None,
            "output_files_url": body.output_files_url,
        }
        job = JobRecord(
            id=new_job_id(),
            front="nemo",
            spec={
                "config": config,
                "target": target,
                "meta": {k: v for k, v in meta.items() if v is not None},
            },
        )
        job_max_outage(job)  # a bad params.extra.max_outage fails the request, not the job
        job = await self.services.worker.submit(job)
        logger.info("Created evaluation job %s", job.id)
        return job_view(job, base_url)

    async def cancel_job(self, job_id: str, base_url: str) -> dict[str, Any]:
        job = await self.get_job(job_id)
        if job.status in TERMINAL_STATUSES:
            raise ConflictError(
                f"Evaluation job '{job_id}' is already {job.status}; only created, pending or running "
                "jobs can be cancelled"
            )
        job = await self.services.worker.cancel(job_id)
        return job_view(job, base_url)

    async def delete_job(self, job_id: str) -> None:
        job = await self.get_job(job_id)
        if job.status not in TERMINAL_STATUSES:
            await self.services.worker.cancel(job_id)
            job = await self.services.worker.wait(job_id, timeout=15.0)
            if job.status not in TERMINAL_STATUSES:
                raise ConflictError(
                    f"Evaluation job '{job_id}' is still {job.status}; try deleting it again shortly"
                )
        await self.services.store.delete_job(job_id)
        logger.info("Deleted evaluation job %s", job_id)

    async def job_result(self, job: JobRecord) -> dict[str, Any]:
        """The aggregate ``{tasks, groups}`` of a completed job, recomputed from its samples if not cached."""
        if job.result is not None:
            return job.result
        plan = await self.compile(job.spec["config"], job.spec["target"])
        samples = await self.services.store.read_samples(job.id)
        by_task: dict[str, list[SampleRecord]] = {}
        for sample in samples:
            by_task.setdefault(sample.task, []).append(sample)
        return await asyncio.to_thread(plan.summarize, by_task)

    async def results(self, job_id: str, base_url: str) -> dict[str, Any]:
        job = await self.get_job(job_id)
        if job.status != "completed":
            reason = f": {job.error}" if job.error else ""
            raise ConflictError(
                f"Evaluation job '{job_id}' is {job.status}{reason}; "
                "results are available once it is completed"
            )
        return result_view(job, await self.job_result(job), base_url)

    async def download_results(self, job_id: str, base_url: str) -> bytes:
        job = await self.get_job(job_id)
        if job.status not in TERMINAL_STATUSES:
            raise ConflictError(
                f"Evaluation job '{job_id}' is {job.status}; "
                "its results can be downloaded once it has finished"
            )
        samples = await self.services.store.read_samples(job_id)
        result = result_view(job, await self.job_result(job), base_url) if job.status == "completed" else None
        return await asyncio.to_thread(
            archive.results_zip,
            config=job.spec.get("config") or {},
            target=job.spec.get("target") or {},
            result=result,
            samples=samples,
            log_lines=archive.job_log_lines(job, samples),
        )

    async def logs(self, job_id: str) -> bytes:
        job = await self.get_job(job_id)
        samples = [s for s in await self.services.store.read_samples(job_id) if s.error]
        return archive.logs_zip(archive.job_log_lines(job, samples))

    async def list_jobs(self, query: ListQuery, base_url: str) -> dict[str, Any]:
        jobs = await self.services.store.list_jobs(front="nemo")
        if query.filter or query.search:
            return paginate([job_view(j, base_url) for j in jobs], query, _job_getter)
        # No conditions: page the records first and build only the views of that page.
        jobs.sort(key=lambda j: j.created_at or utc_now(), reverse=query.sort.startswith("-"))
        start = (query.page - 1) * query.page_size
        page = [job_view(j, base_url) for j in jobs[start : start + query.page_size]]
        return envelope(page, query, len(jobs))

    # ---- results ------------------------------------------------------------------------------

    async def _stored_results(self) -> list[dict[str, Any]]:
        try:
            return await self.services.store.list_resources(RESULT_KIND)
        except ValueError:  # this store does not keep result entities
            return []

    async def list_results(self, query: ListQuery, base_url: str) -> dict[str, Any]:
        derived = [
            result_view(job, job.result or {}, base_url)
            for job in await self.services.store.list_jobs(front="nemo")
            if job.status == "completed"
        ]
        stored = [
            EvaluationResult.model_validate(r).model_dump(mode="json") for r in await self._stored_results()
        ]
        return paginate(derived + stored, query, _result_getter)

    async def get_result(self, result_id: str, base_url: str) -> dict[str, Any]:
        job_id = job_id_for_result(result_id)
        if job_id is not None:
            job = await self.services.store.get_job(job_id)
            if job is not None and job.front == "nemo" and job.status == "completed":
                return result_view(job, await self.job_result(job), base_url)
        stored = await self._get_stored_result(result_id)
        if stored is None:
            raise NotFoundError(f"Evaluation result '{result_id}' not found")
        return EvaluationResult.model_validate(stored).model_dump(mode="json")

    async def _get_stored_result(self, result_id: str) -> dict[str, Any] | None:
        try:
            return await self.services.store.get_resource(RESULT_KIND, result_id)
        except ValueError:
            return None

    async def _put_stored_result(self, result: dict[str, Any]) -> None:
        try:
            await self.services.store.put_resource(RESULT_KIND, result["id"], result)
        except ValueError:
            raise UnsupportedError(
                "This server keeps only the results of its own jobs; results cannot be created or changed"
            ) from None

    async def _is_derived(self, result_id: str) -> bool:
        job_id = job_id_for_result(result_id)
        return job_id is not None and await self.services.store.get_job(job_id) is not None

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
        await self.services.store.delete_resource(RESULT_KIND, result_id)
        return DeleteResponse(
            id=result_id, deleted_at=isoformat(utc_now()), message=f"Evaluation result '{result_id}' deleted"
        ).model_dump(mode="json")

    # ---- live ---------------------------------------------------------------------------------

    async def live(self, body: JobCreateBody) -> dict[str, Any]:
        namespace = body.namespace or DEFAULT_NAMESPACE
        config = await self.resolve("config", body.config, namespace)
        target = await self.resolve("target", body.target, namespace)
        _check_live(config, target)
        plan = await self.compile(config, target)
        for task in plan.tasks:
            task.limit = min(task.limit or LIVE_MAX_ROWS, LIVE_MAX_ROWS)
        live_id = new_job_id()
        try:
            samples = await self.services.worker.run_inline(plan)
            aggregate = await asyncio.to_thread(plan.summarize, samples)
        except (InvalidInputError, NotFoundError, UnsupportedError):
            raise
        except Exception as exc:
            logger.warning("Live evaluation failed: %s", exc)
            details = EvaluationStatusDetails(message=f"Live evaluation failed: {exc}", samples_processed=0)
            failed = LiveEvaluation(status="failed", status_details=details, logs={"lines": [str(exc)]})
            return failed.model_dump(mode="json")
        flat = [s for rows in samples.values() for s in rows]
        task_status = {
            name: ("failed" if rows and all(s.error for s in rows) else "completed")
            for name, rows in samples.items()
        }
        errors = [f"task {s.task} sample {s.index}: {s.error}" for s in flat if s.error]
        now = utc_now()
        result = EvaluationResult(
            id=result_id_for_job(live_id),
            job=live_id,
            namespace=namespace,
            project=body.project,
            tasks=aggregate.get("tasks"),
            groups=aggregate.get("groups"),
            created_at=now,
            updated_at=now,
        )
        details = EvaluationStatusDetails(
            message=f"Live evaluation completed: {len(flat)} samples, {len(errors)} failed",
            samples_processed=len(flat),
            progress=100.0,
            task_status=task_status,
        )
        outcome = LiveEvaluation(
            status="completed", status_details=details, result=result, logs={"lines": errors}
        )
        return outcome.model_dump(mode="json")


# ---- views --------------------------------------------------------------------------------------


def _tasks_of(config: Mapping[str, Any]) -> list[str]:
    tasks = config.get("tasks")
    return list(tasks) if isinstance(tasks, Mapping) else []


def _outage_note(progress: Mapping[str, Any]) -> str:
    """ "; waiting for <endpoint>, unreachable for 42s ..." while the job waits out an endpoint outage."""
    outage = progress.get("outage")
    if not isinstance(outage, Mapping):
        return ""
    return (
        f"; waiting for the model endpoint {outage.get('endpoint')}, unreachable for "
        f"{outage.get('unreachable_s', 0):.0f}s (the job fails after {outage.get('max_outage_s', 0):.0f}s); "
        f"last error: {outage.get('last_error')}"
    )


def status_details(job: JobRecord) -> dict[str, Any]:
    """``EvaluationStatusDetails`` of a job from its record.

    ``progress`` is set only when the config has ``params.limit_samples``: processed samples over the
    run's total (the worker's count once rows are loaded, else ``limit_samples`` per task), capped at 100.
    """
    config = job.spec.get("config") or {}
    progress = job.progress or {}
    processed = int(progress.get("samples_processed") or 0)
    total = int(progress.get("samples_total") or 0)
    errors = int(progress.get("errors") or 0) + int(progress.get("invalid") or 0)
    unstarted = job.status if job.status in ("cancelled", "failed") else "pending"
    task_status = dict(progress.get("task_status") or {}) or {name: unstarted for name in _tasks_of(config)}
    params = config.get("params") if isinstance(config.get("params"), Mapping) else {}
    limit = params.get("limit_samples") if isinstance(params, Mapping) else None
    percent: float | None = None
    if isinstance(limit, int) and limit > 0:
        if job.status == "completed":
            percent = 100.0
        else:
            denominator = total or limit * max(1, len(_tasks_of(config)))
            percent = round(min(100.0, processed / denominator * 100.0), 2)
    of_total = f" of {total}" if total else ""
    messages = {
        "created": "Job created; waiting to be scheduled",
        "pending": "Waiting for a free worker slot",
        "running": f"Running: {processed}{of_total} samples processed{_outage_note(progress)}",
        "completed": f"Completed: {processed} samples processed, {errors} failed",
        "failed": f"Failed: {job.error}" if job.error else "Failed",
        "cancelling": "Cancelling at the user's request",
        "cancelled": f"Cancelled at the user's request after {processed} samples",
    }
    return EvaluationStatusDetails(
        message=messages.get(job.status, job.status),
        samples_processed=processed,
        progress=percent,
        task_status=task_status,
    ).model_dump(mode="json")


def _download_url(job_id: str, base_url: str) -> str:
    return f"{base_url.rstrip('/')}/v1/evaluation/jobs/{job_id}/download-results"


def job_view(job: JobRecord, base_url: str) -> dict[str, Any]:
    """``EvaluationJob``: the record with its config and target expanded (api keys and tokens redacted)."""
    meta = job.spec.get("meta") or {}
    view = EvaluationJob(
        id=job.id,
        namespace=meta.get("namespace", DEFAULT_NAMESPACE),
        project=meta.get("project"),
        description=meta.get("description"),
        custom_fields=meta.get("custom_fields"),
        ownership=meta.get("ownership"),
        config=EvaluationConfig.model_validate(redact(job.spec.get("config") or {})),
        target=EvaluationTarget.model_validate(redact(job.spec.get("target") or {})),
        status=job.status,
        status_details=EvaluationStatusDetails.model_validate(status_details(job)),
        result=result_id_for_job(job.id) if job.status == "completed" else None,
        output_files_url=meta.get("output_files_url") or _download_url(job.id, base_url),
        created_at=job.created_at,
        updated_at=job.updated_at,
    )
    data = view.model_dump(mode="json", exclude_none=True)
    data["status_details"] = view.status_details.model_dump(mode="json")  # keeps ``progress: null``
    data["config"] = view.config.model_dump(mode="json", exclude_none=True)
    data["target"] = view.target.model_dump(mode="json", exclude_none=True)
    return scrub(data, secret_values(job.spec))


def result_view(job: JobRecord, aggregate: Mapping[str, Any], base_url: str) -> dict[str, Any]:
    """``EvaluationResult`` of a completed job."""
    meta = job.spec.get("meta") or {}
    view = EvaluationResult(
        id=result_id_for_job(job.id),
        job=job.id,
        namespace=meta.get("namespace", DEFAULT_NAMESPACE),
        project=meta.get("project"),
        description=meta.get("description"),
        custom_fields=meta.get("custom_fields"),
        files_url=_download_url(job.id, base_url),
        tasks=aggregate.get("tasks"),
        groups=aggregate.get("groups"),
        created_at=job.updated_at,
        updated_at=job.updated_at,
    )
    return view.model_dump(mode="json", exclude_none=True)


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


# ---- list field getters ---------------------------------------------------------------------------


def _entity_getter(entity: Mapping[str, Any], key: str) -> list[Any]:
    return [entity.get(key)]


def _target_getter(entity: Mapping[str, Any], key: str) -> list[Any]:
    """``model`` matches a model reference, an endpoint's ``model_id`` or a model entity's ``ns/name``."""
    if key != "model":
        return [entity.get(key)]
    model = entity.get("model")
    if not isinstance(model, Mapping):
        return [model]
    values: list[Any] = [model]
    endpoint = model.get("api_endpoint")
    if isinstance(endpoint, Mapping):
        values.append(endpoint.get("model_id"))
    if model.get("name"):
        values += [model.get("name"), f"{model.get('namespace', DEFAULT_NAMESPACE)}/{model.get('name')}"]
    return values


def _job_getter(job: Mapping[str, Any], key: str) -> list[Any]:
    """``config``/``target`` match ``ns/name`` (or nested fields of the snapshot)."""
    if key in ("config", "target"):
        snapshot = job.get(key) or {}
        values: list[Any] = [snapshot]
        if snapshot.get("name"):
            values.append(f"{snapshot.get('namespace', DEFAULT_NAMESPACE)}/{snapshot['name']}")
        if snapshot.get("id"):
            values.append(snapshot["id"])
        return values
    return [job.get(key)]


def _result_getter(result: Mapping[str, Any], key: str) -> list[Any]:
    return [result.get("job")] if key == "job_id" else [result.get(key)]


# ---- router ----------------------------------------------------------------------------------------


def _base_url(request: Request) -> str:
    return str(request.base_url)


def _list_query(request: Request, resource: str) -> ListQuery:
    return parse_list_query(request.query_params, filters=_FILTERS[resource], searches=_SEARCHES[resource])


def _zip_response(content: bytes, filename: str) -> Response:
    return Response(
        content,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def router(services: Services) -> APIRouter:
    """The ``/v1/evaluation`` routes over ``services``."""
    api = NemoEvaluatorAPI(services)
    r = APIRouter(prefix="/v1/evaluation", route_class=NemoRoute, tags=["NeMo Evaluator"])

    # ---- configs
    @r.post("/configs", summary="Create an evaluation config")
    async def create_config(body: EvaluationConfigBody) -> dict[str, Any]:
        return await api.create_entity("config", body)

    @r.get("/configs", summary="List evaluation configs")
    async def list_configs(request: Request) -> dict[str, Any]:
        return await api.list_entities("config", _list_query(request, "config"))

    @r.get("/configs/{namespace}/{name}", summary="Get an evaluation config")
    async def get_config(namespace: str, name: str) -> dict[str, Any]:
        return _wire("config", await api.get_entity("config", namespace, name))

    @r.patch("/configs/{namespace}/{name}", summary="Update an evaluation config")
    async def update_config(namespace: str, name: str, body: EvaluationConfigPatch) -> dict[str, Any]:
        return await api.update_entity("config", namespace, name, body)

    @r.delete("/configs/{namespace}/{name}", summary="Delete an evaluation config")
    async def delete_config(namespace: str, name: str) -> dict[str, Any]:
        return await api.delete_entity("config", namespace, name)

    # ---- targets
    @r.post("/targets", summary="Create an evaluation target")
    async def create_target(body: EvaluationTargetBody) -> dict[str, Any]:
        return await api.create_entity("target", body)

    @r.get("/targets", summary="List evaluation targets")
    async def list_targets(request: Request) -> dict[str, Any]:
        return await api.list_entities("target", _list_query(request, "target"))

    @r.get("/targets/{namespace}/{name}", summary="Get an evaluation target")
    async def get_target(namespace: str, name: str) -> dict[str, Any]:
        return _wire("target", await api.get_entity("target", namespace, name))

    @r.patch("/targets/{namespace}/{name}", summary="Update an evaluation target")
    async def update_target(namespace: str, name: str, body: EvaluationTargetPatch) -> dict[str, Any]:
        return await api.update_entity("target", namespace, name, body)

    @r.delete("/targets/{namespace}/{name}", summary="Delete an evaluation target")
    async def delete_target(namespace: str, name: str) -> dict[str, Any]:
        return await api.delete_entity("target", namespace, name)

    # ---- jobs
    @r.post("/jobs", summary="Create an evaluation job")
    async def create_job(body: JobCreateBody, request: Request) -> dict[str, Any]:
        return await api.create_job(body, _base_url(request))

    @r.get("/jobs", summary="List evaluation jobs")
    async def list_jobs(request: Request) -> dict[str, Any]:
        return await api.list_jobs(_list_query(request, "job"), _base_url(request))

    @r.get("/jobs/{job_id}", summary="Get an evaluation job")
    async def get_job(job_id: str, request: Request) -> dict[str, Any]:
        return job_view(await api.get_job(job_id), _base_url(request))

    @r.delete("/jobs/{job_id}", status_code=204, response_class=Response, summary="Delete an evaluation job")
    async def delete_job(job_id: str) -> Response:
        await api.delete_job(job_id)
        return Response(status_code=204)

    @r.post("/jobs/{job_id}/cancel", summary="Cancel an evaluation job")
    async def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
        return await api.cancel_job(job_id, _base_url(request))

    @r.get("/jobs/{job_id}/status", summary="Status details of an evaluation job")
    async def job_status(job_id: str) -> dict[str, Any]:
        return status_details(await api.get_job(job_id))

    @r.get("/jobs/{job_id}/results", summary="Results of a completed evaluation job")
    async def job_results(job_id: str, request: Request) -> dict[str, Any]:
        return await api.results(job_id, _base_url(request))

    @r.get("/jobs/{job_id}/download-results", response_class=Response, summary="Results and outputs as a ZIP")
    async def download_results(job_id: str, request: Request) -> Response:
        return _zip_response(await api.download_results(job_id, _base_url(request)), f"{job_id}-results.zip")

    @r.get("/jobs/{job_id}/logs", response_class=Response, summary="The job's logs as a ZIP")
    async def job_logs(job_id: str) -> Response:
        return _zip_response(await api.logs(job_id), f"{job_id}-logs.zip")

    # ---- results
    @r.post("/results", summary="Create an evaluation result")
    async def create_result(body: EvaluationResultBody) -> dict[str, Any]:
        return await api.create_result(body)

    @r.get("/results", summary="List evaluation results")
    async def list_results(request: Request) -> dict[str, Any]:
        return await api.list_results(_list_query(request, "result"), _base_url(request))

    @r.get("/results/{result_id}", summary="Get an evaluation result")
    async def get_result(result_id: str, request: Request) -> dict[str, Any]:
        return await api.get_result(result_id, _base_url(request))

    @r.patch("/results/{result_id}", summary="Update an evaluation result")
    async def update_result(result_id: str, body: EvaluationResultPatch) -> dict[str, Any]:
        return await api.update_result(result_id, body)

    @r.delete("/results/{result_id}", summary="Delete an evaluation result")
    async def delete_result(result_id: str) -> dict[str, Any]:
        return await api.delete_result(result_id)

    # ---- live
    @r.post("/live", summary="Run a small evaluation synchronously, in memory")
    async def live(body: JobCreateBody) -> dict[str, Any]:
        return await api.live(body)

    return r


def include_nemo_api(app: FastAPI, services: Services) -> None:
    """Mount the NeMo Evaluator v1 API on ``app``."""
    app.include_router(router(services))
