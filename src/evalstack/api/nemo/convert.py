"""NeMo Evaluator wire shapes from evalstack's records, and a job's spec from a create request.

Jobs and results are read from the job record (its ``NemoRunSpec``, status, progress and cached
result); configs and targets shown back are redacted (api keys, tokens, passwords).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalstack.api.nemo.models import (
    DEFAULT_NAMESPACE,
    EvaluationConfig,
    EvaluationJob,
    EvaluationResult,
    EvaluationStatusDetails,
    EvaluationTarget,
    JobCreateBody,
    LiveEvaluation,
    result_id_for_job,
    utc_now,
)
from evalstack.engine.spec import NemoRunSpec
from evalstack.nemo_jobs import LiveRun
from evalstack.redaction import redact, scrub, secret_values
from evalstack.store.records import JobRecord

_WIRE_MODELS: dict[str, type[EvaluationConfig] | type[EvaluationTarget]] = {
    "config": EvaluationConfig,
    "target": EvaluationTarget,
}


def entity_view(kind: str, entity: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config or target as the SDK reads it, its secrets (api keys, ``hf_token``) redacted."""
    return redact(_WIRE_MODELS[kind].model_validate(entity).model_dump(mode="json", exclude_none=True))


def job_spec(body: JobCreateBody, config: dict[str, Any], target: dict[str, Any]) -> NemoRunSpec:
    """The spec of a job created with ``body``, its config and target resolved to full objects."""
    meta = {
        "namespace": body.namespace or DEFAULT_NAMESPACE,
        "project": body.project,
        "description": body.description,
        "custom_fields": body.custom_fields,
        "ownership": body.ownership.model_dump(exclude_none=True) if body.ownership else None,
        "output_files_url": body.output_files_url,
    }
    return NemoRunSpec(config=config, target=target, meta={k: v for k, v in meta.items() if v is not None})


def _spec(job: JobRecord) -> dict[str, Any]:
    """The stored spec's ``config``, ``target`` and ``meta``: read as stored (every spec version has
    them), so that one unreadable spec never breaks a listing."""
    return job.spec


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
    config = _spec(job).get("config") or {}
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
    meta = _spec(job).get("meta") or {}
    view = EvaluationJob(
        id=job.id,
        namespace=meta.get("namespace", DEFAULT_NAMESPACE),
        project=meta.get("project"),
        description=meta.get("description"),
        custom_fields=meta.get("custom_fields"),
        ownership=meta.get("ownership"),
        config=EvaluationConfig.model_validate(redact(_spec(job).get("config") or {})),
        target=EvaluationTarget.model_validate(redact(_spec(job).get("target") or {})),
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
    meta = _spec(job).get("meta") or {}
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


def live_view(run: LiveRun, *, live_id: str, namespace: str, project: str | None) -> dict[str, Any]:
    """``LiveEvaluation`` of a finished live run."""
    samples = run.samples
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
        project=project,
        tasks=run.aggregate.get("tasks"),
        groups=run.aggregate.get("groups"),
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


def live_failure_view(error: Exception) -> dict[str, Any]:
    """``LiveEvaluation`` of a live run that failed on its way (the model, a metric)."""
    details = EvaluationStatusDetails(message=f"Live evaluation failed: {error}", samples_processed=0)
    failed = LiveEvaluation(status="failed", status_details=details, logs={"lines": [str(error)]})
    return failed.model_dump(mode="json")
