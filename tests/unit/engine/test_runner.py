"""The pipelined runner and the job worker: concurrency, batching, cancel, resume, failures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from evalstack.engine.adaptive import AdaptiveConcurrency
from evalstack.engine.plan import EvalPlan, SampleOutput, TaskPlan
from evalstack.engine.runner import JobWorker, RunProgress, run_plan
from evalstack.engine.runner.worker import RunSlots
from evalstack.errors import EvalstackError, InvalidInputError, NotFoundError
from evalstack.inference.base import (
    InferenceError,
    InferenceRequest,
    InferenceResult,
    ModelClient,
    ModelEndpoint,
)
from evalstack.inference.cache import ResponseCache
from evalstack.store.records import JobRecord, SampleRecord, new_job_id
from evalstack.store.repository import Store

ENDPOINT = ModelEndpoint(kind="openai", model="fake", base_url="http://fake.invalid/v1")


# ---- fakes ---------------------------------------------------------------------------------------


class FakeClient:
    """A model client with latency that counts requests in flight.

    It answers ``"A<n>"`` for the prompt ``"Q<n>"``; prompts in ``fail`` raise InferenceError;
    prompts in ``hang`` wait until ``release`` is set (or the request is cancelled).
    """

    def __init__(
        self,
        latency: float = 0.0,
        fail: Callable[[int], bool] | None = None,
        hang: Callable[[int], bool] | None = None,
    ) -> None:
        self.latency = latency
        self.fail = fail or (lambda n: False)
        self.hang = hang or (lambda n: False)
        self.release = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_flight_at_start: list[int] = []
        self.busy_time = 0.0
        self.asked: list[int] = []
        self.answered = 0
        self.cancelled = 0

    async def generate(self, request: InferenceRequest) -> InferenceResult:
        number = int(str(request.prompt)[1:])
        self.asked.append(number)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.in_flight_at_start.append(self.in_flight)
        started = time.monotonic()
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if self.hang(number):
                await self.release.wait()
            if self.fail(number):
                raise InferenceError(f"endpoint down (503) for Q{number}")
            self.answered += 1
            return InferenceResult(text=f"A{number}", finish_reason="stop", raw={"n": number})
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
            self.busy_time += time.monotonic() - started

    async def aclose(self) -> None:
        return None


class FakePool:
    """Hands out one client and remembers how it was asked for."""

    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.requests: list[dict[str, Any]] = []

    def get(
        self,
        endpoint: ModelEndpoint,
        *,
        max_retries: int = 5,
        timeout: float = 600.0,
        max_connections: int = 256,
    ) -> ModelClient:
        self.requests.append(
            {
                "endpoint": endpoint,
                "max_retries": max_retries,
                "timeout": timeout,
                "max_connections": max_connections,
            }
        )
        return self.client


class ExactMatch:
    """1.0 when the answer equals the row's ``expected``; a row without it is bad input."""

    name = "exact"

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        if "expected" not in item:
            raise InvalidInputError("row has no 'expected' column")
        return {"score": 1.0 if output.text == item["expected"] else 0.0}


