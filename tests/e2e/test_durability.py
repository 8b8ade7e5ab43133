"""Durability end to end: ``evalstack serve`` in subprocesses, killed, cut off from its model, cancelled,
loaded with concurrent jobs and sharing its SQLite file with a second server.

The promise under test: a crash, a kill or a model server that fails never loses finished work or
corrupts stored results. Every NeMo job here is a custom chat task against our fake model server,
whose answers (and so the expected scores) are computed here from a rule, never read back.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fakes.model_server import FakeModelServer, prompt_of
from tests.fakes.serving import ServeProcess
from tests.fakes.squares import answer, expected_accuracy, square_rows, squares_config

from evalstack.errors import ConflictError
from evalstack.store.records import JobRecord, SampleRecord, new_job_id
from evalstack.store.repository import Store

pytestmark = pytest.mark.slow

START_TIMEOUT = 30.0


def write_dataset(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def job_body(dataset: Path, model: FakeModelServer, *, parallelism: int, **params: Any) -> dict[str, Any]:
    """A NeMo job with the inline squares config and a target on the fake model."""
    endpoint = {"url": f"{model.base_url}/chat/completions", "model_id": model.model_id, "format": "openai"}
    config = squares_config(dataset, parallelism=parallelism, **params)
    return {"config": config, "target": {"type": "model", "model": {"api_endpoint": endpoint}}}


class Server(ServeProcess):
    """``evalstack serve`` over a given SQLite file, with an HTTP client for the NeMo API."""

    def __init__(self, tmp: Path, db: Path, name: str = "server") -> None:
        config = f"embedded_model: false\ndata_roots: [{json.dumps(str(tmp))}]\n"
        super().__init__(tmp, config, db_url=f"sqlite:///{db}", name=name, start_timeout=START_TIMEOUT)
        self.http = httpx.Client(timeout=30.0)

    def create_job(self, body: dict[str, Any]) -> str:
        response = self.http.post(f"{self.url}/v1/evaluation/jobs", json=body)
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"{self.url}/v1/evaluation/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def recorded(self, job_id: str) -> int:
        return int(self.http.get(f"{self.url}/v1/evalstack/jobs/{job_id}").json()["samples_recorded"])

    def wait_recorded(self, job_id: str, at_least: int, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recorded = self.recorded(job_id)
            if recorded >= at_least:
                return recorded
            time.sleep(0.02)
        raise AssertionError(f"job {job_id} recorded fewer than {at_least} samples in {timeout}s")

    def wait_done(self, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish in {timeout}s: {self.job(job_id)}")

    def results(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"{self.url}/v1/evaluation/jobs/{job_id}/results")
        assert response.status_code == 200, response.text
        return dict(response.json())


def read_samples(db: Path, job_id: str) -> list[SampleRecord]:
    """The job's stored samples, read with a Store of our own (the servers may be running)."""

    async def read() -> list[SampleRecord]:
        async with Store(f"sqlite:///{db}") as store:
            return await store.read_samples(job_id)

    return asyncio.run(read())


def sample_view(sample: SampleRecord) -> tuple[Any, ...]:
    """What a sample says, without volatile parts (response ids and timestamps)."""
    return (sample.task, sample.index, sample.item, sample.output_text, sample.scores, sample.error)


def views(samples: list[SampleRecord]) -> dict[tuple[str, int], tuple[Any, ...]]:
    """Each sample's view by (task, index)."""
    return {(s.task, s.index): sample_view(s) for s in samples}


def assert_kept(before: dict[tuple[str, int], tuple[Any, ...]], after: list[SampleRecord]) -> None:
    """Every sample recorded before is still there, unchanged."""
    assert {key: view for key, view in views(after).items() if key in before} == before


def accuracy_of(results: dict[str, Any]) -> float:
    return float(results["tasks"]["qa"]["metrics"]["accuracy"]["scores"]["string-check"]["value"])


def prompt_counts(fake: FakeModelServer) -> Counter[str]:
    return Counter(prompt_of(body) for body in list(fake.requests))


def start_squares_job(
    server: Server, fake: FakeModelServer, tmp_path: Path, size: int, *, parallelism: int, **params: Any
) -> tuple[str, list[dict[str, Any]]]:
    """A job of ``size`` squares questions (in ``squares.jsonl``) created on ``server``: its id and rows."""
    rows = square_rows(size)
    dataset = write_dataset(tmp_path / "squares.jsonl", rows)
    return server.create_job(job_body(dataset, fake, parallelism=parallelism, **params)), rows


