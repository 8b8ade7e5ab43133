"""EvalPlan: the one internal shape both front doors compile into. The engine never sees HTTP shapes.

A plan is a list of tasks. Each task has a row source, a way to turn a row into a model request
(or to read an already generated output from the row), and metrics that score one sample.
``summarize`` turns the stored samples into the front door's aggregate result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from evalstack.engine.ports import RowSource
from evalstack.inference.base import InferenceRequest, ModelEndpoint
from evalstack.store.records import SampleRecord

# Keys of SampleRecord.extra: the answers metrics extracted and the judges' raw answers, by metric.
EXTRACTED = "extracted"
JUDGEMENT = "judgement"


@dataclass
class SampleOutput:
    """What the model produced for one row: the text and the raw response (``None`` without inference).

    A metric may add JSON-ready details to ``extra``; they land in the sample's ``SampleRecord.extra``.
    Metrics that extract an answer or ask a judge say so with ``note_extracted`` / ``note_judgement``
    (``extra["extracted"][metric]``, ``extra["judgement"][metric]``), which the viewer shows.
    ``request`` is the request that produced it, when it was sent earlier (re-scoring a stored output).
    """

    text: str | None
    response: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    request: dict[str, Any] | None = None

    def note_extracted(self, metric: str, answer: Any) -> None:
        """Record the answer ``metric`` extracted from the text (``None``: nothing found)."""
        self.extra.setdefault(EXTRACTED, {})[metric] = answer

    def note_judgement(self, metric: str, text: str | None) -> None:
        """Record what the judge of ``metric`` answered, its rationale included, as received."""
        self.extra.setdefault(JUDGEMENT, {})[metric] = text


class Metric(Protocol):
    """Scores one sample. Returns score name to value; ``None`` where it could not be computed.

    Heavy, CPU-bound metrics should offload with ``asyncio.to_thread``; a metric that calls a
    model (a judge) awaits it. A metric raising ``InvalidInputError`` fails only that sample.
    """

    name: str

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]: ...


RequestBuilder = Callable[[Mapping[str, Any]], InferenceRequest]
OutputReader = Callable[[Mapping[str, Any]], SampleOutput]
Summarizer = Callable[[Mapping[str, Sequence[SampleRecord]]], dict[str, Any]]


@dataclass
class TaskPlan:
    """One task of a plan.

    Exactly one of ``build_request`` (run inference) and ``read_output`` (score what the row
    already holds: NeMo ``data`` tasks, ``cached_outputs`` targets, Llama Stack scoring) is set.
    ``build_request`` raising ``InvalidInputError`` (e.g. a template that does not render) fails
    that sample with the message as its reason, not the whole job.
    """

    name: str
    rows: RowSource
    metrics: Sequence[Metric]
    build_request: RequestBuilder | None = None
    read_output: OutputReader | None = None
    limit: int | None = None


@dataclass
class EvalPlan:
    """Everything the runner needs to run a job; compiled again from the job's spec after a restart."""

    tasks: list[TaskPlan]
    summarize: Summarizer
    model: ModelEndpoint | None = None
    parallelism: int = 16
    max_retries: int = 5
    request_timeout: float = 600.0
    # AIMD between 1 and ``parallelism``: back off on 429/503 and rising latency, grow back when the
    # endpoint keeps up (engine.adaptive); the history lands in job.progress["concurrency"].
    adaptive_concurrency: bool = False
    # Serve model answers from the response cache and keep new ones there (inference.cache).
    cache: bool = False
    # Seconds the job waits for an unreachable model endpoint before it fails (None: the server's setting).
    max_outage: float | None = None
    # The sample fields ``summarize`` reads (besides task and index; ``error`` always); None: all of them.
    summary_fields: tuple[str, ...] | None = None
