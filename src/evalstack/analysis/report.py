"""A report of one job, computed from its stored samples: Markdown, self-contained HTML, JSON or CSV.

Every report holds the job's metrics per task and group, each with its mean, standard error, 95%
confidence interval (percentile bootstrap, 1,000 resamples, seed 0, as the job results use) and
count, and the job's counts: samples, scored, failed (infrastructure errors), invalid, unparsed
and truncated. HTML is one file with inline CSS and an inline SVG chart, no script, every text
HTML-escaped (Jinja2 autoescape). CSV has one row per sample and score; a failed sample has one
row with its error; text cells that a spreadsheet would run as a formula are prefixed with ``'``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from evalstack.analysis.compare import DIAGNOSTIC_METRICS, JobRef, job_ref, metric_labels, task_groups
from evalstack.analysis.render import environment, markdown_cell, markdown_table, number
from evalstack.engine.aggregate.stats import bootstrap_ci, score_stats
from evalstack.errors import InvalidInputError, NotFoundError
from evalstack.store.records import SampleRecord
from evalstack.viewer.charts import ForestRow, forest_plot

if TYPE_CHECKING:
    from evalstack.store.repository import Store

ReportFormat = Literal["md", "html", "json", "csv"]
REPORT_FORMATS: tuple[str, ...] = ("md", "html", "json", "csv")
MEDIA_TYPES: dict[str, str] = {
    "md": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
}
CI_RESAMPLES = 1000
_BATCH = 2000
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = ("task", "index", "metric", "score", "value", "error_kind", "error", "finish_reason", "output")


class MetricSummary(BaseModel):
    """One metric in one task or group: mean, standard error, 95% CI, count."""

    scope: Literal["task", "group"]
    name: str
    metric: str
    n: int
    mean: float | None
    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    nan_count: int


class SampleCounts(BaseModel):
    """How the samples of a task (or of the job, ``task`` None) ended."""

    task: str | None
    samples: int = 0
    scored: int = 0
    failed: int = 0
    invalid: int = 0
    unparsed: int = 0
    truncated: int = 0


class JobReport(BaseModel):
    """Everything a job report shows."""

    job: JobRef
    created_at: str | None
    updated_at: str | None
    error: str | None
    counts: SampleCounts
    tasks: list[SampleCounts]
    metrics: list[MetricSummary]


@dataclass
class _Collected:
    counts: dict[str, SampleCounts] = field(default_factory=dict)
    values: dict[tuple[str, str], dict[str, list[float | None]]] = field(default_factory=dict)

    def add(self, sample: SampleRecord) -> None:
        counts = self.counts.setdefault(sample.task, SampleCounts(task=sample.task))
        counts.samples += 1
        if sample.error is not None:
            if sample.extra.get("error_kind") == "invalid":
                counts.invalid += 1
            else:
                counts.failed += 1
            return
        counts.scored += 1
        counts.truncated += sample.finish_reason == "length"
        counts.unparsed += any(v == 0 for v in (sample.scores.get("parsed") or {}).values())
        for metric, scores in sample.scores.items():
            if metric in DIAGNOSTIC_METRICS or not isinstance(scores, Mapping):
                continue
            for name, value in scores.items():
                if value is None or isinstance(value, bool | int | float):
                    values = self.values.setdefault((metric, name), {})
                    values.setdefault(sample.task, []).append(None if value is None else float(value))


def _summary(
    scope: Literal["task", "group"], name: str, metric: str, values: list[float | None]
) -> MetricSummary:
    stats = score_stats(values)
    low, high = bootstrap_ci(values, resamples=CI_RESAMPLES, seed=0)
    return MetricSummary(
        scope=scope,
        name=name,
        metric=metric,
        n=int(stats["count"] or 0),
        mean=stats["mean"],
        stderr=stats["stderr"],
        ci_low=low,
        ci_high=high,
        nan_count=int(stats["nan_count"] or 0),
    )


async def build_job_report(store: Store, job_id: str) -> JobReport:
    """The report of ``job_id`` from its samples, read in batches. Raises NotFoundError for an unknown job."""
    job = await store.get_job(job_id)
    if job is None:
        raise NotFoundError(f"Job {job_id!r} not found")
    collected = _Collected()
    fields = ("finish_reason", "scores", "error", "extra")
    async for batch in store.iter_samples(job_id, batch_size=_BATCH, fields=fields):
        for sample in batch:
            collected.add(sample)
    tasks = sorted(collected.counts)
    labels = metric_labels(collected.values)
    groups = task_groups(job, tasks)

    def summaries() -> list[MetricSummary]:
        metrics: list[MetricSummary] = []
        for key in sorted(labels, key=labels.__getitem__):
            per_task = collected.values[key]
            for group, members in sorted(groups.items()):
                pooled = [v for task in members for v in per_task.get(task, [])]
                if pooled:
                    metrics.append(_summary("group", group, labels[key], pooled))
            metrics += [_summary("task", t, labels[key], per_task[t]) for t in tasks if t in per_task]
        return metrics

    metrics = await asyncio.to_thread(summaries)  # bootstrap work stays off the event loop
    total = SampleCounts(task=None)
    for counts in collected.counts.values():
        for name in ("samples", "scored", "failed", "invalid", "unparsed", "truncated"):
            setattr(total, name, getattr(total, name) + getattr(counts, name))
    return JobReport(
        job=job_ref(job),
        created_at=job.created_at.isoformat() if job.created_at else None,
        updated_at=job.updated_at.isoformat() if job.updated_at else None,
        error=job.error,
        counts=total,
        tasks=[collected.counts[t] for t in tasks],
        metrics=metrics,
    )


# ---- rendering ----------------------------------------------------------------------------------


def _ci(summary: MetricSummary) -> str:
    if summary.ci_low is None or summary.ci_high is None:
        return "-"
    return f"[{number(summary.ci_low)}, {number(summary.ci_high)}]"


def report_markdown(report: JobReport) -> str:
    """The report as Markdown."""
    c = report.counts
    parts = [
        f"# Job {report.job.id}: {markdown_cell(report.job.label)}",
        "",
        f"- Status: {report.job.status}" + (f" ({markdown_cell(report.error)})" if report.error else ""),
        f"- Created: {report.created_at or '-'}; updated: {report.updated_at or '-'}",
        f"- Samples: {c.samples} ({c.scored} scored, {c.failed} failed, {c.invalid} invalid, "
        f"{c.unparsed} unparsed, {c.truncated} truncated)",
        "",
        "## Metrics (95% CI: percentile bootstrap)",
        "",
        markdown_table(
            ["scope", "name", "metric", "n", "mean", "stderr", "95% CI", "missing"],
            [
                [m.scope, m.name, m.metric, m.n, number(m.mean), number(m.stderr), _ci(m), m.nan_count]
                for m in report.metrics
            ],
        )
        if report.metrics
        else "_No scores recorded._",
        "",
        "## Samples per task",
        "",
        markdown_table(
            ["task", "samples", "scored", "failed", "invalid", "unparsed", "truncated"],
            [
                [t.task, t.samples, t.scored, t.failed, t.invalid, t.unparsed, t.truncated]
                for t in report.tasks
            ],
        ),
        "",
    ]
    return "\n".join(parts)


def report_html(report: JobReport) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no script)."""
    plot = forest_plot(
        [
            ForestRow(
                label=f"{m.name} · {m.metric}", value=m.mean, low=m.ci_low, high=m.ci_high,
                group=m.scope == "group", tone="neutral",
            )
            for m in report.metrics
            if m.mean is not None
        ]
    )  # fmt: skip
    return environment().get_template("job_report.html.j2").render(report=report, plot=plot, ci=_ci)


