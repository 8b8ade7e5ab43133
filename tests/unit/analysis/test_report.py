"""Job reports and comparison pages on a real SQLite store: figures, counts, escaping of untrusted text."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from evalstack.analysis import compare_jobs
from evalstack.analysis.render import comparison_html, comparison_markdown
from evalstack.analysis.report import build_job_report, render_report, report_html, report_markdown
from evalstack.engine.aggregate.stats import bootstrap_ci
from evalstack.errors import InvalidInputError, NotFoundError
from evalstack.store.records import JobRecord, SampleRecord
from evalstack.store.repository import Store

XSS = "<script>alert(1)</script><img src=x onerror=alert(1)>"


def sample(task: str, index: int, right: float, **changes: object) -> SampleRecord:
    record = SampleRecord(
        task=task,
        index=index,
        item={"question": f"q{index}"},
        output_text=XSS if index == 0 else f"answer {index}",
        finish_reason="stop",
        scores={"exact_match": {"exact_match": right}, "parsed": {"flexible": 1.0}},
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(f"sqlite:///{tmp_path / 'report.db'}") as opened:
        spec = {"config": {"type": "custom", "name": XSS}, "target": {"type": "model", "model": "m"}}
        for job_id, shift in (("a", 0), ("b", 1)):
            await opened.create_job(JobRecord(id=job_id, front="nemo", spec=spec, status="completed"))
            samples = [sample(XSS, i, float((i + shift) % 2)) for i in range(20)]
            samples += [sample("plain", i, float(i % 4 == 0)) for i in range(8)]
            samples += [
                sample("plain", 8, 1.0, finish_reason="length"),
                sample(
                    "plain", 9, 0.0, scores={"exact_match": {"exact_match": 0.0}, "parsed": {"flexible": 0.0}}
                ),
                sample("plain", 10, 0.0, scores={}, error="endpoint down", extra={"error_kind": "inference"}),
                sample("plain", 11, 0.0, scores={}, error="bad template", extra={"error_kind": "invalid"}),
                sample("plain", 12, 0.0, output_text='=HYPERLINK("http://x")'),
            ]
            await opened.add_samples(job_id, samples)
        yield opened


async def test_report_has_metrics_with_cis_and_counts(store: Store) -> None:
    report = await build_job_report(store, "a")
    assert report.job.benchmark == XSS
    c = report.counts
    assert (c.samples, c.scored, c.failed, c.invalid, c.unparsed, c.truncated) == (33, 31, 1, 1, 1, 1)
    plain = next(m for m in report.metrics if m.scope == "task" and m.name == "plain")
    values = [float(i % 4 == 0) for i in range(8)] + [1.0, 0.0, 0.0]
    assert (plain.metric, plain.n) == ("exact_match", 11)
    assert plain.mean == pytest.approx(sum(values) / len(values))
    assert (plain.ci_low, plain.ci_high) == pytest.approx(bootstrap_ci(values, resamples=1000, seed=0))
    overall = next(m for m in report.metrics if m.scope == "group")
    assert (overall.name, overall.n) == ("all", 31)  # two tasks pooled
    by_task = {t.task: (t.samples, t.failed, t.invalid) for t in report.tasks}
    assert by_task == {XSS: (20, 0, 0), "plain": (13, 1, 1)}


async def test_untrusted_text_is_escaped_in_html_and_markdown(store: Store) -> None:
    report = await build_job_report(store, "a")
    for page in (report_html(report), comparison_html(await compare_jobs(store, "a", "b"))):
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert "<script" not in page  # no script of our own either
    for text in (report_markdown(report), comparison_markdown(await compare_jobs(store, "a", "b"))):
        assert "<script>" not in text and "&lt;script&gt;" in text


async def test_csv_has_one_row_per_sample_and_score_and_disarms_formulas(store: Store) -> None:
    text = "".join([chunk async for chunk in render_report(store, "a", "csv")])
    rows = list(csv.DictReader(io.StringIO(text)))
    scored = [r for r in rows if r["metric"]]
    assert len(scored) == 31 * 2  # exact_match and the parsed diagnostic for each scored sample
    failed = [r for r in rows if r["error"]]
    assert [(r["index"], r["error_kind"], r["error"]) for r in failed] == [
        ("10", "inference", "endpoint down"),
        ("11", "invalid", "bad template"),
    ]
    first = next(r for r in rows if r["task"] == XSS and r["index"] == "0")
    assert first["output"] == XSS  # CSV is data: kept exactly
    formula = next(r for r in rows if r["task"] == "plain" and r["index"] == "12")
    assert formula["output"] == '\'=HYPERLINK("http://x")'


async def test_json_report_and_errors(store: Store) -> None:
    text = "".join([chunk async for chunk in render_report(store, "b", "json")])
    assert json.loads(text)["counts"]["samples"] == 33
    with pytest.raises(InvalidInputError, match="accepted: md, html, json, csv"):
        [chunk async for chunk in render_report(store, "b", "pdf")]
    with pytest.raises(NotFoundError, match="'zzz'"):
        [chunk async for chunk in render_report(store, "zzz", "md")]
    with pytest.raises(NotFoundError, match="'zzz'"):
        [chunk async for chunk in render_report(store, "zzz", "csv")]
