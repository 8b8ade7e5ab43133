"""Browsing jobs and samples: labels, headline metrics, filters and paging.

One implementation for both the JSON listings (``GET /v1/evalstack/jobs`` and
``GET /v1/evalstack/jobs/{id}/samples``) and the web viewer's pages, which take the same query
parameters. Everything is read through the store's interface.

Job listing parameters: ``status`` (repeatable), ``front``, ``benchmark``, ``model``, ``page``
(from 1), ``limit``. Sample listing parameters: ``task``, ``metric`` (``name`` or
``name/score``), ``outcome`` (``right``: the score is 1 or more; ``wrong``: below 1), ``min``,
``max``, ``error`` (``any``, ``none``, ``inference``, ``invalid``), ``unparsed``, ``truncated``
(``1``/``true``), ``q`` (full-text search), ``after``/``before`` (a sample key ``index:task``
from a previous page) and ``limit``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, get_args
from urllib.parse import urlencode

from evalstack.engine.plan import EXTRACTED, JUDGEMENT
from evalstack.engine.spec import JobLabels as JobLabels  # re-exported: the viewer names it
from evalstack.engine.spec import job_labels
from evalstack.errors import InvalidInputError
from evalstack.redaction import redact
from evalstack.store import sample_query
from evalstack.store.records import (
    JobRecord,
    JobStatus,
    JobVersion,
    SampleErrorFilter,
    SampleFilter,
    SampleKey,
    SampleOutcome,
    SampleRecord,
)

if TYPE_CHECKING:
    from evalstack.store.repository import Store

PARSED_SCORES = sample_query.PARSED_SCORES
"""Per-sample diagnostic scores (an answer could be extracted, or not): shown apart, never as a metric."""
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
COUNT_CAP = 10_000
"""Counting matches of a filtered listing stops here ("10,000+"), so a filter never scans a huge job twice."""

SAMPLE_FILTER_PARAMS = ("task", "metric", "outcome", "min", "max", "error", "unparsed", "truncated", "q")
JOB_FILTER_PARAMS = ("status", "front", "benchmark", "model")
_OUTCOMES = get_args(SampleOutcome)
_ERRORS = get_args(SampleErrorFilter)
JOB_STATUSES: tuple[str, ...] = get_args(JobStatus)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


# ---- jobs ---------------------------------------------------------------------------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Headline:
    """A job's main score: its name, value, 95% CI (when known) and how many samples it averages."""

    name: str
    value: float
    ci_low: float | None
    ci_high: float | None
    n: int | None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _nemo_headline(result: Mapping[str, Any]) -> Headline | None:
    for section in ("groups", "tasks"):
        for owner, entry in _dict(result.get(section)).items():
            for metric in _dict(_dict(entry).get("metrics")).values():
                for score_name, score in _dict(_dict(metric).get("scores")).items():
                    value = _number(_dict(score).get("value"))
                    if value is None:
                        continue
                    stats, ci = _dict(score.get("stats")), _dict(score.get("ci"))
                    low, high = _number(ci.get("lower")), _number(ci.get("upper"))
                    stderr = _number(stats.get("stderr"))
                    if (low is None or high is None) and stderr is not None:
                        low, high = value - 1.96 * stderr, value + 1.96 * stderr
                    count = stats.get("count")
                    n = int(count) if isinstance(count, int) else None
                    return Headline(f"{owner} · {score_name}", value, low, high, n)
    return None


def proportion_ci(value: float, n: int | None) -> tuple[float | None, float | None]:
    """The normal-approximation 95% interval of a proportion over ``n`` samples (None, None if not one)."""
    if n is None or n <= 0 or not 0 <= value <= 1:
        return None, None
    half = 1.96 * math.sqrt(value * (1 - value) / n)
    return max(0.0, value - half), min(1.0, value + half)


def _llama_stack_headline(result: Mapping[str, Any]) -> Headline | None:
    for fn_id, scored in _dict(result.get("scores")).items():
        aggregated = _dict(_dict(scored).get("aggregated_results"))
        for aggregation, values in aggregated.items():
            values = _dict(values)
            value = _number(values.get(aggregation))
            if value is None:
                continue
            n = values.get("num_total")
            n = n if isinstance(n, int) else None
            low, high = proportion_ci(value, n)
            return Headline(f"{fn_id} · {aggregation}", value, low, high, n)
    return None


def headline(job: JobRecord) -> Headline | None:
    """The job's first reported score with its 95% CI, from its cached result (None before it has one)."""
    result = _dict(job.result)
    return _nemo_headline(result) or _llama_stack_headline(result)


