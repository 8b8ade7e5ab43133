"""The JobWorker: drives the jobs kept in the store through their lifecycle.

It compiles a job's spec into a plan, runs it with a ``BatchWriter`` as the sink (per-sample
records are the truth), keeps ``job.progress`` current, computes the result from the stored
samples, and resumes unfinished jobs after a restart. A secret the job's spec carries (an api key, an
``hf_token``) is masked wherever the job's error or a failed sample's error quotes it, before either
is stored or logged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from evalstack.engine.plan import EvalPlan
from evalstack.engine.ports import ClientSource, JobStore
from evalstack.engine.runner.executor import PlanExecutor
from evalstack.engine.runner.leases import owner_is_gone, worker_identity
from evalstack.engine.runner.pipeline import ERROR_KIND_INFERENCE, RunProgress, Sink, run_plan, settle_tasks
from evalstack.engine.runner.writer import BatchWriter
from evalstack.errors import ConflictError, EvalstackError, NotFoundError
from evalstack.inference.breaker import DEFAULT_MAX_OUTAGE
from evalstack.redaction import scrub, secret_values
from evalstack.store.records import TERMINAL_STATUSES, JobRecord, SampleRecord

if TYPE_CHECKING:
    from evalstack.inference.cache import ResponseCache

logger = logging.getLogger(__name__)

JobProgressListener = Callable[[str, dict[str, Any]], None]

# Statuses a worker may still move a job out of; a final write never overwrites anything else.
ACTIVE_STATUSES: frozenset[str] = frozenset({"created", "pending", "running", "cancelling"})


class RunSlots:
    """At most ``size`` jobs running at once, handed out strictly in the order places were taken.

    ``take_place`` is synchronous, so the order is the order of the calls, whatever the awaits that
    come before the wait (store reads run on several threads and may finish in any order).
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()

    def take_place(self) -> asyncio.Future[None]:
        """A place in the queue; it resolves when the slot is this caller's."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._free > 0 and not self._queue:
            self._free -= 1
            turn.set_result(None)
        else:
            self._queue.append(turn)
        return turn

    def give_back(self, turn: asyncio.Future[None]) -> None:
        """Leave the queue or free the slot that ``turn`` held."""
        if not turn.done():
            turn.cancel()
            return
        if turn.cancelled():
            return
        while self._queue:
            waiting = self._queue.popleft()
            if not waiting.done():
                waiting.set_result(None)
                return
        self._free += 1


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
    process of this host). The ``executor`` runs each plan: ``run_plan`` here (the default), or a
    distributed one (``runner.ray_executor``) for which this worker, the lease holder, is the
    coordinator and still the only writer of the job's samples. Every ``lease_ttl / 3`` seconds a
    worker adopts unfinished jobs nobody holds, and a cancel made through another process reaches
    the holder through the job's status.

    A job whose model endpoint stays unreachable for ``max_outage`` seconds (the plan's, else the
    worker's) fails, keeping its samples; ``resume`` runs it again from where it stopped, and ``retry``
    also runs again the samples that failed on infrastructure. A job that
    ends cancelled or failed shows every unfinished task so in ``progress.task_status``.
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
        max_outage: float = DEFAULT_MAX_OUTAGE,
        executor: PlanExecutor | None = None,
        response_cache: ResponseCache | None = None,
        cache_every_job: bool = False,
    ) -> None:
        self.store = store
        self.executor: PlanExecutor = executor or run_plan
        self.clients = clients
        self.compile_job = compile_job
        self.max_running_jobs = max(max_running_jobs, 1)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.progress_interval = progress_interval
        self.cancel_timeout = cancel_timeout
        self.adaptive_concurrency = adaptive_concurrency  # on for every job, whatever its plan says
        self.max_outage = max_outage  # for jobs whose plan does not set one
        self.response_cache = response_cache  # used by jobs whose plan asks for it, or every job
        self.cache_every_job = cache_every_job
        self._slots = RunSlots(self.max_running_jobs)
        self._admission = asyncio.Lock()  # jobs queue for a slot in the order they were scheduled
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancel_events: dict[str, asyncio.Event] = {}
        self._running: set[str] = set()
        self._progress_writes: dict[str, asyncio.Task[Any]] = {}
        self._compiled: dict[str, EvalPlan] = {}  # plans handed to submit, until their job runs
        self._listeners: list[JobProgressListener] = []
        self._secrets: dict[str, frozenset[str]] = {}  # job id -> secrets its spec carries, masked in errors
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
        close = getattr(self.executor, "aclose", None)
        if close is not None:
            await close()

    # ---- jobs ------------------------------------------------------------------------------

    async def submit(self, job: JobRecord, plan: EvalPlan | None = None) -> JobRecord:
        """Store a new job (status ``created``) and schedule it; returns at once.

        ``plan``: the job's plan when the caller compiled it already (to check the job); its first run
        uses it instead of compiling the spec again. A resumed job compiles its spec.
        """
        job.status = "created"
        job.error = None
        job.result = None
        record = await self.store.create_job(job)
        if plan is not None:
            self._compiled[record.id] = plan
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

    async def resume(self, job_id: str) -> JobRecord:
        """Run a failed or cancelled job again, skipping the samples it already recorded.

        Raises ConflictError for a job that is not failed or cancelled (a completed job has nothing
        left to run; an active one is running or about to).
        """
        job = await self.get(job_id)
        resumable = ("failed", "cancelled")
        if job.status not in resumable:
            raise ConflictError(
                f"Job {job_id} is {job.status}; only a failed or cancelled job can be resumed"
            )
        try:
            record = await self.store.update_job(
                job_id, expected_status=resumable, status="pending", error=None
            )
        except ConflictError:
            raise ConflictError(
                f"Job {job_id} changed status meanwhile; it can no longer be resumed"
            ) from None
        logger.info("resuming job %s (it was %s)", job_id, job.status)
        await self._run_again(job_id)
        return record

    async def retry(self, job_id: str) -> JobRecord:
        """Run a finished job's samples that failed on infrastructure again, keeping all the others.

        Those samples (``error_kind`` inference: the endpoint or a judge failed) are dropped and the
        job runs again like a resume, so a failed or cancelled job also finishes its unrun samples.
        Raises ConflictError for a job still active, and for a completed job with no such sample.
        """
        job = await self.get(job_id)
        if job.status not in TERMINAL_STATUSES:
            raise ConflictError(f"Job {job_id} is {job.status}; retry it once it has finished")
        failed = await self.store.failed_sample_keys(job_id, ERROR_KIND_INFERENCE)
        if not failed and job.status == "completed":
            raise ConflictError(
                f"Job {job_id} has no samples that failed on infrastructure; nothing to retry"
            )
        try:
            record = await self.store.reopen_job(job_id, expected_status=(job.status,), drop=failed)
        except ConflictError:
            raise ConflictError(
                f"Job {job_id} changed status meanwhile; it can no longer be retried"
            ) from None
        logger.info("retrying job %s: %d samples that failed on infrastructure", job_id, len(failed))
        await self._run_again(job_id)
        return record

    async def _run_again(self, job_id: str) -> None:
        """Schedule a job made pending again, once the run that just ended has let go of it."""
        finishing = self._tasks.get(job_id)
        if finishing is not None:
            await asyncio.wait({finishing}, timeout=self.cancel_timeout)
        self._schedule(job_id)

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

        await run_plan(
            plan,
            self.clients,
            sink=collect,
            progress_interval=self.progress_interval,
            max_outage=self.max_outage if plan.max_outage is None else plan.max_outage,
        )
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
                self._compiled.pop(job_id, None)

        task.add_done_callback(forget)

    async def _run_job(self, job_id: str) -> None:
        claimed = False
        turn: asyncio.Future[None] | None = None
        try:
            async with self._admission:
                claimed = await self.store.claim_job(
                    job_id, self.owner, self.lease_ttl, owner_gone=owner_is_gone
                )
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
                turn = self._slots.take_place()
            await turn
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
            if turn is not None:
                self._slots.give_back(turn)
            self._owned.discard(job_id)
            self._secrets.pop(job_id, None)
            if claimed:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.store.release_job(job_id, self.owner))

    async def _set_status(self, job_id: str, **changes: Any) -> bool:
        """Write a status change unless the job left the active statuses meanwhile (False then).

        A job ending cancelled or failed gets its unfinished tasks marked so in its progress.
        """
        status = changes.get("status")
        if status in ("cancelled", "failed"):
            progress = changes.get("progress")
            if progress is None:
                job = await self.store.get_job(job_id)
                progress = job.progress if job is not None else None
            if progress and isinstance(progress.get("task_status"), Mapping):
                changes["progress"] = {
                    **progress,
                    "task_status": settle_tasks(progress["task_status"], status),
                }
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
        secrets = secret_values(job.spec)
        if secrets:
            self._secrets[job_id] = secrets
        try:
            plan = self._compiled.pop(job_id, None) or await self.compile_job(job)
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
        progress = RunProgress()
        try:
            await self.executor(
                plan,
                self.clients,
                sink=_scrubbing(writer.add, secrets) if secrets else writer.add,
                skip=skip,
                cancel=event,
                on_progress=lambda p: self._on_progress(job_id, p),
                progress_interval=self.progress_interval,
                max_outage=self.max_outage if plan.max_outage is None else plan.max_outage,
                progress=progress,
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

        snapshot = progress.snapshot()
        if failure is not None:
            await self._fail(job_id, failure, snapshot)
            return
        if progress.cancelled:
            await self._set_status(job_id, status="cancelled", progress=snapshot)
            return
        await self._finish(job_id, plan, snapshot)

    async def _finish(self, job_id: str, plan: EvalPlan, snapshot: dict[str, Any] | None) -> None:
        """Compute the result from the stored samples (never from memory) and complete the job."""
        fields = None if plan.summary_fields is None else {"error", *plan.summary_fields}
        samples = await self.store.read_samples(job_id, fields=fields)
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
        reason = scrub(reason, self._secrets.get(job_id, ()))
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


def _scrubbing(sink: Sink, secrets: frozenset[str]) -> Sink:
    """``sink`` behind a filter that masks the job's secrets in a failed sample's error text."""

    async def add(sample: SampleRecord) -> None:
        if sample.error is not None:
            sample.error = scrub(sample.error, secrets)
        await sink(sample)

    return add