def run_clean_copy(server: Server, fake: FakeModelServer, tmp_path: Path) -> str:
    """The squares job run again from scratch to completion, to compare with."""
    clean_id = server.create_job(job_body(tmp_path / "squares.jsonl", fake, parallelism=4))
    assert server.wait_done(clean_id)["status"] == "completed"
    return clean_id


@pytest.fixture
def fake() -> Iterator[FakeModelServer]:
    with FakeModelServer(answer=answer) as server:
        yield server


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "evalstack.db"


@pytest.fixture
def server(tmp_path: Path, db: Path) -> Iterator[Server]:
    running = Server(tmp_path, db).start()
    try:
        yield running
    finally:
        running.stop()


# ---- (a) kill -9 mid-run -------------------------------------------------------------------------


def test_kill_9_mid_job_resumes_without_asking_again_and_matches_a_clean_run(
    server: Server, fake: FakeModelServer, tmp_path: Path, db: Path
) -> None:
    fake.latency = 0.1
    job_id, rows = start_squares_job(server, fake, tmp_path, 40, parallelism=4)
    server.wait_recorded(job_id, 8)
    server.stop(kill=True)

    before = views(read_samples(db, job_id))
    assert 8 <= len(before) < len(rows), len(before)
    recorded_prompts = {rows[index]["question"] for _, index in before}
    fake.reset_stats()
    fake.latency = 0.0
    server.start()
    job = server.wait_done(job_id)
    assert job["status"] == "completed", job["status_details"]

    asked = prompt_counts(fake)
    assert not recorded_prompts & set(asked), "the model was asked again for samples recorded before the kill"
    assert max(asked.values()) == 1, "a sample was asked twice after the restart"
    assert set(asked) == {r["question"] for r in rows} - recorded_prompts
    after = read_samples(db, job_id)
    assert len(after) == len(rows)
    assert_kept(before, after)

    clean_id = run_clean_copy(server, fake, tmp_path)
    resumed, clean = server.results(job_id), server.results(clean_id)
    assert resumed["tasks"] == clean["tasks"]
    assert resumed["groups"] == clean["groups"]
    assert accuracy_of(resumed) == pytest.approx(expected_accuracy(rows))
    assert [sample_view(s)[1:] for s in after] == [sample_view(s)[1:] for s in read_samples(db, clean_id)]


# ---- (b) the model server goes away mid-job ------------------------------------------------------


def test_sigterm_mid_job_exits_fast_keeping_samples_and_releasing_the_lease_for_the_next_server(
    server: Server, fake: FakeModelServer, tmp_path: Path, db: Path
) -> None:
    fake.latency = 0.2
    job_id, rows = start_squares_job(server, fake, tmp_path, 60, parallelism=4)
    server.wait_recorded(job_id, 8)
    assert server.proc is not None
    process = server.proc
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=30)
    took = time.monotonic() - signalled
    server.proc = None
    assert took < 10, f"SIGTERM took {took:.1f}s to stop the server"
    # uvicorn re-raises the signal once it has shut down cleanly, so the exit is by SIGTERM.
    assert code in (0, -signal.SIGTERM), server.log.read_text()

    with sqlite3.connect(db) as conn:
        leases = conn.execute("SELECT owner FROM job_leases WHERE job_id = ?", (job_id,)).fetchall()
        status = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
    assert leases == [], "the stopped server kept the job's lease"
    assert status == "running", "SIGTERM changed the job's status instead of leaving it to be taken over"
    before = views(read_samples(db, job_id))
    assert 8 <= len(before) < len(rows)
    answered = prompt_counts(fake)
    assert len(before) >= len(answered) - 4, "more than the requests in flight at SIGTERM went unrecorded"

    fake.reset_stats()
    fake.latency = 0.0
    server.start()
    job = server.wait_done(job_id)
    assert job["status"] == "completed", job["status_details"]
    after = read_samples(db, job_id)
    assert [s.index for s in after] == list(range(len(rows)))
    assert_kept(before, after)
    assert not {rows[index]["question"] for _, index in before} & set(prompt_counts(fake))
    assert accuracy_of(server.results(job_id)) == pytest.approx(expected_accuracy(rows))


