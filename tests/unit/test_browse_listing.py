"""The job listing over a real store: filters, paging and facets, and the labels it keeps between calls
(never stale, never another job's, reading only the records of the page shown; auth still checked)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from evalstack import browse
from evalstack.auth import hash_key
from evalstack.config import Settings
from evalstack.server import create_app
from evalstack.store.records import JobRecord, new_job_id
from evalstack.store.repository import Store


def nemo_spec(model: str, benchmark: str = "gsm8k") -> dict[str, Any]:
    return {"config": {"type": benchmark}, "target": {"type": "model", "model": model}}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(f"sqlite:///{tmp_path / 'evalstack.db'}") as store:
        yield store


async def add_job(store: Store, model: str, benchmark: str = "gsm8k", status: str = "created") -> str:
    job = await store.create_job(JobRecord(id=new_job_id(), front="nemo", spec=nemo_spec(model, benchmark)))
    if status != "created":
        await store.update_job(job.id, status=status)
    return job.id


async def brute_force(store: Store, query: browse.JobQuery) -> tuple[list[str], int, list[str], list[str]]:
    """What the listing must show, from every full record."""
    jobs = [(job, browse.job_labels(job)) for job in await store.list_jobs(query.front)]
    matching = [
        job.id
        for job, labels in jobs
        if (not query.statuses or job.status in query.statuses)
        and (not query.benchmark or labels.benchmark == query.benchmark)
        and (not query.model or labels.model == query.model)
    ]
    start = (query.page - 1) * query.limit
    benchmarks = sorted({labels.benchmark for _, labels in jobs if labels.benchmark})
    models = sorted({labels.model for _, labels in jobs if labels.model})
    return matching[start : start + query.limit], len(matching), benchmarks, models


def shown(listing: browse.JobListing) -> tuple[list[str], int, list[str], list[str]]:
    return [job.id for job in listing.jobs], listing.total, listing.benchmarks, listing.models


QUERIES = [
    {"limit": "5"},
    {"limit": "5", "page": "3"},
    {"model": "m1"},
    {"benchmark": "mmlu", "limit": "2", "page": "2"},
    {"model": "m2", "benchmark": "gsm8k"},
    {"front": "llama_stack"},
]


async def test_listing_with_kept_labels_shows_what_every_full_record_says(store: Store) -> None:
    for i in range(24):
        await add_job(
            store, f"m{i % 3}", "mmlu" if i % 4 == 0 else "gsm8k", "completed" if i % 5 else "failed"
        )
    labels = browse.JobLabelCache()
    for _ in range(2):  # the second round reads the kept labels
        for params in QUERIES:
            for statuses in ([], ["failed"], ["completed", "failed"]):
                query = browse.parse_job_query(params, statuses)
                expected = await brute_force(store, query)
                assert shown(await browse.list_jobs(store, query, labels)) == expected
                assert shown(await browse.list_jobs(store, query)) == expected  # without kept labels


async def test_a_job_that_progresses_finishes_or_changes_is_listed_as_it_is_now(store: Store) -> None:
    labels = browse.JobLabelCache()
    job_id = await add_job(store, "old-model", status="running")
    everything = browse.parse_job_query({})
    assert (await browse.list_jobs(store, everything, labels)).jobs[0].status == "running"

    await store.update_job(job_id, progress={"samples_processed": 7})
    [job] = (await browse.list_jobs(store, everything, labels)).jobs
    assert job.progress == {"samples_processed": 7}

    await store.update_job(job_id, status="completed", spec=nemo_spec("new-model"))
    completed = browse.parse_job_query({}, ["completed"])
    listing = await browse.list_jobs(store, completed, labels)
    assert [j.id for j in listing.jobs] == [job_id] and listing.jobs[0].status == "completed"
    assert listing.models == ["new-model"]
    assert (await browse.list_jobs(store, browse.parse_job_query({"model": "old-model"}), labels)).total == 0
    assert (await browse.list_jobs(store, browse.parse_job_query({"model": "new-model"}), labels)).total == 1


async def test_kept_labels_never_leak_between_jobs(store: Store) -> None:
    labels = browse.JobLabelCache()
    first = await add_job(store, "alpha")
    second = await add_job(store, "beta")
    await browse.list_jobs(store, browse.parse_job_query({}), labels)
    for model, job_id in (("alpha", first), ("beta", second)):
        listing = await browse.list_jobs(store, browse.parse_job_query({"model": model}), labels)
        assert [job.id for job in listing.jobs] == [job_id]
    await store.delete_job(first)
    listing = await browse.list_jobs(store, browse.parse_job_query({}), labels)
    assert [job.id for job in listing.jobs] == [second] and listing.models == ["beta"]


async def test_a_listing_reads_the_records_of_its_page_only_once_labels_are_kept(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(40):
        await add_job(store, f"m{i % 4}", status="completed")
    labels = browse.JobLabelCache()
    query = browse.parse_job_query({"limit": "5", "page": "2"})
    await browse.list_jobs(store, query, labels)

    read: list[str] = []
    get_jobs = store.get_jobs

    async def counting(job_ids: list[str]) -> list[JobRecord]:
        read.extend(job_ids)
        return await get_jobs(job_ids)

    monkeypatch.setattr(store, "get_jobs", counting)
    listing = await browse.list_jobs(store, query, labels)
    assert sorted(read) == sorted(job.id for job in listing.jobs) and len(read) == 5


async def test_the_oldest_kept_labels_make_room_for_new_ones(store: Store) -> None:
    labels = browse.JobLabelCache(size=3)
    for i in range(5):
        await add_job(store, f"m{i}")
    listing = await browse.list_jobs(store, browse.parse_job_query({}), labels)
    assert listing.total == 5 and listing.models == ["m0", "m1", "m2", "m3", "m4"]
    assert len(labels._labels) == 3


def test_the_kept_labels_are_behind_authentication(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        embedded_model=False,
        auth={"api_keys": [{"name": "reader", "sha256": hash_key("read-key"), "scopes": ["read"]}]},
    )
    with TestClient(create_app(settings)) as client:
        reader = {"Authorization": "Bearer read-key"}
        for _ in range(2):  # the second answer comes from kept labels
            assert client.get("/v1/evalstack/jobs", headers=reader).status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = client.get("/v1/evalstack/jobs", headers=headers)
            assert refused.status_code == 401
            assert "data" not in refused.json()
