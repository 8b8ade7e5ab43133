"""Compile a stored job's spec into an EvalPlan, whichever front door created it.

- front ``llama_stack``: ``spec = {"benchmark": Benchmark dict, "benchmark_config": BenchmarkConfig
  dict, "parallelism"?: int}``. A benchmark whose ``metadata`` has a ``type`` key is a NeMo
  Evaluator config and runs as one, with the candidate model as its target; any other benchmark is
  a dataset plus scoring functions (``engine.llama_stack_plan``).
- front ``nemo``: ``spec = {"config": dict, "target": dict, ...}`` (``engine.nemo_plan``).

Plans are compiled again from the spec after a restart, so everything they need is in the spec
or in the registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from evalstack.api.llama_stack.models import Benchmark, BenchmarkConfig
from evalstack.engine.llama_stack_plan import candidate_model, compile_llama_stack_plan
from evalstack.engine.plan import EvalPlan
from evalstack.errors import InvalidInputError, UnsupportedError
from evalstack.store.records import JobRecord

if TYPE_CHECKING:
    from evalstack.config import Settings
    from evalstack.engine.ports import ClientSource
    from evalstack.engine.scoring import ScoringService
    from evalstack.registry import Registry


def is_nemo_config(metadata: Mapping[str, Any] | None) -> bool:
    """A Llama Stack benchmark whose metadata is a NeMo Evaluator config (it has a ``type``)."""
    return isinstance(metadata, Mapping) and "type" in metadata


def _nemo_plan_module() -> ModuleType:
    try:
        return importlib.import_module("evalstack.engine.nemo_plan")
    except ModuleNotFoundError as exc:
        if exc.name != "evalstack.engine.nemo_plan":
            raise
        raise UnsupportedError("NeMo Evaluator configs cannot run on the local engine yet") from exc


def _validated(model: type[Benchmark] | type[BenchmarkConfig], data: Any, what: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(f"The job's {what} is invalid: {exc}") from exc


def cache_requested(spec: Mapping[str, Any]) -> bool:
    """Whether a job asks for the response cache: ``cache: true`` in its spec (a benchmark file,
    ``evalstack run --cache``) or ``params.extra.cache`` in its NeMo config."""
    if spec.get("cache") is True:
        return True
    config = spec.get("config")
    if not isinstance(config, Mapping):
        benchmark = spec.get("benchmark")
        config = benchmark.get("metadata") if isinstance(benchmark, Mapping) else None
    params = config.get("params") if isinstance(config, Mapping) else None
    extra = params.get("extra") if isinstance(params, Mapping) else None
    return isinstance(extra, Mapping) and extra.get("cache") is True


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
    plan = await _compile_front(job, registry, scoring, settings, clients)
    plan.cache = plan.cache or cache_requested(job.spec)
    return plan


async def _compile_front(
    job: JobRecord,
    registry: Registry,
    scoring: ScoringService,
    settings: Settings,
    clients: ClientSource | None,
) -> EvalPlan:
    spec = job.spec
    if job.front == "llama_stack":
        benchmark: Benchmark = _validated(Benchmark, spec.get("benchmark"), "benchmark")
        raw_config = spec.get("benchmark_config")
        config: BenchmarkConfig = _validated(BenchmarkConfig, raw_config, "benchmark_config")
        if is_nemo_config(benchmark.metadata):
            target = {"type": "model", "model": candidate_model(config)}
            plan: EvalPlan = await _nemo_plan_module().compile_nemo_plan(
                dict(benchmark.metadata), target, registry=registry, clients=clients, settings=settings
            )
            return plan
        parallelism = spec.get("parallelism")
        return await compile_llama_stack_plan(
            benchmark,
            config,
            registry=registry,
            scoring=scoring,
            settings=settings,
            parallelism=int(parallelism) if parallelism else None,
        )
    if job.front == "nemo":
        config_dict = spec.get("config")
        target_dict = spec.get("target")
        if not isinstance(config_dict, dict) or not isinstance(target_dict, dict):
            raise InvalidInputError("A NeMo job's spec needs 'config' and 'target' objects")
        nemo_plan: EvalPlan = await _nemo_plan_module().compile_nemo_plan(
            config_dict, target_dict, registry=registry, clients=clients, settings=settings
        )
        return nemo_plan
    raise InvalidInputError(f"Unknown job front {job.front!r}; accepted: llama_stack, nemo")
