"""Read admission: a bounded number of reads worked on at once, never writes or the health check."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from evalstack.api.admission import ReadAdmission
from evalstack.config import load_settings
from evalstack.server import create_app


class SlowApp:
    """An ASGI app whose every request waits for ``release``; it counts how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()
        self.stream_started = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/stream":  # answers at once, then streams until released
            await send({"type": "http.response.start", "status": 200, "headers": []})
            self.stream_started.set()
            await self.release.wait()
            await send({"type": "http.response.body", "body": b"end"})
            return
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if scope["path"] == "/boom":
                raise RuntimeError("the route failed")
            await self.release.wait()
        finally:
            self.running -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def until(condition: Any) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def test_at_most_limit_reads_run_at_once_and_the_others_wait_their_turn() -> None:
    inner = SlowApp()
    async with client(ReadAdmission(inner, limit=3)) as http:
        reads = [asyncio.ensure_future(http.get(f"/v1/evalstack/jobs/{i}")) for i in range(10)]
        await until(lambda: inner.running == 3)
        await asyncio.sleep(0.05)
        assert inner.running == 3  # seven wait
        inner.release.set()
        answers = await asyncio.gather(*reads)
    assert [a.status_code for a in answers] == [200] * 10
    assert inner.most == 3


async def test_writes_and_the_health_check_never_wait_for_a_slot() -> None:
    inner = SlowApp()
    async with client(ReadAdmission(inner, limit=1)) as http:
        read = asyncio.ensure_future(http.get("/v1/evalstack/jobs"))
        await until(lambda: inner.running == 1)
        post = asyncio.ensure_future(http.post("/v1/evaluation/jobs", json={}))
        health = asyncio.ensure_future(http.get("/v1/health"))
        await until(lambda: inner.running == 3)  # both got in while the only read slot is taken
        inner.release.set()
        assert [r.status_code for r in await asyncio.gather(read, post, health)] == [200, 200, 200]


async def test_a_streamed_answer_gives_its_slot_back_once_it_starts() -> None:
    inner = SlowApp()
    async with client(ReadAdmission(inner, limit=1)) as http:
        stream = asyncio.ensure_future(http.get("/stream"))
        await inner.stream_started.wait()
        read = asyncio.ensure_future(http.get("/v1/evalstack/jobs"))
        await until(lambda: inner.running == 1)  # got the slot while the stream still sends
        inner.release.set()
        assert (await stream).text == "end"
        assert (await read).status_code == 200


async def test_a_failing_read_gives_its_slot_back() -> None:
    inner = SlowApp()
    inner.release.set()
    async with client(ReadAdmission(inner, limit=1)) as http:
        for _ in range(3):
            with pytest.raises(RuntimeError, match="the route failed"):
                await http.get("/boom")
        assert (await asyncio.wait_for(http.get("/v1/evalstack/jobs"), 5)).status_code == 200


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ReadAdmission(SlowApp(), limit=0)


async def test_the_server_gates_reads_behind_authentication(tmp_path: Any) -> None:
    settings = load_settings(data_dir=tmp_path, db_url="sqlite://", embedded_model=False)
    stack = [m.cls for m in create_app(settings).user_middleware]
    names = [getattr(cls, "__name__", "") for cls in stack]
    # Outermost first: a request without a valid key is refused before it can take a read slot.
    assert names.index("AccessMiddleware") < names.index("ReadAdmission")
