"""The store: resources, dataset rows, jobs and per-sample records on a real SQLite file, and on a
real PostgreSQL server where one can be started (see ``tests/fakes/postgres.py``; skipped, saying
why, where none can)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from evalstack.auth import Principal, current_principal
from evalstack.errors import ConflictError, ForbiddenError, NotFoundError
from evalstack.store.records import CachedResponse, JobRecord, SampleRecord, new_job_id
from evalstack.store.repository import Store
from tests.fakes.postgres import PostgresUnavailable, fresh_database, postgres_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server for the store tests: {exc}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nested' / 'folder' / 'evalstack.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[str]:
    """Every store test runs on SQLite, and again on an empty PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url
        return
    with fresh_database(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    store = Store(db_url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def sample(task: str, index: int, text: str = "out", **kw: object) -> SampleRecord:
    return SampleRecord(task=task, index=index, item={"q": f"question {index}"}, output_text=text, **kw)  # type: ignore[arg-type]


# ---- lifecycle ----------------------------------------------------------------------------------


async def test_open_creates_the_parent_folder_and_uses_wal(tmp_path: Path, sqlite_url: str) -> None:
    store = Store(sqlite_url)
    await store.open()
    await store.put_resource("model", "m", {"x": 1})
    await store.close()
    path = tmp_path / "nested" / "folder" / "evalstack.db"
    assert path.is_file()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_using_a_store_before_open_says_so() -> None:
    with pytest.raises(RuntimeError, match="open"):
        await Store("sqlite://").get_job("x")


async def test_in_memory_sqlite_works_across_calls() -> None:
    async with Store("sqlite://") as store:
        await store.put_resource("dataset", "d", {"a": 1})
        assert await store.get_resource("dataset", "d") == {"a": 1}


async def test_database_work_runs_off_the_event_loop_thread(store: Store) -> None:
    loop_thread = threading.get_ident()
    worker = await store._run(threading.get_ident)
    assert worker != loop_thread


async def test_a_read_never_waits_behind_a_write_in_progress(store: Store) -> None:
    job = await store.create_job(JobRecord(id=new_job_id(), front="nemo", spec={"k": 1}))
    await store.add_samples(job.id, [sample("t", 0)])
    writer_busy, release_writer = threading.Event(), threading.Event()

    def long_write() -> None:  # holds the writer thread, as a large batch of samples would
        writer_busy.set()
        release_writer.wait(10)

    write = asyncio.ensure_future(store._run(long_write))
    try:
        await asyncio.to_thread(writer_busy.wait, 5)
        read = await asyncio.wait_for(store.get_job(job.id), 5)  # not queued behind the write
        page = await asyncio.wait_for(store.page_samples(job.id), 5)
        assert read is not None and read.spec == {"k": 1}
        assert [s.index for s in page.samples] == [0]
        assert not write.done()
    finally:
        release_writer.set()
        await write


async def test_a_read_sees_every_write_awaited_before_it(store: Store) -> None:
    job = await store.create_job(JobRecord(id=new_job_id(), front="nemo", spec={}))
    for step in range(20):
        await store.update_job(job.id, progress={"step": step})
        await store.add_samples(job.id, [sample("t", step)])
        seen = await store.get_job(job.id)
        assert seen is not None and seen.progress == {"step": step}
        assert await store.count_samples(job.id) == step + 1
        assert (await store.page_samples(job.id, limit=100)).samples[-1].index == step


async def test_a_job_and_a_page_read_back_exactly_what_the_bulk_reads_do(store: Store) -> None:
    spec = {"config": {"tasks": {"qa": {"é": ["ü", 1.5, None, True, {"deep": [[]]}]}}}, "big": 2**53 + 1}
    job = await store.create_job(JobRecord(id=new_job_id(), front="nemo", spec=spec))
    await store.update_job(job.id, result={"scores": {"acc": 0.25}}, progress={"done": 3})
    records = [
        SampleRecord("qa", 0, {"q": "naïve ☃", "n": [1, 2.5, None]}, "x", {"choices": [{"t": "ok"}]}, "stop",
                     {"m": {"score": 1.0}}, None, {"note": {"a": None}}),
        SampleRecord("qa", 1, {"q": None}, None, None, None, {}, "boom", {}),
        SampleRecord("qa", 2, {}, "", {}, "length", {"m": {"score": None}}, None, {"list": []}),
    ]  # fmt: skip
    await store.add_samples(job.id, records)
    assert (await store.page_samples(job.id)).samples == await store.read_samples(job.id) == records
    read = await store.get_job(job.id)
    assert read is not None
    assert (read.spec, read.result, read.progress) == (spec, {"scores": {"acc": 0.25}}, {"done": 3})
    assert await store.list_jobs() == [read]


async def test_everything_survives_a_restart(db_url: str) -> None:
    first = Store(db_url)
    await first.open()
    await first.put_resource(
        "benchmark", "b1", {"identifier": "b1", "scoring_functions": ["basic::equality"]}
    )
    await first.replace_rows("ds", [{"i": i} for i in range(3)])
    job = await first.create_job(JobRecord(id=new_job_id(), front="llama_stack", spec={"k": [1, 2]}))
    await first.update_job(job.id, status="completed", result={"scores": {"acc": 0.5}})
    await first.add_samples(job.id, [sample("t", 0, scores={"acc": {"score": 1.0}}), sample("t", 1)])
    await first.close()

    second = Store(db_url)
    await second.open()
    try:
        assert await second.get_resource("benchmark", "b1") == {
            "identifier": "b1",
            "scoring_functions": ["basic::equality"],
        }
        assert await second.read_rows("ds") == [{"i": 0}, {"i": 1}, {"i": 2}]
        again = await second.get_job(job.id)
        assert again is not None
        assert again.status == "completed"
        assert again.result == {"scores": {"acc": 0.5}}
        assert again.spec == {"k": [1, 2]}
        assert again.created_at == job.created_at
        samples = await second.read_samples(job.id)
        assert [(s.task, s.index) for s in samples] == [("t", 0), ("t", 1)]
        assert samples[0].scores == {"acc": {"score": 1.0}}
    finally:
        await second.close()


# ---- resources ----------------------------------------------------------------------------------


async def test_put_resource_upserts_and_keeps_first_registration_order(store: Store) -> None:
    await store.put_resource("model", "a", {"v": 1})
    await store.put_resource("model", "b", {"v": 2})
    await store.put_resource("model", "a", {"v": 3})
    await store.put_resource("dataset", "a", {"other": True})
    assert await store.list_resources("model") == [{"v": 3}, {"v": 2}]
    assert await store.get_resource("model", "a") == {"v": 3}
    assert await store.get_resource("dataset", "a") == {"other": True}
    assert await store.get_resource("model", "missing") is None


async def test_delete_resource_reports_whether_it_existed(store: Store) -> None:
    await store.put_resource("scoring_fn", "f", {})
    assert await store.delete_resource("scoring_fn", "f") is True
    assert await store.delete_resource("scoring_fn", "f") is False
    assert await store.list_resources("scoring_fn") == []


async def test_add_resource_never_overwrites(store: Store) -> None:
    assert await store.add_resource("nemo_config", "ns/a", {"v": 1}) is True
    assert await store.add_resource("nemo_config", "ns/a", {"v": 2}) is False
    assert await store.get_resource("nemo_config", "ns/a") == {"v": 1}


async def test_resource_kind_must_be_a_plain_name(store: Store) -> None:
    with pytest.raises(ValueError, match="kind"):
        await store.put_resource("Bad Kind!", "k", {})


async def test_keys_with_slashes_colons_and_unicode_round_trip(store: Store) -> None:
    key = "team/qa:slice/ünïcode"
    await store.put_resource("dataset", key, {"text": "日本語 ✓"})
    assert await store.get_resource("dataset", key) == {"text": "日本語 ✓"}


# ---- dataset rows -------------------------------------------------------------------------------


async def test_rows_replace_append_read_and_count(store: Store) -> None:
    await store.replace_rows("ds", [{"i": i} for i in range(5)])
    await store.append_rows("ds", [{"i": 5}, {"i": 6}])
    assert await store.count_rows("ds") == 7
    assert await store.read_rows("ds", 2, 3) == [{"i": 2}, {"i": 3}, {"i": 4}]
    assert await store.read_rows("ds", 5) == [{"i": 5}, {"i": 6}]
    assert await store.read_rows("ds", 6, 10) == [{"i": 6}]
    assert await store.read_rows("ds", 9, 2) == []
    assert await store.read_rows("ds", 0, 0) == []
    await store.replace_rows("ds", [{"new": True}])
    assert await store.read_rows("ds") == [{"new": True}]
    await store.delete_rows("ds")
    assert await store.count_rows("ds") == 0


async def test_rows_of_different_datasets_do_not_mix(store: Store) -> None:
    await store.append_rows("a", [{"x": 1}])
    await store.append_rows("b", [{"y": 1}])
    await store.append_rows("a", [{"x": 2}])
    assert await store.read_rows("a") == [{"x": 1}, {"x": 2}]
    assert await store.read_rows("b") == [{"y": 1}]


async def test_read_rows_rejects_negative_bounds(store: Store) -> None:
    with pytest.raises(ValueError, match="start"):
        await store.read_rows("ds", -1)
    with pytest.raises(ValueError, match="limit"):
        await store.read_rows("ds", 0, -2)


# ---- jobs ---------------------------------------------------------------------------------------


async def test_create_job_sets_timestamps_and_refuses_duplicates(store: Store) -> None:
    job = await store.create_job(JobRecord(id="eval-1", front="nemo", spec={}))
    assert job.created_at is not None and job.created_at.tzinfo is not None
    assert job.updated_at == job.created_at
    with pytest.raises(ConflictError, match="eval-1"):
        await store.create_job(JobRecord(id="eval-1", front="nemo", spec={}))


async def test_update_job_changes_fields_and_bumps_updated_at(store: Store) -> None:
    job = await store.create_job(JobRecord(id="eval-2", front="nemo", spec={}))
    await asyncio.sleep(0.01)
    updated = await store.update_job("eval-2", status="running", progress={"samples_processed": 3})
    assert updated.status == "running"
    assert updated.progress == {"samples_processed": 3}
    assert updated.updated_at is not None and job.updated_at is not None
    assert updated.updated_at > job.updated_at
    assert updated.created_at == job.created_at
    failed = await store.update_job("eval-2", status="failed", error="endpoint down")
    assert (failed.status, failed.error, failed.progress) == (
        "failed",
        "endpoint down",
        {"samples_processed": 3},
    )


async def test_update_job_errors_name_the_problem(store: Store) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        await store.update_job("nope", status="running")
    await store.create_job(JobRecord(id="eval-3", front="nemo", spec={}))
    with pytest.raises(TypeError, match="colour"):
        await store.update_job("eval-3", colour="red")
    with pytest.raises(ValueError, match="accepted"):
        await store.update_job("eval-3", status="exploded")


async def test_list_jobs_newest_first_and_by_front(store: Store) -> None:
    for job_id, front in [("j1", "nemo"), ("j2", "llama_stack"), ("j3", "nemo")]:
        await store.create_job(JobRecord(id=job_id, front=front, spec={}))  # type: ignore[arg-type]
    assert [j.id for j in await store.list_jobs()] == ["j3", "j2", "j1"]
    assert [j.id for j in await store.list_jobs("nemo")] == ["j3", "j1"]
    assert await store.get_job("missing") is None


async def test_delete_job_deletes_its_samples_only(store: Store) -> None:
    await store.create_job(JobRecord(id="keep", front="nemo", spec={}))
    await store.create_job(JobRecord(id="drop", front="nemo", spec={}))
    await store.add_samples("keep", [sample("t", 0)])
    await store.add_samples("drop", [sample("t", 0), sample("t", 1)])
    assert await store.delete_job("drop") is True
    assert await store.delete_job("drop") is False
    assert await store.get_job("drop") is None
    assert await store.count_samples("drop") == 0
    assert await store.count_samples("keep") == 1


def test_new_job_id_is_eval_plus_22_base58_characters() -> None:
    ids = {new_job_id() for _ in range(500)}
    assert len(ids) == 500
    for job_id in ids:
        assert job_id.startswith("eval-")
        body = job_id.removeprefix("eval-")
        assert len(body) == 22
        assert not set(body) & set("0OIl+/=-_")


# ---- samples ------------------------------------------------------------------------------------


async def test_samples_round_trip_every_field(store: Store) -> None:
    record = SampleRecord(
        task="qa",
        index=7,
        item={"question": "2+2?", "nested": {"list": [1, "two", None]}},
        output_text="4",
        response={"choices": [{"message": {"content": "4"}}]},
        finish_reason="stop",
        scores={"exact": {"score": 1.0}, "judge": {"score": None}},
        error=None,
        extra={"latency": 0.25},
    )
    await store.add_samples("job", [record])
    assert await store.read_samples("job") == [record]


async def test_add_samples_is_idempotent_first_write_wins(store: Store) -> None:
    await store.add_samples("job", [sample("t", 0, "first"), sample("t", 1, "first")])
    await store.add_samples(
        "job", [sample("t", 1, "second"), sample("t", 2, "second"), sample("t", 2, "third")]
    )
    samples = await store.read_samples("job")
    assert [(s.index, s.output_text) for s in samples] == [(0, "first"), (1, "first"), (2, "second")]
    assert await store.count_samples("job") == 3


async def test_read_samples_orders_by_task_then_index_and_filters(store: Store) -> None:
    await store.add_samples("job", [sample("b", 1), sample("a", 2), sample("b", 0), sample("a", 10)])
    assert [(s.task, s.index) for s in await store.read_samples("job")] == [
        ("a", 2),
        ("a", 10),
        ("b", 0),
        ("b", 1),
    ]
    assert [s.index for s in await store.read_samples("job", task="b")] == [0, 1]
    assert await store.recorded_indices("job") == {"a": {2, 10}, "b": {0, 1}}
    assert await store.recorded_indices("other") == {}


async def test_error_samples_are_kept_apart(store: Store) -> None:
    await store.add_samples(
        "job", [sample("t", 0), SampleRecord(task="t", index=1, item={}, error="HTTP 503")]
    )
    samples = await store.read_samples("job")
    assert [s.error for s in samples] == [None, "HTTP 503"]
    assert samples[1].scores == {}


async def test_concurrent_add_samples_from_many_tasks_lose_and_duplicate_nothing(store: Store) -> None:
    async def writer(worker: int) -> None:
        for batch in range(5):
            # Every writer also rewrites indices another writer owns: duplicates must be dropped.
            indices = [worker * 50 + batch * 10 + i for i in range(10)]
            await store.add_samples("job", [sample("t", i) for i in indices])
            await store.add_samples("job", [sample("t", (i + 50) % 1000) for i in indices])

    await asyncio.gather(*(writer(w) for w in range(20)))
    assert await store.count_samples("job") == 1000
    assert await store.recorded_indices("job") == {"t": set(range(1000))}


async def test_a_cancelled_caller_does_not_lose_a_write(store: Store) -> None:
    task = asyncio.create_task(store.add_samples("job", [sample("t", i) for i in range(2000)]))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The transaction was already handed to the store's thread: it completes as a whole.
    assert await store.count_samples("job") in (0, 2000)


# ---- job leases ---------------------------------------------------------------------------------


async def test_job_leases_are_held_by_one_owner_renewed_released_and_taken_over(store: Store) -> None:
    assert await store.claim_job("j", "a", ttl=30)
    assert await store.claim_job("j", "a", ttl=30)  # the holder renews
    assert not await store.claim_job("j", "b", ttl=30)  # a live lease is not taken
    assert await store.claim_job("j", "b", ttl=30, owner_gone=lambda holder: holder == "a")
    assert await store.renew_job_leases("b", ["j", "unknown"], ttl=30) == {"j"}
    assert await store.renew_job_leases("a", ["j"], ttl=30) == set()  # "a" lost it
    await store.release_job("j", "a")  # not the holder: nothing happens
    assert not await store.claim_job("j", "c", ttl=30)
    await store.release_job("j", "b")
    assert await store.claim_job("j", "c", ttl=30)
    assert await store.claim_job("k", "a", ttl=-1)  # a lease that has already lapsed...
    assert await store.claim_job("k", "b", ttl=30)  # ...is taken over by the next claim


# ---- response cache -----------------------------------------------------------------------------


def cached(key: str, model: str = "http://h/v1#m", text: str = "answer", size: int = 10) -> CachedResponse:
    return CachedResponse(key, model, text, "stop", {"choices": [{"text": text}]}, size)


async def get_one(store: Store, key: str, max_age: float | None = None) -> CachedResponse | None:
    return (await store.get_cached_responses([key], max_age)).get(key)


async def test_cached_responses_are_read_back_and_replaced(store: Store) -> None:
    assert await store.get_cached_responses(["k1"]) == {}
    await store.put_cached_responses([cached("k1", text="first"), cached("k2")])
    both = await store.get_cached_responses([f"k{n}" for n in range(1, 1200)])  # more than one IN list
    assert set(both) == {"k1", "k2"}
    hit = both["k1"]
    assert (hit.text, hit.finish_reason, hit.raw, hit.size) == (
        "first",
        "stop",
        {"choices": [{"text": "first"}]},
        10,
    )
    assert hit.created_at is not None and hit.created_at.tzinfo is not None
    await store.put_cached_responses([cached("k1", text="second", size=7)])
    again = await get_one(store, "k1")
    assert again is not None and (again.text, again.size) == ("second", 7)


async def test_cached_responses_expire_and_survive_reopening(store: Store, db_url: str) -> None:
    await store.put_cached_responses([cached("k1")])
    await asyncio.sleep(0.05)
    assert await get_one(store, "k1", max_age=3600) is not None
    assert await get_one(store, "k1", max_age=0.01) is None
    await store.close()
    await store.open()
    assert await get_one(store, "k1") is not None


async def test_cache_summary_and_clear_by_model_and_age(store: Store) -> None:
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    old = [
        replace(cached(key, "m-a", size=size), created_at=two_hours_ago)
        for key, size in (("a1", 5), ("a2", 6))
    ]
    await store.put_cached_responses(old)
    await store.put_cached_responses([cached("b1", "m-b", size=100)])
    summary = await store.cache_summary(max_age=3600)
    assert (summary.entries, summary.bytes, summary.expired) == (3, 111, 2)
    assert summary.models == {"m-a": {"entries": 2, "bytes": 11}, "m-b": {"entries": 1, "bytes": 100}}
    assert summary.oldest == two_hours_ago and summary.newest is not None and summary.oldest < summary.newest
    assert await store.clear_cache(max_age=3600) == 2  # the expired ones only
    assert await get_one(store, "b1") is not None
    await store.put_cached_responses([cached("a1", "m-a")])
    assert await store.clear_cache(model="m-b") == 1
    assert (await store.cache_summary()).models == {"m-a": {"entries": 1, "bytes": 10}}
    assert await store.clear_cache() == 1
    assert (await store.cache_summary()).entries == 0


async def test_iter_samples_reads_every_sample_in_order_in_bounded_batches(store: Store) -> None:
    # "b" sorts after "a", and index 10 after 9 (numbers, not text): the keyset must cross both
    await store.add_samples("job", [sample("b", i) for i in range(12)] + [sample("a", i) for i in range(5)])
    await store.add_samples("other", [sample("a", 0)])
    batches = [batch async for batch in store.iter_samples("job", batch_size=4)]
    assert [len(b) for b in batches] == [4, 4, 4, 4, 1]
    read = [(s.task, s.index) for b in batches for s in b]
    assert read == [("a", i) for i in range(5)] + [("b", i) for i in range(12)]
    assert batches[0][0] == (await store.read_samples("job"))[0]
    assert [b async for b in store.iter_samples("missing")] == []
    (light,) = [b async for b in store.iter_samples("other", fields=("scores", "error"))]
    assert (light[0].task, light[0].index, light[0].item, light[0].output_text) == ("a", 0, {}, None)
    with pytest.raises(ValueError, match="accepted: item, output_text"):
        [b async for b in store.iter_samples("job", fields=("prompt",))]
    with pytest.raises(ValueError, match="batch_size"):
        [b async for b in store.iter_samples("job", batch_size=0)]


async def test_read_samples_reads_only_the_fields_asked_for(store: Store) -> None:
    full = sample("a", 0)
    full.error, full.extra = "boom", {"lm_eval": {"metrics": {"none": {"acc": 1.0}}}}
    await store.add_samples("job", [full, sample("a", 1)])
    (whole, _) = await store.read_samples("job")
    assert whole == full
    light = await store.read_samples("job", fields={"error", "extra"})
    assert [(s.index, s.error, s.extra) for s in light] == [(0, "boom", full.extra), (1, None, {})]
    assert (light[0].item, light[0].output_text, light[0].scores) == ({}, None, {})  # not read
    with pytest.raises(ValueError, match="accepted: item, output_text"):
        await store.read_samples("job", fields=("prompt",))


# ---- ownership ----------------------------------------------------------------------------------


async def test_jobs_and_resources_record_their_creator_and_guard_deletion(store: Store) -> None:
    alice = Principal("alice", frozenset({"read", "run"}))
    bob = Principal("bob", frozenset({"read", "run"}))
    ops = Principal("ops", frozenset({"read", "run", "admin"}))
    token = current_principal.set(alice)
    try:
        await store.put_resource("dataset", "ds", {"identifier": "ds"})
        job = await store.create_job(JobRecord(id="job-alice", front="nemo", spec={}))
    finally:
        current_principal.reset(token)
    assert job.created_by == "alice"
    stored = await store.get_job("job-alice")
    assert stored is not None and stored.created_by == "alice"
    assert await store.resource_creator("dataset", "ds") == "alice"

    token = current_principal.set(bob)
    try:
        with pytest.raises(ForbiddenError, match=r"replacing what others created needs the 'admin' scope"):
            await store.put_resource("dataset", "ds", {"identifier": "ds", "v": 2})
        with pytest.raises(ForbiddenError, match=r"created by 'alice'.*'admin' scope"):
            await store.delete_resource("dataset", "ds")
        with pytest.raises(ForbiddenError, match="job 'job-alice' was created by 'alice'"):
            await store.delete_job("job-alice")
    finally:
        current_principal.reset(token)
    assert await store.resource_creator("dataset", "ds") == "alice"
    assert await store.get_job("job-alice") is not None

    token = current_principal.set(ops)
    try:
        await store.put_resource("dataset", "ds", {"identifier": "ds", "v": 3})  # a replace keeps the creator
        assert await store.resource_creator("dataset", "ds") == "alice"
        assert await store.get_resource("dataset", "ds") == {"identifier": "ds", "v": 3}
        assert await store.delete_resource("dataset", "ds")
        assert await store.delete_job("job-alice")
    finally:
        current_principal.reset(token)


async def test_an_older_store_gains_the_created_by_columns(sqlite_url: str) -> None:
    Path(sqlite_url.removeprefix("sqlite:///")).parent.mkdir(parents=True)
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE resources (seq INTEGER PRIMARY KEY, kind VARCHAR(32) NOT NULL, "
                "key VARCHAR(255) NOT NULL, data JSON NOT NULL, created_at DATETIME NOT NULL, "
                "updated_at DATETIME NOT NULL)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO resources (kind, key, data, created_at, updated_at) "
                "VALUES ('dataset', 'old', '{\"identifier\": \"old\"}', '2026-01-01', '2026-01-01')"
            )
        )
    engine.dispose()
    async with Store(sqlite_url) as store:
        assert await store.get_resource("dataset", "old") == {"identifier": "old"}
        assert await store.resource_creator("dataset", "old") is None
        await store.put_resource("dataset", "new", {"identifier": "new"})
        assert await store.resource_creator("dataset", "new") is None