def test_a_brief_model_outage_mid_job_completes_like_a_clean_run_and_says_so_meanwhile(
    server: Server, fake: FakeModelServer, tmp_path: Path, db: Path
) -> None:
    fake.latency = 0.05
    job_id, rows = start_squares_job(server, fake, tmp_path, 60, parallelism=4)
    server.wait_recorded(job_id, 10)
    fake.go_down()
    down_at = time.monotonic()
    deadline = down_at + 10
    while (
        "waiting for the model endpoint" not in (details := server.job(job_id)["status_details"])["message"]
    ):
        assert time.monotonic() < deadline, details
        time.sleep(0.05)
    job = server.job(job_id)
    assert job["status"] == "running"
    message = job["status_details"]["message"]
    assert fake.base_url in message and "unreachable for" in message and "cannot connect" in message, message
    summary = server.http.get(f"{server.url}/v1/evalstack/jobs/{job_id}").json()
    assert summary["progress"]["outage"]["endpoint"] == fake.base_url
    time.sleep(max(0.0, 3.0 - (time.monotonic() - down_at)))
    recorded_while_down = server.recorded(job_id)
    fake.come_back()

    job = server.wait_done(job_id, timeout=30)
    assert job["status"] == "completed", job["status_details"]
    assert job["status_details"]["message"] == f"Completed: {len(rows)} samples processed, 0 failed"
    samples = read_samples(db, job_id)
    assert recorded_while_down < len(samples) == len(rows)
    assert all(s.error is None for s in samples), "a sample caught by the outage was recorded as an error"
    clean_id = run_clean_copy(server, fake, tmp_path)
    assert server.results(job_id)["tasks"] == server.results(clean_id)["tasks"]
    assert accuracy_of(server.results(job_id)) == pytest.approx(expected_accuracy(rows))
    assert [sample_view(s)[1:] for s in samples] == [sample_view(s)[1:] for s in read_samples(db, clean_id)]


def test_a_lasting_model_outage_fails_after_max_outage_keeping_samples_and_a_resume_finishes(
    server: Server, fake: FakeModelServer, tmp_path: Path, db: Path
) -> None:
    fake.latency = 0.1
    job_id, rows = start_squares_job(
        server, fake, tmp_path, 30, parallelism=2, max_retries=1, extra={"max_outage": 2}
    )
    server.wait_recorded(job_id, 6)
    fake.go_down()
    down_at = time.monotonic()
    job = server.wait_done(job_id, timeout=20)
    assert time.monotonic() - down_at < 2 + 4
    assert job["status"] == "failed", job
    message = job["status_details"]["message"]
    assert fake.base_url in message and "max_outage is 2.0s" in message and "resume" in message, message
    assert job["status_details"]["task_status"] == {"qa": "failed"}
    kept = views(read_samples(db, job_id))
    assert 6 <= len(kept) < len(rows)
    assert all(view[-1] is None for view in kept.values()), "an outage sample was recorded as an error"

    fake.come_back()
    fake.reset_stats()
    response = server.http.post(f"{server.url}/v1/evalstack/jobs/{job_id}/resume")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"
    job = server.wait_done(job_id, timeout=20)
    assert job["status"] == "completed", job["status_details"]
    asked = prompt_counts(fake)
    assert set(asked) == {rows[index]["question"] for index in range(len(rows)) if ("qa", index) not in kept}
    assert max(asked.values()) == 1
    assert_kept(kept, read_samples(db, job_id))
    assert accuracy_of(server.results(job_id)) == pytest.approx(expected_accuracy(rows))
    again = server.http.post(f"{server.url}/v1/evalstack/jobs/{job_id}/resume")
    assert again.status_code == 400 and "only a failed or cancelled job" in again.text
    cli = [sys.executable, "-m", "evalstack.cli", "jobs", "resume", job_id, "--url", server.url]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and f"Job {job_id} is completed" in done.stderr, done.stderr


