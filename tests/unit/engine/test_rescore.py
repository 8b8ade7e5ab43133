"""Re-scoring through the real services and ``POST /v1/evalstack/jobs/{id}/rescore``: a new job scores
the stored outputs again with changed metrics or extraction, and the fake model server sees no request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from evalstack.api.jobs import jobs_router
from evalstack.api.llama_stack.models import (
    Benchmark,
    BenchmarkConfig,
    ModelCandidate,
    RegisterDatasetRequest,
    RowsDataSource,
)
from evalstack.config import Settings
from evalstack.engine.benchmarks.mmlu import MMLU_SUBJECTS
from evalstack.server import Services, build_services
from evalstack.store.records import JobRecord, new_job_id
from tests.fakes.model_server import FakeModelServer
from tests.fakes.squares import answer as squares_answer
from tests.fakes.squares import square_rows, squares_config

# Every reply names two letters: "answer is C" (what the built-in flexible extraction takes) and "(B)"
# (what the regex below takes). The gold answer is C for 40 questions and B for the other 17.
MMLU_REPLY = "Not (B), I think. The answer is C."
PARENTHESISED = r"\(([A-D])\)"


def mmlu_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": f"q{n}",
            "subject": subject,
            "question": f"Question {n} about {subject}?",
            "choices": ["one", "two", "three", "four"],
            "answer": "C" if n < 40 else "B",
        }
        for n, subject in enumerate(MMLU_SUBJECTS)
    ]


@pytest.fixture
async def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Services]:
    data = tmp_path / "data" / "mmlu"
    data.mkdir(parents=True)
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mmlu_rows()), encoding="utf-8")
    monkeypatch.setenv("EVALSTACK_DATA_DIR", str(tmp_path / "data"))
    built = build_services(Settings(data_dir=tmp_path, embedded_model=False, data_roots=[tmp_path]))
    await built.start()
    yield built
    await built.stop()


@pytest.fixture
async def http(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(jobs_router(services.store, services.worker), prefix="/v1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


@pytest.fixture
def model() -> Iterator[FakeModelServer]:
    with FakeModelServer(answer=MMLU_REPLY) as server:
        yield server


def target(model: FakeModelServer) -> dict[str, Any]:
    return {"type": "model", "model": {"api_endpoint": {"url": model.base_url, "model_id": model.model_id}}}


async def finished(services: Services, job_id: str) -> JobRecord:
    job = await services.worker.wait(job_id, timeout=30)
    assert job.status == "completed", job.error
    return job


async def rescore(http: httpx.AsyncClient, services: Services, job_id: str, **body: Any) -> JobRecord:
    response = await http.post(f"/v1/evalstack/jobs/{job_id}/rescore", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["rescore_of"] == job_id
    return await finished(services, response.json()["id"])


def mmlu_flexible(job: JobRecord) -> float:
    assert job.result is not None
    scores = job.result["groups"]["mmlu"]["metrics"]["exact_match__flexible-extract"]["scores"]
    return float(scores["exact_match__flexible-extract"]["value"])


async def test_rescoring_mmlu_with_another_extraction_changes_the_score_and_asks_nobody(
    services: Services, http: httpx.AsyncClient, model: FakeModelServer
) -> None:
    rows = mmlu_rows()
    source = await services.worker.submit(
        JobRecord(id=new_job_id(), front="nemo", spec={"config": {"type": "mmlu"}, "target": target(model)})
    )
    first = await finished(services, source.id)
    assert len(model.requests) == len(rows)
    assert mmlu_flexible(first) == pytest.approx(sum(r["answer"] == "C" for r in rows) / len(rows))

    model.reset_stats()
    same = await rescore(http, services, source.id)
    assert mmlu_flexible(same) == mmlu_flexible(first)
    assert same.result == first.result

    changed = await rescore(http, services, source.id, params={"extra": {"answer_regex": PARENTHESISED}})
    assert model.requests == [] and model.models_requests == 0
    assert mmlu_flexible(changed) == pytest.approx(sum(r["answer"] == "B" for r in rows) / len(rows))
    assert mmlu_flexible(changed) != mmlu_flexible(first)
    strict = "exact_match__strict-match"
    assert changed.result is not None and first.result is not None
    assert (
        changed.result["groups"]["mmlu"]["metrics"][strict]
        == first.result["groups"]["mmlu"]["metrics"][strict]
    )
    stored = await services.store.read_samples(changed.id, "mmlu_anatomy")
    original = await services.store.read_samples(source.id, "mmlu_anatomy")
    assert [s.output_text for s in stored] == [MMLU_REPLY]
    assert stored[0].item == original[0].item
    assert stored[0].extra["request"] == original[0].extra["request"]  # the request that produced it


async def test_rescoring_a_llama_stack_job_with_other_scoring_functions(
    services: Services, http: httpx.AsyncClient
) -> None:
    rows = [
        {"input_query": "Capital of France?", "expected_answer": "Paris"},
        {"input_query": "Capital of Japan?", "expected_answer": "Tokyo"},
        {"input_query": "Capital of Peru?", "expected_answer": "Lima"},
    ]
    replies = {
        "Capital of France?": "Paris",
        "Capital of Japan?": "It is Tokyo.",
        "Capital of Peru?": "No idea",
    }
    with FakeModelServer(answer=lambda prompt: replies[prompt]) as model:
        await services.registry.register_model(
            "quiz", provider_model_id=model.model_id, metadata={"base_url": model.base_url}
        )
        dataset = await services.registry.register_dataset(
            RegisterDatasetRequest(
                purpose="eval/question-answer", source=RowsDataSource(rows=rows), dataset_id="caps"
            )
        )
        benchmark = Benchmark(
            identifier="caps",
            provider_resource_id="caps",
            provider_id="local",
            dataset_id=dataset.identifier,
            scoring_functions=["basic::equality"],
        )
        config = BenchmarkConfig(
            eval_candidate=ModelCandidate(model="quiz", sampling_params={"max_tokens": 8})
        )
        spec = {
            "benchmark": benchmark.model_dump(mode="json"),
            "benchmark_config": config.model_dump(mode="json"),
        }
        source = await services.worker.submit(
            JobRecord(
                id=new_job_id(), front="llama_stack", spec=spec, benchmark_id="caps", provider_id="local"
            )
        )
        first = await finished(services, source.id)
        assert first.result is not None
        assert first.result["scores"]["basic::equality"]["aggregated_results"]["accuracy"][
            "accuracy"
        ] == pytest.approx(1 / 3)
        model.reset_stats()
        again = await rescore(http, services, source.id, metrics=["basic::subset_of", "basic::equality"])
        assert model.requests == []
    assert again.result is not None
    assert set(again.result["scores"]) == {"basic::subset_of", "basic::equality"}
    assert again.result["scores"]["basic::subset_of"]["aggregated_results"]["accuracy"][
        "accuracy"
    ] == pytest.approx(2 / 3)
    assert again.result["generations"] == first.result["generations"]
    assert (again.front, again.benchmark_id, again.provider_id) == ("llama_stack", "caps", "local")


async def test_rescoring_a_custom_nemo_job_with_new_metrics_keeps_failed_samples_failed(
    services: Services, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    rows = square_rows(6)
    path = tmp_path / "squares.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with FakeModelServer(answer=squares_answer) as model:
        model.fail_next(1, 500)
        config = squares_config(path, parallelism=1, max_retries=0)
        source = await services.worker.submit(
            JobRecord(id=new_job_id(), front="nemo", spec={"config": config, "target": target(model)})
        )
        first = await finished(services, source.id)
        assert first.progress["errors"] == 1
        model.reset_stats()
        contains = {"type": "string-check", "params": {"check": ["{{sample.output_text}}", "contains", "no"]}}
        again = await rescore(http, services, source.id, metrics={"says_no": contains})
        assert model.requests == []
        pointless = await http.post(
            f"/v1/evalstack/jobs/{source.id}/rescore", json={"params": {"max_tokens": 4}}
        )
        assert pointless.status_code == 400 and "give 'metrics' instead" in pointless.text
    assert again.progress["errors"] == 1  # the failed sample is not a wrong answer now either
    assert again.result is not None
    value = again.result["tasks"]["qa"]["metrics"]["says_no"]["scores"]["string-check"]["value"]
    answered = [squares_answer(r["question"]) for r in rows[1:]]  # row 0 failed (parallelism 1)
    assert value == pytest.approx(sum("no" in a for a in answered) / len(answered))
    assert "accuracy" not in again.result["tasks"]["qa"]["metrics"]


async def test_what_cannot_be_rescored_is_refused_with_the_reason(
    services: Services, http: httpx.AsyncClient, model: FakeModelServer
) -> None:
    missing = await http.post("/v1/evalstack/jobs/eval-nope/rescore", json={})
    assert missing.status_code == 404 and "eval-nope" in missing.text
    model.hang = True
    running = await services.worker.submit(
        JobRecord(id=new_job_id(), front="nemo", spec={"config": {"type": "mmlu"}, "target": target(model)})
    )
    refused = await http.post(f"/v1/evalstack/jobs/{running.id}/rescore", json={})
    assert refused.status_code == 400 and "only a completed job" in refused.text
    await services.worker.cancel(running.id)
    model.hang = False
    done = await services.worker.submit(
        JobRecord(id=new_job_id(), front="nemo", spec={"config": {"type": "mmlu"}, "target": target(model)})
    )
    await finished(services, done.id)
    fixed = await http.post(
        f"/v1/evalstack/jobs/{done.id}/rescore", json={"metrics": {"x": {"type": "bleu"}}}
    )
    assert fixed.status_code == 400 and "fixed metrics" in fixed.text and "answer_regex" in fixed.text
    bad = await http.post(
        f"/v1/evalstack/jobs/{done.id}/rescore", json={"params": {"extra": {"answer_regex": "("}}}
    )
    assert bad.status_code == 400 and "answer_regex" in bad.text
    unknown = await http.post(f"/v1/evalstack/jobs/{done.id}/rescore", json={"metric": ["x"]})
    assert unknown.status_code == 400 and "metric" in unknown.text


async def test_loglikelihood_jobs_with_the_cache_rescore_and_rerun_without_requests(
    services: Services, http: httpx.AsyncClient
) -> None:
    config = {"type": "mmlu", "params": {"extra": {"endpoint_type": "completions", "cache": True}}}
    with FakeModelServer(answer=" x") as model:  # echo + logprobs: each choice scored by its log-likelihood
        source = await services.worker.submit(
            JobRecord(id=new_job_id(), front="nemo", spec={"config": config, "target": target(model)})
        )
        first = await finished(services, source.id)
        assert len(model.requests) == 4 * len(MMLU_SUBJECTS)  # one per choice, three sent by the metric
        assert first.progress["cache"]["misses"] == 4 * len(MMLU_SUBJECTS)
        model.reset_stats()
        again = await rescore(http, services, source.id)
        rerun = await services.worker.submit(
            JobRecord(id=new_job_id(), front="nemo", spec={"config": config, "target": target(model)})
        )
        repeated = await finished(services, rerun.id)
        assert model.requests == []
    assert again.result == first.result == repeated.result
    assert repeated.progress["cache"]["hits"] == 4 * len(MMLU_SUBJECTS)


async def test_gsm8k_answer_regex_replaces_only_the_flexible_extraction(tmp_path: Path) -> None:
    from evalstack.engine.benchmarks import compile_academic_plan
    from evalstack.engine.plan import SampleOutput
    from evalstack.inference.base import ModelEndpoint

    endpoint = ModelEndpoint(kind="openai", model="m", base_url="http://h/v1")
    settings = Settings(data_dir=tmp_path, embedded_model=False)
    item = {"id": "0", "question": "q", "solution": "#### 12", "answer": "12"}
    reply = SampleOutput("Final: 12 apples, then 3 left over.\n#### 15")
    scores = {}
    for extra in ({}, {"answer_regex": r"Final: (\d+)"}):
        plan = await compile_academic_plan(
            {"type": "gsm8k", "params": {"extra": extra}}, endpoint, settings=settings, clients=None
        )
        scores[bool(extra)] = await plan.tasks[0].metrics[0].score(item, reply)
    assert scores[False] == {"exact_match__strict-match": 0.0, "exact_match__flexible-extract": 0.0}
    assert scores[True] == {"exact_match__strict-match": 0.0, "exact_match__flexible-extract": 1.0}
