"""What runs on a Ray cluster's workers: the shard actor and the sandbox task.

Imported by Ray on every worker process (and lazily by the coordinator); it imports ``ray`` only
inside the functions that need it, so the module itself is cheap.

``ShardRunner`` is an async actor. ``run`` executes one shard of a plan with the same pipeline as
the local executor (``run_plan``), the shard's rows given with their indices, and yields the
finished samples in batches as they come; the coordinator alone writes them. Sandboxed programs
(HumanEval) run as Ray tasks (``run_sandboxed_program``) so that the cluster schedules their CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping
from typing import Any

from evalstack.egress import EgressPolicy
from evalstack.engine.benchmarks.sandbox import (
    MEMORY_LIMIT_BYTES,
    ProgramRunner,
    RunResult,
    program_runner,
    run_program_here,
)
from evalstack.engine.plan import EvalPlan
from evalstack.engine.runner.pipeline import IndexedRows, run_plan
from evalstack.inference.breaker import DEFAULT_MAX_OUTAGE, BreakerSettings
from evalstack.inference.clients import ModelClientPool
from evalstack.store.records import SampleRecord

SANDBOX_TASK_NAME = "evalstack-sandbox"
"""The name of every sandbox task on the cluster (as Ray's state API lists it)."""


def run_sandboxed_program(source: str, timeout: float, memory_bytes: int = MEMORY_LIMIT_BYTES) -> RunResult:
    """One sandboxed program, run on the worker this Ray task landed on."""
    return asyncio.run(run_program_here(source, timeout=timeout, memory_bytes=memory_bytes))


def ray_program_runner(resources: Mapping[str, float] | None = None) -> ProgramRunner:
    """A ``program_runner`` that sends each program to the cluster as a task: one CPU, or the
    custom ``resources`` (e.g. ``{"sandbox": 1}``) when the cluster offers them."""
    import ray

    options: dict[str, Any] = {"name": SANDBOX_TASK_NAME, "max_retries": 1}
    if resources:
        options.update(num_cpus=0, resources=dict(resources))
    else:
        options.update(num_cpus=1)
    remote: Any = ray.remote(run_sandboxed_program).options(**options)

    async def run(source: str, timeout: float, memory_bytes: int) -> RunResult:
        result: RunResult = await remote.remote(source, timeout, memory_bytes)
        return result

    return run


class ShardRunner:
    """A Ray actor that runs shards of one job's plan and streams their finished samples back."""

    def __init__(
        self,
        sandbox_resources: Mapping[str, float] | None = None,
        breakers: BreakerSettings | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.clients = ModelClientPool(breaker_settings=breakers, egress=egress)
        self.sandbox_resources = dict(sandbox_resources or {})

    def node_id(self) -> str:
        """The Ray node this actor lives on."""
        import ray

        node: str = ray.get_runtime_context().get_node_id()
        return node

    async def run(
        self,
        plan: EvalPlan,
        rows: Mapping[str, IndexedRows],
        parallelism: int,
        batch_size: int = 256,
        flush_interval: float = 0.2,
        max_outage: float = DEFAULT_MAX_OUTAGE,
    ) -> AsyncIterator[list[SampleRecord]]:
        """Run ``rows`` (a shard, by task name) through the pipeline with ``parallelism`` requests in
        flight; yield the finished samples in batches of at most ``batch_size``, at least every
        ``flush_interval`` seconds. An error of the pipeline (not of a sample), such as the endpoint
        staying unreachable for ``max_outage`` seconds, is raised after the samples finished before it."""
        buffer: list[SampleRecord] = []
        ready = asyncio.Event()

        async def collect(sample: SampleRecord) -> None:
            buffer.append(sample)
            if len(buffer) >= batch_size:
                ready.set()

        token = program_runner.set(ray_program_runner(self.sandbox_resources))
        try:
            shard_plan = dataclasses.replace(plan, parallelism=max(parallelism, 1))
            runner = asyncio.ensure_future(
                run_plan(shard_plan, self.clients, sink=collect, rows=rows, max_outage=max_outage)
            )
        finally:
            program_runner.reset(token)  # the pipeline's tasks copied the context already
        try:
            while not runner.done():
                waiter = asyncio.ensure_future(ready.wait())
                await asyncio.wait({runner, waiter}, timeout=flush_interval, return_when="FIRST_COMPLETED")
                waiter.cancel()
                ready.clear()
                while buffer:
                    batch, buffer[:] = buffer[:batch_size], buffer[batch_size:]
                    yield batch
            while buffer:  # what finished before a failure still goes back
                batch, buffer[:] = buffer[:batch_size], buffer[batch_size:]
                yield batch
            runner.result()
        finally:
            if not runner.done():
                runner.cancel()
                with contextlib.suppress(BaseException):
                    await runner

    async def close(self) -> None:
        """Close the model clients this actor opened."""
        await self.clients.aclose()
