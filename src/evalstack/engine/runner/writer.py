"""The batch writer: the single writer of one job's samples into the store."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from evalstack.engine.ports import JobStore
from evalstack.store.records import SampleRecord

logger = logging.getLogger(__name__)


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
