"""The web viewer's pages under ``/ui/``: jobs, a job, its samples, one sample, and compare.

Server-rendered Jinja2 with autoescaping, so everything a model produced reaches the page as text;
every response carries a Content-Security-Policy that allows no inline script. The pages read the
store through :mod:`evalstack.browse`, the same code as the JSON listings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from evalstack import browse
from evalstack.errors import EvalstackError, InvalidInputError, NotFoundError
from evalstack.redaction import redact
from evalstack.store.records import TERMINAL_STATUSES, JobRecord, SampleFilter, SampleRecord
from evalstack.viewer import charts

if TYPE_CHECKING:
    from evalstack.store.repository import Store

UI_PREFIX = "/ui"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
PREVIEW_CHARS = 160
MAX_FOREST_ROWS = 80
REFERENCE_FIELDS = ("expected_answer", "reference", "answer", "target", "label", "ideal", "gold")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("evalstack.viewer", "templates"),
        autoescape=select_autoescape(["html", "svg"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False, default=str)
    env.filters["num"] = _format_number
    env.filters["thousands"] = lambda value: f"{value:,}" if isinstance(value, int) else value
    return env


def _format_number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "\u2013"  # an en dash
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


# ---- what the pages show, derived from stored records -------------------------------------------


def preview(sample: SampleRecord) -> str:
    """A short one-line view of what the model was asked (the full text is on the sample page)."""
    request = sample.extra.get("request")
    text: Any = None
    if isinstance(request, dict):
        messages = request.get("messages")
        if isinstance(messages, list) and messages:
            text = next(
                (
                    m.get("content")
                    for m in reversed(messages)
                    if isinstance(m, dict) and m.get("role") == "user"
                ),
                messages[-1].get("content") if isinstance(messages[-1], dict) else None,
            )
        text = text if text is not None else request.get("prompt")
    if not isinstance(text, str):
        text = json.dumps(sample.item, ensure_ascii=False, default=str)
    return _clip(text)


def _clip(text: str | None) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


def score_keys(sample: SampleRecord | None) -> list[str]:
    """The ``metric`` or ``metric/score`` names of a sample's scores (diagnostics left out)."""
    if sample is None:
        return []
    keys = []
    for metric, scores in sample.scores.items():
        if metric == browse.PARSED_SCORES:
            continue
        for score in scores:
            keys.append(metric if score == metric else f"{metric}/{score}")
    return keys


@dataclass
class ResultRow:
    """One (task or group, score) entry of a job's result."""

    scope: str
    name: str
    score: str
    value: float | None
    low: float | None
    high: float | None
    n: int | None


def result_rows(result: Mapping[str, Any] | None) -> list[ResultRow]:
    """Every score of a cached result, groups first (NeMo results) or per scoring function (Llama Stack)."""
    rows: list[ResultRow] = []
    result = result or {}
    for scope, section in (("group", "groups"), ("task", "tasks")):
        for name, entry in (result.get(section) or {}).items():
            for metric in ((entry or {}).get("metrics") or {}).values():
                for score_name, score in ((metric or {}).get("scores") or {}).items():
                    stats, ci = score.get("stats") or {}, score.get("ci") or {}
                    value = score.get("value")
                    low, high = ci.get("lower"), ci.get("upper")
                    if (
                        (low is None or high is None)
                        and stats.get("stderr") is not None
                        and value is not None
                    ):
                        low, high = value - 1.96 * stats["stderr"], value + 1.96 * stats["stderr"]
                    rows.append(ResultRow(scope, name, score_name, value, low, high, stats.get("count")))
    for fn_id, scored in (result.get("scores") or {}).items():
        for aggregation, values in ((scored or {}).get("aggregated_results") or {}).items():
            values = values if isinstance(values, dict) else {}
            value = values.get(aggregation)
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            n = values.get("num_total") if isinstance(values.get("num_total"), int) else None
            low, high = browse.proportion_ci(float(value), n)
            rows.append(ResultRow("function", fn_id, aggregation, float(value), low, high, n))
    return rows