class CountingStore(Store):
    """The real store, counting how samples arrive."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.batches: list[int] = []

    async def add_samples(self, job_id: str, samples: Sequence[SampleRecord]) -> None:
        self.batches.append(len(samples))
        await super().add_samples(job_id, samples)


def make_rows(n: int, wrong_every: int = 0) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        expected = "wrong" if wrong_every and i % wrong_every == 0 else f"A{i}"
        rows.append({"q": f"Q{i}", "expected": expected})
    return rows


def summarize(samples: Mapping[str, Sequence[SampleRecord]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for task, rows in samples.items():
        scored = [s.scores["exact"]["score"] for s in rows if s.error is None]
        out[task] = {
            "n": len(rows),
            "errors": sum(1 for s in rows if s.error is not None),
            "accuracy": sum(v or 0.0 for v in scored) / len(scored) if scored else None,
            "indices": [s.index for s in rows],
        }
    return out


def make_plan(
    rows: list[dict[str, Any]],
    parallelism: int = 4,
    build: Callable[[Mapping[str, Any]], InferenceRequest] | None = None,
    tasks: int = 1,
) -> EvalPlan:
    async def source() -> list[dict[str, Any]]:
        return rows

    def default_build(row: Mapping[str, Any]) -> InferenceRequest:
        return InferenceRequest(kind="completion", prompt=row["q"])

    task_plans = [
        TaskPlan(name=f"t{k}", rows=source, metrics=[ExactMatch()], build_request=build or default_build)
        for k in range(tasks)
    ]
    return EvalPlan(tasks=task_plans, summarize=summarize, model=ENDPOINT, parallelism=parallelism)


def plan_compiler(
    build: Callable[[Mapping[str, Any]], InferenceRequest] | None = None,
) -> Callable[[JobRecord], Any]:
    """compile_job for tests: the spec says how many rows and how parallel."""

    async def compile_job(job: JobRecord) -> EvalPlan:
        if job.spec.get("unknown_model"):
            raise NotFoundError(
                "Model 'nope' not found. Use 'client.models.list()' to list available Models."
            )
        rows = make_rows(job.spec["rows"], job.spec.get("wrong_every", 0))
        return make_plan(rows, job.spec.get("parallelism", 4), build, job.spec.get("tasks", 1))

    return compile_job


def new_job(**spec: Any) -> JobRecord:
    return JobRecord(id=new_job_id(), front="nemo", spec=spec)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    s = CountingStore(f"sqlite:///{tmp_path / 'evalstack.db'}")
    await s.open()
    yield s
    await s.close()


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def collect(plan: EvalPlan, pool: FakePool, **kwargs: Any) -> tuple[list[SampleRecord], RunProgress]:
    samples: list[SampleRecord] = []

    async def sink(sample: SampleRecord) -> None:
        samples.append(sample)

    progress = await run_plan(plan, pool, sink=sink, **kwargs)
    return samples, progress


# ---- run_plan ------------------------------------------------------------------------------------


@pytest.mark.parametrize("parallelism", [1, 8, 32])
async def test_concurrency_limit_is_honoured_exactly_and_kept_full(parallelism: int) -> None:
    client = FakeClient(latency=0.01)
    pool = FakePool(client)
    rows = make_rows(max(6 * parallelism + 5, 60))
    started = time.monotonic()
    samples, progress = await collect(make_plan(rows, parallelism), pool)
    wall = time.monotonic() - started

    assert len(samples) == len(rows) == progress.samples_processed
    assert client.max_in_flight == parallelism
    # Every request after the ramp-up started while all other workers were still busy: the pool
    # never waited for rows while work remained.
    assert all(n == parallelism for n in client.in_flight_at_start[parallelism:])
    assert client.busy_time / (wall * parallelism) > 0.5
    assert pool.requests[0]["max_connections"] == parallelism


async def test_no_more_workers_busy_than_rows() -> None:
    client = FakeClient(latency=0.002)
    samples, _ = await collect(make_plan(make_rows(5), parallelism=64), FakePool(client))
    assert len(samples) == 5
    assert client.max_in_flight == 5


async def test_samples_are_scored_and_tasks_reported() -> None:
    progress_calls: list[dict[str, Any]] = []
    samples, progress = await collect(
        make_plan(make_rows(20, wrong_every=4), parallelism=3, tasks=2),
        FakePool(FakeClient()),
        on_progress=lambda p: progress_calls.append(p.snapshot()),
    )
    assert len(samples) == 40
    by_index = {(s.task, s.index): s for s in samples}
    assert by_index[("t0", 4)].scores == {"exact": {"score": 0.0}}
    assert by_index[("t1", 5)].scores == {"exact": {"score": 1.0}}
    assert by_index[("t1", 5)].output_text == "A5"
    assert progress.task_status == {"t0": "completed", "t1": "completed"}
    assert progress_calls[-1]["samples_processed"] == 40
    assert progress_calls[-1]["samples_total"] == 40


async def test_skip_leaves_recorded_samples_out() -> None:
    client = FakeClient()
    skip = {"t0": set(range(0, 10, 2))}
    samples, progress = await collect(make_plan(make_rows(10)), FakePool(client), skip=skip)
    assert sorted(s.index for s in samples) == [1, 3, 5, 7, 9]
    assert sorted(client.asked) == [1, 3, 5, 7, 9]
    assert progress.samples_processed == 10
    assert progress.samples_total == 10


async def test_infrastructure_errors_are_recorded_apart_from_wrong_answers() -> None:
    client = FakeClient(fail=lambda n: n % 5 == 0)
    samples, progress = await collect(make_plan(make_rows(20, wrong_every=3)), FakePool(client))
    failed = [s for s in samples if s.error is not None]
    assert sorted(s.index for s in failed) == [0, 5, 10, 15]
    assert all("endpoint down" in (s.error or "") and s.scores == {} for s in failed)
    assert all(s.extra["error_kind"] == "inference" for s in failed)
    assert progress.errors == 4
    assert progress.invalid == 0
    wrong = [s for s in samples if s.error is None and s.scores["exact"]["score"] == 0.0]
    assert sorted(s.index for s in wrong) == [3, 6, 9, 12, 18]


async def test_a_row_that_cannot_be_rendered_fails_only_its_sample() -> None:
    def build(row: Mapping[str, Any]) -> InferenceRequest:
        if row["q"] == "Q3":
            raise InvalidInputError("template failed: 'item.question' is undefined")
        return InferenceRequest(kind="completion", prompt=row["q"])

    rows = make_rows(8)
    del rows[6]["expected"]  # and one row the metric cannot score
    client = FakeClient()
    samples, progress = await collect(make_plan(rows, build=build), FakePool(client))
    by_index = {s.index: s for s in samples}
    assert by_index[3].error == "template failed: 'item.question' is undefined"
    assert by_index[6].error == "row has no 'expected' column"
    assert by_index[3].extra["error_kind"] == by_index[6].extra["error_kind"] == "invalid"
    assert 3 not in client.asked
    assert progress.invalid == 2
    assert progress.errors == 0
    assert all(s.scores == {"exact": {"score": 1.0}} for i, s in by_index.items() if i not in (3, 6))


async def test_a_task_whose_rows_cannot_load_raises_with_its_name() -> None:
    async def broken() -> list[dict[str, Any]]:
        raise NotFoundError("Dataset 'missing' not found")

    plan = make_plan(make_rows(3), tasks=2)
    plan.tasks[0].rows = broken
    progress = RunProgress()
    with pytest.raises(NotFoundError, match="task 't0': Dataset 'missing' not found"):
        await collect(plan, FakePool(FakeClient()), progress=progress)
    assert progress.task_status["t0"] == "failed"


async def test_a_plan_that_runs_inference_without_a_model_is_refused() -> None:
    plan = make_plan(make_rows(3))
    plan.model = None
    with pytest.raises(EvalstackError) as info:
        await collect(plan, FakePool(FakeClient()))
    assert info.value.message == "the plan runs inference but names no model"


async def test_the_client_gets_the_plans_retries_timeout_and_connections() -> None:
    plan = make_plan(make_rows(3), parallelism=3)
    plan.max_retries, plan.request_timeout = 2, 42.0
    pool = FakePool(FakeClient())
    _, progress = await collect(plan, pool, max_outage=7.0)
    assert pool.requests == [{"endpoint": ENDPOINT, "max_retries": 2, "timeout": 42.0, "max_connections": 3}]
    assert progress.max_outage == 7.0 and progress.concurrency is None


async def test_given_rows_replace_the_tasks_rows_with_their_own_indices() -> None:
    rows = make_rows(10)
    client = FakeClient()
    samples, progress = await collect(
        make_plan(rows), FakePool(client), rows={"t0": [(5, rows[5]), (7, rows[7])]}
    )
    assert sorted(client.asked) == [5, 7]
    assert sorted(s.index for s in samples) == [5, 7] and progress.samples_total == 2


async def test_adaptive_concurrency_is_reported_in_the_progress() -> None:
    plan = make_plan(make_rows(6), parallelism=4)
    plan.adaptive_concurrency = True
    samples, progress = await collect(plan, FakePool(FakeClient()))
    assert len(samples) == 6
    assert isinstance(progress.concurrency, AdaptiveConcurrency)
    assert progress.snapshot()["concurrency"]["limit"] <= 4


async def test_progress_is_reported_once_more_at_the_end() -> None:
    seen: list[int] = []
    await collect(
        make_plan(make_rows(5)),
        FakePool(FakeClient()),
        on_progress=lambda p: seen.append(p.samples_processed),
        progress_interval=60,
    )
    assert seen == [5]


async def test_a_cancel_set_before_the_run_asks_nothing() -> None:
    cancel = asyncio.Event()
    cancel.set()
    client = FakeClient()
    samples, progress = await collect(make_plan(make_rows(5), tasks=2), FakePool(client), cancel=cancel)
    assert (samples, client.asked, progress.cancelled) == ([], [], True)
    assert progress.task_status == {"t0": "pending", "t1": "pending"}


async def test_cancel_abandons_in_flight_requests_promptly() -> None:
    client = FakeClient(hang=lambda n: n >= 10)
    cancel = asyncio.Event()
    samples: list[SampleRecord] = []

    async def sink(sample: SampleRecord) -> None:
        samples.append(sample)

    async def run_and_count() -> tuple[RunProgress, int]:
        progress = await run_plan(make_plan(make_rows(50), 4), FakePool(client), sink=sink, cancel=cancel)
        return progress, client.cancelled  # counted as run_plan returns: nothing is left running

    run = asyncio.create_task(run_and_count())
    await wait_until(lambda: client.in_flight == 4 and len(samples) == 10)
    started = time.monotonic()
    cancel.set()
    progress, cancelled_at_return = await asyncio.wait_for(run, 2)
    assert time.monotonic() - started < 0.5
    assert progress.cancelled
    assert progress.task_status == {"t0": "cancelled"}
    assert cancelled_at_return == client.cancelled == 4
    assert len(samples) == 10


# ---- JobWorker -------------------------------------------------------------------------------------


async def test_job_runs_to_completion_with_result_from_stored_samples(store: CountingStore) -> None:
    worker = JobWorker(store, FakePool(FakeClient(latency=0.001)), plan_compiler(), batch_size=16)
    await worker.start()
    job = await worker.submit(new_job(rows=100, wrong_every=4, parallelism=8))
    assert job.status == "created"
    done = await worker.wait(job.id, timeout=10)
    await worker.stop()

    assert done.status == "completed", done.error
    stored = await store.read_samples(job.id)
    assert len(stored) == 100
    expected = summarize({"t0": stored})
    assert done.result == expected
    assert done.result["t0"]["accuracy"] == pytest.approx(0.75)
    # written in batches, the last partial batch included
    assert sum(store.batches) == 100
    assert 1 < len(store.batches) <= 100 // 16 + 1
    assert done.progress["samples_processed"] == 100
    assert done.progress["samples_total"] == 100
    assert done.progress["task_status"] == {"t0": "completed"}
    assert done.progress["errors"] == 0


async def test_samples_are_flushed_on_cancel_and_job_cancelled_promptly(store: CountingStore) -> None:
    client = FakeClient(hang=lambda n: n >= 20)
    worker = JobWorker(store, FakePool(client), plan_compiler(), batch_size=1000, flush_interval=60)
    await worker.start()
    job = await worker.submit(new_job(rows=60, parallelism=4))
    await wait_until(lambda: client.answered == 20 and client.in_flight == 4)
    assert await store.count_samples(job.id) == 0  # still buffered: no size or time flush yet

    started = time.monotonic()
    cancelled = await worker.cancel(job.id)
    assert time.monotonic() - started < 1.0
    assert cancelled.status == "cancelled"
    assert client.cancelled == 4
    assert sorted(s.index for s in await store.read_samples(job.id)) == list(range(20))
    await worker.stop()


async def test_infrastructure_failures_are_counted_and_all_failed_fails_the_job(
    store: CountingStore,
) -> None:
    client = FakeClient(fail=lambda n: n % 4 == 1)
    worker = JobWorker(store, FakePool(client), plan_compiler())
    await worker.start()
    some = await worker.wait((await worker.submit(new_job(rows=20))).id, timeout=10)
    assert some.status == "completed"
    assert some.progress["errors"] == 5
    assert some.result is not None and some.result["t0"]["errors"] == 5

    client.fail = lambda n: True
    everything = await worker.wait((await worker.submit(new_job(rows=6))).id, timeout=10)
    await worker.stop()
    assert everything.status == "failed"
    assert everything.error == "all 6 samples failed: endpoint down (503) for Q0"
    assert everything.progress["errors"] == 6


async def test_a_compile_error_fails_the_job_with_its_reason(store: CountingStore) -> None:
    worker = JobWorker(store, FakePool(FakeClient()), plan_compiler())
    await worker.start()
    job = await worker.wait((await worker.submit(new_job(rows=3, unknown_model=True))).id, timeout=5)
    await worker.stop()
    assert job.status == "failed"
    assert job.error is not None and job.error.startswith("Model 'nope' not found")


async def test_resume_skips_recorded_samples_and_gives_the_same_result(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'evalstack.db'}"
    first_store = Store(url)
    await first_store.open()
    slow = FakeClient(hang=lambda n: n >= 30)
    first = JobWorker(first_store, FakePool(slow), plan_compiler(), batch_size=8)
    await first.start()
    job = await first.submit(new_job(rows=80, wrong_every=3, parallelism=4))
    await wait_until(lambda: slow.answered == 30 and slow.in_flight == 4)
    await first.stop()  # like a shutdown: what finished is flushed, the job stays running
    await first_store.close()

    second_store = Store(url)
    await second_store.open()
    interrupted = await second_store.get_job(job.id)
    assert interrupted is not None and interrupted.status == "running"
    assert await second_store.count_samples(job.id) == 30
    fresh = FakeClient()
    second = JobWorker(second_store, FakePool(fresh), plan_compiler())
    await second.start()
    resumed = await second.wait(job.id, timeout=10)
    assert resumed.status == "completed", resumed.error
    assert sorted(fresh.asked) == list(range(30, 80))

    reference = await second.wait((await second.submit(new_job(rows=80, wrong_every=3))).id, timeout=10)
    await second.stop()
    await second_store.close()
    assert resumed.result == reference.result
    assert resumed.progress["samples_processed"] == 80


async def test_running_jobs_are_limited_and_the_rest_wait_pending(store: CountingStore) -> None:
    client = FakeClient(hang=lambda n: True)
    worker = JobWorker(store, FakePool(client), plan_compiler(), max_running_jobs=1)
    await worker.start()
    first = await worker.submit(new_job(rows=5, parallelism=2))
    second = await worker.submit(new_job(rows=5, parallelism=2))
    await wait_until(lambda: client.in_flight == 2)
    await asyncio.sleep(0.05)
    assert (await worker.get(first.id)).status == "running"
    assert (await worker.get(second.id)).status == "pending"

    assert (await worker.cancel(second.id)).status == "cancelled"
    assert (await worker.cancel(first.id)).status == "cancelled"
    await worker.stop()
    assert client.in_flight == 0


async def test_a_waiting_job_cancelled_through_the_store_never_runs(store: CountingStore) -> None:
    # as when another server sharing the database cancels it while it waits for this worker's slot
    client = FakeClient(hang=lambda n: True)
    worker = JobWorker(store, FakePool(client), plan_compiler(), max_running_jobs=1)
    await worker.start()
    first = await worker.submit(new_job(rows=2, parallelism=2))
    second = await worker.submit(new_job(rows=3, parallelism=2))
    await wait_until(lambda: client.in_flight == 2)
    await store.update_job(second.id, status="cancelling")
    client.release.set()
    assert (await worker.wait(first.id, timeout=5)).status == "completed"
    assert (await worker.wait(second.id, timeout=5)).status == "cancelled"
    await worker.stop()
    assert len(client.asked) == 2 and await store.read_samples(second.id) == []


async def test_a_waiting_job_cancelled_through_the_store_ends_cancelled_when_its_turn_comes(
    store: CountingStore,
) -> None:
    # Admitted (pending) and waiting for the only slot when another server cancels it. The store scan
    # that adopts jobs (monitor_interval) would also settle it; here only its turn can.
    client = FakeClient(hang=lambda n: True)
    worker = JobWorker(store, FakePool(client), plan_compiler(), max_running_jobs=1, monitor_interval=600)
    await worker.start()
    first = await worker.submit(new_job(rows=2, parallelism=2))
    second = await worker.submit(new_job(rows=3, parallelism=2))
    await wait_until(lambda: client.in_flight == 2)
    for _ in range(500):
        if (await worker.get(second.id)).status == "pending":
            break
        await asyncio.sleep(0.01)
    assert (await worker.get(second.id)).status == "pending"
    await store.update_job(second.id, status="cancelling")
    client.release.set()
    assert (await worker.wait(first.id, timeout=5)).status == "completed"
    ended = await worker.wait(second.id, timeout=5)
    await worker.stop()
    assert ended.status == "cancelled" and len(client.asked) == 2


async def test_start_finishes_interrupted_cancels(store: CountingStore) -> None:
    job = await store.create_job(new_job(rows=3))
    await store.update_job(job.id, status="cancelling")
    worker = JobWorker(store, FakePool(FakeClient()), plan_compiler())
    await worker.start()
    assert (await worker.get(job.id)).status == "cancelled"
    await worker.stop()


async def test_progress_is_kept_current_while_running(store: CountingStore) -> None:
    client = FakeClient(hang=lambda n: n >= 12)
    seen: list[tuple[str, dict[str, Any]]] = []
    worker = JobWorker(store, FakePool(client), plan_compiler(), progress_interval=0.01)
    worker.add_progress_listener(lambda job_id, progress: seen.append((job_id, progress)))
    await worker.start()
    job = await worker.submit(new_job(rows=30, parallelism=3))
    await wait_until(lambda: client.answered == 12 and client.in_flight == 3)
    await asyncio.sleep(0.05)
    client.release.set()  # nudge one more update after the pause
    record = await worker.wait(job.id, timeout=5)
    await worker.stop()
    assert record.status == "completed"
    assert seen and all(job_id == job.id for job_id, _ in seen)
    assert any(p["samples_processed"] >= 12 and p["task_status"]["t0"] == "running" for _, p in seen)
    assert seen[-1][1]["samples_processed"] == 30


async def test_run_inline_persists_nothing(store: CountingStore) -> None:
    worker = JobWorker(store, FakePool(FakeClient()), plan_compiler())
    results = await worker.run_inline(make_plan(make_rows(7), parallelism=3, tasks=2))
    assert [s.index for s in results["t1"]] == list(range(7))
    assert all(s.scores["exact"]["score"] == 1.0 for s in results["t0"])
    assert store.batches == []
    assert await store.list_jobs() == []


async def test_unknown_job_is_not_found(store: CountingStore) -> None:
    worker = JobWorker(store, FakePool(FakeClient()), plan_compiler())
    with pytest.raises(NotFoundError, match="Job eval-nope not found"):
        await worker.cancel("eval-nope")


async def test_run_slots_go_in_the_order_places_were_taken() -> None:
    slots = RunSlots(1)
    first, second, third, fourth = (slots.take_place() for _ in range(4))
    assert first.done() and not (second.done() or third.done() or fourth.done())
    slots.give_back(third)  # left the queue before its turn: skipped
    slots.give_back(first)
    assert second.done() and third.cancelled() and not fourth.done()
    slots.give_back(second)
    assert fourth.done()
    slots.give_back(fourth)
    fifth, sixth = slots.take_place(), slots.take_place()
    assert fifth.done() and not sixth.done()  # one slot, free again, and only one


# ---- how a job ends when something unexpected fails ---------------------------------------------


async def finished_job(
    store: CountingStore, compile_job: Callable[[JobRecord], Any], **kwargs: Any
) -> JobRecord:
    """Run one job of 3 rows (with the spec's ``api_key``) to its end and return its record."""
    worker = JobWorker(store, kwargs.pop("pool", FakePool(FakeClient())), compile_job, **kwargs)
    await worker.start()
    job = await worker.wait(
        (await worker.submit(new_job(rows=3, target={"api_key": "sk-SECRET"}))).id, timeout=5
    )
    await worker.stop()
    return job


def logged(caplog: pytest.LogCaptureFixture, message: str) -> bool:
    """A record with this message and the exception's traceback."""
    return any(r.getMessage() == message and r.exc_info is not None for r in caplog.records)


async def test_an_unexpected_compile_error_fails_the_job_and_is_logged(
    store: CountingStore, caplog: pytest.LogCaptureFixture
) -> None:
    async def compile_job(job: JobRecord) -> EvalPlan:
        raise RuntimeError("broken compiler")

    job = await finished_job(store, compile_job)
    assert (job.status, job.error) == ("failed", "could not compile the job: RuntimeError: broken compiler")
    assert logged(caplog, f"compiling job {job.id} failed")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (EvalstackError("upstream refused sk-SECRET"), "upstream refused *****"),
        (RuntimeError("boom"), "RuntimeError: boom"),
    ],
)
async def test_an_executor_error_fails_the_job_with_its_reason_and_no_secret(
    store: CountingStore, caplog: pytest.LogCaptureFixture, error: Exception, reason: str
) -> None:
    async def executor(plan: EvalPlan, clients: Any, **kwargs: Any) -> RunProgress:
        await kwargs["sink"](SampleRecord(task="t0", index=0, item={}, output_text="A0", scores={}))
        raise error

    job = await finished_job(store, plan_compiler(), executor=executor)
    assert (job.status, job.error) == ("failed", reason)
    assert [s.index for s in await store.read_samples(job.id)] == [0]  # what was recorded is kept
    assert logged(caplog, f"job {job.id} failed") == isinstance(error, RuntimeError)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (EvalstackError("no metric"), "could not aggregate the results: no metric"),
        (ValueError("bad value"), "could not aggregate the results: ValueError: bad value"),
    ],
)
async def test_an_aggregation_error_fails_the_job_keeping_its_samples(
    store: CountingStore, caplog: pytest.LogCaptureFixture, error: Exception, reason: str
) -> None:
    async def compile_job(job: JobRecord) -> EvalPlan:
        plan = make_plan(make_rows(3))

        def summarize(samples: Mapping[str, Sequence[SampleRecord]]) -> dict[str, Any]:
            raise error

        plan.summarize = summarize
        return plan

    job = await finished_job(store, compile_job)
    assert (job.status, job.error) == ("failed", reason)
    assert job.progress is not None and job.progress["samples_processed"] == 3
    assert len(await store.read_samples(job.id)) == 3
    assert logged(caplog, f"aggregating job {job.id} failed") == isinstance(error, ValueError)


