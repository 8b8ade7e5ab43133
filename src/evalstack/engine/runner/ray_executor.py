"""The Ray executor: one job's samples sharded over a Ray cluster, the store still the only truth.

The process that holds the job's lease is the coordinator. It loads every task's rows (their order
and the plan's prompts are fixed before anything is cut), leaves out the samples already recorded,
cuts the rest into shards of ``shard_size`` and runs them on ``ShardRunner`` actors
(``runner.ray_shard``), which execute the same pipeline as the local executor. Finished samples
stream back in batches and only the coordinator hands them to the job's sink (the ``BatchWriter``),
so SQLite works with one coordinator and PostgreSQL with many.

Shards are never stored. An actor that dies (its node removed, killed) has the samples of its shard
that did not come back run again on a new actor, up to ``max_shard_attempts`` times; after a
coordinator crash the next run works out again what is missing. A sample that still arrives twice
is dropped here, and the store's unique ``(job, task, index)`` key drops any that slip through.

Concurrency: at most ``max_actors`` actors run at once (default: one per alive node, lane ``i`` placed
on alive node ``i`` modulo their number while it lives), and the job's
``parallelism`` is split among them, so the requests in flight never exceed it. Cancel kills every
actor of the job. ``import ray`` happens on the first job, never at start-up.

A job on the embedded model gets ``model_replicas`` ``ModelReplica`` actors (spread over the nodes, one
GPU each where the cluster has GPUs, else one CPU), each loading the model once; the shard actors send
their requests to them. The plan travels sealed (``sealed_plan``): the object store never holds an
endpoint's API key, which goes to each actor as an argument of its call. Shard actors are named
(``evalstack-shard-...``) so that their liveness can be looked up with ``ray.get_actor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import uuid
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalstack.engine.plan import EvalPlan
from evalstack.engine.ports import ClientSource
from evalstack.engine.runner.pipeline import (
    ERROR_KIND_INFERENCE,
    ProgressCallback,
    RunProgress,
    Sink,
    begin_progress,
    load_task_rows,
)
from evalstack.errors import EvalstackError
from evalstack.inference.breaker import DEFAULT_MAX_OUTAGE
from evalstack.store.records import SampleRecord

if TYPE_CHECKING:
    from evalstack.engine.runner.ray_shard import ShardBatch
    from evalstack.inference.cache import ResponseCache

logger = logging.getLogger(__name__)

ShardItem = tuple[str, int, dict[str, Any]]  # task name, index in the task, row


@dataclass(frozen=True)
class RayOptions:
    """How to reach the cluster and cut jobs (``config.RayExecutorSettings`` fills it)."""

    address: str | None = None  # None: RAY_ADDRESS, else a new local Ray instance
    shard_size: int = 1000
    max_actors: int | None = None  # None: one per alive node
    num_cpus: int | None = None  # a new local instance only
    object_store_memory: int | None = None  # bytes; a new local instance only
    max_shard_attempts: int = 3
    sandbox_resource: str = "sandbox"  # sandbox tasks ask for one of these where the cluster has any
    model_replicas: int = 1  # embedded-model actors per job


SHARD_ACTOR_PREFIX = "evalstack-shard-"
"""Every shard actor's name starts so: ``evalstack-shard-<run>-<n>``."""


def model_replica_options(resources: Mapping[str, float], replicas: int) -> dict[str, Any]:
    """The Ray options of one embedded-model replica on a cluster with ``resources`` (as
    ``ray.cluster_resources()`` reports them): a whole GPU where the cluster has GPUs, else one CPU.
    Raises ``EvalstackError`` when the cluster cannot hold ``replicas`` of them at once."""
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 0.0)
    if gpus >= 1:
        needed, have, what = {"num_gpus": 1, "num_cpus": 1}, gpus, "GPUs"
    else:
        needed, have, what = {"num_cpus": 1}, cpus, "CPUs (it has no GPU)"
    if replicas > have:
        raise EvalstackError(
            f"model_replicas is {replicas} but the Ray cluster has {have:g} {what}; each replica takes one"
        )
    return {**needed, "scheduling_strategy": "SPREAD", "max_restarts": 0}