def task_table(result: Mapping[str, Any] | None) -> tuple[list[str], list[dict[str, Any]]]:
    """Per-task rows (MMLU: one per subject) with counts and every score, and the score columns."""
    columns: list[str] = []
    rows = []
    for name, entry in ((result or {}).get("tasks") or {}).items():
        data = (entry or {}).get("data") or {}
        scores: dict[str, dict[str, Any]] = {}
        for metric in ((entry or {}).get("metrics") or {}).values():
            for score_name, score in ((metric or {}).get("scores") or {}).items():
                if score_name not in columns:
                    columns.append(score_name)
                ci = score.get("ci") or {}
                scores[score_name] = {
                    "value": score.get("value"),
                    "low": ci.get("lower"),
                    "high": ci.get("upper"),
                }
        unparsed = data.get("unparsed")
        rows.append(
            {
                "name": name,
                "samples": data.get("samples"),
                "failed": data.get("samples_failed"),
                "unparsed": sum(unparsed.values()) if isinstance(unparsed, dict) else unparsed,
                "truncated": data.get("truncated"),
                "scores": scores,
            }
        )
    return columns, rows


# ---- rendering ----------------------------------------------------------------------------------


class Pages:
    """Renders the pages from a store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.env = _environment()

    def render(self, request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        ui = request.scope.get("root_path", "") + UI_PREFIX
        context.update(ui=ui, static=f"{ui}/static", request_path=request.url.path)
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)

    def error(self, request: Request, status_code: int, message: str) -> HTMLResponse:
        return self.render(request, "error.html", status_code=status_code, message=message)

    # ---- jobs ---------------------------------------------------------------------------------

    async def jobs(self, request: Request) -> HTMLResponse:
        params = request.query_params
        try:
            query = browse.parse_job_query(params, params.getlist("status"))
        except InvalidInputError as exc:
            return self.error(request, 400, exc.message)
        listing = await browse.list_jobs(self.store, query)
        rows = [
            {
                "job": job,
                "labels": browse.job_labels(job),
                "headline": browse.headline(job),
                "rate": _rate(job),
            }
            for job in listing.jobs
        ]
        return self.render(
            request,
            "jobs.html",
            listing=listing,
            rows=rows,
            statuses=browse.JOB_STATUSES,
            benchmarks=listing.benchmarks,
            models=listing.models,
            running=any(j.status not in TERMINAL_STATUSES for j in listing.jobs),
        )

    # ---- one job ------------------------------------------------------------------------------

    async def job(self, request: Request, job_id: str) -> HTMLResponse:
        job = await self.store.get_job(job_id)
        if job is None:
            return self.error(request, 404, f"Job {job_id} not found")
        first = (await self.store.page_samples(job_id, SampleFilter(error="none"), limit=1)).samples
        keys = score_keys(first[0] if first else None)
        rows = result_rows(job.result)
        primary = rows[0].score if rows else None  # the headline's score; the table shows every other
        forest = charts.forest_plot(
            [
                charts.ForestRow(
                    label=row.name,
                    value=row.value,
                    low=row.low,
                    high=row.high,
                    group=row.scope == "group",
                    n=row.n,
                )
                for row in rows
                if row.score == primary and row.value is not None
            ][:MAX_FOREST_ROWS]
        )
        columns, tasks = task_table(job.result)
        counts = self._counts(job, tasks)
        progress = job.progress or {}
        concurrency = progress.get("concurrency") or {}
        others = [j for j in await self.store.list_jobs() if j.id != job.id]
        return self.render(
            request,
            "job.html",
            job=job,
            labels=browse.job_labels(job),
            headline=browse.headline(job),
            rate=_rate(job),
            forest=forest,
            primary=primary,
            columns=columns,
            tasks=tasks,
            score_keys=keys,
            distributions=keys[:4],
            counts=counts,
            concurrency=concurrency,
            concurrency_chart=charts.step_chart(concurrency.get("history") or []),
            spec=json.dumps(redact(job.spec), indent=2, ensure_ascii=False, default=str),
            others=[(j, browse.job_labels(j)) for j in others[:200]],
            running=job.status not in TERMINAL_STATUSES,
        )

    @staticmethod
    def _counts(job: JobRecord, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Errors, invalid, unparsed and truncated samples, each with the filter that lists them.

        From the job's progress and result where they hold the number; otherwise ``count`` is None
        and the page asks the capped count listing, so it never waits for a scan of a large job.
        """
        progress = job.progress or {}

        def from_tasks(field: str) -> int | None:
            values = [t[field] for t in tasks if isinstance(t.get(field), int)]
            return sum(values) if values else None

        def number(value: Any) -> int | None:
            return value if isinstance(value, int) else None

        entries = [
            ("errors", "the model endpoint failed", number(progress.get("errors")), {"error": "inference"}),
            (
                "invalid",
                "bad row, template or metric input",
                number(progress.get("invalid")),
                {"error": "invalid"},
            ),
            ("unparsed", "no answer could be extracted", from_tasks("unparsed"), {"unparsed": "1"}),
            ("truncated", "cut off by max_tokens", from_tasks("truncated"), {"truncated": "1"}),
        ]
        return [
            {
                "label": label,
                "help": help_text,
                "count": count,
                "params": params,
                "count_url": f"/v1/evalstack/jobs/{job.id}/samples/count?{urlencode(params)}",
            }
            for label, help_text, count, params in entries
        ]

    async def distribution(self, request: Request, job_id: str) -> Response:
        """One score's distribution over the job's samples, as an SVG image (loaded apart from the page)."""
        key = request.query_params.get("metric") or ""
        if await self.store.get_job(job_id) is None:
            return Response(status_code=404, headers=SECURITY_HEADERS)
        metric, score = browse.split_metric(key)
        found = await self.store.score_histogram(job_id, metric, score) if key else None
        if found is None:
            return Response(status_code=404, headers=SECURITY_HEADERS)
        low, high, bins = found
        binary = low >= 0 and high <= 1 and not any(bins[1:-1])
        svg = self.env.get_template("distribution.svg").render(
            key=key, binary=binary, counts=bins, chart=charts.histogram(low, high, bins)
        )
        return Response(svg, media_type="image/svg+xml", headers=SECURITY_HEADERS)

    # ---- samples ------------------------------------------------------------------------------

    async def samples(self, request: Request, job_id: str) -> HTMLResponse:
        job = await self.store.get_job(job_id)
        if job is None:
            return self.error(request, 404, f"Job {job_id} not found")
        params = request.query_params
        try:
            flt = browse.parse_sample_filter(params)
            after = browse.parse_key("after", params.get("after"))
            before = browse.parse_key("before", params.get("before"))
            limit = browse.page_limit(params.get("limit"))
        except InvalidInputError as exc:
            return self.error(request, 400, exc.message)
        page = await self.store.page_samples(
            job_id, flt, after=None if before else after, before=before, limit=limit
        )
        first = (await self.store.page_samples(job_id, SampleFilter(error="none"), limit=1)).samples
        filter_query = browse.filter_params(flt)
        rows = [
            {
                "sample": s,
                "key": browse.key_param(browse.sample_key(s)),
                "preview": preview(s),
                "output": _clip(s.output_text),
                "scores": [(k, _score_of(s, k)) for k in score_keys(s)],
            }
            for s in page.samples
        ]
        return self.render(
            request,
            "samples.html",
            job=job,
            labels=browse.job_labels(job),
            flt=flt,
            filter_query=filter_query,
            filter_qs=urlencode(filter_query),
            rows=rows,
            page=page,
            count_url=f"/v1/evalstack/jobs/{job_id}/samples/count?{urlencode(filter_query)}",
            tasks=sorted((job.progress or {}).get("task_status") or {}),
            score_keys=score_keys(first[0] if first else None),
            next_qs=urlencode({**filter_query, "after": rows[-1]["key"]})
            if rows and page.has_after
            else None,
            prev_qs=urlencode({**filter_query, "before": rows[0]["key"]})
            if rows and page.has_before
            else None,
        )

    async def sample(self, request: Request, job_id: str) -> HTMLResponse:
        job = await self.store.get_job(job_id)
        if job is None:
            return self.error(request, 404, f"Job {job_id} not found")
        params = request.query_params
        try:
            key = browse.parse_key("key", params.get("key"))
            flt = browse.parse_sample_filter(params)
        except InvalidInputError as exc:
            return self.error(request, 400, exc.message)
        if key is None:
            return self.error(request, 400, "key is required: a sample key 'index:task' such as '0:my-task'")
        sample = await self.store.get_sample(job_id, key.task, key.index)
        if sample is None:
            return self.error(request, 404, f"Job {job_id} has no sample {key.index} in task {key.task!r}")
        following = await self.store.page_samples(job_id, flt, after=key, limit=1)
        preceding = await self.store.page_samples(job_id, flt, before=key, limit=1)
        filter_query = browse.filter_params(flt)

        def link(other: list[SampleRecord]) -> str | None:
            if not other:
                return None
            return urlencode({"key": browse.key_param(browse.sample_key(other[0])), **filter_query})

        request_sent = sample.extra.get("request")
        return self.render(
            request,
            "sample.html",
            job=job,
            labels=browse.job_labels(job),
            sample=sample,
            key=browse.key_param(key),
            request_sent=redact(request_sent) if isinstance(request_sent, dict) else None,
            references=[(f, sample.item[f]) for f in REFERENCE_FIELDS if f in sample.item],
            scores=[(k, _score_of(sample, k)) for k in score_keys(sample)],
            parsed=sample.scores.get(browse.PARSED_SCORES),
            extracted=sample.extra.get(browse.EXTRACTED, {}),
            judgement=sample.extra.get(browse.JUDGEMENT, {}),
            filter_qs=urlencode(filter_query),
            next_qs=link(following.samples),
            prev_qs=link(preceding.samples),
            permalink=urlencode({"key": browse.key_param(key)}),
        )

    # ---- compare ------------------------------------------------------------------------------

    async def _job_choices(self) -> list[tuple[JobRecord, browse.JobLabels]]:
        return [(j, browse.job_labels(j)) for j in (await self.store.list_jobs())[:500]]

    async def compare(self, request: Request) -> HTMLResponse:
        from evalstack.analysis.compare import compare_jobs

        params = request.query_params
        baseline, candidate = params.get("baseline") or "", params.get("candidate") or ""
        choices = await self._job_choices()
        if not baseline or not candidate:
            return self.render(
                request,
                "compare.html",
                comparison=None,
                choices=choices,
                baseline=baseline,
                candidate=candidate,
            )
        cluster = params.get("cluster") or None
        try:
            comparison = await compare_jobs(self.store, baseline, candidate, cluster=cluster)
        except EvalstackError as exc:
            status = 404 if isinstance(exc, NotFoundError) else 400
            return self.error(request, status, exc.message)
        rows = comparison.rows
        primary = rows[0].metric if rows else None  # the first metric; the table shows every other
        forest = charts.forest_plot(
            [
                charts.ForestRow(
                    label=row.name,
                    value=row.delta,
                    low=row.ci_low,
                    high=row.ci_high,
                    group=row.scope == "group",
                    n=row.n,
                    tone="better" if row.ci_low > 0 else "worse" if row.ci_high < 0 else "",
                )
                for row in rows
                if row.metric == primary
            ][:MAX_FOREST_ROWS],
            centre_zero=True,
        )
        return self.render(
            request,
            "compare.html",
            comparison=comparison,
            choices=choices,
            baseline=baseline,
            candidate=candidate,
            cluster=cluster or "",
            forest=forest,
            primary=primary,
            flip_tables=[
                (row, flip_table(row)) for row in rows if row.kind == "binary" and row.scope == "task"
            ],
        )

    async def flips(self, request: Request) -> HTMLResponse:
        from evalstack.analysis.compare import flipped_samples

        params = request.query_params
        baseline, candidate = params.get("baseline") or "", params.get("candidate") or ""
        task, metric, direction = (
            params.get("task") or "",
            params.get("metric") or "",
            params.get("direction"),
        )
        if not (baseline and candidate and task and metric and direction):
            return self.error(
                request, 400, "baseline, candidate, task, metric and direction (n10 or n01) are required"
            )
        try:
            offset = browse.page_offset(params.get("offset"))
            indices = await flipped_samples(
                self.store,
                baseline,
                candidate,
                task=task,
                metric=metric,
                direction=direction,  # type: ignore[arg-type]
            )
        except EvalstackError as exc:
            status = 404 if isinstance(exc, NotFoundError) else 400
            return self.error(request, status, exc.message)
        shown = indices[offset : offset + FLIPS_PER_PAGE]
        pairs = []
        for index in shown:
            left = await self.store.get_sample(baseline, task, index)
            right = await self.store.get_sample(candidate, task, index)
            if left is not None and right is not None:
                pairs.append(
                    {"index": index, "baseline": left, "candidate": right, "prompt": full_prompt(left)}
                )
        base_job, cand_job = await self.store.get_job(baseline), await self.store.get_job(candidate)
        common = {
            "baseline": baseline,
            "candidate": candidate,
            "task": task,
            "metric": metric,
            "direction": direction,
        }
        return self.render(
            request,
            "flips.html",
            pairs=pairs,
            total=len(indices),
            offset=offset,
            common=common,
            base_labels=browse.job_labels(base_job) if base_job else None,
            cand_labels=browse.job_labels(cand_job) if cand_job else None,
            next_qs=urlencode({**common, "offset": offset + FLIPS_PER_PAGE})
            if offset + FLIPS_PER_PAGE < len(indices)
            else None,
            prev_qs=urlencode({**common, "offset": max(offset - FLIPS_PER_PAGE, 0)}) if offset > 0 else None,
        )


