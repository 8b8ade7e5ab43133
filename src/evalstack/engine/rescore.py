"""Re-scoring: a new job that scores the stored outputs of a finished job again, with no model request.

:func:`rescore_spec` derives the new job's spec from the finished job's: the same or changed metrics
and extraction, and ``rescore_of`` naming the job whose outputs it reads. The spec compiles like any
other (so the metrics are validated the usual way), then :func:`replay_stored_outputs` turns every
task of the plan from "ask the model" into "read the stored output": its rows are the stored items,
in their order, and a sample that failed in the first job fails again with the same reason.

What may change, by the kind of job:

- Llama Stack benchmark (dataset and scoring functions): ``metrics`` lists scoring function ids, or
  maps them to their params (``{"basic::regex_parser_multiple_choice_answer": {...}}``).
- NeMo custom config (also as a Llama Stack benchmark's metadata): ``metrics`` is an object of NeMo
  metrics (``{"acc": {"type": "string-check", ...}}``) that replaces every task's metrics; ``params``
  would change nothing and is refused.
- Academic benchmarks (``mmlu``, ``gsm8k``...): ``params`` is merged into the config's ``params``,
  e.g. ``{"extra": {"answer_regex": "answer is \\(?([A-D])"}}`` for another answer extraction.

Log-likelihood metrics ask the model for every choice but the first while scoring; re-scoring a job
that ran with the response cache finds those answers there, else it asks again.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from evalstack.engine.plan import EvalPlan, SampleOutput
from evalstack.engine.ports import JobStore, RowSource
from evalstack.engine.runner import ERROR_KIND_INFERENCE
from evalstack.errors import ConflictError, EvalstackError, InvalidInputError, NotFoundError
from evalstack.inference.base import InferenceError
from evalstack.store.records import JobRecord, SampleRecord, new_job_id

RESCORE_OF = "rescore_of"
"""The key of a job spec that names the job whose stored outputs it scores."""


class JobSubmitter(Protocol):
    """The part of ``runner.JobWorker`` re-scoring uses."""

    compile_job: Callable[[JobRecord], Awaitable[EvalPlan]]

    async def submit(self, job: JobRecord) -> JobRecord: ...


def _merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, objects key by key."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _nemo_config(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The NeMo config inside a job spec (a NeMo job's, or a Llama Stack benchmark's metadata)."""
    config = spec.get("config")
    if isinstance(config, dict):
        return config
    benchmark = spec.get("benchmark")
    metadata = benchmark.get("metadata") if isinstance(benchmark, dict) else None
    return metadata if isinstance(metadata, dict) and "type" in metadata else None


def rescore_spec(
    source: JobRecord,
    *,
    metrics: Sequence[str] | Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The spec of a job that re-scores ``source``'s stored outputs (see the module docstring).

    Raises ConflictError when ``source`` is not completed, InvalidInputError for a change that does not
    fit the kind of job.
    """
    if source.status != "completed":
        raise ConflictError(
            f"Job {source.id} is {source.status}; only a completed job's outputs can be re-scored"
        )
    spec = copy.deepcopy(source.spec)  # a job that used the cache still does (log-likelihood metrics ask)
    spec[RESCORE_OF] = source.id
    config = _nemo_config(spec)
    if config is None:  # a Llama Stack benchmark: a dataset and scoring functions
        if params:
            raise InvalidInputError(
                "'params' applies to NeMo configs; re-score a Llama Stack benchmark with 'metrics' "
                "(scoring function ids, or an object of scoring function id to params)"
            )
        if metrics is not None:
            chosen = dict(metrics) if isinstance(metrics, Mapping) else dict.fromkeys(metrics)
            if not chosen or not all(isinstance(fn_id, str) and fn_id for fn_id in chosen):
                raise InvalidInputError("'metrics' must name at least one scoring function")
            spec["benchmark"]["scoring_functions"] = list(chosen)
            config_dict = spec.setdefault("benchmark_config", {})
            config_dict["scoring_params"] = {fn: p for fn, p in chosen.items() if p is not None}
        return spec
    if params:
        if config.get("type") == "custom":
            raise InvalidInputError(
                "'params' changes nothing when re-scoring a custom config (its outputs are already "
                "generated); give 'metrics' instead"
            )
        config["params"] = _merge(config.get("params") or {}, params)
    if metrics is not None:
        if not isinstance(metrics, Mapping) or not metrics:
            raise InvalidInputError(
                "'metrics' of a NeMo config must be an object of metric name to metric "
                '({"acc": {"type": "string-check", "params": {...}}})'
            )
        tasks = config.get("tasks")
        if config.get("type") != "custom" or not isinstance(tasks, dict):
            raise InvalidInputError(
                f"a {config.get('type')!r} benchmark has fixed metrics; change its answer extraction with "
                '\'params\' instead (e.g. {"extra": {"answer_regex": "..."}})'
            )
        for task in tasks.values():
            if isinstance(task, dict):
                task["metrics"] = copy.deepcopy(dict(metrics))
    return spec


class _StoredRow(dict[str, Any]):
    """A stored item, carrying the sample it came from (a plain dict to templates and metrics)."""

    sample: SampleRecord


def _stored_output(row: Mapping[str, Any]) -> SampleOutput:
    sample = row.sample if isinstance(row, _StoredRow) else None
    if sample is None:  # pragma: no cover - replay_stored_outputs makes every row
        raise EvalstackError("a re-scored row has no stored output")
    if sample.error is not None:
        reason = f"failed in job before re-scoring: {sample.error}"
        if sample.extra.get("error_kind") == ERROR_KIND_INFERENCE:
            raise InferenceError(reason)
        raise InvalidInputError(reason)
    return SampleOutput(sample.output_text, sample.response, request=sample.extra.get("request"))


def _stored_rows(records: list[SampleRecord]) -> RowSource:
    """A row source giving the stored items, each carrying its sample."""

    async def load() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for record in records:
            row = _StoredRow(record.item)
            row.sample = record
            rows.append(row)
        return rows

    return load


async def replay_stored_outputs(plan: EvalPlan, samples: JobStore, source_id: str) -> EvalPlan:
    """``plan`` with every task reading the outputs job ``source_id`` stored instead of asking a model."""
    stored: dict[str, list[SampleRecord]] = {}
    for sample in await samples.read_samples(source_id):
        stored.setdefault(sample.task, []).append(sample)
    for task in plan.tasks:
        records = stored.get(task.name)
        if not records:
            raise InvalidInputError(
                f"job {source_id} stored no outputs for task {task.name!r}; re-scoring cannot add tasks"
            )
        records.sort(key=lambda s: s.index)
        if [s.index for s in records] != list(range(len(records))):
            raise InvalidInputError(f"job {source_id} misses samples of task {task.name!r}")

        task.rows = _stored_rows(records)
        task.build_request = None
        task.read_output = _stored_output
        task.limit = None
    return plan


async def submit_rescore(
    store: JobStore,
    worker: JobSubmitter,
    job_id: str,
    *,
    metrics: Sequence[str] | Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> JobRecord:
    """Create and schedule the job that re-scores ``job_id``; returns it at once.

    The new job is compiled first, so unknown metrics or bad params are refused before it exists.
    """
    source = await store.get_job(job_id)
    if source is None:
        raise NotFoundError(f"Job {job_id} not found")
    job = JobRecord(
        id=new_job_id(),
        front=source.front,
        spec=rescore_spec(source, metrics=metrics, params=params),
        benchmark_id=source.benchmark_id,
        provider_id=source.provider_id,
    )
    await worker.compile_job(job)
    return await worker.submit(job)
