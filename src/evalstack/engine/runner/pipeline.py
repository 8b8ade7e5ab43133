"""The pipelined runner: rows -> request -> inference -> scoring -> sink, bounded and never blocking.

``run_plan`` is the core. A fixed pool of ``plan.parallelism`` worker coroutines pulls samples from a
bounded queue that a producer keeps filled, so exactly that many requests are in flight while work
remains and no coroutine is created per row. Each worker scores its sample right after inference
(metrics that are CPU-heavy offload themselves) and hands the finished ``SampleRecord`` to a sink.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evalstack.engine.adaptive import AdaptiveConcurrency
from evalstack.engine.plan import EvalPlan, SampleOutput, TaskPlan
from evalstack.engine.ports import ClientSource
from evalstack.errors import EvalstackError, UpstreamError
from evalstack.inference.base import InferenceError, InferenceRequest, ModelClient
from evalstack.inference.breaker import (
    DEFAULT_MAX_OUTAGE,
    CircuitBreaker,
    EndpointUnavailable,
    OutageWatch,
    outage_watch,
)
from evalstack.inference.cache import CacheStats
from evalstack.inference.feedback import overload_listener
from evalstack.store.records import SampleRecord

if TYPE_CHECKING:
    from evalstack.inference.cache import ResponseCache

logger = logging.getLogger(__name__)

# SampleRecord.extra["error_kind"] of a failed sample.
ERROR_KIND_INFERENCE = "inference"  # the endpoint (or a judge) failed: infrastructure, counted in ``errors``
ERROR_KIND_INVALID = "invalid"  # the row, template or metric input was bad: counted in ``invalid``

TaskState = str  # "pending" | "running" | "completed" | "failed" | "cancelled"
Sink = Callable[[SampleRecord], Awaitable[None]]
ProgressCallback = Callable[["RunProgress"], None]
IndexedRows = Sequence[tuple[int, dict[str, Any]]]
"""Rows with their index in the task (a shard of a task, cut by a coordinator)."""


@dataclass
class RunProgress:
    """Live counters of one run; ``snapshot()`` is what goes into ``job.progress``.

    ``samples_processed`` and ``samples_total`` include samples recorded by an earlier run of the
    same job (skipped on resume). ``errors`` counts infrastructure failures, ``invalid`` samples
    that failed on bad input; both are included in ``samples_processed``. ``endpoints`` are the
    circuit breakers the run's requests waited on; while one is open the snapshot has ``outage``
    (endpoint, since when, last error, ``max_outage_s``).
    """

    samples_total: int = 0
    samples_processed: int = 0
    errors: int = 0
    invalid: int = 0
    task_status: dict[str, TaskState] = field(default_factory=dict)
    cancelled: bool = False
    started: float = field(default_factory=time.monotonic)
    concurrency: AdaptiveConcurrency | None = None
    executor: dict[str, Any] | None = None  # how a distributed executor ran the job (type, shards, nodes)
    cache: CacheStats | None = None
    max_outage: float = DEFAULT_MAX_OUTAGE
    endpoints: dict[str, CircuitBreaker] = field(default_factory=dict)

    def waiting_on(self, breaker: CircuitBreaker) -> None:
        """Note a breaker a request of this run waits on (``OutageWatch.on_wait``)."""
        self.endpoints[breaker.endpoint] = breaker

    def outage(self) -> dict[str, Any] | None:
        """The longest outage among the endpoints this run waits on, or None when all are reachable."""
        down = [b for b in self.endpoints.values() if b.is_open]
        if not down:
            return None
        longest = max(down, key=lambda b: b.unreachable_for())
        return {**longest.status(), "max_outage_s": self.max_outage}

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy for ``job.progress`` and progress listeners."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        snapshot: dict[str, Any] = {
            "samples_processed": self.samples_processed,
            "samples_total": self.samples_total,
            "errors": self.errors,
            "invalid": self.invalid,
            "task_status": dict(self.task_status),
            "elapsed_s": round(elapsed, 3),
        }
        if self.concurrency is not None:
            snapshot["concurrency"] = self.concurrency.snapshot()
        if self.cache is not None:
            snapshot["cache"] = self.cache.snapshot()
        outage = self.outage()
        if outage is not None:
            snapshot["outage"] = outage
        if self.executor is not None:
            snapshot["executor"] = dict(self.executor)
        return snapshot


def settle_tasks(task_status: Mapping[str, TaskState], status: TaskState) -> dict[str, TaskState]:
    """``task_status`` with every task not yet finished (pending, running) marked ``status``."""
    return {name: status if state in ("pending", "running") else state for name, state in task_status.items()}


@dataclass
class _TaskCounters:
    """Per-task bookkeeping inside one run."""

    todo: int = 0  # samples enqueued in this run
    done: int = 0
    failed: int = 0
    all_enqueued: bool = False


def _error_text(exc: BaseException) -> str:
    """A one-line reason for a failed sample or job."""
    message = exc.message if isinstance(exc, EvalstackError) else str(exc)
    return message or type(exc).__name__


async def load_task_rows(task: TaskPlan) -> list[dict[str, Any]]:
    """A task's rows in their fixed order, cut to its ``limit``; a failure names the task."""
    try:
        rows = await task.rows()
    except EvalstackError as exc:
        raise type(exc)(f"task {task.name!r}: {exc.message}", detail=exc.detail) from exc
    except Exception as exc:
        raise EvalstackError(f"task {task.name!r}: could not load its rows: {_error_text(exc)}") from exc
    return rows if task.limit is None else rows[: task.limit]


