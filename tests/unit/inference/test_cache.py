"""The response cache through the real services (SQLite store, engine, worker) and the fake model
server, whose requests are counted: what is answered once is never asked again, across restarts;
sampled draws, failures and expired answers are asked again."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from evalstack.config import Settings
from evalstack.inference.base import InferenceRequest, ModelEndpoint
from evalstack.inference.cache import CacheStats, NotCached, ResponseCache, cache_key, is_sampled
from evalstack.inference.clients import ModelClientPool
from evalstack.server import Services, build_services
from evalstack.store.records import CachedResponse, JobRecord, new_job_id
from tests.fakes.model_server import FakeModelServer
from tests.fakes.squares import answer, expected_accuracy, square_rows, squares_config

ROWS = square_rows(12)


@pytest.fixture
def model() -> Iterator[FakeModelServer]:
    with FakeModelServer(answer=answer) as server:
        yield server


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "squares.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    return path


def settings_for(tmp_path: Path, **changes: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        embedded_model=False,
        data_roots=[tmp_path],
        db_url=f"sqlite:///{tmp_path / 'e.db'}",
        **changes,
    )


def nemo_job(config: dict[str, Any], model: FakeModelServer, **spec: Any) -> JobRecord:
    target = {"type": "model", "model": {"api_endpoint": {"url": model.base_url, "model_id": model.model_id}}}
    return JobRecord(id=new_job_id(), front="nemo", spec={"config": config, "target": target, **spec})


async def run_once(settings: Settings, job: JobRecord) -> tuple[JobRecord, dict[int, str | None]]:
    """Start fresh services on the settings' store, run the job, stop: the job and its answers."""
    services: Services = build_services(settings)
    await services.start()
    try:
        await services.worker.submit(job)
        finished = await services.worker.wait(job.id, timeout=30)
        samples = await services.store.read_samples(job.id)
        return finished, {s.index: s.output_text for s in samples}
    finally:
        await services.stop()


def accuracy(job: JobRecord) -> float:
    assert job.result is not None
    return float(job.result["tasks"]["qa"]["metrics"]["accuracy"]["scores"]["string-check"]["value"])


async def test_a_rerun_with_the_cache_sends_no_request_even_after_a_restart(
    tmp_path: Path, model: FakeModelServer, dataset: Path
) -> None:
    settings = settings_for(tmp_path)
    config = squares_config(dataset, parallelism=4, extra={"cache": True})  # NeMo params.extra.cache
    first, answers = await run_once(settings, nemo_job(config, model))
    assert first.status == "completed", first.error
    assert len(model.requests) == len(ROWS)
    assert first.progress["cache"] == {
        "hits": 0,
        "misses": len(ROWS),
        "bytes_served": 0,
        "bytes_stored": first.progress["cache"]["bytes_stored"],
    }
    assert first.progress["cache"]["bytes_stored"] > 0

    model.reset_stats()
    second, again = await run_once(settings, nemo_job(config, model))  # new services: a restart
    assert second.status == "completed", second.error
    assert model.requests == []
    assert again == answers
    assert accuracy(second) == accuracy(first) == expected_accuracy(ROWS)
    assert second.progress["cache"]["hits"] == len(ROWS)
    assert second.progress["cache"]["misses"] == 0
    assert second.progress["cache"]["bytes_served"] == first.progress["cache"]["bytes_stored"]


async def test_the_cache_is_off_unless_asked_for(
    tmp_path: Path, model: FakeModelServer, dataset: Path
) -> None:
    settings = settings_for(tmp_path)
    config = squares_config(dataset, parallelism=4)
    first, _ = await run_once(settings, nemo_job(config, model))
    assert "cache" not in first.progress
    model.reset_stats()
    await run_once(settings, nemo_job(config, model, cache=True))  # `evalstack run --cache`: spec cache
    assert len(model.requests) == len(ROWS)  # nothing was kept by the first run
    model.reset_stats()
    server_wide, _ = await run_once(settings_for(tmp_path, response_cache=True), nemo_job(config, model))
    assert model.requests == []
    assert server_wide.progress["cache"]["hits"] == len(ROWS)


async def test_a_changed_request_or_model_is_asked_again(
    tmp_path: Path, model: FakeModelServer, dataset: Path
) -> None:
    settings = settings_for(tmp_path, response_cache=True)
    await run_once(settings, nemo_job(squares_config(dataset, parallelism=4), model))
    model.reset_stats()
    await run_once(settings, nemo_job(squares_config(dataset, parallelism=4, max_tokens=17), model))
    assert len(model.requests) == len(ROWS)
    with FakeModelServer(answer=answer, model_id="other-model") as other:
        await run_once(settings, nemo_job(squares_config(dataset, parallelism=4), other))
        assert len(other.requests) == len(ROWS)


async def test_two_sampled_draws_of_one_prompt_never_share_an_answer(tmp_path: Path) -> None:
    draws = itertools.count()
    rows = [{"question": "Tell me a number.", "answer": "7"}] * 4  # the same prompt four times
    path = tmp_path / "same.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    settings = settings_for(tmp_path, response_cache=True)
    with FakeModelServer(answer=lambda prompt: f"draw {next(draws)}") as model:
        config = squares_config(path, parallelism=2, temperature=0.8, extra={"seed": 3})
        first, answers = await run_once(settings, nemo_job(config, model))
        assert first.status == "completed", first.error
        assert len(model.requests) == 4 and len(set(answers.values())) == 4
        model.reset_stats()
        second, again = await run_once(settings, nemo_job(config, model))
        assert second.progress["cache"]["hits"] == 4
        assert model.requests == []
        assert again == answers  # each draw gets its own answer back, not one answer for all


