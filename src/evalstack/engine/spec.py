"""The engine's job spec: what a job runs, in the engine's own versioned types.

Every front door builds one of these and stores it in the job record (:func:`new_job`); the worker
reads it back (:func:`read_spec`) and compiles it (``engine.compile``) whenever the job runs, also
after a restart or an upgrade, so a spec holds everything its plan needs besides the registry.

- :class:`LlamaStackRunSpec`: a Llama Stack benchmark and its ``BenchmarkConfig`` (``run_eval`` on
  the local provider, ``evalstack run`` with a benchmark file). A benchmark whose ``metadata`` has a
  ``type`` is a NeMo Evaluator config and runs as one, with the candidate model as its target.
- :class:`NemoRunSpec`: a NeMo Evaluator config and target (``POST /v1/evaluation/jobs``,
  ``evalstack run`` with a NeMo config), kept as given so that they can be shown back, plus job
  metadata (namespace, project, ...).

Versions: 1 is what builds before the engine owned its types wrote: the same fields without
``front`` and ``spec_version`` (the front came from the record). 2 is the current one. A change to a
field of the spec or of ``engine.types`` bumps :data:`SPEC_VERSION` and adds a reader of the old one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from evalstack.engine.types import Benchmark, BenchmarkConfig, EngineModel
from evalstack.errors import InvalidInputError
from evalstack.store.records import JobRecord, new_job_id

SPEC_VERSION = 2


class LlamaStackRunSpec(EngineModel):
    """A Llama Stack benchmark run."""

    front: Literal["llama_stack"] = "llama_stack"
    spec_version: Literal[2] = 2
    benchmark: Benchmark
    benchmark_config: BenchmarkConfig
    parallelism: int | None = Field(default=None, ge=1)
    """Model requests in flight (``evalstack run`` benchmark files); ``None``: the server's default."""
    max_outage: float | None = Field(default=None, gt=0)
    """Seconds the job waits out an unreachable model endpoint; ``None``: the benchmark's or the server's."""


class NemoRunSpec(EngineModel):
    """A NeMo Evaluator job: a config and a target, as given, plus the job's metadata."""

    front: Literal["nemo"] = "nemo"
    spec_version: Literal[2] = 2
    config: dict[str, Any]
    target: dict[str, Any]
    meta: dict[str, Any] = Field(default_factory=dict)
    max_outage: float | None = Field(default=None, gt=0)
    """Seconds the job waits out an unreachable model endpoint (``evalstack run --max-outage``)."""


JobSpec = Annotated[LlamaStackRunSpec | NemoRunSpec, Field(discriminator="front")]
_JOB_SPEC: TypeAdapter[LlamaStackRunSpec | NemoRunSpec] = TypeAdapter(JobSpec)


def new_job(
    spec: LlamaStackRunSpec | NemoRunSpec, *, benchmark_id: str | None = None, provider_id: str | None = None
) -> JobRecord:
    """A new job record (not yet stored) that runs ``spec``."""
    return JobRecord(
        id=new_job_id(),
        front=spec.front,
        spec=spec.model_dump(mode="json"),
        benchmark_id=benchmark_id,
        provider_id=provider_id,
    )


def _from_v1(front: str, data: dict[str, Any]) -> dict[str, Any]:
    """A version 1 spec (``{"benchmark", "benchmark_config", "parallelism"?}`` or ``{"config",
    "target", "meta"?}``, its front kept in the record) in version 2 fields."""
    return {**data, "front": front, "spec_version": 2}


_READERS: dict[int, Callable[[str, dict[str, Any]], dict[str, Any]]] = {1: _from_v1}
"""Spec version -> a reader that brings a spec of that version to the current one."""


def read_spec(job: JobRecord) -> LlamaStackRunSpec | NemoRunSpec:
    """The spec of a stored job, whichever version wrote it; InvalidInputError says what is wrong."""
    data = dict(job.spec)
    version = data.get("spec_version", 1)
    if version != SPEC_VERSION:
        reader = _READERS.get(version) if isinstance(version, int) else None
        if reader is None:
            raise InvalidInputError(
                f"Job {job.id} has a spec of version {version!r}; this build reads versions "
                f"{', '.join(str(v) for v in sorted(_READERS))} and {SPEC_VERSION}"
            )
        data = reader(job.front, data)
    if data.get("front") != job.front:
        raise InvalidInputError(
            f"Job {job.id} was created through {job.front!r} but its spec is for {data.get('front')!r}"
        )
    try:
        return _JOB_SPEC.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'][1:]) or 'spec'}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidInputError(f"The spec of job {job.id} is invalid: {problems}") from exc