@dataclass(frozen=True)
class JobQuery:
    """A job listing's filters and page."""

    statuses: tuple[str, ...] = ()
    front: str | None = None
    benchmark: str | None = None
    model: str | None = None
    page: int = 1
    limit: int = DEFAULT_PAGE_SIZE

    def params(self, **changes: Any) -> str:
        """The query string of this listing (with ``changes``), for links."""
        values = {**asdict(self), **changes}
        pairs: list[tuple[str, Any]] = [("status", s) for s in values.pop("statuses")]
        pairs += [(k, v) for k, v in values.items() if v not in (None, "") and (k, v) != ("page", 1)]
        pairs = [(k, v) for k, v in pairs if (k, v) != ("limit", DEFAULT_PAGE_SIZE)]
        return urlencode(pairs)


@dataclass
class JobListing:
    """One page of jobs, how many match, and every benchmark and model there is to filter by."""

    jobs: list[JobRecord]
    total: int
    query: JobQuery
    benchmarks: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)

    @property
    def has_next(self) -> bool:
        return self.query.page * self.query.limit < self.total


def _positive_int(name: str, raw: str | None, default: int, maximum: int | None = None) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInputError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1 or (maximum is not None and value > maximum):
        bound = f" and at most {maximum}" if maximum is not None else ""
        raise InvalidInputError(f"{name} must be at least 1{bound}, got {value}")
    return value


def parse_job_query(params: Mapping[str, str], statuses: Sequence[str] = ()) -> JobQuery:
    """A job listing's query from URL parameters (``statuses``: every ``status`` given)."""
    unknown = [s for s in statuses if s not in JOB_STATUSES]
    if unknown:
        raise InvalidInputError(
            f"status {unknown[0]!r} is not a job status; accepted: {', '.join(JOB_STATUSES)}"
        )
    front = params.get("front") or None
    if front is not None and front not in ("llama_stack", "nemo"):
        raise InvalidInputError(f"front must be 'llama_stack' or 'nemo', got {front!r}")
    return JobQuery(
        statuses=tuple(statuses),
        front=front,
        benchmark=params.get("benchmark") or None,
        model=params.get("model") or None,
        page=_positive_int("page", params.get("page"), 1),
        limit=page_limit(params.get("limit")),
    )


class JobLabelCache:
    """The labels of the jobs listed so far, each under its job's id and ``updated_at``.

    A job's record changes only together with its ``updated_at`` (``JobVersion``), so a label found
    here is never stale: a job that progresses, finishes or is reopened has a new ``updated_at`` and
    is labelled again from its record. Holds at most ``size`` jobs, the least recently used dropped.
    """

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._labels: OrderedDict[tuple[str, datetime], JobLabels] = OrderedDict()

    def get(self, version: JobVersion) -> JobLabels | None:
        key = (version.id, version.updated_at)
        labels = self._labels.get(key)
        if labels is not None:
            self._labels.move_to_end(key)
        return labels

    def put(self, job: JobRecord) -> JobLabels:
        """The job's labels, computed from its record and kept."""
        labels = job_labels(job)
        if job.updated_at is not None:
            self._labels[(job.id, job.updated_at)] = labels
            while len(self._labels) > self.size:
                self._labels.popitem(last=False)
        return labels


async def list_jobs(store: Store, query: JobQuery, labels: JobLabelCache | None = None) -> JobListing:
    """The jobs matching ``query``, newest first, one page of them.

    Reads every job's id, status and ``updated_at``, labels each (from ``labels`` when it holds that
    version, else from the job's record) and reads the records of the page's jobs only.
    """
    labels = labels if labels is not None else JobLabelCache()
    versions = await store.job_versions(query.front)
    records = {job.id: job for job in await store.get_jobs([v.id for v in versions if labels.get(v) is None])}
    labelled: list[tuple[JobVersion, JobLabels]] = []
    for version in versions:
        known = labels.get(version)
        if known is None:
            record = records.get(version.id)
            if record is None:  # deleted meanwhile
                continue
            known = labels.put(record)
        labelled.append((version, known))
    matching = [
        version.id
        for version, job in labelled
        if (not query.statuses or version.status in query.statuses)
        and (not query.benchmark or job.benchmark == query.benchmark)
        and (not query.model or job.model == query.model)
    ]
    start = (query.page - 1) * query.limit
    page = matching[start : start + query.limit]
    unread = [job_id for job_id in page if job_id not in records]
    records.update((job.id, job) for job in await store.get_jobs(unread))
    return JobListing(
        [records[job_id] for job_id in page if job_id in records],
        len(matching),
        query,
        benchmarks=sorted({job.benchmark for _, job in labelled if job.benchmark}),
        models=sorted({job.model for _, job in labelled if job.model}),
    )


def job_json(job: JobRecord) -> dict[str, Any]:
    """A job as the JSON listing shows it: the stored fields, its labels and its headline score."""
    labels = job_labels(job)
    top = headline(job)
    return {
        "id": job.id,
        "front": job.front,
        "status": job.status,
        "benchmark_id": job.benchmark_id,
        "provider_id": job.provider_id,
        "benchmark": labels.benchmark,
        "model": labels.model,
        "headline": asdict(top) if top is not None else None,
        "error": job.error,
        "progress": job.progress,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "updated_at": job.updated_at.isoformat() if job.updated_at else None,
        "created_by": job.created_by,
    }