def cut_shards(items: Sequence[ShardItem], shard_size: int) -> list[list[ShardItem]]:
    """``items`` in order, cut into consecutive shards of at most ``shard_size``."""
    size = max(int(shard_size), 1)
    return [list(items[start : start + size]) for start in range(0, len(items), size)]


def split_parallelism(parallelism: int, actors: int) -> list[int]:
    """``parallelism`` split among ``actors`` (each at least 1; never more actors than parallelism)."""
    actors = max(min(actors, parallelism), 1)
    base, extra = divmod(max(parallelism, 1), actors)
    return [base + (1 if lane < extra else 0) for lane in range(actors)]


def _by_task(items: Sequence[ShardItem]) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    grouped: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for task, index, row in items:
        grouped.setdefault(task, []).append((index, row))
    return grouped


async def _rows_sent_with_the_shard() -> list[dict[str, Any]]:
    raise EvalstackError("a shard's rows travel with it; the plan's row sources stay on the coordinator")


def _summarized_by_the_coordinator(_: Mapping[str, Sequence[SampleRecord]]) -> dict[str, Any]:
    raise EvalstackError("results are aggregated by the coordinator from the stored samples")


def shard_plan(plan: EvalPlan) -> EvalPlan:
    """The part of ``plan`` an actor needs: request builders, output readers, metrics and settings."""
    tasks = [dataclasses.replace(task, rows=_rows_sent_with_the_shard, limit=None) for task in plan.tasks]
    return dataclasses.replace(plan, tasks=tasks, summarize=_summarized_by_the_coordinator)