async def test_failed_requests_are_never_cached(
    tmp_path: Path, model: FakeModelServer, dataset: Path
) -> None:
    settings = settings_for(tmp_path, response_cache=True)
    config = squares_config(dataset, parallelism=1, max_retries=0)
    model.fail_next(3, 500)
    first, _ = await run_once(settings, nemo_job(config, model))
    assert first.progress["errors"] == 3
    model.reset_stats()
    second, _ = await run_once(settings, nemo_job(config, model))
    assert len(model.requests) == 3  # only the failed ones are asked again
    assert second.progress["errors"] == 0
    assert accuracy(second) == expected_accuracy(ROWS)


async def test_answers_older_than_the_ttl_are_asked_again(
    tmp_path: Path, model: FakeModelServer, dataset: Path
) -> None:
    config = squares_config(dataset, parallelism=4)
    await run_once(settings_for(tmp_path, response_cache=True), nemo_job(config, model))
    model.reset_stats()
    await run_once(settings_for(tmp_path, response_cache=True, cache_ttl=3600), nemo_job(config, model))
    assert model.requests == []
    await run_once(settings_for(tmp_path, response_cache=True, cache_ttl=1e-6), nemo_job(config, model))
    assert len(model.requests) == len(ROWS)


def test_the_key_covers_model_body_and_for_sampled_requests_the_draw() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    same = {"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "m"}
    assert cache_key("http://h/v1#m", body, None) == cache_key(
        "http://h/v1#m", same, "t#9"
    )  # greedy: draw ignored
    assert cache_key("http://h/v1#m", body, None) != cache_key("http://other/v1#m", body, None)
    sampled = {**body, "temperature": 0.7}
    assert is_sampled(sampled) and is_sampled({"model": "m", "prompt": "p"})  # unset: the server's default
    assert cache_key("http://h/v1#m", sampled, None) is None  # a draw nobody can name is not cached
    assert cache_key("http://h/v1#m", sampled, "t#0") != cache_key("http://h/v1#m", sampled, "t#1")
    assert cache_key("http://h/v1#m", sampled, "t#0") != cache_key(
        "http://h/v1#m", {**sampled, "seed": 1}, "t#0"
    )


class QueuedStore:
    """A cache store whose writes wait in a queue until ``release`` is set (a busy store thread)."""

    def __init__(self) -> None:
        self.saved: dict[str, CachedResponse] = {}
        self.release = asyncio.Event()

    async def get_cached_responses(
        self, keys: Collection[str], max_age: float | None = None
    ) -> dict[str, CachedResponse]:
        return {key: self.saved[key] for key in keys if key in self.saved}

    async def put_cached_responses(self, entries: Sequence[CachedResponse]) -> None:
        await self.release.wait()
        self.saved.update((entry.key, entry) for entry in entries)


async def test_flush_waits_for_a_write_under_way_instead_of_dropping_it() -> None:
    store = QueuedStore()
    cache = ResponseCache(store, batch_size=1)
    cache.add(CachedResponse("k1", "m", "answer", "stop", {}, 6))  # a full batch: written at once
    await asyncio.sleep(0.01)  # the write is under way, waiting for the store
    cache.add(CachedResponse("k2", "m", "later", "stop", {}, 5))
    flushing = asyncio.ensure_future(cache.flush())
    await asyncio.sleep(0.01)
    assert not flushing.done()  # flush waits for the write under way
    store.release.set()
    await flushing
    assert set(store.saved) == {"k1", "k2"}
    assert (await cache.lookup("k1")) == store.saved["k1"]


async def test_a_cached_only_scope_serves_what_the_cache_holds_and_never_asks_the_model(
    model: FakeModelServer,
) -> None:
    store = QueuedStore()
    store.release.set()
    cache = ResponseCache(store)
    pool = ModelClientPool()
    endpoint = ModelEndpoint(kind="openai", model=model.model_id, base_url=model.base_url)
    known = InferenceRequest(kind="completion", prompt="Q1", params={"temperature": 0})
    unknown = InferenceRequest(kind="completion", prompt="Q2", params={"temperature": 0})
    sampled = InferenceRequest(kind="completion", prompt="Q1", params={"temperature": 0.7})  # no sample id
    try:
        with cache.scope(CacheStats()):
            answered = await pool.get(endpoint).generate(known)
        await cache.flush()
        model.reset_stats()
        stats = CacheStats()
        with cache.scope(stats, cached_only=True):
            client = pool.get(endpoint)
            again = await client.generate(known)
            with pytest.raises(NotCached):
                await client.generate(unknown)
            with pytest.raises(NotCached):
                await client.generate(sampled)
    finally:
        await pool.aclose()
    assert again.text == answered.text
    assert model.requests == []
    assert (stats.hits, stats.misses) == (1, 0)  # what the cache did not answer is left to be asked
