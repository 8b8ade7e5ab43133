"""The circuit breaker per model endpoint, alone and under the pooled clients against our fake server."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

import pytest

from evalstack.inference.base import InferenceError, InferenceRequest, ModelEndpoint
from evalstack.inference.breaker import (
    BreakerSettings,
    CircuitBreaker,
    EndpointUnavailable,
    OutageWatch,
    outage_watch,
)
from evalstack.inference.clients import ModelClientPool
from tests.fakes.model_server import FakeModelServer

FAST = BreakerSettings(failure_threshold=5, failure_window=1.0, probe_interval=0.05, probe_interval_max=0.2)


def chat(text: str) -> InferenceRequest:
    return InferenceRequest(kind="chat", messages=[{"role": "user", "content": text}])


def endpoint_of(server: FakeModelServer) -> ModelEndpoint:
    return ModelEndpoint(kind="openai", model=server.model_id, base_url=server.base_url)


@pytest.fixture
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as srv:
        yield srv


# ---- the breaker alone ----------------------------------------------------------------------------


async def test_opens_after_the_threshold_of_unreachable_failures_in_a_row() -> None:
    breaker = CircuitBreaker("http://model/v1", FAST)
    for _ in range(4):
        breaker.record_unreachable("connection refused")
    assert not breaker.is_open
    breaker.record_unreachable("connection refused")
    assert breaker.is_open and breaker.last_error == "connection refused"
    assert breaker.status()["endpoint"] == "http://model/v1"


async def test_an_answer_between_failures_keeps_it_closed() -> None:
    breaker = CircuitBreaker("http://model/v1", FAST)
    for _ in range(50):
        for _ in range(4):
            breaker.record_unreachable("HTTP 503")
        breaker.record_answer()
    assert not breaker.is_open and breaker.outages == 0


async def test_opens_when_unreachable_failures_go_on_for_the_window() -> None:
    now = [0.0]
    breaker = CircuitBreaker("http://model/v1", FAST, clock=lambda: now[0])
    breaker.record_unreachable("timeout")
    now[0] = 0.9
    breaker.record_unreachable("timeout")
    assert not breaker.is_open
    now[0] = 1.0
    breaker.record_unreachable("timeout")
    assert breaker.is_open


async def test_a_request_out_of_retries_opens_it_only_if_no_later_request_was_answered() -> None:
    now = [0.0]
    breaker = CircuitBreaker("http://model/v1", FAST, clock=lambda: now[0])
    now[0] = 2.0
    breaker.record_answer(sent_at=1.5)
    assert not breaker.trip_if_silent_since(1.0) and not breaker.is_open
    now[0] = 3.0
    breaker.record_answer(sent_at=0.5)  # sent before the outage, finished by a server shutting down
    breaker.record_unreachable("connection refused")
    assert breaker.trip_if_silent_since(2.5) and breaker.is_open


async def test_an_answer_to_a_request_sent_before_it_opened_keeps_it_open() -> None:
    now = [10.0]
    breaker = CircuitBreaker("http://model/v1", FAST, clock=lambda: now[0])
    breaker.trip("connection refused")
    now[0] = 11.0
    breaker.record_answer(sent_at=9.5)
    assert breaker.is_open
    breaker.record_answer(sent_at=10.5)
    assert not breaker.is_open


async def test_a_disabled_breaker_never_opens() -> None:
    breaker = CircuitBreaker("http://model/v1", BreakerSettings(enabled=False, failure_threshold=1))
    for _ in range(20):
        breaker.record_unreachable("connection refused")
    assert not breaker.trip_if_silent_since(-1.0)
    assert not breaker.is_open


async def test_while_open_one_probe_at_a_time_and_an_answer_wakes_every_waiter() -> None:
    breaker = CircuitBreaker("http://model/v1", FAST)
    breaker.trip("connection refused")
    admitted: list[bool] = []

    async def caller() -> None:
        admitted.append(await breaker.admit())

    callers = [asyncio.ensure_future(caller()) for _ in range(20)]
    await asyncio.sleep(0.2)
    assert admitted == [True], "exactly one caller is let through as the probe"
    breaker.record_unreachable("connection refused", probe=True)
    breaker.end_probe()
    await asyncio.sleep(0.02)
    assert admitted == [True], "the next probe waits for its backoff"
    await asyncio.sleep(0.15)
    assert admitted == [True, True] and breaker.probes == 2
    breaker.record_answer()
    breaker.end_probe()
    await asyncio.wait_for(asyncio.gather(*callers), 1.0)
    assert admitted == [True, True] + [False] * 18
    assert not breaker.is_open


async def test_probe_backoff_doubles_up_to_its_maximum() -> None:
    now = [100.0]
    breaker = CircuitBreaker("http://model/v1", FAST, clock=lambda: now[0])
    breaker.trip("connection refused")
    waits = []
    for _ in range(6):
        now[0] = breaker._next_probe_at
        assert await breaker.admit() is True
        started = now[0]
        breaker.record_unreachable("connection refused", probe=True)
        breaker.end_probe()
        waits.append(round(breaker._next_probe_at - started, 3))
    assert waits == [0.05, 0.1, 0.2, 0.2, 0.2, 0.2]


async def test_waiting_past_max_outage_raises_naming_the_endpoint_and_last_error() -> None:
    breaker = CircuitBreaker("http://model/v1", FAST)
    breaker.trip("connection refused")
    seen: list[CircuitBreaker] = []
    outage_watch.set(OutageWatch(0.3, seen.append))
    assert await breaker.admit() is True  # the first probe; it stays in flight
    started = time.monotonic()
    with pytest.raises(EndpointUnavailable) as info:
        await breaker.admit()
    assert 0.2 <= time.monotonic() - started < 1.0
    message = str(info.value)
    assert "http://model/v1" in message and "connection refused" in message and "max_outage" in message
    assert seen and seen[0] is breaker


# ---- pooled clients against the fake server ------------------------------------------------------------


async def test_a_brief_outage_loses_no_request_and_probes_a_bounded_number_of_times(
    server: FakeModelServer,
) -> None:
    pool = ModelClientPool(breaker_settings=FAST)
    client = pool.get(endpoint_of(server), max_retries=2, max_connections=16)
    breaker = pool.breaker(endpoint_of(server))
    server.latency = 0.01
    prompts = iter(range(200))
    answers: dict[int, str] = {}

    async def worker() -> None:  # as the runner does: as many workers as connections
        for i in prompts:
            answers[i] = (await client.generate(chat(f"q{i}"))).text

    try:
        workers = [asyncio.ensure_future(worker()) for _ in range(16)]
        while len(server.requests) < 40:
            await asyncio.sleep(0.005)
        await asyncio.to_thread(server.go_down, gateway=True)
        await asyncio.sleep(2.0)
        during = server.gateway_requests
        await asyncio.to_thread(server.come_back)
        await asyncio.wait_for(asyncio.gather(*workers), 20)
    finally:
        await pool.aclose()
    assert answers == {i: f"q{i}" for i in range(200)}
    # An answer to a request sent before the server went down may close it once in between.
    assert 1 <= breaker.outages <= 2 and not breaker.is_open
    # Each time it opened, at most the 16 requests in flight hit the gateway; afterwards only the
    # probes, one at a time on a backoff up to 0.2 s: about ten in two seconds.
    assert 1 <= breaker.probes <= 15, breaker.probes
    assert during <= 16 * breaker.outages + breaker.probes, (during, breaker.outages, breaker.probes)


async def test_jobs_on_one_endpoint_share_one_breaker_and_its_probes(server: FakeModelServer) -> None:
    pool = ModelClientPool(breaker_settings=FAST)
    endpoint = endpoint_of(server)
    first = pool.get(endpoint, max_connections=8)
    second = pool.get(
        ModelEndpoint(kind="openai", model="other-name", base_url=server.base_url + "/"), max_connections=4
    )
    assert first is not second
    assert first.breaker is second.breaker is pool.breaker(endpoint)  # type: ignore[attr-defined]
    try:
        await asyncio.to_thread(server.go_down, gateway=True)
        calls = [asyncio.ensure_future(c.generate(chat(f"q{i}"))) for i in range(24) for c in (first, second)]
        await asyncio.sleep(1.5)
        opened = server.gateway_requests
        await asyncio.sleep(1.0)
        probes_in_last_second = server.gateway_requests - opened
        await asyncio.to_thread(server.come_back)
        results = await asyncio.wait_for(asyncio.gather(*calls), 20)
    finally:
        await pool.aclose()
    assert len(results) == 48
    # One probe every 0.2 s once the backoff is at its maximum: five a second for both jobs together.
    assert probes_in_last_second <= 7, probes_in_last_second


async def test_a_sick_but_reachable_endpoint_keeps_the_breaker_closed() -> None:
    chance = random.Random(7)
    statuses = [500 if chance.random() < 0.1 else 200 for _ in range(400)]
    pool = ModelClientPool(breaker_settings=FAST)
    with FakeModelServer(status_sequence=statuses) as server:
        client = pool.get(endpoint_of(server), max_retries=5, max_connections=16)
        breaker = pool.breaker(endpoint_of(server))
        try:
            results = await asyncio.gather(*(client.generate(chat(f"q{i}")) for i in range(300)))
        finally:
            await pool.aclose()
        answered_500 = len(server.requests) - 300
    assert [r.text for r in results] == [f"q{i}" for i in range(300)]
    assert answered_500 >= 20, "the endpoint was not sick enough to test anything"
    assert breaker.outages == 0 and breaker.probes == 0


async def test_a_lasting_outage_fails_requests_after_max_outage(server: FakeModelServer) -> None:
    pool = ModelClientPool(breaker_settings=FAST)
    client = pool.get(endpoint_of(server), max_retries=1)
    outage_watch.set(OutageWatch(1.0))
    server.go_down()
    started = time.monotonic()
    try:
        with pytest.raises(EndpointUnavailable) as info:
            await client.generate(chat("anyone?"))
    finally:
        await pool.aclose()
    assert 1.0 <= time.monotonic() - started < 3.0
    assert isinstance(info.value, InferenceError)
    assert server.base_url in str(info.value) and "connect" in str(info.value).lower()
