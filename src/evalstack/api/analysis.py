"""``GET /v1/evalstack/compare`` and ``GET /v1/evalstack/jobs/{job_id}/report``: comparisons and reports.

``/evalstack/compare?baseline=A&candidate=B[&cluster=FIELD][&format=json|md|html]`` returns the
paired comparison (:class:`evalstack.analysis.Comparison` as JSON by default).
``/evalstack/jobs/{job_id}/report?format=md|html|json|csv`` returns a job's report; CSV streams.
HTML answers carry a Content-Security-Policy that allows no script. Errors use the Llama Stack
family's body (``{"error": {"message": ...}}``): 404 for an unknown job, 400 for bad input.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from evalstack.analysis import compare_jobs
from evalstack.analysis.render import comparison_html, comparison_markdown
from evalstack.analysis.report import MEDIA_TYPES, render_report
from evalstack.api.llama_stack.errors import LlamaStackRoute, not_found_status
from evalstack.errors import NotFoundError

if TYPE_CHECKING:
    from evalstack.store.repository import Store

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
    "X-Content-Type-Options": "nosniff",
}
"""Headers of every rendered answer: no script, no outside resources, no type sniffing."""


def analysis_router(store: Store) -> APIRouter:
    """Routes under ``/evalstack`` (mounted at ``/v1``) for comparisons and reports."""
    router = APIRouter(route_class=LlamaStackRoute)

    @router.get("/evalstack/compare", tags=["evalstack"], response_model=None)
    @not_found_status(404)
    async def compare(
        baseline: str = Query(..., min_length=1, description="The baseline job id."),
        candidate: str = Query(..., min_length=1, description="The candidate job id."),
        cluster: str | None = Query(None, description="Item field to cluster standard errors on."),
        format: Literal["json", "md", "html"] = Query("json"),
    ) -> Any:
        comparison = await compare_jobs(store, baseline, candidate, cluster=cluster)
        if format == "json":
            return comparison.model_dump(mode="json")
        if format == "md":
            return Response(
                comparison_markdown(comparison), media_type=MEDIA_TYPES["md"], headers=PAGE_HEADERS
            )
        return Response(comparison_html(comparison), media_type=MEDIA_TYPES["html"], headers=PAGE_HEADERS)

    @router.get("/evalstack/jobs/{job_id}/report", tags=["evalstack"], response_model=None)
    @not_found_status(404)
    async def report(job_id: str, format: Literal["md", "html", "json", "csv"] = Query("html")) -> Response:
        if await store.get_job(job_id) is None:
            raise NotFoundError(f"Job {job_id!r} not found")
        chunks = render_report(store, job_id, format)
        headers = dict(PAGE_HEADERS)
        if format == "csv":
            headers["Content-Disposition"] = f'attachment; filename="{job_id}.csv"'
            return StreamingResponse(chunks, media_type=MEDIA_TYPES["csv"], headers=headers)
        return Response(await _joined(chunks), media_type=MEDIA_TYPES[format], headers=headers)

    return router


async def _joined(chunks: AsyncIterator[str]) -> str:
    return "".join([chunk async for chunk in chunks])