def test_retry_over_http_and_the_cli_reruns_only_the_samples_that_failed_on_infrastructure(
    server: Server, fake: FakeModelServer, tmp_path: Path, db: Path
) -> None:
    fake.fail_next(4, status=500)  # parallelism 1, 2 attempts each: the first two samples fail
    job_id, rows = start_squares_job(server, fake, tmp_path, 12, parallelism=1, max_retries=1)
    job = server.wait_done(job_id)
    assert job["status"] == "completed", job
    failed = {s.index for s in read_samples(db, job_id) if s.error is not None}
    assert failed == {0, 1}
    kept = {key: view for key, view in views(read_samples(db, job_id)).items() if view[-1] is None}

    fake.reset_stats()
    cli = [sys.executable, "-m", "evalstack.cli", "jobs", "retry", job_id, "--url", server.url]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and f"Job {job_id} is pending again" in done.stdout, done.stderr
    job = server.wait_done(job_id)
    assert job["status"] == "completed", job["status_details"]
    assert prompt_counts(fake) == Counter(rows[index]["question"] for index in failed)
    samples = read_samples(db, job_id)
    assert len(samples) == len(rows) and all(s.error is None for s in samples)
    assert_kept(kept, samples)
    assert accuracy_of(server.results(job_id)) == pytest.approx(expected_accuracy(rows))
    again = server.http.post(f"{server.url}/v1/evalstack/jobs/{job_id}/retry")
    assert again.status_code == 400 and "nothing to retry" in again.text, again.text
    missing = server.http.post(f"{server.url}/v1/evalstack/jobs/no-such-job/retry")
    assert missing.status_code == 404, missing.text


# ---- (c) cancel mid-run --------------------------------------------------------------------------


