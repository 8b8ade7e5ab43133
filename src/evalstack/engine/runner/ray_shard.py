"""What runs on a Ray cluster's workers: the shard actor, the model replica and the sandbox task.

Imported by Ray on every worker process (and lazily by the coordinator); it imports ``ray`` only
inside the functions that need it, so the module itself is cheap.

``ShardRunner`` is an async actor. ``run`` executes one shard of a plan with the same pipeline as
the local executor (``run_plan``), the shard's rows given with their indices, and yields the
finished samples in batches as they come; the coordinator alone writes them. The plan arrives sealed
(``sealed_plan``): its endpoints' keys come apart, as an argument of the call. Sandboxed programs
(HumanEval) run as Ray tasks (``run_sandboxed_program``) so that the cluster schedules their CPU; each
reports the node it ran on, and the actor counts them. ``ModelReplica`` is an async actor holding one
copy of the embedded model; shard actors send their embedded-model requests to the least busy replica
(``ReplicaClient``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
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
from evalstack.engine.runner.sealed_plan import SealedPlan, unseal_plan
from evalstack.inference.base import InferenceError, InferenceRequest, InferenceResult, ModelClient
from evalstack.inference.breaker import DEFAULT_MAX_OUTAGE, BreakerSettings
from evalstack.inference.cache import ResponseCache
from evalstack.inference.clients import ModelClientPool
from evalstack.store.records import CachedResponse, SampleRecord

logger = logging.getLogger(__name__)

SANDBOX_TASK_NAME = "evalstack-sandbox"
"""The name of every sandbox task on the cluster (as Ray's state API lists it)."""


@dataclass
class ShardBatch:
    """What a shard actor sends back at a time: finished samples, and the model's answers for the
    coordinator's response cache (when the job uses one)."""

    samples: list[SampleRecord]
    answers: list[CachedResponse] = field(default_factory=list)


class _AnswersKept:
    """A cache store that serves nothing (the coordinator asked the cache before sharding) and keeps
    every answer put, for the coordinator to store."""

    def __init__(self) -> None:
        self.answers: list[CachedResponse] = []

    async def get_cached_responses(
        self, keys: Collection[str], max_age: float | None = None
    ) -> dict[str, CachedResponse]:
        return {}

    async def put_cached_responses(self, entries: Sequence[CachedResponse]) -> None:
        self.answers.extend(entries)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # the model reports what is missing when it loads
        return False
    return bool(torch.cuda.is_available())


def _this_node() -> str:
    import ray

    node: str = ray.get_runtime_context().get_node_id()
    return node


def run_sandboxed_program(
    source: str, timeout: float, memory_bytes: int = MEMORY_LIMIT_BYTES
) -> tuple[RunResult, str]:
    """One sandboxed program, run on the worker this Ray task landed on; its result and that node."""
    result = asyncio.run(run_program_here(source, timeout=timeout, memory_bytes=memory_bytes))
    return result, _this_node()


def ray_program_runner(
    resources: Mapping[str, float] | None = None, on_run: Callable[[str], None] | None = None
) -> ProgramRunner:
    """A ``program_runner`` that sends each program to the cluster as a task: one CPU, or the
    custom ``resources`` (e.g. ``{"sandbox": 1}``) when the cluster offers them. ``on_run`` is told
    the node each program ran on."""
    import ray

    options: dict[str, Any] = {"name": SANDBOX_TASK_NAME, "max_retries": 1}
    if resources:
        options.update(num_cpus=0, resources=dict(resources))
    else:
        options.update(num_cpus=1)
    remote: Any = ray.remote(run_sandboxed_program).options(**options)

    async def run(source: str, timeout: float, memory_bytes: int) -> RunResult:
        result: RunResult
        result, node = await remote.remote(source, timeout, memory_bytes)
        if on_run is not None:
            on_run(node)
        return result

    return run


class ModelReplica:
    """A Ray actor holding one copy of the embedded model, on the GPU Ray gave it (if it gave one and
    torch can use it; else on the CPU, with a warning)."""

    def __init__(self, threads: int | None = None) -> None:
        import ray

        from evalstack.inference.embedded import EmbeddedModel

        self.gpus = [str(gpu) for gpu in ray.get_gpu_ids()]
        device = "cpu"
        if self.gpus:
            if _cuda_available():
                device = "cuda"
            else:
                logger.warning("Ray gave this model replica GPU %s but torch sees no CUDA device", self.gpus)
        self.model = EmbeddedModel(threads=threads, device=device)

    async def generate(self, request: InferenceRequest) -> InferenceResult:
        """Answer one request (batched with the others in flight on this replica)."""
        return await self.model.generate(request)

    def stats(self) -> dict[str, Any]:
        """How often this replica loaded the model, how many requests it answered, and on which node."""
        return {
            "loads": self.model.stats["loads"],
            "requests": self.model.stats["requests"],
            "gpus": self.gpus,
            "device": self.model.device,
            "node": _this_node(),
        }

    async def close(self) -> dict[str, Any]:
        """Release the model; the replica's stats as they were."""
        stats = self.stats()
        await self.model.aclose()
        return stats


class ReplicaClient:
    """A ``ModelClient`` that sends each request to the model replica with the fewest of this client's
    requests in flight (ties taken in turn, starting at ``first``). A replica that is gone (its actor or
    node died) is left out from then on and its request goes to another; with none left, requests fail
    as inference errors."""

    def __init__(self, replicas: Sequence[Any], first: int = 0) -> None:
        if not replicas:
            raise ValueError("a replica client needs at least one replica")
        self.replicas = list(replicas)
        self.in_flight = [0] * len(self.replicas)
        self.alive = [True] * len(self.replicas)
        self._turn = first % len(self.replicas)

    def _choose(self) -> int:
        count = len(self.replicas)
        order = [(self._turn + step) % count for step in range(count)]
        self._turn = (self._turn + 1) % count
        living = [lane for lane in order if self.alive[lane]]
        if not living:
            raise InferenceError("every replica of the embedded model is gone")
        return min(living, key=self.in_flight.__getitem__)

    async def generate(self, request: InferenceRequest) -> InferenceResult:
        import ray

        while True:
            chosen = self._choose()
            self.in_flight[chosen] += 1
            try:
                result: InferenceResult = await self.replicas[chosen].generate.remote(request)
                return result
            except ray.exceptions.RayTaskError as exc:  # the model failed this request
                raise InferenceError(str(exc.cause)) from None
            except ray.exceptions.RayError as exc:  # the replica or its node is gone: never again
                if self.alive[chosen]:
                    self.alive[chosen] = False
                    logger.warning(
                        "model replica %d is gone (%s); asking the others", chosen, type(exc).__name__
                    )
            finally:
                self.in_flight[chosen] -= 1

    async def aclose(self) -> None:
        """Nothing to release: the coordinator owns the replicas."""


class ShardRunner:
    """A Ray actor that runs shards of one job's plan and streams their finished samples back."""

    def __init__(
        self,
        sandbox_resources: Mapping[str, float] | None = None,
        breakers: BreakerSettings | None = None,
        egress: EgressPolicy | None = None,
        model_replicas: Sequence[Any] = (),
        lane: int = 0,
    ) -> None:
        embedded: Callable[[], ModelClient] | None = None
        if model_replicas:
            replicas = list(model_replicas)

            def embedded() -> ModelClient:
                return ReplicaClient(replicas, first=lane)

        self.clients = ModelClientPool(embedded_loader=embedded, breaker_settings=breakers, egress=egress)
        self.sandbox_resources = dict(sandbox_resources or {})
        self.sandbox_runs: Counter[str] = Counter()
        self._unsealed: tuple[str, EvalPlan] | None = None

    def node_id(self) -> str:
        """The Ray node this actor lives on."""
        return _this_node()

    def _count_sandbox_run(self, node: str) -> None:
        self.sandbox_runs[node] += 1

    def _plan(self, plan: EvalPlan | SealedPlan, keys: Mapping[str, str] | None) -> EvalPlan:
        if not isinstance(plan, SealedPlan):
            return plan
        if self._unsealed is None or self._unsealed[0] != plan.id:  # once per job, not per shard
            self._unsealed = (plan.id, unseal_plan(plan, keys or {}))
        return self._unsealed[1]

    async def run(
        self,
        plan: EvalPlan | SealedPlan,
        rows: Mapping[str, IndexedRows],
        parallelism: int,
        batch_size: int = 256,
        flush_interval: float = 0.2,
        max_outage: float = DEFAULT_MAX_OUTAGE,
        keys: Mapping[str, str] | None = None,
        keep_answers: bool = False,
    ) -> AsyncIterator[ShardBatch]:
        """Run ``rows`` (a shard, by task name) through the pipeline with ``parallelism`` requests in
        flight; yield the finished samples in batches of at most ``batch_size``, at least every
        ``flush_interval`` seconds. An error of the pipeline (not of a sample), such as the endpoint
        staying unreachable for ``max_outage`` seconds, is raised after the samples finished before it.
        A sealed ``plan`` gets its endpoints' ``keys`` back here. With ``keep_answers`` the model's
        answers come back too, for the coordinator's response cache."""
        buffer: list[SampleRecord] = []
        kept = _AnswersKept() if keep_answers else None
        cache = ResponseCache(kept) if kept is not None else None

        async def answers() -> list[CachedResponse]:
            if cache is None or kept is None:
                return []
            await cache.flush()
            taken, kept.answers = kept.answers, []
            return taken

        ready = asyncio.Event()

        async def collect(sample: SampleRecord) -> None:
            buffer.append(sample)
            if len(buffer) >= batch_size:
                ready.set()

        token = program_runner.set(ray_program_runner(self.sandbox_resources, self._count_sandbox_run))
        try:
            shard_plan = dataclasses.replace(self._plan(plan, keys), parallelism=max(parallelism, 1))
            runner = asyncio.ensure_future(
                run_plan(
                    shard_plan, self.clients, sink=collect, rows=rows, max_outage=max_outage, cache=cache
                )
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
                    yield ShardBatch(batch, await answers())
            while buffer:  # what finished before a failure still goes back
                batch, buffer[:] = buffer[:batch_size], buffer[batch_size:]
                yield ShardBatch(batch, await answers())
            last = await answers()
            if last:
                yield ShardBatch([], last)
            runner.result()
        finally:
            if not runner.done():
                runner.cancel()
                with contextlib.suppress(BaseException):
                    await runner

    async def close(self) -> dict[str, Any]:
        """Close the model clients this actor opened; the sandbox programs it ran, by node."""
        await self.clients.aclose()
        return {"sandbox_runs": dict(self.sandbox_runs)}
