"""Faults in the store's own database: SQLite locked by another writer, PostgreSQL killed and restarted.

The store retries a call that fails transiently (one transaction, rolled back by the database) for up
to ``reconnect_for`` seconds, so callers wait instead of failing; anything else is raised at once.
The PostgreSQL tests kill a real server of their own (``tests/fakes/postgres.py``) and start it again.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from evalstack.engine.runner import JobWorker
from evalstack.inference.clients import ModelClientPool
from evalstack.store import repository
from evalstack.store.records import JobRecord, SampleRecord, new_job_id
from evalstack.store.repository import Store
from tests.fakes.model_server import FakeModelServer, prompt_of
from tests.fakes.postgres import LocalPostgres, PostgresUnavailable, local_postgres
from tests.unit.engine.test_outage import FAST, answer, compiler


def sample(index: int) -> SampleRecord:
    return SampleRecord(task="t", index=index, item={"q": index}, output_text=f"out {index}")


def hold_write_lock(db: Path, seconds: float) -> threading.Thread:
    """Another connection takes SQLite's write lock and keeps it for ``seconds`` (in a thread)."""
    locked = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(seconds)
            conn.execute("COMMIT")
        finally:
            conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert locked.wait(5), "could not take the write lock"
    return thread


async def test_a_write_blocked_past_the_busy_timeout_is_retried_until_the_lock_is_gone(
    tmp_path: Path,
) -> None:
    db = tmp_path / "evalstack.db"
    async with Store(f"sqlite:///{db}", sqlite_busy_timeout=0.05, reconnect_for=30) as store:
        job = await store.create_job(JobRecord(id=new_job_id(), front="nemo", spec={}))
        holder = hold_write_lock(db, 1.0)
        started = time.monotonic()
        await store.add_samples(job.id, [sample(i) for i in range(10)])
        waited = time.monotonic() - started
        holder.join()
        assert waited >= 0.8, "the write went through while another connection held the lock"
        assert [s.index for s in await store.read_samples(job.id)] == list(range(10))


async def test_a_lock_held_longer_than_reconnect_for_fails_with_sqlites_reason(tmp_path: Path) -> None:
    db = tmp_path / "evalstack.db"
    async with Store(f"sqlite:///{db}", sqlite_busy_timeout=0.05, reconnect_for=0.3) as store:
        job = await store.create_job(JobRecord(id=new_job_id(), front="nemo", spec={}))
        holder = hold_write_lock(db, 1.5)
        with pytest.raises(OperationalError, match="database is locked"):
            await store.add_samples(job.id, [sample(0)])
        holder.join()
        assert await store.read_samples(job.id) == [], "a failed write left a sample behind"
        await store.add_samples(job.id, [sample(0)])
        assert await store.count_samples(job.id) == 1


@pytest.fixture
def postgres() -> Iterator[LocalPostgres]:
    try:
        with local_postgres() as server:
            yield server
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server to kill and restart: {exc}")


async def test_calls_made_while_postgresql_is_down_wait_and_succeed_once_it_is_back(
    postgres: LocalPostgres,
) -> None:
    async with Store(postgres.url, reconnect_for=60) as store:
        job = await store.create_job(JobRecord(id=new_job_id(), front="nemo", spec={}))
        await store.add_samples(job.id, [sample(i) for i in range(5)])
        await asyncio.to_thread(postgres.kill)
        write = asyncio.create_task(store.add_samples(job.id, [sample(i) for i in range(3, 8)]))
        await asyncio.sleep(1.0)
        assert not write.done(), "a write succeeded, or failed, while the server was down"
        await asyncio.to_thread(postgres.start)
        await asyncio.wait_for(write, 30)
        assert [s.index for s in await store.read_samples(job.id)] == list(range(8))


@pytest.fixture
async def pool() -> AsyncIterator[ModelClientPool]:
    clients = ModelClientPool(breaker_settings=FAST)
    yield clients
    await clients.aclose()