async def test_a_secret_of_the_job_is_masked_in_failed_samples(store: CountingStore) -> None:
    class LeakyClient(FakeClient):
        async def generate(self, request: InferenceRequest) -> InferenceResult:
            raise InferenceError("key sk-SECRET was refused")

    job = await finished_job(store, plan_compiler(), pool=FakePool(LeakyClient()))
    samples = await store.read_samples(job.id)
    assert [s.error for s in samples] == ["key ***** was refused"] * 3
    assert job.error is not None and "sk-SECRET" not in job.error and "*****" in job.error


# ---- what the worker hands the executor and records at the end ------------------------------------


class SlowProgressStore(CountingStore):
    """The real store, whose first progress-only write lands ``delay`` seconds late."""

    def __init__(self, url: str, delay: float = 0.3) -> None:
        super().__init__(url)
        self.delay = delay
        self.slowed = False

    async def update_job(self, job_id: str, **changes: Any) -> JobRecord:
        if set(changes) == {"progress"} and not self.slowed:
            self.slowed = True
            await asyncio.sleep(self.delay)
        return await super().update_job(job_id, **changes)


@pytest.fixture
async def slow_progress_store(tmp_path: Path) -> AsyncIterator[SlowProgressStore]:
    s = SlowProgressStore(f"sqlite:///{tmp_path / 'evalstack.db'}")
    await s.open()
    yield s
    await s.close()


