"""Compile a stored job's spec (``engine.spec``) into an EvalPlan, whichever front door created it.

- :class:`LlamaStackRunSpec`: a benchmark whose ``metadata`` has a ``type`` key is a NeMo Evaluator
  config and runs as one, with the candidate model as its target; any other benchmark is a dataset
  plus scoring functions (``engine.llama_stack_plan``).
- :class:`NemoRunSpec`: a NeMo Evaluator config and target (``engine.nemo_plan``).

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
from evalstack.store.records import JobRecord

if TYPE_CHECKING:
    from evalstack.config import Settings
    from evalstack.engine.ports import ClientSource
    from evalstack.engine.scoring import ScoringService
    from evalstack.registry import Registry


def is_nemo_config(metadata: Mapping[str, Any] | None) -> bool:
    """A Llama Stack benchmark whose metadata is a NeMo Evaluator config (it has a ``type``)."""
    return isinstance(metadata, Mapping) and "type" in metadata


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