def _request_as_sent(request: InferenceRequest) -> dict[str, Any]:
    """The request as the model was asked (kept with the sample, for the viewer and search)."""
    sent: dict[str, Any] = {"kind": request.kind}
    if request.messages is not None:
        sent["messages"] = request.messages
    if request.prompt is not None:
        sent["prompt"] = request.prompt
    if request.params:
        sent["params"] = request.params
    return sent


async def _process_sample(
    task: TaskPlan, client: ModelClient | None, index: int, row: dict[str, Any]
) -> SampleRecord:
    """Build the request, infer, score: one finished SampleRecord (failed ones carry ``error``)."""
    sample = SampleRecord(task=task.name, index=index, item=row)
    try:
        if task.build_request is not None:
            request = task.build_request(row)
            request.sample_id = f"{task.name}#{index}"
            sample.extra["request"] = _request_as_sent(request)
            assert client is not None  # run_plan checks that inference tasks have a model
            result = await client.generate(request)
            output = SampleOutput(result.text, result.raw)
            sample.finish_reason = result.finish_reason
        elif task.read_output is not None:
            output = task.read_output(row)
            if output.request is not None:
                sample.extra["request"] = output.request
        else:  # pragma: no cover - compilers always set one of the two
            raise EvalstackError(f"task {task.name!r} has neither a request builder nor an output reader")
        sample.output_text = output.text
        sample.response = output.response
        for metric in task.metrics:
            sample.scores[metric.name] = await metric.score(row, output)
        sample.extra.update(output.extra)
    except (InferenceError, UpstreamError) as exc:
        outage = exc if isinstance(exc, EndpointUnavailable) else exc.__cause__
        if isinstance(outage, EndpointUnavailable):  # past max_outage (the model's or a judge's)
            # The job fails; this sample stays unrecorded, so a resume runs it again.
            raise UpstreamError(f"{outage}. Finished samples are kept; resume the job to finish it.") from exc
        sample.scores = {}
        sample.error = _error_text(exc)
        sample.extra["error_kind"] = ERROR_KIND_INFERENCE
    except EvalstackError as exc:
        sample.scores = {}
        sample.error = _error_text(exc)
        sample.extra["error_kind"] = ERROR_KIND_INVALID
    except Exception as exc:  # a bug in a metric or builder fails this sample only, loudly in the log
        logger.exception("sample %s[%d] failed unexpectedly", task.name, index)
        sample.scores = {}
        sample.error = f"{type(exc).__name__}: {exc}"
        sample.extra["error_kind"] = ERROR_KIND_INVALID
    return sample