def failing_summarize(error: Exception) -> Callable[[JobRecord], Any]:
    """compile_job whose plan's aggregation raises ``error``."""

    async def compile_job(job: JobRecord) -> EvalPlan:
        plan = await plan_compiler()(job)

        def summarize(samples: Mapping[str, Sequence[SampleRecord]]) -> dict[str, Any]:
            raise error

        plan.summarize = summarize
        return plan

    return compile_job


async def broken_second_task(job: JobRecord) -> EvalPlan:
    """compile_job whose second task's rows cannot load, after the first task ran."""
    plan = await plan_compiler()(job)

    async def broken() -> list[dict[str, Any]]:
        raise NotFoundError("Dataset 'missing' not found")

    plan.tasks[1].rows = broken
    return plan


@pytest.mark.parametrize(
    ("compile_job", "spec", "status"),
    [
        (plan_compiler(), {"rows": 3}, "completed"),
        (plan_compiler(), {"rows": 3, "fail_all": True}, "failed"),
        (failing_summarize(EvalstackError("no metric")), {"rows": 3}, "failed"),
        (failing_summarize(ValueError("bad value")), {"rows": 3}, "failed"),
        (broken_second_task, {"rows": 3, "tasks": 2}, "failed"),
    ],
    ids=["completed", "all-failed", "aggregation-error", "aggregation-crash", "executor-error"],
)
async def test_a_finished_job_shows_the_progress_it_reached_not_an_older_write(
    slow_progress_store: SlowProgressStore,
    compile_job: Callable[[JobRecord], Any],
    spec: dict[str, Any],
    status: str,
) -> None:
    # The first progress write is still in flight when the run ends, so the end-of-run report is
    # skipped: the job's final record must carry the last progress, and the late write may not
    # overwrite it.
    client = FakeClient(fail=lambda n: bool(spec.get("fail_all")))
    worker = JobWorker(slow_progress_store, FakePool(client), compile_job, progress_interval=0)
    await worker.start()
    job = await worker.submit(new_job(**spec))
    await worker.wait(job.id, timeout=5)
    await worker.stop()  # every progress write has landed
    record = await worker.get(job.id)
    assert slow_progress_store.slowed
    assert record.status == status, record.error
    assert record.progress["samples_processed"] == 3


