"""How a job's plan is executed: the interface the worker calls, ``run_plan`` being the local one."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from evalstack.engine.plan import EvalPlan
from evalstack.engine.ports import ClientSource
from evalstack.engine.runner.pipeline import ProgressCallback, RunProgress, Sink
from evalstack.inference.breaker import DEFAULT_MAX_OUTAGE


class PlanExecutor(Protocol):
    """Runs every sample of a plan not in ``skip``, handing each finished one to ``sink`` (as
    ``run_plan`` does); stops promptly once ``cancel`` is set and then returns ``cancelled=True``;
    raises ``UpstreamError`` when the model endpoint stays unreachable for ``max_outage`` seconds.
    ``progress``, when given, is the object filled in."""

    async def __call__(
        self,
        plan: EvalPlan,
        clients: ClientSource,
        *,
        sink: Sink,
        skip: Mapping[str, set[int]] | None = None,
        cancel: asyncio.Event | None = None,
        on_progress: ProgressCallback | None = None,
        progress_interval: float = 0.5,
        max_outage: float = DEFAULT_MAX_OUTAGE,
        progress: RunProgress | None = None,
    ) -> RunProgress: ...