def begin_progress(
    plan: EvalPlan, progress: RunProgress | None, max_outage: float, cancel: asyncio.Event | None
) -> RunProgress:
    """A run's progress at its start (``progress`` when given): every task pending, and ``cancelled``
    already when ``cancel`` is set, so the executor returns at once."""
    progress = progress or RunProgress()
    progress.task_status = {task.name: "pending" for task in plan.tasks}
    progress.max_outage = max_outage
    if cancel is not None and cancel.is_set():
        progress.cancelled = True
    return progress


async def run_plan(
    plan: EvalPlan,
    clients: ClientSource,
    *,
    sink: Sink,
    skip: Mapping[str, set[int]] | None = None,
    rows: Mapping[str, IndexedRows] | None = None,
    cancel: asyncio.Event | None = None,
    on_progress: ProgressCallback | None = None,
    progress_interval: float = 0.5,
    max_outage: float = DEFAULT_MAX_OUTAGE,
    progress: RunProgress | None = None,
    cache: ResponseCache | None = None,
) -> RunProgress:
    """Run every sample of ``plan`` not in ``skip`` and hand each finished sample to ``sink``.

    Exactly ``plan.parallelism`` workers pull from a bounded queue, so at most that many requests
    are in flight and the pool stays full while rows remain. When ``cancel`` is set the workers are
    cancelled at once (in-flight requests are abandoned, not recorded) and the returned progress
    has ``cancelled=True``. ``rows`` (by task name) replaces the tasks' row sources with rows already
    loaded, each with its index in its task: a shard of the plan. ``on_progress`` is called at most
    every ``progress_interval`` seconds and once at the end. A task whose rows cannot be loaded
    raises (the job fails); a failing sample never does. The sink is the caller's to flush.

    A sample whose endpoint is unreachable (its circuit breaker is open) waits for it instead of
    failing; the progress says so (``outage``) and is reported every ``progress_interval`` meanwhile.
    When the endpoint stays unreachable for ``max_outage`` seconds, ``run_plan`` raises
    ``UpstreamError`` and the waiting samples stay unrecorded. ``progress``, when given, is the object
    filled in (the caller then sees it even when the run raises). With ``cache``, every model client
    this run gets from ``clients`` answers through it (hits and misses land in ``progress.cache``); the
    cache is the caller's to flush.
    """
    skip = skip or {}
    progress = begin_progress(plan, progress, max_outage, cancel)
    run_started = time.monotonic()
    if progress.cancelled:
        return progress

    scope: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if cache is not None:  # clients handed out from here on, in this run's tasks too, use the cache
        progress.cache = CacheStats()
        scope = cache.scope(progress.cache)
    with scope:
        return await _run_tasks(
            plan,
            clients,
            progress,
            sink,
            skip,
            rows,
            cancel,
            on_progress,
            progress_interval,
            max_outage,
            run_started,
        )