async def test_a_cancelled_job_shows_the_progress_it_reached(slow_progress_store: SlowProgressStore) -> None:
    client = FakeClient(hang=lambda n: n >= 2)
    worker = JobWorker(
        slow_progress_store, FakePool(client), plan_compiler(), progress_interval=0, cancel_timeout=5
    )
    await worker.start()
    job = await worker.submit(new_job(rows=6, parallelism=3))
    await wait_until(lambda: client.answered == 2 and client.in_flight == 3)
    assert (await worker.cancel(job.id)).status == "cancelled"
    await worker.stop()
    record = await worker.get(job.id)
    assert record.progress["samples_processed"] == 2
    assert record.progress["task_status"] == {"t0": "cancelled"}


async def test_a_job_whose_samples_cannot_be_recorded_fails_and_keeps_the_recorded_ones(
    tmp_path: Path,
) -> None:
    class DiskFullAtTheEnd(CountingStore):
        async def add_samples(self, job_id: str, samples: Sequence[SampleRecord]) -> None:
            if any(s.index == 2 for s in samples):
                raise OSError("disk full")
            await super().add_samples(job_id, samples)

    store = DiskFullAtTheEnd(f"sqlite:///{tmp_path / 'evalstack.db'}")
    await store.open()
    # one request at a time: samples 0 and 1 fill a batch and are written; sample 2 waits for the
    # writer's last flush, which fails
    client = FakeClient(latency=0.1)
    worker = JobWorker(store, FakePool(client), plan_compiler(), batch_size=2, flush_interval=60)
    await worker.start()
    job = await worker.wait((await worker.submit(new_job(rows=3, parallelism=1))).id, timeout=5)
    await worker.stop()
    assert (job.status, job.error) == ("failed", "could not record samples: disk full")
    assert [s.index for s in await store.read_samples(job.id)] == [0, 1]
    await store.close()


