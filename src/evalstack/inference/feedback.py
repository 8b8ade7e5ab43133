"""Overload signals from model clients to whoever paces the requests (the runner's adaptive concurrency).

A client that gets an overload answer (HTTP 429, 503) calls :func:`report_overload` before it backs
off and retries. The signal goes to the listener set in the calling task's context (a
:class:`contextvars.ContextVar`), so a client shared by several jobs tells each job only about its
own requests, and clients need no reference to the runner.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

OverloadListener = Callable[[int], None]

overload_listener: contextvars.ContextVar[OverloadListener | None] = contextvars.ContextVar(
    "evalstack_overload_listener", default=None
)

OVERLOAD_STATUSES = frozenset({429, 503})


def report_overload(status: int) -> None:
    """Tell the current task's listener (if any) that the endpoint answered ``status`` (429, 503)."""
    listener = overload_listener.get()
    if listener is not None:
        listener(status)
