"""The JSON listings the web viewer's pages are built on, with the same filters and paging.

- ``GET /v1/evalstack/jobs``: jobs from every front door, newest first. Filters ``status``
  (repeatable), ``front``, ``benchmark``, ``model``; paging ``page`` (from 1) and ``limit``.
- ``GET /v1/evalstack/jobs/{job_id}/samples``: one page of a job's samples in (task, index)
  order. Filters ``task``, ``metric`` with ``outcome``/``min``/``max``, ``error``, ``unparsed``,
  ``truncated``, ``q`` (full-text search); keyset paging with ``after``/``before`` (a sample's
  ``key`` from a previous page) and ``limit``. Counting could scan a whole job, so it is apart:
- ``GET /v1/evalstack/jobs/{job_id}/samples/count``: how many samples match the same filters
  (counting stops at 10,000: ``at_least`` is then true), apart so that a page never waits for it.

Parameters are documented once, in :mod:`evalstack.browse`. Errors use the Llama Stack family's
body (``{"error": {"message": ...}}``): a bad parameter is a 400 naming it and what is accepted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request

from evalstack import browse
from evalstack.api.llama_stack.errors import LlamaStackRoute, not_found_status
from evalstack.errors import InvalidInputError, NotFoundError
from evalstack.store.records import SampleFilter

if TYPE_CHECKING:
    from evalstack.store.repository import Store


def listings_router(store: Store) -> APIRouter:
    """Routes under ``/evalstack/jobs`` (mounted at ``/v1``)."""
    router = APIRouter(route_class=LlamaStackRoute)
    labels = browse.JobLabelCache()  # this app's: a listing reads the records of its page's jobs only

    @router.get("/evalstack/jobs", tags=["evalstack"])
    async def list_jobs(request: Request) -> dict[str, Any]:
        params = request.query_params
        query = browse.parse_job_query(params, params.getlist("status"))
        listing = await browse.list_jobs(store, query, labels)
        return {
            "data": [browse.job_json(job) for job in listing.jobs],
            "total": listing.total,
            "page": query.page,
            "limit": query.limit,
            "next_page": query.page + 1 if listing.has_next else None,
        }

    @router.get("/evalstack/jobs/{job_id}/samples", tags=["evalstack"])
    @not_found_status(404)
    async def list_samples(request: Request, job_id: str) -> dict[str, Any]:
        params = request.query_params
        flt = browse.parse_sample_filter(params)
        after = browse.parse_key("after", params.get("after"))
        before = browse.parse_key("before", params.get("before"))
        limit = browse.page_limit(params.get("limit"))
        if after is not None and before is not None:
            raise InvalidInputError("give after or before, not both")
        if not await store.job_statuses([job_id]):  # exists? (without reading its spec and result)
            raise NotFoundError(f"Job {job_id} not found")
        page = await store.page_samples(job_id, flt, after=after, before=before, limit=limit)
        data = [browse.sample_json(s) for s in page.samples]
        filter_query = browse.filter_params(flt)
        return {
            "data": data,
            "filter": filter_query,
            "next": urlencode({**filter_query, "after": data[-1]["key"]})
            if data and page.has_after
            else None,
            "previous": urlencode({**filter_query, "before": data[0]["key"]})
            if data and page.has_before
            else None,
        }

    @router.get("/evalstack/jobs/{job_id}/samples/count", tags=["evalstack"])
    @not_found_status(404)
    async def count_samples(request: Request, job_id: str) -> dict[str, Any]:
        flt = browse.parse_sample_filter(request.query_params)
        if not await store.job_statuses([job_id]):  # exists? (without reading its spec and result)
            raise NotFoundError(f"Job {job_id} not found")
        if flt == SampleFilter():  # every sample: an exact count on the index
            return {"count": await store.count_samples(job_id), "at_least": False}
        count = await store.count_matching_samples(job_id, flt, cap=browse.COUNT_CAP)
        return {"count": count, "at_least": count >= browse.COUNT_CAP}

    return router