async def _run_tasks(
    plan: EvalPlan,
    clients: ClientSource,
    progress: RunProgress,
    sink: Sink,
    skip: Mapping[str, set[int]],
    rows: Mapping[str, IndexedRows] | None,
    cancel: asyncio.Event | None,
    on_progress: ProgressCallback | None,
    progress_interval: float,
    max_outage: float,
    run_started: float,
) -> RunProgress:
    counters = [_TaskCounters() for _ in plan.tasks]
    client: ModelClient | None = None
    if any(task.build_request is not None for task in plan.tasks):
        if plan.model is None:
            raise EvalstackError("the plan runs inference but names no model")
        client = clients.get(
            plan.model,
            max_retries=plan.max_retries,
            timeout=plan.request_timeout,
            max_connections=max(plan.parallelism, 1),
        )

    parallelism = max(int(plan.parallelism), 1)
    controller = AdaptiveConcurrency(parallelism) if plan.adaptive_concurrency else None
    progress.concurrency = controller
    queue: asyncio.Queue[tuple[int, int, dict[str, Any]] | None] = asyncio.Queue(maxsize=2 * parallelism)
    loop = asyncio.get_running_loop()
    last_report = loop.time()

    def report(force: bool = False) -> None:
        nonlocal last_report
        now = loop.time()
        if on_progress is not None and (force or now - last_report >= progress_interval):
            last_report = now
            on_progress(progress)

    def finish_task_if_done(position: int) -> None:
        count = counters[position]
        if count.all_enqueued and count.done == count.todo:
            name = plan.tasks[position].name
            all_failed = count.todo > 0 and count.failed == count.todo
            progress.task_status[name] = "failed" if all_failed else "completed"

    async def load_rows(task: TaskPlan) -> Iterable[tuple[int, dict[str, Any]]]:
        if rows is not None:
            given = rows.get(task.name, ())
            progress.samples_total += len(given)
            return given
        loaded = await load_task_rows(task)
        progress.samples_total += len(loaded)
        return enumerate(loaded)

    # Load every task's rows concurrently (downloads overlap) while the first task already runs.
    loaders = [asyncio.ensure_future(load_rows(task)) for task in plan.tasks]

    async def produce() -> None:
        for position, task in enumerate(plan.tasks):
            try:
                task_rows = await loaders[position]
            except BaseException:
                progress.task_status[task.name] = "failed"
                raise
            done_before = skip.get(task.name, set())
            progress.task_status[task.name] = "running"
            count = counters[position]
            for index, row in task_rows:
                if index in done_before:
                    progress.samples_processed += 1
                    continue
                count.todo += 1
                if queue.full():
                    await queue.put((position, index, row))
                else:
                    queue.put_nowait((position, index, row))
            del task_rows
            count.all_enqueued = True
            finish_task_if_done(position)
        for _ in range(parallelism):
            await queue.put(None)

    async def paced(position: int, index: int, row: dict[str, Any]) -> SampleRecord:
        """One sample under the adaptive limit, feeding its latency back to the controller."""
        assert controller is not None
        await controller.limiter.acquire()
        started = time.monotonic()
        try:
            sample = await _process_sample(plan.tasks[position], client, index, row)
        finally:
            controller.limiter.release()
        if sample.error is None:
            controller.on_success(time.monotonic() - started)
        else:
            controller.on_failure()
        return sample

    async def watch_outages() -> None:
        """Report progress while requests wait on an open breaker (no sample finishes then)."""
        was_down = False
        while True:
            await asyncio.sleep(progress_interval)
            down = progress.outage() is not None
            if down or was_down:
                report(force=True)
            was_down = down

    async def work() -> None:
        # Each worker runs in its own task, so its own context.
        outage_watch.set(OutageWatch(max_outage, progress.waiting_on, started=run_started))
        if controller is not None:
            overload_listener.set(controller.on_overload)
        while True:
            entry = await queue.get()
            if entry is None:
                return
            position, index, row = entry
            if controller is None:
                sample = await _process_sample(plan.tasks[position], client, index, row)
            else:
                sample = await paced(position, index, row)
            await sink(sample)
            count = counters[position]
            count.done += 1
            progress.samples_processed += 1
            if sample.error is not None:
                count.failed += 1
                if sample.extra.get("error_kind") == ERROR_KIND_INFERENCE:
                    progress.errors += 1
                else:
                    progress.invalid += 1
            finish_task_if_done(position)
            report()

    pending: set[asyncio.Future[Any]] = {asyncio.ensure_future(produce())}
    pending.update(asyncio.ensure_future(work()) for _ in range(parallelism))
    children = set(pending) | set(loaders)
    if on_progress is not None:
        children.add(asyncio.ensure_future(watch_outages()))
    cancel_waiter = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
    try:
        while pending:
            watched = pending | {cancel_waiter} if cancel_waiter is not None else pending
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if cancel_waiter is not None and cancel_waiter in done:
                progress.cancelled = True
                progress.task_status = settle_tasks(progress.task_status, "cancelled")
                break
            for finished in done:
                pending.discard(finished)
                if not finished.cancelled() and finished.exception() is not None:
                    raise finished.exception()  # type: ignore[misc]
    finally:
        for child in children:
            child.cancel()
        if cancel_waiter is not None:
            cancel_waiter.cancel()
        await asyncio.gather(*children, return_exceptions=True)
    report(force=True)
    return progress