FLIPS_PER_PAGE = 25


def flip_table(row: Any) -> dict[str, int]:
    """The 2x2 table of a binary metric: both right, baseline only, candidate only, both wrong."""
    base_right = round(row.baseline_mean * row.n)
    n10, n01 = row.n10 or 0, row.n01 or 0
    n11 = base_right - n10
    return {"n11": n11, "n10": n10, "n01": n01, "n00": row.n - n11 - n10 - n01}


def full_prompt(sample: SampleRecord) -> str:
    """What the model was asked, whole: the messages' contents, the prompt, or the row as JSON."""
    request = sample.extra.get("request")
    if isinstance(request, dict):
        messages = request.get("messages")
        if isinstance(messages, list) and messages:
            return "\n\n".join(
                f"[{m.get('role')}] {m.get('content')}" if isinstance(m, dict) else str(m) for m in messages
            )
        if isinstance(request.get("prompt"), str):
            return str(request["prompt"])
    return json.dumps(sample.item, ensure_ascii=False, indent=2, default=str)


def _score_of(sample: SampleRecord, key: str) -> float | None:
    metric, score = browse.split_metric(key)
    value = (sample.scores.get(metric) or {}).get(score)
    return value if isinstance(value, int | float) else None


def _rate(job: JobRecord) -> float | None:
    progress = job.progress or {}
    done, elapsed = progress.get("samples_processed"), progress.get("elapsed_s")
    if isinstance(done, int) and isinstance(elapsed, int | float) and elapsed > 0:
        return done / elapsed
    return None


