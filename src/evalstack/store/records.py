"""Plain records the store reads and writes; no SQLAlchemy types leak out of store/."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

# Internal job statuses use NeMo Evaluator's lowercase vocabulary; each API maps them to its own.
JobStatus = Literal["created", "pending", "running", "completed", "failed", "cancelling", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

# Which front door created the job: decides how the stored spec is compiled and how results are shaped.
JobFront = Literal["llama_stack", "nemo"]


@dataclass
class JobRecord:
    """A job: what to run (``spec``, enough to recompile the plan after a restart) and where it stands.

    ``progress`` holds ``samples_processed``, ``samples_total``, ``task_status`` (task name to
    pending/running/completed/failed) and ``errors`` (count of samples that failed for
    infrastructure reasons). ``result`` caches the aggregate result computed from the samples.
    """

    id: str
    front: JobFront
    spec: dict[str, Any]
    status: JobStatus = "created"
    error: str | None = None
    result: dict[str, Any] | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    benchmark_id: str | None = None
    provider_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    created_by: str | None = None
    """Who created the job: an API key's name or a JWT's subject; None on a server without auth."""


@dataclass(frozen=True)
class JobVersion:
    """A job's id, status and ``updated_at``: every change to a job bumps ``updated_at``, so the id and
    ``updated_at`` together name one version of its whole record."""

    id: str
    status: JobStatus
    updated_at: datetime


@dataclass
class SampleRecord:
    """One finished sample of one task: the row, what the model said, and its scores.

    ``scores`` maps a metric name to its per-sample scores (``{"bleu": {"sentence": 31.2}}``);
    a score that could not be computed is ``None`` (counted as NaN). ``error`` is set when
    the sample failed (model endpoint down, template failed to render); such a sample has no scores.
    """

    task: str
    index: int
    item: dict[str, Any]
    output_text: str | None = None
    response: dict[str, Any] | None = None
    finish_reason: str | None = None
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CachedResponse:
    """A model's answer kept in the response cache, under ``key`` (a digest of what was sent).

    ``model`` is the endpoint's model identity (``http://host:8000/v1#name``, ``embedded:name``);
    ``size`` is the stored text and raw response in bytes (what ``evalstack cache stats`` counts).
    """

    key: str
    model: str
    text: str
    finish_reason: str | None
    raw: dict[str, Any]
    size: int
    created_at: datetime | None = None


@dataclass
class CacheSummary:
    """What the response cache holds: entries and bytes, in all and per model identity.

    ``expired`` counts entries older than the time-to-live the summary was taken with (0 without one).
    """

    entries: int = 0
    bytes: int = 0
    expired: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    models: dict[str, dict[str, int]] = field(default_factory=dict)


_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_JOB_ID_DIGITS = 22  # 58**22 > 2**128, so every uuid4 fits


def new_job_id() -> str:
    """A new job id, NeMo style: ``"eval-"`` plus a uuid4 in base58, always 22 characters."""
    value = uuid.uuid4().int
    digits: list[str] = []
    while value:
        value, rest = divmod(value, 58)
        digits.append(_BASE58_ALPHABET[rest])
    return "eval-" + "".join(reversed(digits)).rjust(_JOB_ID_DIGITS, _BASE58_ALPHABET[0])


SampleOutcome = Literal["right", "wrong"]
SampleErrorFilter = Literal["any", "none", "inference", "invalid"]


@dataclass(frozen=True)
class SampleFilter:
    """Which of a job's samples to read (every field optional; all given ones must hold).

    ``metric`` and ``score`` name one per-sample score (``scores[metric][score]``); ``outcome``
    (right: the score is 1 or more, wrong: below 1) and ``min_score``/``max_score`` apply to it.
    ``error`` picks failed samples (``any``, or one ``error_kind``) or the ones that did not fail
    (``none``). ``unparsed``: no answer could be extracted; ``truncated``: cut by ``max_tokens``.
    ``search`` is full-text search over the prompt (the row and the request sent) and the output.
    """

    task: str | None = None
    metric: str | None = None
    score: str | None = None
    outcome: SampleOutcome | None = None
    min_score: float | None = None
    max_score: float | None = None
    error: SampleErrorFilter | None = None
    unparsed: bool = False
    truncated: bool = False
    search: str | None = None


@dataclass(frozen=True, order=True)
class SampleKey:
    """Where a sample sits in a job: samples are ordered by task, then index."""

    task: str
    index: int


@dataclass
class SamplePage:
    """One page of a job's samples in (task, index) order, with whether more lie on either side."""

    samples: list[SampleRecord]
    has_before: bool
    has_after: bool