class RayExecutor:
    """A ``PlanExecutor`` that runs a plan's samples on a Ray cluster (see the module docstring)."""

    def __init__(self, options: RayOptions | None = None, *, batch_size: int = 256) -> None:
        self.options = options or RayOptions()
        self.batch_size = batch_size
        self._started_ray = False
        self._connect_lock = asyncio.Lock()

    async def _connect(self) -> Any:
        """``ray``, connected: to ``address``, else to ``RAY_ADDRESS``, else to a new local instance."""
        try:
            import ray
        except ImportError as exc:
            raise EvalstackError(
                "the Ray executor needs Ray: install evalstack[ray] (or use executor: local)"
            ) from exc
        async with self._connect_lock:
            if not ray.is_initialized():
                await asyncio.to_thread(self._init, ray)
        return ray

    def _init(self, ray: Any) -> None:
        options = self.options
        address = options.address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False}
        if address is None:  # a new local instance: these apply only to one we start
            kwargs["num_cpus"] = options.num_cpus
            kwargs["object_store_memory"] = options.object_store_memory
        logger.info("connecting to Ray at %s", address or "a new local instance")
        try:
            ray.init(**kwargs)
        except Exception as exc:
            where = address or "a new local instance"
            raise EvalstackError(f"could not connect to Ray ({where}): {exc}") from exc
        self._started_ray = True

    async def aclose(self) -> None:
        """Disconnect from Ray if this executor connected (a local instance it started stops)."""
        if self._started_ray:
            import ray

            self._started_ray = False
            await asyncio.to_thread(ray.shutdown)

    async def __call__(
        self,
        plan: EvalPlan,
        clients: ClientSource,
        *,
        sink: Sink,
        skip: Mapping[str, set[int]] | None = None,
        cancel: asyncio.Event | None = None,
        on_progress: ProgressCallback | None = None,
        progress_interval: float = 0.5,
        max_outage: float = DEFAULT_MAX_OUTAGE,
        progress: RunProgress | None = None,
        cache: ResponseCache | None = None,
    ) -> RunProgress:
        skip = skip or {}
        progress = begin_progress(plan, progress, max_outage, cancel)
        if progress.cancelled:
            return progress
        if any(task.build_request is not None for task in plan.tasks) and plan.model is None:
            raise EvalstackError("the plan runs inference but names no model")

        # Row order and prompts are fixed here, before anything is cut.
        loaded = await asyncio.gather(*(load_task_rows(task) for task in plan.tasks))
        todo: dict[str, int] = {}
        failed: dict[str, int] = {}
        items: list[ShardItem] = []
        for task, rows in zip(plan.tasks, loaded, strict=True):
            done_before = skip.get(task.name, set())
            progress.samples_total += len(rows)
            todo[task.name] = failed[task.name] = 0
            for index, row in enumerate(rows):
                if index in done_before:
                    progress.samples_processed += 1
                else:
                    items.append((task.name, index, row))
                    todo[task.name] += 1
            progress.task_status[task.name] = "running" if todo[task.name] else "completed"
        del loaded
        progress.executor = {"type": "ray", "shards": 0, "nodes": 0, "actors": 0}
        coordinator = _Coordinator(self, plan, sink, progress, todo, failed, max_outage)
        coordinator.breakers = getattr(clients, "breaker_settings", None)  # the actors' endpoints trip alike
        coordinator.egress = getattr(clients, "egress", None)  # and connect only where the policy allows
        loop = asyncio.get_running_loop()
        last_report = loop.time()

        def report(force: bool = False) -> None:
            nonlocal last_report
            if on_progress is not None and (force or loop.time() - last_report >= progress_interval):
                last_report = loop.time()
                on_progress(progress)

        coordinator.on_sample = report
        if cache is not None and items:
            items = await coordinator.answer_from_cache(clients, cache, items, cancel)
            if progress.cancelled:
                report(force=True)
                return progress
        shards = cut_shards(items, self.options.shard_size)
        del items
        progress.executor = {**progress.executor, "shards": len(shards)}
        if not shards:
            report(force=True)
            return progress

        coordinator.ray = await self._connect()
        coordinator.queue = deque(enumerate(shards))
        run = asyncio.ensure_future(coordinator.run())
        cancel_waiter = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
        try:
            waited = {run} if cancel_waiter is None else {run, cancel_waiter}
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            if cancel_waiter is not None and cancel_waiter.done() and not run.done():
                progress.cancelled = True
            else:
                run.result()
        finally:
            run.cancel()
            if cancel_waiter is not None:
                cancel_waiter.cancel()
            await asyncio.gather(run, return_exceptions=True)
            await coordinator.kill_actors()
        report(force=True)
        return progress