def test_cancelled_job_keeps_its_finished_samples_readable(
    server: Server, fake: FakeModelServer, tmp_path: Path, db: Path
) -> None:
    fake.latency = 0.1
    job_id, rows = start_squares_job(server, fake, tmp_path, 40, parallelism=2)
    seen = server.wait_recorded(job_id, 6)
    response = server.http.post(f"{server.url}/v1/evaluation/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    job = server.wait_done(job_id, timeout=10)
    assert job["status"] == "cancelled"
    assert job["status_details"]["task_status"] == {"qa": "cancelled"}

    samples = read_samples(db, job_id)
    assert seen <= len(samples) < len(rows)
    assert all(s.error is None and s.output_text == answer(s.item["question"]) for s in samples)
    assert server.recorded(job_id) == len(samples)
    assert job["status_details"]["samples_processed"] >= len(samples) - 2  # the final snapshot

    # Aggregated results are for completed jobs only; the per-sample outputs are downloadable.
    assert server.http.get(f"{server.url}/v1/evaluation/jobs/{job_id}/results").status_code == 409
    download = server.http.get(f"{server.url}/v1/evaluation/jobs/{job_id}/download-results")
    assert download.status_code == 200, download.text
    with zipfile.ZipFile(io.BytesIO(download.content)) as zipped:
        per_sample = [
            json.loads(zipped.read(name))
            for name in zipped.namelist()
            if name.endswith("results.json") and name != "results.json"
        ]
    assert len(per_sample) == 1 and len(per_sample[0]["qa"]) == len(samples)

    # Cancelled stays cancelled across a restart, samples untouched.
    server.stop()
    server.start()
    assert server.job(job_id)["status"] == "cancelled"
    assert [sample_view(s) for s in read_samples(db, job_id)] == [sample_view(s) for s in samples]


# ---- (d) concurrent jobs on one SQLite file ------------------------------------------------------


def test_concurrent_jobs_under_load_keep_exact_counts(
    server: Server, fake: FakeModelServer, tmp_path: Path, db: Path
) -> None:
    sizes = [300, 250, 200]
    jobs: list[tuple[str, list[dict[str, Any]]]] = []
    for number, size in enumerate(sizes):
        rows = square_rows(size, start=1000 * (number + 1))
        dataset = write_dataset(tmp_path / f"load-{number}.jsonl", rows)
        jobs.append((server.create_job(job_body(dataset, fake, parallelism=16)), rows))
    for job_id, rows in jobs:
        job = server.wait_done(job_id, timeout=30)
        assert job["status"] == "completed", job["status_details"]
        samples = read_samples(db, job_id)
        assert [s.index for s in samples] == list(range(len(rows)))
        assert [s.item for s in samples] == rows, "a job holds another job's samples"
        assert all(s.output_text == answer(s.item["question"]) for s in samples)
        assert server.recorded(job_id) == len(rows)
        assert accuracy_of(server.results(job_id)) == pytest.approx(expected_accuracy(rows))
    assert sum(prompt_counts(fake).values()) == sum(sizes)


# ---- (e) a second server on the same SQLite file -------------------------------------------------


def test_second_server_on_the_same_file_reads_and_does_not_run_a_live_job_twice(
    server: Server, fake: FakeModelServer, tmp_path: Path, db: Path
) -> None:
    # Slow answers until the second server is up (about 15 s of work at 0.5 s each, however long a
    # loaded machine takes to start it), so the first server's job is surely still live then.
    fake.latency = 0.5
    job_id, rows = start_squares_job(server, fake, tmp_path, 120, parallelism=4)
    server.wait_recorded(job_id, 4)
    second = Server(tmp_path, db, name="second").start()
    try:
        # Reads through the second server see the first one's live job.
        assert second.job(job_id)["status"] == "running"
        assert second.recorded(job_id) >= 4
        fake.latency = 0.05
        # Both write at once: a job of the second server runs while the first one's continues.
        other_rows = square_rows(60, start=500)
        other_id = second.create_job(
            job_body(write_dataset(tmp_path / "other.jsonl", other_rows), fake, parallelism=8)
        )
        assert second.wait_done(other_id)["status"] == "completed"
        assert server.wait_done(job_id)["status"] == "completed"
        assert second.job(job_id)["status"] == "completed"
    finally:
        second.stop()
    asked = prompt_counts(fake)
    assert max(asked.values()) == 1, f"a live job was run twice: {[p for p, n in asked.items() if n > 1][:5]}"
    assert len(read_samples(db, job_id)) == len(rows)
    assert len(read_samples(db, other_id)) == len(other_rows)
    assert accuracy_of(server.results(job_id)) == pytest.approx(expected_accuracy(rows))


def test_a_cancel_through_the_second_server_stops_the_job_where_it_runs(
    server: Server, fake: FakeModelServer, tmp_path: Path, db: Path
) -> None:
    fake.latency = 0.3  # 30 s of work: still running however long a loaded machine takes to start the second
    job_id, rows = start_squares_job(server, fake, tmp_path, 200, parallelism=2)
    second = Server(tmp_path, db, name="second").start()
    try:
        server.wait_recorded(job_id, 4)
        response = second.http.post(f"{second.url}/v1/evaluation/jobs/{job_id}/cancel")
        assert response.status_code == 200, response.text
        assert server.wait_done(job_id, timeout=10)["status"] == "cancelled"
        settled = len(fake.requests)
        time.sleep(1.5)  # more than the holder's lease check: it must have stopped asking
        assert len(fake.requests) == settled
        assert second.job(job_id)["status"] == "cancelled"
        samples = read_samples(db, job_id)
        assert 4 <= len(samples) < len(rows)
        assert server.recorded(job_id) == len(samples)
    finally:
        second.stop()


# ---- the store's guards --------------------------------------------------------------------------


async def test_job_leases_let_one_owner_run_a_job_and_a_dead_one_be_replaced(db: Path) -> None:
    async with Store(f"sqlite:///{db}") as first, Store(f"sqlite:///{db}") as second:
        job = await first.create_job(JobRecord(id=new_job_id(), front="nemo", spec={}))
        assert await first.claim_job(job.id, "a", ttl=30)
        assert not await second.claim_job(job.id, "b", ttl=30)
        assert await first.claim_job(job.id, "a", ttl=30)  # renewing one's own claim
        assert await first.renew_job_leases("a", [job.id], ttl=30) == {job.id}
        assert await second.renew_job_leases("b", [job.id], ttl=30) == set()
        assert not await second.claim_job(job.id, "b", ttl=30, owner_gone=lambda owner: owner == "x")
        assert await second.claim_job(job.id, "b", ttl=30, owner_gone=lambda owner: owner == "a")
        await first.release_job(job.id, "a")  # not a's any more: nothing happens
        assert not await first.claim_job(job.id, "a", ttl=30)
        await second.release_job(job.id, "b")
        assert await first.claim_job(job.id, "a", ttl=0.01)
        await asyncio.sleep(0.05)
        assert await second.claim_job(job.id, "b", ttl=30)  # a's lease expired


async def test_a_guarded_status_change_never_overwrites_a_finished_job(db: Path) -> None:
    async with Store(f"sqlite:///{db}") as store:
        job = await store.create_job(JobRecord(id=new_job_id(), front="nemo", spec={}, status="running"))
        await store.update_job(job.id, status="completed", result={"ok": 1})
        with pytest.raises(ConflictError, match="is completed"):
            await store.update_job(job.id, expected_status={"running", "cancelling"}, status="cancelling")
        after = await store.get_job(job.id)
        assert after is not None and after.status == "completed" and after.result == {"ok": 1}
