"""Read admission: at most a few reads are worked on at once, so readers cannot crowd out running jobs.

The HTTP reads and the job pipelines share one event loop. Every read that is being worked on puts
its callbacks in the loop's queue, first come first served, so 200 clients reading without pause
would leave the jobs' model requests a sliver of the loop and a job would crawl. A read (GET or
HEAD; the health check excepted) therefore takes one of ``limit`` slots before its route runs and
gives it back when its answer starts (a streamed body, such as a CSV report, is then sent without
holding a slot); a read that finds every slot taken waits, costing nothing, for the next one in turn.
Below saturation nothing waits; at saturation, the reads queue here and the jobs keep their pace.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

READ_SLOTS = 8
"""Reads worked on at once: enough to keep both cores busy while one read waits on the database."""

UNGATED_PATHS = frozenset({"/v1/health"})
"""Reads that never wait for a slot (a health check must answer even when reads queue)."""


class ReadAdmission:
    """ASGI middleware: GET and HEAD requests run at most ``limit`` at once (see the module docstring)."""

    def __init__(self, app: ASGIApp, limit: int = READ_SLOTS) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.app = app
        self.limit = limit
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._loop is not loop:  # a semaphore belongs to one event loop
            self._slots, self._loop = asyncio.Semaphore(self.limit), loop
        return self._slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or scope["path"] in UNGATED_PATHS
        ):
            await self.app(scope, receive, send)
            return
        slots = self._semaphore()
        await slots.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                slots.release()

        async def send_releasing(message: Message) -> None:
            if message["type"] == "http.response.start":
                release()  # the answer is ready (or streams from here): the next read may start
            await send(message)

        try:
            await self.app(scope, receive, send_releasing)
        finally:
            release()
