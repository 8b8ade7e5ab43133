"""Jobs whose model server goes away: they wait, say so, fail cleanly after max_outage, and resume.

The job worker runs real plans through the real client pool (one circuit breaker per endpoint)
against our fake model server, which is stopped mid-job and restarted on the same port.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import pytest

from evalstack.engine.compile import job_max_outage
from evalstack.engine.plan import EvalPlan, SampleOutput, TaskPlan
from evalstack.engine.runner import JobWorker
from evalstack.errors import InvalidInputError
from evalstack.inference.base import InferenceRequest, ModelEndpoint
from evalstack.inference.breaker import BreakerSettings
from evalstack.inference.clients import ModelClientPool
from evalstack.store.records import JobRecord, SampleRecord, new_job_id
from evalstack.store.repository import Store
from tests.fakes.model_server import FakeModelServer, prompt_of

FAST = BreakerSettings(failure_threshold=5, failure_window=1.0, probe_interval=0.05, probe_interval_max=0.25)


def answer(prompt: str) -> str:
    """Right for even N, wrong for odd N."""
    n = int(prompt.removeprefix("Q"))
    return f"A{n}" if n % 2 == 0 else "?"


class ExactMatch:
    name = "exact"

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        return {"score": 1.0 if output.text == item["expected"] else 0.0}


def summarize(samples: Mapping[str, Sequence[SampleRecord]]) -> dict[str, Any]:
    return {
        task: {
            "n": len(rows),
            "errors": sum(s.error is not None for s in rows),
            "accuracy": sum(s.scores["exact"]["score"] for s in rows if s.error is None) / len(rows),
        }
        for task, rows in samples.items()
    }


def compiler(model: FakeModelServer) -> Any:
    """compile_job for these tests.

    ``spec = {"rows": n, "tasks": k, "parallelism": p, "max_outage"?: s, "pad"?: text}``.
    """
    endpoint = ModelEndpoint(kind="openai", model=model.model_id, base_url=model.base_url)

    async def compile_job(job: JobRecord) -> EvalPlan:
        pad = {"pad": job.spec["pad"]} if "pad" in job.spec else {}  # a longer row, a larger sample
        rows = [{"q": f"Q{i}", "expected": f"A{i}", **pad} for i in range(job.spec["rows"])]

        async def source() -> list[dict[str, Any]]:
            return rows

        def build(row: Mapping[str, Any]) -> InferenceRequest:
            return InferenceRequest(kind="completion", prompt=row["q"])

        tasks = [
            TaskPlan(name=f"t{k}", rows=source, metrics=[ExactMatch()], build_request=build)
            for k in range(job.spec.get("tasks", 1))
        ]
        return EvalPlan(
            tasks=tasks,
            summarize=summarize,
            model=endpoint,
            parallelism=job.spec.get("parallelism", 8),
            max_retries=2,
            max_outage=job.spec.get("max_outage"),
        )

    return compile_job


def view(samples: list[SampleRecord]) -> list[tuple[Any, ...]]:
    return sorted((s.task, s.index, s.output_text, s.scores, s.error) for s in samples)


@pytest.fixture
def fake() -> Iterator[FakeModelServer]:
    with FakeModelServer(answer=answer, latency=0.01) as server:
        yield server


@pytest.fixture
async def pool() -> AsyncIterator[ModelClientPool]:
    clients = ModelClientPool(breaker_settings=FAST)
    yield clients
    await clients.aclose()


def worker_for(store: Store, pool: ModelClientPool, fake: FakeModelServer, **kwargs: Any) -> JobWorker:
    return JobWorker(store, pool, compiler(fake), progress_interval=0.05, **kwargs)


async def submit(worker: JobWorker, **spec: Any) -> str:
    return (await worker.submit(JobRecord(id=new_job_id(), front="nemo", spec=spec))).id


async def wait_for_requests(fake: FakeModelServer, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(fake.requests) < count:
        assert time.monotonic() < deadline, f"the fake model got fewer than {count} requests"
        await asyncio.sleep(0.005)


async def test_a_brief_outage_completes_like_an_uninterrupted_run_with_no_errors(
    store: Store, pool: ModelClientPool, fake: FakeModelServer
) -> None:
    worker = worker_for(store, pool, fake)
    snapshots: list[dict[str, Any]] = []
    worker.add_progress_listener(lambda _, progress: snapshots.append(progress))
    await worker.start()
    try:
        job_id = await submit(worker, rows=150, parallelism=8)
        await wait_for_requests(fake, 30)
        await asyncio.to_thread(fake.go_down)
        await asyncio.sleep(1.0)
        during = await worker.get(job_id)
        await asyncio.to_thread(fake.come_back)
        job = await worker.wait(job_id, timeout=30)
        clean_id = await submit(worker, rows=150, parallelism=8)
        clean = await worker.wait(clean_id, timeout=30)
    finally:
        await worker.stop()

    assert during.status == "running"
    outage = during.progress.get("outage")
    assert outage is not None, during.progress
    assert outage["endpoint"] == fake.base_url and outage["max_outage_s"] == 900.0
    assert "connect" in outage["last_error"].lower() or "disconnected" in outage["last_error"].lower()
    assert any("outage" in s for s in snapshots) and "outage" not in snapshots[-1]

    assert job.status == "completed", job.error
    assert job.progress["errors"] == 0 and job.progress["task_status"] == {"t0": "completed"}
    assert job.result == clean.result
    assert job.result == {"t0": {"n": 150, "errors": 0, "accuracy": 0.5}}
    assert view(await store.read_samples(job_id)) == view(await store.read_samples(clean_id))


async def test_a_lasting_outage_fails_after_max_outage_keeping_samples_and_a_resume_finishes(
    store: Store, pool: ModelClientPool, fake: FakeModelServer
) -> None:
    worker = worker_for(store, pool, fake)
    await worker.start()
    try:
        job_id = await submit(worker, rows=120, parallelism=4, max_outage=1.5)
        await wait_for_requests(fake, 20)
        await asyncio.to_thread(fake.go_down)
        went_down = time.monotonic()
        failed = await worker.wait(job_id, timeout=15)
        failed_after = time.monotonic() - went_down
        kept = await store.read_samples(job_id)

        assert failed.status == "failed"
        assert 1.5 <= failed_after < 1.5 + 3.0, failed_after
        assert failed.error is not None
        assert fake.base_url in failed.error and "max_outage is 1.5s" in failed.error
        assert "resume" in failed.error
        assert failed.progress["task_status"] == {"t0": "failed"}
        assert 15 <= len(kept) < 120 and all(s.error is None for s in kept), "outage samples were recorded"

        await asyncio.to_thread(fake.come_back)
        fake.reset_stats()
        resumed = await worker.resume(job_id)
        assert resumed.status == "pending" and resumed.error is None
        done = await worker.wait(job_id, timeout=30)
        asked = [prompt_of(body) for body in fake.requests]
        clean_id = await submit(worker, rows=120, parallelism=4)
        clean = await worker.wait(clean_id, timeout=30)
    finally:
        await worker.stop()

    assert done.status == "completed", done.error
    assert sorted(asked) == sorted(f"Q{i}" for i in set(range(120)) - {s.index for s in kept})
    assert done.result == clean.result == {"t0": {"n": 120, "errors": 0, "accuracy": 0.5}}
    assert view(await store.read_samples(job_id)) == view(await store.read_samples(clean_id))


async def test_only_a_failed_or_cancelled_job_can_be_resumed(
    store: Store, pool: ModelClientPool, fake: FakeModelServer
) -> None:
    worker = worker_for(store, pool, fake)
    await worker.start()
    try:
        job_id = await submit(worker, rows=5)
        assert (await worker.wait(job_id, timeout=10)).status == "completed"
        with pytest.raises(Exception, match="only a failed or cancelled job can be resumed"):
            await worker.resume(job_id)
    finally:
        await worker.stop()


async def test_retry_runs_only_the_infrastructure_failures_again_and_keeps_the_finished_samples(
    store: Store, pool: ModelClientPool, fake: FakeModelServer
) -> None:
    worker = worker_for(store, pool, fake)
    await worker.start()
    try:
        fake.fail_next(6, status=500)  # parallelism 1, 3 attempts each: the first two samples fail
        job_id = await submit(worker, rows=30, parallelism=1)
        first = await worker.wait(job_id, timeout=30)
        before = {(s.task, s.index): s for s in await store.read_samples(job_id)}
        fake.reset_stats()
        retried = await worker.retry(job_id)
        done = await worker.wait(job_id, timeout=30)
        asked = [prompt_of(body) for body in fake.requests]
        with pytest.raises(Exception, match="no samples that failed on infrastructure"):
            await worker.retry(job_id)
    finally:
        await worker.stop()

    assert first.status == "completed", first.error
    assert first.result == {"t0": {"n": 30, "errors": 2, "accuracy": 14 / 30}}
    assert sorted(index for (_, index), s in before.items() if s.error is not None) == [0, 1]
    assert retried.status == "pending" and retried.result is None
    assert sorted(asked) == ["Q0", "Q1"], "only the failed samples may be asked again"
    assert done.status == "completed", done.error
    assert done.result == {"t0": {"n": 30, "errors": 0, "accuracy": 0.5}}
    after = {(s.task, s.index): s for s in await store.read_samples(job_id)}
    assert len(after) == 30
    assert all(after[key] == sample for key, sample in before.items() if sample.error is None)


async def test_only_a_finished_job_can_be_retried(
    store: Store, pool: ModelClientPool, fake: FakeModelServer
) -> None:
    fake.hang = True
    worker = worker_for(store, pool, fake)
    await worker.start()
    try:
        job_id = await submit(worker, rows=5)
        await wait_for_requests(fake, 1)
        with pytest.raises(Exception, match="retry it once it has finished"):
            await worker.retry(job_id)
        fake.hang = False
        assert (await worker.wait(job_id, timeout=10)).status == "completed"
    finally:
        await worker.stop()


async def test_a_cancel_during_an_outage_is_prompt_and_marks_every_unfinished_task_cancelled(
    store: Store, pool: ModelClientPool, fake: FakeModelServer
) -> None:
    worker = worker_for(store, pool, fake)
    await worker.start()
    try:
        job_id = await submit(worker, rows=200, tasks=2, parallelism=4)
        await wait_for_requests(fake, 20)
        await asyncio.to_thread(fake.go_down)
        await asyncio.sleep(0.8)
        started = time.monotonic()
        job = await worker.cancel(job_id)
        took = time.monotonic() - started
    finally:
        await worker.stop()
    assert job.status == "cancelled" and took < 2.0
    assert job.progress["task_status"] == {"t0": "cancelled", "t1": "cancelled"}
    assert job.progress["errors"] == 0


async def test_two_jobs_on_one_endpoint_wait_on_one_breaker(
    store: Store, pool: ModelClientPool, fake: FakeModelServer
) -> None:
    worker = worker_for(store, pool, fake)
    await worker.start()
    try:
        first = await submit(worker, rows=150, parallelism=8)
        second = await submit(worker, rows=150, parallelism=4)
        await wait_for_requests(fake, 30)
        await asyncio.to_thread(fake.go_down, gateway=True)
        await asyncio.sleep(1.5)
        before = fake.gateway_requests
        await asyncio.sleep(1.0)
        probes_in_a_second = fake.gateway_requests - before
        during = [await worker.get(first), await worker.get(second)]
        await asyncio.to_thread(fake.come_back)
        done = [await worker.wait(first, timeout=30), await worker.wait(second, timeout=30)]
    finally:
        await worker.stop()
    # One breaker probing every 0.25 s at most: four a second for both jobs and their twelve workers.
    assert probes_in_a_second <= 5, probes_in_a_second
    assert [j.progress["outage"]["endpoint"] for j in during] == [fake.base_url] * 2
    assert all("HTTP 502" in j.progress["outage"]["last_error"] for j in during)
    assert [j.status for j in done] == ["completed", "completed"]
    assert [j.progress["errors"] for j in done] == [0, 0]


@pytest.mark.parametrize(
    ("front", "spec", "expected"),
    [
        ("nemo", {"config": {"params": {"extra": {"max_outage": 30}}}}, 30.0),
        ("nemo", {"config": {"tasks": {"a": {"params": {"extra": {"max_outage": 5}}}, "b": {}}}}, 5.0),
        ("nemo", {"config": {"params": {}}, "max_outage": 12.5}, 12.5),
        ("nemo", {"config": {"type": "custom"}}, None),
        ("llama_stack", {"benchmark": {"metadata": {"max_outage": 60}}}, 60.0),
        (
            "llama_stack",
            {"benchmark": {"metadata": {"type": "custom", "params": {"extra": {"max_outage": 7}}}}},
            7.0,
        ),
        ("llama_stack", {"benchmark": {"metadata": {}}}, None),
    ],
)
def test_a_job_sets_its_max_outage_where_its_front_door_allows(
    front: str, spec: dict[str, Any], expected: float | None
) -> None:
    assert job_max_outage(JobRecord(id="j", front=front, spec=spec)) == expected


@pytest.mark.parametrize("value", [0, -1, "soon", True])
def test_a_bad_max_outage_says_what_is_accepted(value: Any) -> None:
    job = JobRecord(id="j", front="nemo", spec={"config": {"params": {"extra": {"max_outage": value}}}})
    with pytest.raises(
        InvalidInputError, match=r"params.extra.max_outage must be a number of seconds greater than 0"
    ):
        job_max_outage(job)
