"""The pipelined job runner: rows -> request -> inference -> scoring -> record, bounded and never blocking.

``run_plan`` is the core. A fixed pool of ``plan.parallelism`` worker coroutines pulls samples from a
bounded queue that a producer keeps filled, so exactly that many requests are in flight while work
remains and no coroutine is created per row. Each worker scores its sample right after inference
(metrics that are CPU-heavy offload themselves) and hands the finished ``SampleRecord`` to a sink.

``JobWorker`` drives jobs kept in the store: it compiles a job's spec into a plan, runs it with a
``BatchWriter`` as the sink (per-sample records are the truth), keeps ``job.progress`` current,
computes the result from the stored samples, and resumes unfinished jobs after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from evalstack.engine.adaptive import AdaptiveConcurrency
from evalstack.engine.plan import EvalPlan, SampleOutput, TaskPlan
from evalstack.errors import ConflictError, EvalstackError, NotFoundError, UpstreamError
from evalstack.inference.base import InferenceError, ModelClient, ModelEndpoint
from evalstack.inference.cache import CacheStats
from evalstack.inference.feedback import overload_listener
from evalstack.store.records import TERMINAL_STATUSES, JobRecord, SampleRecord

if TYPE_CHECKING:
    from evalstack.inference.cache import ResponseCache

logger = logging.getLogger(__name__)

# SampleRecord.extra["error_kind"] of a failed sample.
ERROR_KIND_INFERENCE = "inference"  # the endpoint (or a judge) failed: infrastructure, counted in ``errors``
ERROR_KIND_INVALID = "invalid"  # the row, template or metric input was bad: counted in ``invalid``

TaskState = str  # "pending" | "running" | "completed" | "failed"
Sink = Callable[[SampleRecord], Awaitable[None]]
ProgressCallback = Callable[["RunProgress"], None]
JobProgressListener = Callable[[str, dict[str, Any]], None]

# Statuses a worker may still move a job out of; a final write never overwrites anything else.
ACTIVE_STATUSES: frozenset[str] = frozenset({"created", "pending", "running", "cancelling"})


class ClientSource(Protocol):
    """Where the runner gets model clients (``inference.clients.ModelClientPool``)."""

    def get(
        self,
        endpoint: ModelEndpoint,
        *,
        max_retries: int = 5,
        timeout: float = 600.0,
        max_connections: int = 256,
    ) -> ModelClient: ...


class JobStore(Protocol):
    """The part of ``store.repository.Store`` the worker uses."""

    async def create_job(self, job: JobRecord) -> JobRecord: ...

    async def get_job(self, job_id: str) -> JobRecord | None: ...

    async def list_jobs(self, front: str | None = None) -> list[JobRecord]: ...

    async def update_job(
        self, job_id: str, *, expected_status: Collection[str] | None = None, **changes: Any
    ) -> JobRecord: ...

    async def job_ids(self, statuses: Collection[str]) -> list[str]: ...

    async def job_statuses(self, job_ids: Collection[str]) -> dict[str, str]: ...

    async def claim_job(
        self, job_id: str, owner: str, ttl: float, *, owner_gone: Callable[[str], bool] | None = None
    ) -> bool: ...

    async def renew_job_leases(self, owner: str, job_ids: Collection[str], ttl: float) -> set[str]: ...

    async def release_job(self, job_id: str, owner: str) -> None: ...

    async def add_samples(self, job_id: str, samples: Sequence[SampleRecord]) -> None: ...

    async def read_samples(self, job_id: str, task: str | None = None) -> list[SampleRecord]: ...

    async def recorded_indices(self, job_id: str) -> dict[str, set[int]]: ...


@dataclass
class RunProgress:
    """Live counters of one run; ``snapshot()`` is what goes into ``job.progress``.

    ``samples_processed`` and ``samples_total`` include samples recorded by an earlier run of the
    same job (skipped on resume). ``errors`` counts infrastructure failures, ``invalid`` samples
    that failed on bad input; both are included in ``samples_processed``.
    """

    samples_total: int = 0
    samples_processed: int = 0
    errors: int = 0
    invalid: int = 0
    task_status: dict[str, TaskState] = field(default_factory=dict)
    cancelled: bool = False
    started: float = field(default_factory=time.monotonic)
    concurrency: AdaptiveConcurrency | None = None
    cache: CacheStats | None = None

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
        return snapshot


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


async def _process_sample(
    task: TaskPlan, client: ModelClient | None, index: int, row: dict[str, Any]
) -> SampleRecord:
    """Build the request, infer, score: one finished SampleRecord (failed ones carry ``error``)."""
    sample = SampleRecord(task=task.name, index=index, item=row)
    try:
        if task.build_request is not None:
            request = task.build_request(row)
            request.sample_id = f"{task.name}#{index}"
            assert client is not None  # run_plan checks that inference tasks have a model
            result = await client.generate(request)
            output = SampleOutput(result.text, result.raw)
            sample.finish_reason = result.finish_reason
        elif task.read_output is not None:
            output = task.read_output(row)
        else:  # pragma: no cover - compilers always set one of the two
            raise EvalstackError(f"task {task.name!r} has neither a request builder nor an output reader")
        sample.output_text = output.text
        sample.response = output.response
        for metric in task.metrics:
            sample.scores[metric.name] = await metric.score(row, output)
    except (InferenceError, UpstreamError) as exc:
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


async def run_plan(
    plan: EvalPlan,
    clients: ClientSource,
    *,
    sink: Sink,
    skip: Mapping[str, set[int]] | None = None,
    cancel: asyncio.Event | None = None,
    on_progress: ProgressCallback | None = None,
    progress_interval: float = 0.5,
    cache: ResponseCache | None = None,
) -> RunProgress:
    """Run every sample of ``plan`` not in ``skip`` and hand each finished sample to ``sink``.

    Exactly ``plan.parallelism`` workers pull from a bounded queue, so at most that many requests
    are in flight and the pool stays full while rows remain. When ``cancel`` is set the workers are
    cancelled at once (in-flight requests are abandoned, not recorded) and the returned progress
    has ``cancelled=True``. ``on_progress`` is called at most every ``progress_interval`` seconds
    and once at the end. A task whose rows cannot be loaded raises (the job fails); a failing
    sample never does. The sink is the caller's to flush. With ``cache``, every model client this run
    gets from ``clients`` answers through it (hits and misses land in ``progress.cache``); the cache is
    the caller's to flush.
    """
    skip = skip or {}
    progress = RunProgress(task_status={task.name: "pending" for task in plan.tasks})
    if cancel is not None and cancel.is_set():
        progress.cancelled = True
        return progress

    scope: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if cache is not None:  # clients handed out from here on, in this run's tasks too, use the cache
        progress.cache = CacheStats()
        scope = cache.scope(progress.cache)
    with scope:
        return await _run_tasks(plan, clients, progress, sink, skip, cancel, on_progress, progress_interval)


async def _run_tasks(
    plan: EvalPlan,
    clients: ClientSource,
    progress: RunProgress,
    sink: Sink,
    skip: Mapping[str, set[int]],
    cancel: asyncio.Event | None,
    on_progress: ProgressCallback | None,
    progress_interval: float,
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

    async def load_rows(task: TaskPlan) -> list[dict[str, Any]]:
        try:
            rows = await task.rows()
        except EvalstackError as exc:
            raise type(exc)(f"task {task.name!r}: {exc.message}", detail=exc.detail) from exc
        except Exception as exc:
            raise EvalstackError(f"task {task.name!r}: could not load its rows: {_error_text(exc)}") from exc
        if task.limit is not None:
            rows = rows[: task.limit]
        progress.samples_total += len(rows)
        return rows

    # Load every task's rows concurrently (downloads overlap) while the first task already runs.
    loaders = [asyncio.ensure_future(load_rows(task)) for task in plan.tasks]

    async def produce() -> None:
        for position, task in enumerate(plan.tasks):
            try:
                rows = await loaders[position]
            except BaseException:
                progress.task_status[task.name] = "failed"
                raise
            done_before = skip.get(task.name, set())
            progress.task_status[task.name] = "running"
            count = counters[position]
            for index, row in enumerate(rows):
                if index in done_before:
                    progress.samples_processed += 1
                    continue
                count.todo += 1
                if queue.full():
                    await queue.put((position, index, row))
                else:
                    queue.put_nowait((position, index, row))
            del rows
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

    async def work() -> None:
        if controller is not None:  # each worker runs in its own task, so its own context
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
    cancel_waiter = asyncio.ensure_future(cancel.wait()) if cancel is not None else None
    try:
        while pending:
            watched = pending | {cancel_waiter} if cancel_waiter is not None else pending
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if cancel_waiter is not None and cancel_waiter in done:
                progress.cancelled = True
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


class BatchWriter:
    """The single writer of one job's samples: batches ``add`` calls into ``store.add_samples``.

    Flushes when ``batch_size`` samples are waiting or every ``flush_interval`` seconds, and on
    ``close`` (completion, cancel, failure, stop). ``add`` waits (back-pressure) only when
    ``max_pending`` samples are still unwritten. A write failure is raised by the next ``add``
    and by ``close``.
    """

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        *,
        batch_size: int = 256,
        flush_interval: float = 0.25,
        max_pending: int = 8192,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_pending = max(max_pending, batch_size)
        self.written = 0
        self.flushes = 0
        self._buffer: list[SampleRecord] = []
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()
        self._closing = False
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> BatchWriter:
        """Start the background flusher."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"writer-{self.job_id}")
        return self

    async def add(self, sample: SampleRecord) -> None:
        """Queue one finished sample for writing."""
        if self._error is not None:
            raise self._error
        self._buffer.append(sample)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()
        while len(self._buffer) >= self.max_pending and self._error is None and self._task is not None:
            self._wake.set()
            await self._flushed.wait()
        if self._error is not None:
            raise self._error

    async def _flush(self) -> None:
        batch, self._buffer = self._buffer, []
        if batch:
            try:
                await self.store.add_samples(self.job_id, batch)
            except BaseException:
                self._buffer[:0] = batch  # keep them for a later attempt (close retries once)
                raise
            self.written += len(batch)
            self.flushes += 1
        flushed, self._flushed = self._flushed, asyncio.Event()
        flushed.set()

    async def _run(self) -> None:
        try:
            while not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                self._wake.clear()
                await self._flush()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            logger.exception("writing samples of job %s failed", self.job_id)
            self._error = exc
            self._flushed.set()

    async def close(self) -> None:
        """Stop the flusher and write everything still buffered."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
            if task.done() and not task.cancelled() and task.exception() is not None:  # pragma: no cover
                self._error = task.exception()
        if self._buffer:
            await self._flush()  # also retries a batch whose earlier write failed
            self._error = None
        if self._error is not None:
            raise self._error


def group_samples(samples: Sequence[SampleRecord]) -> dict[str, list[SampleRecord]]:
    """Samples by task, each list in index order (the shape ``EvalPlan.summarize`` takes)."""
    grouped: dict[str, list[SampleRecord]] = {}
    for sample in samples:
        grouped.setdefault(sample.task, []).append(sample)
    for rows in grouped.values():
        rows.sort(key=lambda s: s.index)
    return grouped


def all_failed_reason(samples: Sequence[SampleRecord]) -> str | None:
    """``"all N samples failed: <first error>"`` when every sample failed, else None."""
    if not samples or any(sample.error is None for sample in samples):
        return None
    first = min(samples, key=lambda s: (s.task, s.index))
    return f"all {len(samples)} samples failed: {first.error}"


CompileJob = Callable[[JobRecord], Awaitable[EvalPlan]]


def worker_identity() -> str:
    """``host:pid:token``: names one worker of one process in job leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_gone(owner: str) -> bool:
    """True when a lease holder is a process of this host that no longer exists (killed, crashed)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, but not ours to signal
        return False
    return False


class JobWorker:
    """Runs the store's jobs in the background, at most ``max_running_jobs`` at once (FIFO).

    Lifecycle: ``submit`` -> created -> pending (waiting for a slot) -> running -> completed | failed
    (``job.error`` says why); ``cancel`` -> cancelling -> cancelled. ``stop`` leaves running jobs
    as they are (flushed) so that ``start`` resumes them, skipping the samples already recorded.
    ``adaptive_concurrency`` turns AIMD concurrency (``engine.adaptive``) on for every job; a plan can
    ask for it on its own. Its history is kept in ``job.progress["concurrency"]``. ``response_cache``
    serves the jobs whose plan has ``cache`` set (every job with ``cache_every_job``); hits and misses
    are kept in ``job.progress["cache"]``.

    Several processes may share one store (two servers, or ``evalstack run`` beside a server): a job
    runs only in the worker that holds its lease (``Store.claim_job``), renewed every
    ``monitor_interval`` seconds and lapsing after ``lease_ttl`` (at once when the holder is a dead
    process of this host). Every ``lease_ttl / 3`` seconds a worker adopts unfinished jobs nobody
    holds, and a cancel made through another process reaches the holder through the job's status.
    """

    def __init__(
        self,
        store: JobStore,
        clients: ClientSource,
        compile_job: CompileJob,
        *,
        max_running_jobs: int = 4,
        batch_size: int = 256,
        flush_interval: float = 0.25,
        progress_interval: float = 0.5,
        cancel_timeout: float = 10.0,
        adaptive_concurrency: bool = False,
        lease_ttl: float = 30.0,
        monitor_interval: float = 1.0,
        response_cache: ResponseCache | None = None,
        cache_every_job: bool = False,
    ) -> None:
        self.store = store
        self.clients = clients
        self.compile_job = compile_job
        self.max_running_jobs = max(max_running_jobs, 1)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.progress_interval = progress_interval
        self.cancel_timeout = cancel_timeout
        self.adaptive_concurrency = adaptive_concurrency  # on for every job, whatever its plan says
        self.response_cache = response_cache  # used by jobs whose plan asks for it, or every job
        self.cache_every_job = cache_every_job
        self._slots = asyncio.Semaphore(self.max_running_jobs)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel_events: dict[str, asyncio.Event] = {}
        self._running: set[str] = set()
        self._progress_writes: dict[str, asyncio.Task[Any]] = {}
        self._listeners: list[JobProgressListener] = []
        self._started = False
        self.lease_ttl = lease_ttl
        self.monitor_interval = monitor_interval
        self.owner = worker_identity()
        self._owned: set[str] = set()
        self._monitor: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start accepting jobs and resume those a previous process left unfinished."""
        if self._started:
            return
        self._started = True
        for job_id in await self.store.job_ids(["cancelling"]):  # cancels a crash interrupted
            if await self.store.claim_job(job_id, self.owner, self.lease_ttl, owner_gone=owner_is_gone):
                try:
                    await self._set_status(job_id, status="cancelled")
                finally:
                    await self.store.release_job(job_id, self.owner)
        await self._adopt(log=True)
        self._monitor = asyncio.create_task(self._watch(), name="job-leases")

    async def stop(self) -> None:
        """Stop every job task; their buffered samples are flushed and their status kept for resume."""
        self._started = False
        if self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            monitor.cancel()
            await asyncio.gather(monitor, return_exceptions=True)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writes = list(self._progress_writes.values())
        await asyncio.gather(*writes, return_exceptions=True)
        if self.response_cache is not None:
            await self.response_cache.flush()

    # ---- jobs ------------------------------------------------------------------------------

    async def submit(self, job: JobRecord) -> JobRecord:
        """Store a new job (status ``created``) and schedule it; returns at once."""
        job.status = "created"
        job.error = None
        job.result = None
        record = await self.store.create_job(job)
        self._schedule(record.id)
        return record

    async def get(self, job_id: str) -> JobRecord:
        """The job's record; NotFoundError if there is none."""
        job = await self.store.get_job(job_id)
        if job is None:
            raise NotFoundError(f"Job {job_id} not found")
        return job

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job: ``cancelling`` at once, ``cancelled`` as soon as its workers stopped.

        In-flight model requests are abandoned; finished samples are flushed. A job already
        finished is returned unchanged.
        """
        job = await self.get(job_id)
        if job.status in TERMINAL_STATUSES:
            return job
        task = self._tasks.get(job_id)
        if job_id in self._running and task is not None:
            if not await self._set_status(job_id, status="cancelling"):
                return await self.get(job_id)
            self._cancel_events.setdefault(job_id, asyncio.Event()).set()
            await asyncio.wait({task}, timeout=self.cancel_timeout)
            return await self.get(job_id)
        if task is not None:  # ours, waiting for a slot: nothing runs, so it is cancelled now
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        elif not await self.store.claim_job(job_id, self.owner, self.lease_ttl, owner_gone=owner_is_gone):
            # Another process runs it: it sees ``cancelling`` within a second and stops.
            if await self._set_status(job_id, status="cancelling"):
                return await self._wait_elsewhere(job_id)
            return await self.get(job_id)
        try:
            await self._set_status(job_id, status="cancelled")
        finally:
            await self.store.release_job(job_id, self.owner)
        return await self.get(job_id)

    async def _wait_elsewhere(self, job_id: str) -> JobRecord:
        """Poll a job another process runs until it is finished or ``cancel_timeout`` passed."""
        deadline = time.monotonic() + self.cancel_timeout
        while True:
            job = await self.get(job_id)
            if job.status in TERMINAL_STATUSES or time.monotonic() >= deadline:
                return job
            await asyncio.sleep(0.05)

    async def wait(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Wait until the job is finished (or ``timeout`` passed) and return its record."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = await self.get(job_id)
            if job.status in TERMINAL_STATUSES:
                return job
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return job
            task = self._tasks.get(job_id)
            if task is not None:
                await asyncio.wait({task}, timeout=remaining)
            else:
                await asyncio.sleep(0.05 if remaining is None else min(0.05, remaining))

    async def run_inline(self, plan: EvalPlan) -> dict[str, list[SampleRecord]]:
        """Run a plan in this coroutine without persisting anything; samples by task, in index order."""
        results: dict[str, list[SampleRecord]] = {task.name: [] for task in plan.tasks}

        async def collect(sample: SampleRecord) -> None:
            results.setdefault(sample.task, []).append(sample)

        await run_plan(plan, self.clients, sink=collect, progress_interval=self.progress_interval)
        for samples in results.values():
            samples.sort(key=lambda s: s.index)
        return results

    def add_progress_listener(self, listener: JobProgressListener) -> Callable[[], None]:
        """Call ``listener(job_id, progress)`` on every progress update; returns a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    # ---- internals -------------------------------------------------------------------------

    def _schedule(self, job_id: str) -> None:
        if job_id in self._tasks:
            return
        task = asyncio.create_task(self._run_job(job_id), name=f"job-{job_id}")
        self._tasks[job_id] = task

        def forget(_: asyncio.Task[None]) -> None:
            if self._tasks.get(job_id) is task:
                del self._tasks[job_id]
                self._cancel_events.pop(job_id, None)

        task.add_done_callback(forget)

    async def _run_job(self, job_id: str) -> None:
        claimed = False
        try:
            claimed = await self.store.claim_job(job_id, self.owner, self.lease_ttl, owner_gone=owner_is_gone)
            if not claimed:
                logger.debug("job %s is run by another process", job_id)
                return
            self._owned.add(job_id)
            job = await self.store.get_job(job_id)
            if job is None or job.status in TERMINAL_STATUSES:
                return
            if job.status == "cancelling":
                await self._set_status(job_id, status="cancelled")
                return
            if job.status == "created":
                await self._set_status(job_id, status="pending")
            async with self._slots:
                self._running.add(job_id)
                try:
                    await self._execute(job_id)
                finally:
                    self._running.discard(job_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store itself failed: record what we can
            logger.exception("job %s crashed", job_id)
            with contextlib.suppress(Exception):
                await self._set_status(job_id, status="failed", error=f"internal error: {exc}")
        finally:
            self._owned.discard(job_id)
            if claimed:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.store.release_job(job_id, self.owner))

    async def _set_status(self, job_id: str, **changes: Any) -> bool:
        """Write a status change unless the job left the active statuses meanwhile (False then)."""
        try:
            await self.store.update_job(job_id, expected_status=ACTIVE_STATUSES, **changes)
        except ConflictError as exc:
            logger.info("job %s: not changed to %s: %s", job_id, changes.get("status"), exc.message)
            return False
        return True

    async def _adopt(self, *, log: bool = False) -> None:
        """Schedule the unfinished jobs of the store that no task of ours handles yet.

        ``_run_job`` claims each first, so a job another live process runs is left alone.
        """
        for job_id in await self.store.job_ids(ACTIVE_STATUSES):
            if job_id not in self._tasks:
                if log:
                    logger.info("resuming job %s", job_id)
                self._schedule(job_id)

    async def _watch(self) -> None:
        """Renew our leases, pass on cancels made elsewhere, adopt orphaned jobs; until stopped."""
        loop = asyncio.get_running_loop()
        next_adoption = loop.time() + self.lease_ttl / 3
        while True:
            await asyncio.sleep(self.monitor_interval)
            try:
                owned = set(self._owned)
                held = await self.store.renew_job_leases(self.owner, owned, self.lease_ttl)
                for job_id in owned - held:
                    task = self._tasks.get(job_id)
                    if job_id in self._owned and task is not None:
                        logger.warning("job %s: lease lost to another process; stopping here", job_id)
                        task.cancel()
                statuses = await self.store.job_statuses(held & self._running)
                for job_id, status in statuses.items():
                    if status not in ("running", "pending", "created"):
                        self._cancel_events.setdefault(job_id, asyncio.Event()).set()
                if loop.time() >= next_adoption:
                    next_adoption = loop.time() + self.lease_ttl / 3
                    await self._adopt()
            except Exception:
                logger.warning("checking job leases failed", exc_info=True)

    async def _execute(self, job_id: str) -> None:
        job = await self.get(job_id)
        event = self._cancel_events.setdefault(job_id, asyncio.Event())
        if job.status in TERMINAL_STATUSES:
            return
        if job.status == "cancelling" or event.is_set():
            await self._set_status(job_id, status="cancelled")
            return
        if not await self._set_status(job_id, status="running"):
            return
        try:
            plan = await self.compile_job(job)
            if self.adaptive_concurrency:
                plan.adaptive_concurrency = True
        except EvalstackError as exc:
            await self._fail(job_id, exc.message)
            return
        except Exception as exc:
            logger.exception("compiling job %s failed", job_id)
            await self._fail(job_id, f"could not compile the job: {type(exc).__name__}: {exc}")
            return

        skip = await self.store.recorded_indices(job_id)
        writer = BatchWriter(
            self.store, job_id, batch_size=self.batch_size, flush_interval=self.flush_interval
        ).start()
        failure: str | None = None
        progress: RunProgress | None = None
        try:
            progress = await run_plan(
                plan,
                self.clients,
                sink=writer.add,
                skip=skip,
                cancel=event,
                on_progress=lambda p: self._on_progress(job_id, p),
                progress_interval=self.progress_interval,
                cache=self.response_cache if plan.cache or self.cache_every_job else None,
            )
        except EvalstackError as exc:
            failure = exc.message
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("job %s failed", job_id)
            failure = f"{type(exc).__name__}: {exc}"
        finally:
            try:
                await writer.close()
            except Exception as exc:
                if failure is None:
                    failure = f"could not record samples: {exc}"
            await self._settle_progress(job_id)
            if self.response_cache is not None:
                await self.response_cache.flush()

        snapshot = progress.snapshot() if progress is not None else None
        if failure is not None:
            await self._fail(job_id, failure, snapshot)
            return
        assert progress is not None
        if progress.cancelled:
            await self._set_status(job_id, status="cancelled", progress=snapshot)
            return
        await self._finish(job_id, plan, snapshot)

    async def _finish(self, job_id: str, plan: EvalPlan, snapshot: dict[str, Any] | None) -> None:
        """Compute the result from the stored samples (never from memory) and complete the job."""
        samples = await self.store.read_samples(job_id)
        reason = all_failed_reason(samples)
        if reason is not None:
            await self._fail(job_id, reason, snapshot)
            return
        try:
            result = await asyncio.to_thread(plan.summarize, group_samples(samples))
        except EvalstackError as exc:
            await self._fail(job_id, f"could not aggregate the results: {exc.message}", snapshot)
            return
        except Exception as exc:
            logger.exception("aggregating job %s failed", job_id)
            reason = f"could not aggregate the results: {type(exc).__name__}: {exc}"
            await self._fail(job_id, reason, snapshot)
            return
        changes: dict[str, Any] = {"status": "completed", "result": result, "error": None}
        if snapshot is not None:
            changes["progress"] = snapshot
        await self._set_status(job_id, **changes)

    async def _fail(self, job_id: str, reason: str, snapshot: dict[str, Any] | None = None) -> None:
        logger.info("job %s failed: %s", job_id, reason)
        changes: dict[str, Any] = {"status": "failed", "error": reason}
        if snapshot is not None:
            changes["progress"] = snapshot
        await self._set_status(job_id, **changes)

    def _on_progress(self, job_id: str, progress: RunProgress) -> None:
        """Throttled by run_plan; writes the snapshot unless a write is still in flight."""
        snapshot = progress.snapshot()
        for listener in list(self._listeners):
            try:
                listener(job_id, snapshot)
            except Exception:
                logger.exception("progress listener failed")
        previous = self._progress_writes.get(job_id)
        if previous is not None and not previous.done():
            return
        self._progress_writes[job_id] = asyncio.create_task(self._write_progress(job_id, snapshot))

    async def _write_progress(self, job_id: str, snapshot: dict[str, Any]) -> None:
        try:
            await self.store.update_job(job_id, progress=snapshot)
        except Exception:
            logger.warning("could not update the progress of job %s", job_id, exc_info=True)

    async def _settle_progress(self, job_id: str) -> None:
        """Wait for an in-flight progress write so it cannot land after the final update."""
        write = self._progress_writes.pop(job_id, None)
        if write is not None:
            await asyncio.gather(write, return_exceptions=True)