# ---- samples ------------------------------------------------------------------------------------


def _flag(name: str, raw: str | None) -> bool:
    value = (raw or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidInputError(f"{name} must be 1 or 0 (true or false), got {raw!r}")


def _float(name: str, raw: str | None) -> float | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInputError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {raw!r}")
    return value


def split_metric(raw: str) -> tuple[str, str]:
    """``"name/score"`` -> ``(name, score)``; a bare ``"name"`` is its own score."""
    metric, slash, score = raw.rpartition("/")
    return (metric, score) if slash and metric and score else (raw, raw)


def page_offset(raw: str | None) -> int:
    """How many entries to skip, from its URL parameter (default 0)."""
    if raw is None or raw == "":
        return 0
    if not raw.isdigit():
        raise InvalidInputError(f"offset must be a whole number of at least 0, got {raw!r}")
    return int(raw)


def page_limit(raw: str | None) -> int:
    """A page size from its URL parameter (default 50, at most 500)."""
    return _positive_int("limit", raw, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def parse_sample_filter(params: Mapping[str, str]) -> SampleFilter:
    """A sample filter from URL parameters; InvalidInputError names a bad one and what is accepted."""
    outcome = params.get("outcome") or None
    if outcome is not None and outcome not in _OUTCOMES:
        raise InvalidInputError(f"outcome must be one of {', '.join(_OUTCOMES)}, got {outcome!r}")
    error = params.get("error") or None
    if error is not None and error not in _ERRORS:
        raise InvalidInputError(f"error must be one of {', '.join(_ERRORS)}, got {error!r}")
    low, high = _float("min", params.get("min")), _float("max", params.get("max"))
    raw_metric = params.get("metric") or None
    if raw_metric is None and (outcome is not None or low is not None or high is not None):
        raise InvalidInputError(
            "outcome, min and max need a metric: add metric=<name> or metric=<name>/<score>"
        )
    metric, score = split_metric(raw_metric) if raw_metric else (None, None)
    return SampleFilter(
        task=params.get("task") or None,
        metric=metric,
        score=score,
        outcome=outcome,  # type: ignore[arg-type]  # checked above
        min_score=low,
        max_score=high,
        error=error,  # type: ignore[arg-type]  # checked above
        unparsed=_flag("unparsed", params.get("unparsed")),
        truncated=_flag("truncated", params.get("truncated")),
        search=(params.get("q") or "").strip() or None,
    )


def filter_params(flt: SampleFilter) -> dict[str, str]:
    """The URL parameters of a filter (the inverse of :func:`parse_sample_filter`)."""
    out: dict[str, str] = {}
    if flt.task:
        out["task"] = flt.task
    if flt.metric:
        out["metric"] = flt.metric if flt.score in (None, flt.metric) else f"{flt.metric}/{flt.score}"
    if flt.outcome:
        out["outcome"] = flt.outcome
    if flt.min_score is not None:
        out["min"] = f"{flt.min_score:g}"
    if flt.max_score is not None:
        out["max"] = f"{flt.max_score:g}"
    if flt.error:
        out["error"] = flt.error
    if flt.unparsed:
        out["unparsed"] = "1"
    if flt.truncated:
        out["truncated"] = "1"
    if flt.search:
        out["q"] = flt.search
    return out


def key_param(key: SampleKey) -> str:
    """A sample key as a URL parameter: ``index:task`` (tasks may hold any character)."""
    return f"{key.index}:{key.task}"


def parse_key(name: str, raw: str | None) -> SampleKey | None:
    """A sample key from ``index:task``; InvalidInputError when malformed."""
    if raw is None or raw == "":
        return None
    index, colon, task = raw.partition(":")
    if colon and index.lstrip("-").isdigit():
        return SampleKey(task, int(index))
    raise InvalidInputError(
        f"{name} must be a sample key 'index:task' such as '12:mmlu_anatomy', got {raw!r}"
    )


def sample_key(sample: SampleRecord) -> SampleKey:
    return SampleKey(sample.task, sample.index)


def sample_json(sample: SampleRecord) -> dict[str, Any]:
    """A sample as the JSON listing shows it: everything recorded, and its key for paging."""
    return {
        "key": key_param(sample_key(sample)),
        "task": sample.task,
        "index": sample.index,
        "item": sample.item,
        "output_text": sample.output_text,
        "finish_reason": sample.finish_reason,
        "scores": sample.scores,
        "error": sample.error,
        "error_kind": sample.extra.get("error_kind"),
        "request": redact(sample.extra.get("request")),
        "response": sample.response,
        "extracted": sample.extra.get(EXTRACTED, {}),
        "judgement": sample.extra.get(JUDGEMENT, {}),
    }
