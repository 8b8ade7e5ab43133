"""Adaptive concurrency (AIMD): backs off on 429, grows back, never exceeds the configured maximum;
the limiter admits exactly its limit."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from evalstack.engine.adaptive import AdaptiveConcurrency, ConcurrencyLimiter
from evalstack.engine.plan import EvalPlan, SampleOutput, TaskPlan
from evalstack.engine.runner import JobWorker, run_plan
from evalstack.inference.base import InferenceRequest, ModelEndpoint
from evalstack.inference.clients import ModelClientPool
from evalstack.store.records import JobRecord, SampleRecord, new_job_id
from evalstack.store.repository import Store
from tests.fakes.model_server import FakeModelServer

# ---- the limiter ---------------------------------------------------------------------------------


async def _hold(limiter: ConcurrencyLimiter, seen: list[int], delay: float = 0.005) -> None:
    async with limiter:
        seen.append(limiter.in_use)
        await asyncio.sleep(delay)


@pytest.mark.parametrize("limit", [1, 3, 16])
async def test_the_limiter_admits_exactly_its_limit(limit: int) -> None:
    limiter = ConcurrencyLimiter(limit)
    seen: list[int] = []
    await asyncio.gather(*(_hold(limiter, seen) for _ in range(5 * limit)))
    assert max(seen) == limit
    assert limiter.in_use == 0


async def test_a_lowered_limit_admits_nothing_new_until_enough_finished() -> None:
    limiter = ConcurrencyLimiter(8)
    release = asyncio.Event()
    seen: list[int] = []

    async def first() -> None:
        async with limiter:
            await release.wait()

    holders = [asyncio.create_task(first()) for _ in range(8)]
    await asyncio.sleep(0)
    assert limiter.in_use == 8
    limiter.set_limit(2)
    later = [asyncio.create_task(_hold(limiter, seen)) for _ in range(10)]
    await asyncio.sleep(0.01)
    assert seen == []  # 8 in use, limit 2: nobody new gets in
    release.set()
    await asyncio.gather(*holders, *later)
    assert len(seen) == 10 and max(seen) <= 2


async def test_a_raised_limit_admits_waiters_at_once() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()
    limiter.set_limit(2)
    await asyncio.wait_for(waiter, 1)
    assert limiter.in_use == 2


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    limiter = ConcurrencyLimiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    limiter.release()
    assert limiter.in_use == 0
    await asyncio.wait_for(limiter.acquire(), 1)
    assert limiter.in_use == 1


# ---- the AIMD controller -------------------------------------------------------------------------


def test_a_429_halves_the_limit_and_a_burst_counts_once() -> None:
    control = AdaptiveConcurrency(64)
    for _ in range(20):  # one burst: every in-flight request got a 429
        control.on_overload(429)
    assert control.limit == 32
    assert [entry[1:] for entry in control.history] == [[64, "start"], [32, "overload (429)"]]
    for _ in range(64):  # once the requests in flight at the first 429 are back, a 429 counts again
        control.on_failure()
    control.on_overload(429)
    assert control.limit == 16


def test_the_limit_grows_back_one_per_round_trip_up_to_the_maximum() -> None:
    control = AdaptiveConcurrency(10, initial=10)
    control.on_overload(429)
    assert control.limit == 5
    for _ in range(1000):
        control.on_success(0.01)
        assert control.limit <= 10
    assert control.limit == 10
    increases = [entry for entry in control.history if entry[2] == "increase"]
    assert [entry[1] for entry in increases] == [6, 7, 8, 9, 10]


def test_rising_latency_backs_off_and_the_floor_is_the_minimum() -> None:
    control = AdaptiveConcurrency(40, minimum=4)
    for _ in range(50):
        control.on_success(0.010)
    assert control.limit == 40
    lowest = control.limit
    for _ in range(200):
        control.on_success(0.200)  # twenty times slower
        lowest = min(lowest, control.limit)
    assert lowest < 40
    assert any(entry[2] == "latency" for entry in control.history)
    for _ in range(50):
        control.on_overload(429)
        for _ in range(control.limit):
            control.on_failure()
    assert control.limit == 4


def test_initial_limit_is_clamped_to_the_configured_range() -> None:
    assert AdaptiveConcurrency(8, initial=100).limit == 8
    assert AdaptiveConcurrency(8, minimum=3, initial=1).limit == 3
    with pytest.raises(ValueError):
        AdaptiveConcurrency(8, decrease=1.5)


# ---- through the runner, against a real HTTP server ----------------------------------------------


class _Exact:
    name = "exact"

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        return {"exact": 1.0 if output.text == item["q"] else 0.0}


def _plan(server: FakeModelServer, rows: int, parallelism: int, adaptive: bool) -> EvalPlan:
    data = [{"q": f"Q{n}"} for n in range(rows)]

    async def load() -> list[dict[str, Any]]:
        return data

    def build(row: Mapping[str, Any]) -> InferenceRequest:
        return InferenceRequest(kind="chat", messages=[{"role": "user", "content": row["q"]}])

    task = TaskPlan(name="qa", rows=load, metrics=[_Exact()], build_request=build)
    endpoint = ModelEndpoint(kind="openai", model="fake", base_url=server.base_url)
    return EvalPlan(
        tasks=[task],
        summarize=lambda s: {},
        model=endpoint,
        parallelism=parallelism,
        max_retries=8,
        request_timeout=10,
        adaptive_concurrency=adaptive,
    )


async def test_the_runner_backs_off_on_429_grows_back_and_records_the_history() -> None:
    with FakeModelServer(answer="echo", latency=0.01) as server:
        server.fail_next(12, 429, retry_after=0)
        pool = ModelClientPool()
        samples: list[SampleRecord] = []

        async def sink(sample: SampleRecord) -> None:
            samples.append(sample)

        try:
            progress = await run_plan(_plan(server, 400, 8, adaptive=True), pool, sink=sink)
        finally:
            await pool.aclose()
        assert len(samples) == 400 and all(s.error is None for s in samples)
        assert server.max_in_flight <= 8
    concurrency = progress.snapshot()["concurrency"]
    history = concurrency["history"]
    limits = [entry[1] for entry in history]
    assert history[0][1:] == [8, "start"]
    assert any(reason == "overload (429)" for _, _, reason in history)
    assert min(limits) < 8  # it backed off
    assert limits[-1] > min(limits)  # and grew again once the endpoint kept up
    assert max(limits) <= concurrency["maximum"] == 8


async def test_without_adaptive_concurrency_the_limit_is_exactly_the_parallelism() -> None:
    with FakeModelServer(answer="echo", latency=0.02) as server:
        pool = ModelClientPool()
        seen: list[SampleRecord] = []

        async def sink(sample: SampleRecord) -> None:
            seen.append(sample)

        try:
            progress = await run_plan(_plan(server, 60, 6, adaptive=False), pool, sink=sink)
        finally:
            await pool.aclose()
        assert server.max_in_flight == 6
    assert len(seen) == 60
    assert "concurrency" not in progress.snapshot()


async def test_the_job_record_keeps_the_concurrency_history(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'evalstack.db'}")
    await store.open()
    with FakeModelServer(answer="echo", latency=0.005) as server:
        server.fail_next(6, 429, retry_after=0)
        pool = ModelClientPool()

        async def compile_job(job: JobRecord) -> EvalPlan:
            return _plan(server, 200, 8, adaptive=False)

        worker = JobWorker(store, pool, compile_job, adaptive_concurrency=True)
        await worker.start()
        try:
            job = await worker.submit(JobRecord(id=new_job_id(), front="nemo", spec={}))
            job = await worker.wait(job.id, timeout=30)
        finally:
            await worker.stop()
            await pool.aclose()
            await store.close()
        assert server.max_in_flight <= 8
    assert job.status == "completed", job.error
    concurrency = job.progress["concurrency"]
    assert concurrency["maximum"] == 8
    assert any(reason == "overload (429)" for _, _, reason in concurrency["history"])