@pytest.mark.slow
async def test_a_job_whose_postgresql_restarts_mid_run_finishes_with_no_sample_lost_or_doubled(
    postgres: LocalPostgres, pool: ModelClientPool
) -> None:
    rows = 300
    with FakeModelServer(answer=answer, latency=0.01) as fake:
        async with Store(postgres.url, reconnect_for=60) as store:
            worker = JobWorker(
                store, pool, compiler(fake), progress_interval=0.05, flush_interval=0.05, batch_size=16
            )
            await worker.start()
            try:
                job = await worker.submit(
                    JobRecord(id=new_job_id(), front="nemo", spec={"rows": rows, "parallelism": 4})
                )
                deadline = time.monotonic() + 20
                while await store.count_samples(job.id) < 40:
                    assert time.monotonic() < deadline, "the job recorded too few samples before the kill"
                    await asyncio.sleep(0.02)
                await asyncio.to_thread(postgres.kill)
                await asyncio.sleep(1.5)
                await asyncio.to_thread(postgres.start)
                done = await worker.wait(job.id, timeout=60)
            finally:
                await worker.stop()
            samples = await store.read_samples(job.id)
            asked = [prompt_of(body) for body in fake.requests]

    assert done.status == "completed", done.error
    assert done.result == {"t0": {"n": rows, "errors": 0, "accuracy": 0.5}}
    assert [s.index for s in samples] == list(range(rows)), "a sample was lost or recorded twice"
    assert all(s.error is None and s.output_text == answer(f"Q{s.index}") for s in samples)
    assert sorted(asked) == sorted(f"Q{i}" for i in range(rows)), "the model was asked twice for a sample"


def limit_sqlite_pages(monkeypatch: pytest.MonkeyPatch, pages: int) -> None:
    """Make every new SQLite connection of the store stop at ``pages`` pages: its writes then fail
    with SQLITE_FULL ("database or disk is full"), exactly as on a full disk."""
    original = repository._sqlite_pragmas

    def pragmas(busy_timeout: float, dbapi_connection: Any, record: Any) -> None:
        original(busy_timeout, dbapi_connection, record)
        dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

    monkeypatch.setattr(repository, "_sqlite_pragmas", pragmas)


async def test_a_full_disk_fails_the_job_with_a_clear_reason_and_keeps_the_store_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pool: ModelClientPool
) -> None:
    db = tmp_path / "evalstack.db"
    rows = 400
    with FakeModelServer(answer=answer, latency=0.0) as fake:
        limit_sqlite_pages(monkeypatch, 60)
        async with Store(f"sqlite:///{db}") as store:
            worker = JobWorker(
                store, pool, compiler(fake), progress_interval=0.05, flush_interval=0.02, batch_size=8
            )
            await worker.start()
            try:
                padding = "x" * 2000  # each sample is large, so the limit is reached mid-job
                job = await worker.submit(
                    JobRecord(
                        id=new_job_id(), front="nemo", spec={"rows": rows, "parallelism": 4, "pad": padding}
                    )
                )
                failed = await worker.wait(job.id, timeout=30)
            finally:
                await worker.stop()
        monkeypatch.undo()

        assert failed.status == "failed"
        assert failed.error is not None and "database is full" in failed.error, failed.error
        assert "database or disk is full" in failed.error
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        async with Store(f"sqlite:///{db}") as store:
            kept = await store.read_samples(job.id)
            assert 0 < len(kept) < rows
            assert all(s.error is None and s.output_text == answer(f"Q{s.index}") for s in kept)
            worker = JobWorker(store, pool, compiler(fake), progress_interval=0.05)
            await worker.start()
            try:
                await worker.resume(job.id)
                done = await worker.wait(job.id, timeout=30)
            finally:
                await worker.stop()
            assert done.status == "completed", done.error
            assert [s.index for s in await store.read_samples(job.id)] == list(range(rows))