def _cell(text: str | None) -> str:
    if not text:
        return ""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_rows(sample: SampleRecord) -> list[list[Any]]:
    base = [sample.task, sample.index]
    tail = [
        sample.extra.get("error_kind") or ("inference" if sample.error else ""),
        _cell(sample.error),
        sample.finish_reason or "",
        _cell(sample.output_text),
    ]
    if sample.error is not None or not sample.scores:
        return [[*base, "", "", "", *tail]]
    rows = []
    for metric, scores in sample.scores.items():
        for name, value in (scores or {}).items():
            if value is None or isinstance(value, bool | int | float):
                shown = (
                    "" if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
                )
                rows.append([*base, metric, name, shown, *tail])
    return rows or [[*base, "", "", "", *tail]]


async def report_csv(store: Store, job_id: str) -> AsyncIterator[str]:
    """The job's samples as CSV text, a header then chunks of rows; the job is never read whole."""
    if await store.get_job(job_id) is None:
        raise NotFoundError(f"Job {job_id!r} not found")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    fields = ("output_text", "finish_reason", "scores", "error", "extra")
    async for batch in store.iter_samples(job_id, batch_size=_BATCH, fields=fields):
        buffer.seek(0)
        buffer.truncate()
        for sample in batch:
            writer.writerows(_csv_rows(sample))
        yield buffer.getvalue()


async def render_report(store: Store, job_id: str, report_format: str) -> AsyncIterator[str]:
    """The report of ``job_id`` in ``report_format`` as text chunks (CSV streams; the others are one)."""
    if report_format not in REPORT_FORMATS:
        raise InvalidInputError(
            f"Unknown report format {report_format!r}; accepted: {', '.join(REPORT_FORMATS)}"
        )
    if report_format == "csv":
        async for chunk in report_csv(store, job_id):
            yield chunk
        return
    report = await build_job_report(store, job_id)
    if report_format == "json":
        yield report.model_dump_json(indent=2)
    elif report_format == "md":
        yield report_markdown(report)
    else:
        yield report_html(report)
