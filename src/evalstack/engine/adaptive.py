"""Concurrency limits for the runner: a fixed limit, or an adaptive one (AIMD).

:class:`ConcurrencyLimiter` admits at most ``limit`` requests at once; the limit can change while
requests run (a lowered limit admits nothing new until enough requests finished).

:class:`AdaptiveConcurrency` moves that limit between ``minimum`` and ``maximum`` (the job's
configured parallelism, never exceeded), like TCP congestion control:

- multiplicative decrease: an overload answer (HTTP 429 or 503, reported by the model client
  through :mod:`evalstack.inference.feedback`) or a latency that rose well above the best seen
  (``latency_factor`` times the baseline) multiplies the limit by ``decrease``; after a decrease,
  further signals are ignored until ``limit`` requests have finished (one round trip's worth), so
  one burst of 429s counts once;
- additive increase: every ``limit`` requests that finished without a sign of overload add
  ``increase`` to the limit, up to ``maximum``.

Every change is recorded in ``history`` as ``[elapsed_s, limit, reason]`` (the first entry is the
start); the runner puts it into the job's progress.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from typing import Any

MAX_HISTORY = 500  # changes kept in the history (the oldest are dropped first, the start is kept)


class ConcurrencyLimiter:
    """A semaphore whose size can change; ``in_use`` never exceeds ``limit`` when a slot is taken."""

    def __init__(self, limit: int) -> None:
        self._limit = max(int(limit), 1)
        self.in_use = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def limit(self) -> int:
        """The most requests admitted at once."""
        return self._limit

    def set_limit(self, limit: int) -> None:
        """Change the limit; waiting requests are admitted at once if it grew."""
        self._limit = max(int(limit), 1)
        self._wake()

    async def acquire(self) -> None:
        """Wait for a slot."""
        if self.in_use < self._limit and not self._waiters:
            self.in_use += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(future)
            raise

    def release(self) -> None:
        """Give a slot back."""
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self._limit:
            future = self._waiters.popleft()
            if not future.done():
                self.in_use += 1
                future.set_result(None)

    async def __aenter__(self) -> ConcurrencyLimiter:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class AdaptiveConcurrency:
    """AIMD control of a :class:`ConcurrencyLimiter` (see the module docstring)."""

    def __init__(
        self,
        maximum: int,
        *,
        minimum: int = 1,
        initial: int | None = None,
        increase: int = 1,
        decrease: float = 0.5,
        latency_factor: float = 2.0,
        latency_decrease: float = 0.9,
        smoothing: float = 0.1,
    ) -> None:
        if not 0 < decrease < 1 or not 0 < latency_decrease < 1:
            raise ValueError("decrease factors must lie between 0 and 1")
        self.maximum = max(int(maximum), 1)
        self.minimum = min(max(int(minimum), 1), self.maximum)
        start = self.maximum if initial is None else min(max(int(initial), self.minimum), self.maximum)
        self.limiter = ConcurrencyLimiter(start)
        self.increase = max(int(increase), 1)
        self.decrease = decrease
        self.latency_factor = latency_factor
        self.latency_decrease = latency_decrease
        self.smoothing = smoothing
        self.baseline: float | None = None  # best smoothed latency seen
        self.smoothed: float | None = None
        self._good = 0  # requests finished without overload since the last change
        self._hold = 0  # requests to finish before another decrease counts
        self._started = time.monotonic()
        self.history: list[list[Any]] = [[0.0, start, "start"]]

    @property
    def limit(self) -> int:
        """The current limit."""
        return self.limiter.limit

    def on_overload(self, status: int = 429) -> None:
        """The endpoint said it is overloaded: back off (once per round trip)."""
        self._back_off(self.decrease, f"overload ({status})")

    def on_success(self, latency: float) -> None:
        """A request finished in ``latency`` seconds: grow, or back off if latency rose too much."""
        if self._hold > 0:
            self._hold -= 1
        if not math.isfinite(latency) or latency < 0:
            return
        alpha = self.smoothing
        self.smoothed = latency if self.smoothed is None else (1 - alpha) * self.smoothed + alpha * latency
        if self.baseline is None or self.smoothed < self.baseline:
            self.baseline = self.smoothed
        if self.smoothed > self.baseline * self.latency_factor:
            if self._back_off(self.latency_decrease, "latency"):
                # Forget the old baseline slowly: the endpoint may simply have become slower for good.
                self.baseline = (self.baseline + self.smoothed) / 2
            return
        self._good += 1
        if self._good >= self.limit and self.limit < self.maximum:
            self._set(min(self.limit + self.increase, self.maximum), "increase")

    def on_failure(self) -> None:
        """A request failed for good (after retries): counts as finished, not as a success."""
        if self._hold > 0:
            self._hold -= 1

    def _back_off(self, factor: float, reason: str) -> bool:
        if self._hold > 0:
            return False
        new = max(self.minimum, math.floor(self.limit * factor))
        self._hold = self.limit
        if new == self.limit:
            return False
        self._set(new, reason)
        return True

    def _set(self, limit: int, reason: str) -> None:
        self.limiter.set_limit(limit)
        self._good = 0
        self.history.append([round(time.monotonic() - self._started, 3), limit, reason])
        if len(self.history) > MAX_HISTORY:
            del self.history[1 : len(self.history) - MAX_HISTORY + 1]

    def snapshot(self) -> dict[str, Any]:
        """The state for ``job.progress["concurrency"]``."""
        return {
            "mode": "adaptive",
            "limit": self.limit,
            "maximum": self.maximum,
            "minimum": self.minimum,
            "history": [list(entry) for entry in self.history],
        }