class _Coordinator:
    """One run of one plan on the cluster: lanes of actors working through the shard queue."""

    def __init__(
        self,
        executor: RayExecutor,
        plan: EvalPlan,
        sink: Sink,
        progress: RunProgress,
        todo: dict[str, int],
        failed: dict[str, int],
        max_outage: float,
    ) -> None:
        self.max_outage = max_outage
        self.executor = executor
        self.ray: Any = None  # connected once there are shards to run
        self.plan = plan
        self.queue: deque[tuple[int, list[ShardItem]]] = deque()
        self.cache: ResponseCache | None = None
        self.sink = sink
        self.progress = progress
        self.todo = todo
        self.failed = failed
        self.done: dict[str, int] = dict.fromkeys(todo, 0)
        self.received: set[tuple[str, int]] = set()
        self.actors: list[Any] = []
        self.nodes: set[str] = set()
        self.on_sample: Any = None
        self.breakers: Any = None
        self.egress: Any = None
        self.run_id = uuid.uuid4().hex[:12]
        self.replicas: list[Any] = []
        self.keys: dict[str, str] = {}

    async def answer_from_cache(
        self,
        clients: ClientSource,
        cache: ResponseCache,
        items: list[ShardItem],
        cancel: asyncio.Event | None,
    ) -> list[ShardItem]:
        """Record the samples of inference tasks whose every model request the response cache answers
        (run here, through the same pipeline, no request sent); return the items still to run. From
        then on the actors send back the answers they got, and they are kept in the cache."""
        from evalstack.engine.runner.pipeline import run_plan
        from evalstack.engine.runner.ray_shard import ShardBatch
        from evalstack.inference.cache import CacheStats

        self.cache = cache
        stats = self.progress.cache = CacheStats()
        inference = {task.name for task in self.plan.tasks if task.build_request is not None}
        asked = [item for item in items if item[0] in inference]
        if not asked:
            return items
        unanswered: set[tuple[str, int]] = set()

        async def keep_if_answered(sample: SampleRecord) -> None:
            if sample.extra.get("error_kind") == ERROR_KIND_INFERENCE:  # a request the cache did not answer
                unanswered.add((sample.task, sample.index))
            else:
                await self._record(ShardBatch([sample], []))

        with cache.scope(stats, cached_only=True):
            answered = await run_plan(
                self.plan, clients, sink=keep_if_answered, rows=_by_task(asked), cancel=cancel
            )
        self.progress.cancelled = answered.cancelled
        return [item for item in items if item[0] not in inference or (item[0], item[1]) in unanswered]

    async def run(self) -> None:
        ray, options = self.ray, self.executor.options
        alive = [node["NodeID"] for node in await asyncio.to_thread(ray.nodes) if node.get("Alive")]
        lanes = min(options.max_actors or max(len(alive), 1), len(self.queue))
        shares = split_parallelism(int(self.plan.parallelism), lanes)
        resources = await asyncio.to_thread(ray.cluster_resources)
        sandbox = {options.sandbox_resource: 1.0} if resources.get(options.sandbox_resource) else None
        from evalstack.engine.runner.ray_shard import ModelReplica, ShardRunner
        from evalstack.engine.runner.sealed_plan import seal_plan

        self.actor_class = ray.remote(ShardRunner)
        self.sandbox = sandbox
        sealed, self.keys = seal_plan(shard_plan(self.plan))
        self.plan_ref = ray.put(sealed)
        if self.plan.model is not None and self.plan.model.kind == "embedded":
            count = max(options.model_replicas, 1)
            replica_options = model_replica_options(resources, count)
            replica_class = ray.remote(ModelReplica)
            threads = int(replica_options.get("num_cpus", 1)) or None
            self.replicas = [
                replica_class.options(**replica_options, name=f"evalstack-replica-{self.run_id}-{n}").remote(
                    threads
                )
                for n in range(count)
            ]
        lane_tasks = [asyncio.ensure_future(self._lane(lane, share)) for lane, share in enumerate(shares)]
        try:
            for finished in asyncio.as_completed(lane_tasks):
                await finished  # the first lane to fail fails the run
        finally:
            for lane in lane_tasks:
                lane.cancel()
            await asyncio.gather(*lane_tasks, return_exceptions=True)

    async def _new_actor(self, lane: int) -> Any:
        """A shard actor on lane ``lane``'s node: alive node ``lane`` modulo their number, counted now
        (so a replacement goes to a node that lives). Pinned there: Ray's soft placement and SPREAD
        both let zero-CPU actors pile up on one node."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = await asyncio.to_thread(self.ray.nodes)
        alive = sorted(node["NodeID"] for node in nodes if node.get("Alive"))
        options: dict[str, Any] = {"num_cpus": 0, "max_restarts": 0}
        if alive:
            node_id = alive[lane % len(alive)]
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        options["name"] = f"{SHARD_ACTOR_PREFIX}{self.run_id}-{len(self.actors)}"
        actor = self.actor_class.options(**options).remote(
            self.sandbox, self.breakers, self.egress, self.replicas, lane
        )
        self.actors.append(actor)
        self.progress.executor = {**(self.progress.executor or {}), "actors": len(self.actors)}
        node = await actor.node_id.remote()
        self.nodes.add(node)
        self.progress.executor = {**self.progress.executor, "nodes": len(self.nodes)}
        return actor

    async def _lane(self, lane: int, share: int) -> None:
        """Take shards off the queue until it is empty, each on this lane's actor (renewed if it dies)."""
        ray = self.ray
        actor: Any = None
        while self.queue:
            number, shard = self.queue.popleft()
            remaining = shard
            attempts = 0
            while remaining:
                try:
                    if actor is None:
                        actor = await self._new_actor(lane)
                    rows = _by_task(remaining)
                    stream = actor.run.remote(
                        self.plan_ref,
                        rows,
                        share,
                        self.executor.batch_size,
                        max_outage=self.max_outage,
                        keys=self.keys,
                        keep_answers=self.cache is not None,
                    )
                    async for ref in stream:
                        await self._record(await ref)
                    remaining = []
                except ray.exceptions.RayTaskError as exc:  # the pipeline itself failed on the actor
                    cause = exc.cause
                    if isinstance(cause, EvalstackError):
                        raise cause from None
                    raise EvalstackError(f"shard {number} failed on the Ray cluster: {cause}") from exc
                except ray.exceptions.RayError as exc:  # the actor or its node is gone
                    attempts += 1
                    await self._kill(actor)
                    actor = None
                    remaining = [item for item in remaining if (item[0], item[1]) not in self.received]
                    if attempts >= self.executor.options.max_shard_attempts:
                        raise EvalstackError(
                            f"shard {number} failed {attempts} times on the Ray cluster "
                            f"({len(remaining)} samples not run): {exc}"
                        ) from exc
                    logger.warning(
                        "shard %d: actor lost (%s); running its %d missing samples again",
                        number,
                        type(exc).__name__,
                        len(remaining),
                    )

    async def _record(self, batch: ShardBatch) -> None:
        """Hand a batch's samples to the sink, dropping samples already received, and count them; keep
        the answers that came with it in the response cache."""
        progress = self.progress
        if self.cache is not None and progress.cache is not None:
            for answer in batch.answers:
                self.cache.add(answer)
                progress.cache.misses += 1
                progress.cache.bytes_stored += answer.size
        for sample in batch.samples:
            key = (sample.task, sample.index)
            if key in self.received:
                continue
            self.received.add(key)
            await self.sink(sample)
            progress.samples_processed += 1
            self.done[sample.task] = self.done.get(sample.task, 0) + 1
            if sample.error is not None:
                self.failed[sample.task] = self.failed.get(sample.task, 0) + 1
                if sample.extra.get("error_kind") == ERROR_KIND_INFERENCE:
                    progress.errors += 1
                else:
                    progress.invalid += 1
            if self.done[sample.task] == self.todo.get(sample.task):
                all_failed = self.failed[sample.task] == self.todo[sample.task]
                progress.task_status[sample.task] = "failed" if all_failed else "completed"
        if self.on_sample is not None:
            self.on_sample()

    async def _kill(self, actor: Any) -> None:
        if actor is not None:
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)

    async def kill_actors(self) -> None:
        """Stop every actor of this run (done, failed or cancelled), letting each close its clients
        first; what they report on closing (sandbox runs by node, each replica's loads and requests)
        goes into ``progress.executor``."""
        actors, self.actors = self.actors, []
        replicas, self.replicas = self.replicas, []
        closing = [asyncio.ensure_future(_await_ref(actor.close.remote())) for actor in actors + replicas]
        if closing:
            await asyncio.wait(closing, timeout=2.0)
        for actor in actors + replicas:
            await self._kill(actor)
        reports = [task.result() if task.done() else None for task in closing]
        for task in closing:
            task.cancel()
        sandbox_runs: Counter[str] = Counter()
        for report in reports[: len(actors)]:
            sandbox_runs.update((report or {}).get("sandbox_runs", {}))
        executor = dict(self.progress.executor or {})
        if sandbox_runs:
            executor["sandbox_runs"] = dict(sandbox_runs)
        if replicas:  # None for a replica that did not answer (gone with its node)
            executor["model_replicas"] = [
                {key: report[key] for key in ("loads", "requests", "gpus", "device")} if report else None
                for report in reports[len(actors) :]
            ]
        self.progress.executor = executor


async def _await_ref(ref: Any) -> Any:
    with contextlib.suppress(Exception):
        return await ref
    return None
