"""A circuit breaker per model endpoint: jobs wait out an outage instead of burning samples into errors.

Every client of one endpoint (every job, every worker) shares one :class:`CircuitBreaker`, handed out
by ``inference.clients.ModelClientPool``. The client reports each attempt: an answer that proves the
endpoint is reachable (any HTTP response except 502/503/504) or a failure that says it is not
(connection refused or reset, timeout, 502/503/504).

- **Closed**: requests flow. It opens when ``failure_threshold`` attempts in a row failed as
  unreachable, when such failures went on for ``failure_window`` seconds without one answer between
  them, or when a request ran out of retries on them and nobody got an answer since its last attempt.
- **Open**: nobody sends the endpoint a request. One probe at a time, after a backoff that doubles
  from ``probe_interval`` to ``probe_interval_max``, is let through; the other callers wait. An answer
  to the probe closes the breaker and wakes every waiter at once.

Attempts that fail while the breaker is open do not count against a request's retries: a sample
caught by an outage is sent again when the endpoint is back, never recorded as an error. How long a
caller waits is bounded by ``max_outage``, taken from the :data:`outage_watch` of the calling task
(the runner sets one per job, with its ``max_outage`` and a callback that learns which breakers the
job waits on); past it, :meth:`CircuitBreaker.admit` raises :class:`EndpointUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from evalstack.inference.base import InferenceError

logger = logging.getLogger(__name__)

UNREACHABLE_STATUSES = frozenset({502, 503, 504})
"""HTTP statuses that say the model server behind a gateway is not there (a proxy or load balancer
answers them while it restarts); every other answer proves the endpoint is reachable."""

DEFAULT_MAX_OUTAGE = 900.0
"""Seconds a job waits for an unreachable endpoint before it fails (15 minutes)."""


@dataclass(frozen=True)
class BreakerSettings:
    """When a breaker opens and how often it probes; the defaults suit a real model server.

    ``enabled=False`` keeps it closed for good: requests fail after their retries, as without one.
    """

    enabled: bool = True
    failure_threshold: int = 10
    failure_window: float = 5.0
    probe_interval: float = 0.5
    probe_interval_max: float = 15.0


class EndpointUnavailable(InferenceError):
    """The endpoint stayed unreachable for longer than the caller's ``max_outage``."""

    def __init__(self, message: str, endpoint: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint


@dataclass(frozen=True)
class OutageWatch:
    """What a job tells the breakers of the endpoints it calls (see :data:`outage_watch`).

    The job waits at most ``max_outage`` seconds from when the breaker opened or from ``started``
    (its run's start, on the breaker's clock), whichever is later: a job resumed while a breaker
    is still open gets its own full ``max_outage``.
    """

    max_outage: float
    on_wait: Callable[[CircuitBreaker], None] | None = None
    started: float = 0.0


outage_watch: contextvars.ContextVar[OutageWatch | None] = contextvars.ContextVar(
    "evalstack_outage_watch", default=None
)
"""Set by the runner in each worker task; callers without one wait at most ``DEFAULT_MAX_OUTAGE``."""


class CircuitBreaker:
    """The state of one endpoint, shared by every request to it (see the module docstring).

    ``endpoint`` names it in messages. ``probes`` counts the probe requests let through while open.
    """

    def __init__(
        self,
        endpoint: str,
        settings: BreakerSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings or BreakerSettings()
        self._clock = clock
        self.opened_at: float | None = None  # clock time it opened; None while closed
        self.opened_wall: datetime | None = None
        self.last_error: str | None = None
        self.last_answered = clock()  # when the latest request that got an answer was sent
        self.probes = 0
        self.outages = 0
        self._streak = 0  # unreachable failures since the last answer
        self._streak_started = 0.0
        self._probe_in_flight = False
        self._failed_probes = 0
        self._next_probe_at = 0.0
        self._changed = asyncio.Event()  # set (and replaced) on every change waiters care about

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def unreachable_for(self) -> float:
        """Seconds since the breaker opened (0 while closed)."""
        return 0.0 if self.opened_at is None else max(0.0, self._clock() - self.opened_at)

    def status(self) -> dict[str, Any]:
        """A JSON-ready account of an open breaker for job progress."""
        return {
            "endpoint": self.endpoint,
            "unreachable_since": self.opened_wall.isoformat() if self.opened_wall else None,
            "unreachable_s": round(self.unreachable_for(), 1),
            "last_error": self.last_error,
            "probes": self.probes,
        }

    # ---- reports from the client ---------------------------------------------------------------

    def record_answer(self, sent_at: float | None = None) -> None:
        """A request sent at ``sent_at`` (default: now) got an answer (anything but 502/503/504).

        The endpoint was reachable when it was sent: that ends a run of failures that began later, and
        closes the breaker if it opened earlier. An answer to an older request (one a server finished
        while shutting down) proves nothing about now.
        """
        sent_at = self._clock() if sent_at is None else sent_at
        self.last_answered = max(self.last_answered, sent_at)
        if self._streak and sent_at >= self._streak_started:
            self._streak = 0
        if self.opened_at is not None and sent_at >= self.opened_at:
            logger.info(
                "%s is reachable again after %.1fs; resuming requests", self.endpoint, self.unreachable_for()
            )
            self.opened_at = None
            self.opened_wall = None
            self._failed_probes = 0
            self._wake()

    def record_unreachable(self, error: str, *, probe: bool = False) -> None:
        """An attempt failed without an answer (connection, timeout, 502/503/504)."""
        now = self._clock()
        self.last_error = error
        if self.opened_at is not None:
            if probe:
                self._failed_probes += 1
                delay = self.settings.probe_interval * 2.0 ** (self._failed_probes - 1)
                self._next_probe_at = now + min(self.settings.probe_interval_max, delay)
            return
        if self._streak == 0:
            self._streak_started = now
        self._streak += 1
        if (
            self._streak >= self.settings.failure_threshold
            or now - self._streak_started >= self.settings.failure_window
        ):
            self.trip(error)

    def trip_if_silent_since(self, since: float) -> bool:
        """Open the breaker unless a request sent at ``since`` or later got an answer; True when open.

        A client asks this when one request has run out of retries on unreachable failures, with the
        time its last attempt went out: if no request sent since then was answered, it is an outage,
        not a sick request.
        """
        if self.opened_at is None and self.last_answered < since:
            self.trip(self.last_error or "no answer")
        return self.opened_at is not None

    def trip(self, error: str) -> None:
        """Open the breaker now (no-op when open or disabled)."""
        if self.opened_at is not None or not self.settings.enabled:
            return
        now = self._clock()
        self.last_error = error
        self.opened_at = now
        self.opened_wall = datetime.now(UTC)
        self.outages += 1
        self._failed_probes = 0
        self._next_probe_at = now + self.settings.probe_interval
        logger.warning("%s is unreachable (%s); pausing its requests and probing", self.endpoint, error)
        self._wake()

    def end_probe(self) -> None:
        """The probe let through by :meth:`admit` is over (answered, failed or cancelled)."""
        self._probe_in_flight = False
        self._wake()

    def clock(self) -> float:
        """The breaker's clock (``time.monotonic`` unless a test gives another)."""
        return self._clock()

    # ---- admission -----------------------------------------------------------------------------

    async def admit(self) -> bool:
        """Wait until a request may be sent; True when the caller is the probe of an open breaker.

        Returns False at once while closed. While open, exactly one caller at a time is let through as
        the probe (it must call :meth:`end_probe` afterwards); the others wait until the breaker closes
        or it is their turn. Raises :class:`EndpointUnavailable` once the outage lasted longer than the
        calling task's ``max_outage``.
        """
        while self.opened_at is not None:
            watch = outage_watch.get()
            if watch is not None and watch.on_wait is not None:
                watch.on_wait(self)
            max_outage = watch.max_outage if watch is not None else DEFAULT_MAX_OUTAGE
            now = self._clock()
            deadline = self._deadline(watch)
            if now >= deadline:
                raise EndpointUnavailable(self.outage_message(max_outage), self.endpoint)
            if not self._probe_in_flight and now >= self._next_probe_at:
                self._probe_in_flight = True
                self.probes += 1
                return True
            wake_at = deadline if self._probe_in_flight else min(deadline, self._next_probe_at)
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(wake_at - now, 0.0))
        return False

    def probe_timeout(self, timeout: float) -> float:
        """A probe's request timeout: ``timeout``, cut to what is left of the caller's ``max_outage``."""
        if self.opened_at is None:
            return timeout
        left = self._deadline(outage_watch.get()) - self._clock()
        return max(0.1, min(timeout, left))

    def _deadline(self, watch: OutageWatch | None) -> float:
        """When a caller with ``watch`` stops waiting for this open breaker."""
        assert self.opened_at is not None
        if watch is None:
            return self.opened_at + DEFAULT_MAX_OUTAGE
        return max(self.opened_at, watch.started) + watch.max_outage

    def outage_message(self, max_outage: float) -> str:
        """Why a job gave up on this endpoint."""
        down = _duration(self.unreachable_for())
        return (
            f"the model endpoint {self.endpoint} has been unreachable for {down} "
            f"(max_outage is {_duration(max_outage)}); last error: {self.last_error or 'none recorded'}"
        )

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


def _duration(seconds: float) -> str:
    """``"14m 3s"``, ``"42s"``, ``"1.5s"``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m {rest}s" if minutes else f"{rest}s"