def viewer_router(store: Store) -> APIRouter:
    """The HTML pages; mount with :func:`mount_viewer`."""
    pages = Pages(store)
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def jobs_page(request: Request) -> Response:
        return await pages.jobs(request)

    @router.get("/jobs/{job_id}")
    async def job_page(request: Request, job_id: str) -> Response:
        return await pages.job(request, job_id)

    @router.get("/jobs/{job_id}/distribution.svg")
    async def distribution_image(request: Request, job_id: str) -> Response:
        return await pages.distribution(request, job_id)

    @router.get("/jobs/{job_id}/samples")
    async def samples_page(request: Request, job_id: str) -> Response:
        return await pages.samples(request, job_id)

    @router.get("/jobs/{job_id}/sample")
    async def sample_page(request: Request, job_id: str) -> Response:
        return await pages.sample(request, job_id)

    @router.get("/compare")
    async def compare_page(request: Request) -> Response:
        return await pages.compare(request)

    @router.get("/compare/flips")
    async def flips_page(request: Request) -> Response:
        return await pages.flips(request)

    return router


def mount_viewer(app: FastAPI, store: Store) -> None:
    """Serve the viewer under ``/ui/`` (and send ``/ui`` there)."""

    @app.get(UI_PREFIX, include_in_schema=False)
    async def ui_root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PREFIX}/")

    app.include_router(viewer_router(store), prefix=UI_PREFIX)
    static = files("evalstack.viewer").joinpath("static")
    app.mount(f"{UI_PREFIX}/static", StaticFiles(directory=str(static)), name="viewer-static")
