"""Compile a stored job's spec (``engine.spec``) into an EvalPlan, whichever front door created it.

- :class:`LlamaStackRunSpec`: a benchmark whose ``metadata`` has a ``type`` key is a NeMo Evaluator
  config and runs as one, with the candidate model as its target; any other benchmark is a dataset
  plus scoring functions (``engine.llama_stack_plan``).
- :class:`NemoRunSpec`: a NeMo Evaluator config and target (``engine.nemo_plan``).

How long a job waits for an unreachable model endpoint (``EvalPlan.max_outage``, seconds) comes from
the spec's ``max_outage``, else a NeMo config's ``params.extra.max_outage`` (config params, else the
largest of its tasks'), else a plain benchmark's ``metadata.max_outage``; unset, the server's setting.

Plans are compiled again from the spec after a restart, so everything they need is in the spec
or in the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from evalstack.engine.llama_stack_plan import candidate_model, compile_llama_stack_plan
from evalstack.engine.nemo_plan import compile_nemo_plan
from evalstack.engine.plan import EvalPlan
from evalstack.engine.spec import LlamaStackRunSpec, read_spec
from evalstack.errors import InvalidInputError
from evalstack.store.records import JobRecord

if TYPE_CHECKING:
    from evalstack.config import Settings
    from evalstack.engine.ports import ClientSource
    from evalstack.engine.scoring import ScoringService
    from evalstack.registry import Registry


def is_nemo_config(metadata: Mapping[str, Any] | None) -> bool:
    """A Llama Stack benchmark whose metadata is a NeMo Evaluator config (it has a ``type``)."""
    return isinstance(metadata, Mapping) and "type" in metadata


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidInputError(f"{where} must be a number of seconds greater than 0, got {value!r}")
    return float(value)


def _nemo_max_outage(config: Mapping[str, Any]) -> float | None:
    def extra_of(params: Any) -> Any:
        extra = params.get("extra") if isinstance(params, Mapping) else None
        return extra.get("max_outage") if isinstance(extra, Mapping) else None

    value = extra_of(config.get("params"))
    if value is not None:
        return _seconds(value, "params.extra.max_outage")
    tasks = config.get("tasks")
    values = [
        _seconds(extra_of(task.get("params")), f"tasks.{name}.params.extra.max_outage")
        for name, task in (tasks.items() if isinstance(tasks, Mapping) else [])
        if isinstance(task, Mapping) and extra_of(task.get("params")) is not None
    ]
    return max(values) if values else None


def job_max_outage(job: JobRecord) -> float | None:
    """The job's own ``max_outage`` in seconds (see the module docstring), or None."""
    spec = job.spec
    if spec.get("max_outage") is not None:
        return _seconds(spec["max_outage"], "max_outage")
    if job.front == "nemo":
        config = spec.get("config")
    else:
        config = (spec.get("benchmark") or {}).get("metadata")
        if isinstance(config, Mapping) and not is_nemo_config(config):
            value = config.get("max_outage")
            return None if value is None else _seconds(value, "metadata.max_outage")
    return _nemo_max_outage(config) if isinstance(config, Mapping) else None


async def compile_job(
    job: JobRecord,
    registry: Registry,
    scoring: ScoringService,
    settings: Settings,
    clients: ClientSource | None = None,
) -> EvalPlan:
    """The plan of ``job``; raises evalstack errors (the worker fails the job with their message).

    ``clients`` is needed by NeMo configs (their judges); Llama Stack benchmarks do without.
    """
    plan = await _compile(job, registry, scoring, settings, clients)
    plan.max_outage = job_max_outage(job)
    return plan


async def _compile(
    job: JobRecord,
    registry: Registry,
    scoring: ScoringService,
    settings: Settings,
    clients: ClientSource | None,
) -> EvalPlan:
    spec = read_spec(job)
    if isinstance(spec, LlamaStackRunSpec):
        benchmark, config = spec.benchmark, spec.benchmark_config
        if is_nemo_config(benchmark.metadata):
            target = {"type": "model", "model": candidate_model(config)}
            return await compile_nemo_plan(
                dict(benchmark.metadata), target, registry=registry, clients=clients, settings=settings
            )
        return await compile_llama_stack_plan(
            benchmark,
            config,
            registry=registry,
            scoring=scoring,
            settings=settings,
            parallelism=spec.parallelism,
        )
    return await compile_nemo_plan(
        spec.config, spec.target, registry=registry, clients=clients, settings=settings
    )