async def test_samples_are_written_within_the_flush_interval_and_not_sooner(store: CountingStore) -> None:
    client = FakeClient(hang=lambda n: n >= 5)
    quick = JobWorker(store, FakePool(client), plan_compiler(), batch_size=1000, flush_interval=0.02)
    await quick.start()
    job = await quick.submit(new_job(rows=8, parallelism=3))
    await wait_until(lambda: client.answered == 5)
    await wait_until(lambda: sum(store.batches) == 5)  # written while the job still runs
    assert (await quick.get(job.id)).status == "running"
    await quick.cancel(job.id)
    await quick.stop()

    store.batches.clear()
    client = FakeClient(hang=lambda n: n >= 5)
    slow = JobWorker(store, FakePool(client), plan_compiler(), batch_size=1000, flush_interval=60)
    await slow.start()
    job = await slow.submit(new_job(rows=8, parallelism=3))
    await wait_until(lambda: client.answered == 5)
    await asyncio.sleep(0.5)  # longer than the writer's own default interval
    assert store.batches == []
    await slow.cancel(job.id)
    await slow.stop()
    assert store.batches == [5]


@pytest.mark.parametrize(
    ("plan_asks", "every_job", "gets_cache"),
    [(False, False, False), (True, False, True), (False, True, True)],
)
async def test_the_response_cache_reaches_the_executor_for_the_jobs_that_use_it(
    store: CountingStore, plan_asks: bool, every_job: bool, gets_cache: bool
) -> None:
    cache = ResponseCache(store)
    handed: list[Any] = []

    async def executor(plan: EvalPlan, clients: Any, **kwargs: Any) -> RunProgress:
        handed.append(kwargs["cache"])
        return kwargs["progress"]

    async def compile_job(job: JobRecord) -> EvalPlan:
        plan = await plan_compiler()(job)
        plan.cache = plan_asks
        return plan

    worker = JobWorker(
        store,
        FakePool(FakeClient()),
        compile_job,
        executor=executor,
        response_cache=cache,
        cache_every_job=every_job,
    )
    await worker.start()
    await worker.wait((await worker.submit(new_job(rows=2))).id, timeout=5)
    await worker.stop()
    assert handed == [cache if gets_cache else None]


@pytest.mark.parametrize("worker_wide", [False, True])
async def test_adaptive_concurrency_of_the_worker_applies_to_every_job(
    store: CountingStore, worker_wide: bool
) -> None:
    worker = JobWorker(store, FakePool(FakeClient()), plan_compiler(), adaptive_concurrency=worker_wide)
    await worker.start()
    job = await worker.wait((await worker.submit(new_job(rows=6, parallelism=4))).id, timeout=5)
    await worker.stop()
    assert job.status == "completed"
    assert ("concurrency" in job.progress) is worker_wide
    if worker_wide:
        assert 1 <= job.progress["concurrency"]["limit"] <= 4


async def test_a_plan_handed_to_submit_runs_without_compiling_the_spec_again(store: CountingStore) -> None:
    async def compile_job(job: JobRecord) -> EvalPlan:
        raise AssertionError("compiled again")

    worker = JobWorker(store, FakePool(FakeClient()), compile_job)
    await worker.start()
    job = await worker.submit(new_job(rows=4), plan=make_plan(make_rows(4)))
    done = await worker.wait(job.id, timeout=5)
    await worker.stop()
    assert done.status == "completed", done.error
    assert done.result is not None and done.result["t0"]["accuracy"] == 1.0
