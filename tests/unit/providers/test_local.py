"""The local eval provider: Llama Stack jobs on the engine, with the real store, registry and scoring."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import evalstack.engine.compile
from evalstack.api.llama_stack.models import (
    Benchmark,
    BenchmarkConfig,
    JobStatus,
    RegisterDatasetRequest,
)
from evalstack.config import Settings
from evalstack.engine.compile import compile_job
from evalstack.engine.plan import EvalPlan, SampleOutput, TaskPlan
from evalstack.engine.runner import JobWorker
from evalstack.engine.scoring import ScoringService
from evalstack.errors import InvalidInputError, NotFoundError, UnsupportedError, UpstreamError
from evalstack.inference.base import (
    InferenceError,
    InferenceRequest,
    InferenceResult,
    ModelClient,
    ModelEndpoint,
)
from evalstack.inference.clients import ModelClientPool
from evalstack.providers.local import STATUS_MAP, LocalEvalProvider
from evalstack.registry import Registry
from evalstack.store.records import JobRecord, SampleRecord
from evalstack.store.repository import Store
from tests.fakes.model_server import FakeModelServer

ROWS = [
    {"input_query": "What is the capital of France?", "expected_answer": "Paris"},
    {"input_query": "What is 2+2?", "expected_answer": "4"},
    {"input_query": "Name a primary colour.", "expected_answer": "red"},
    {"input_query": "Largest planet?", "expected_answer": "Jupiter"},
    {"input_query": "Opposite of hot?", "expected_answer": "cold"},
]
ANSWERS = {
    "What is the capital of France?": "Paris",
    "What is 2+2?": "The answer is 4",
    "Name a primary colour.": "blue",
    "Largest planet?": "Jupiter",
    "Opposite of hot?": "It is cold",
}


class QuizClient:
    """Answers from ANSWERS; ``down`` makes every request fail, ``hold`` makes them wait."""

    def __init__(self) -> None:
        self.down = False
        self.hold = asyncio.Event()
        self.hold.set()
        self.requests: list[InferenceRequest] = []
        self.in_flight = 0

    async def generate(self, request: InferenceRequest) -> InferenceResult:
        self.requests.append(request)
        self.in_flight += 1
        try:
            await self.hold.wait()
            if self.down:
                raise InferenceError("connection refused by http://quiz.invalid/v1")
            question = str((request.messages or [{}])[-1].get("content"))
            return InferenceResult(text=ANSWERS.get(question, "?"), finish_reason="stop")
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        return None


class Pool:
    def __init__(self, client: QuizClient) -> None:
        self.client = client

    def get(
        self,
        endpoint: ModelEndpoint,
        *,
        max_retries: int = 5,
        timeout: float = 600.0,
        max_connections: int = 256,
    ) -> ModelClient:
        return self.client


@dataclass
class Env:
    store: Store
    registry: Registry
    worker: JobWorker
    provider: LocalEvalProvider
    client: QuizClient


async def build_env(tmp_path: Path, client: QuizClient, pool: Any = None) -> Env:
    settings = Settings(data_dir=tmp_path, embedded_model=False, default_parallelism=2)
    store = Store(settings.db_url)
    await store.open()
    registry = Registry(store, settings)
    await registry.initialize()
    pool = pool if pool is not None else Pool(client)
    scoring = ScoringService(registry, pool)

    async def compile_for_worker(job: JobRecord) -> EvalPlan:
        return await compile_job(job, registry, scoring, settings, pool)

    worker = JobWorker(store, pool, compile_for_worker)
    await worker.start()
    return Env(store, registry, worker, LocalEvalProvider(registry, worker, scoring, settings), client)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    env = await build_env(tmp_path, QuizClient())
    await env.registry.register_model("quiz", "quiz-model", {"base_url": "http://quiz.invalid/v1"})
    await env.registry.register_dataset(
        RegisterDatasetRequest.model_validate(
            {
                "dataset_id": "quiz-qa",
                "purpose": "eval/question-answer",
                "source": {"type": "rows", "rows": ROWS},
            }
        )
    )
    await env.registry.put_benchmark(
        Benchmark(
            identifier="quiz-bench",
            provider_id="local",
            dataset_id="quiz-qa",
            scoring_functions=["basic::equality", "basic::subset_of"],
        )
    )
    yield env
    await env.worker.stop()
    await env.store.close()


def candidate(model: str = "quiz", system: str | None = None, **extra: Any) -> BenchmarkConfig:
    eval_candidate: dict[str, Any] = {
        "type": "model",
        "model": model,
        "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 16},
    }
    if system is not None:
        eval_candidate["system_message"] = {"role": "system", "content": system}
    return BenchmarkConfig.model_validate({"eval_candidate": eval_candidate, **extra})


def expected_scores(rows: Sequence[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    """Equality and subset-of computed here, independently of the scoring service."""
    answers = [ANSWERS[row["input_query"]] for row in rows]
    equality = [1.0 if a == row["expected_answer"] else 0.0 for a, row in zip(answers, rows, strict=True)]
    subset = [1.0 if row["expected_answer"] in a else 0.0 for a, row in zip(answers, rows, strict=True)]
    return equality, subset


async def finish(env: Env, job_id: str) -> JobStatus:
    record = await env.worker.wait(job_id, timeout=10)
    return STATUS_MAP[record.status]


async def test_run_eval_returns_at_once_and_the_result_matches_the_scores(env: Env) -> None:
    job = await env.provider.run_eval("quiz-bench", candidate())
    assert job.status in (JobStatus.scheduled, JobStatus.in_progress)
    assert job.job_id.startswith("eval-")
    assert await finish(env, job.job_id) is JobStatus.completed
    assert (await env.provider.job_status("quiz-bench", job.job_id)).status is JobStatus.completed

    result = await env.provider.job_result("quiz-bench", job.job_id)
    assert result.generations == [{"generated_answer": ANSWERS[row["input_query"]]} for row in ROWS]
    equality, subset = expected_scores(ROWS)
    assert [r["score"] for r in result.scores["basic::equality"].score_rows] == equality
    assert [r["score"] for r in result.scores["basic::subset_of"].score_rows] == subset
    assert result.scores["basic::subset_of"].aggregated_results == {
        "accuracy": {
            "accuracy": sum(subset) / len(subset),
            "num_correct": sum(subset),
            "num_total": len(subset),
        }
    }
    assert await env.provider.job_error("quiz-bench", job.job_id) is None


async def test_num_examples_and_sampling_params_reach_the_model(env: Env) -> None:
    config = candidate(system="Be brief.", num_examples=2)
    job = await env.provider.run_eval("quiz-bench", config)
    assert await finish(env, job.job_id) is JobStatus.completed
    result = await env.provider.job_result("quiz-bench", job.job_id)
    assert len(result.generations) == 2
    assert len(env.client.requests) == 2
    first = env.client.requests[0]
    assert first.params == {"temperature": 0.0, "max_tokens": 16}
    assert first.messages is not None and first.messages[0] == {"role": "system", "content": "Be brief."}


async def test_unknown_jobs_and_jobs_of_other_benchmarks_are_not_found(env: Env) -> None:
    with pytest.raises(NotFoundError, match=r"^Job eval-missing not found$"):
        await env.provider.job_status("quiz-bench", "eval-missing")
    job = await env.provider.run_eval("quiz-bench", candidate())
    await finish(env, job.job_id)
    with pytest.raises(NotFoundError, match=f"Job {job.job_id} not found"):
        await env.provider.job_result("other-bench", job.job_id)


async def test_an_unknown_model_is_refused_before_any_job_exists(env: Env) -> None:
    with pytest.raises(NotFoundError, match="Model 'ghost' not found"):
        await env.provider.run_eval("quiz-bench", candidate("ghost"))
    assert await env.store.list_jobs() == []


async def test_a_job_whose_model_is_down_fails_with_the_reason(env: Env) -> None:
    env.client.down = True
    job = await env.provider.run_eval("quiz-bench", candidate())
    assert await finish(env, job.job_id) is JobStatus.failed
    reason = await env.provider.job_error("quiz-bench", job.job_id)
    assert reason == "all 5 samples failed: connection refused by http://quiz.invalid/v1"
    with pytest.raises(InvalidInputError, match=f"^Job {job.job_id} failed: all 5 samples failed"):
        await env.provider.job_result("quiz-bench", job.job_id)


async def test_cancel_while_running(env: Env) -> None:
    env.client.hold.clear()
    job = await env.provider.run_eval("quiz-bench", candidate())
    for _ in range(200):
        if env.client.in_flight == 2:
            break
        await asyncio.sleep(0.01)
    assert (await env.provider.job_status("quiz-bench", job.job_id)).status is JobStatus.in_progress
    with pytest.raises(InvalidInputError, match=f"^Job {job.job_id} not completed. Status: in_progress$"):
        await env.provider.job_result("quiz-bench", job.job_id)

    await env.provider.job_cancel("quiz-bench", job.job_id)
    assert (await env.provider.job_status("quiz-bench", job.job_id)).status is JobStatus.cancelled
    assert env.client.in_flight == 0
    with pytest.raises(InvalidInputError, match="Status: cancelled"):
        await env.provider.job_result("quiz-bench", job.job_id)


async def test_results_survive_a_restart(env: Env, tmp_path: Path) -> None:
    job = await env.provider.run_eval("quiz-bench", candidate())
    await finish(env, job.job_id)
    before = await env.provider.job_result("quiz-bench", job.job_id)
    await env.worker.stop()
    await env.store.close()

    again = await build_env(tmp_path, QuizClient())
    try:
        assert (await again.provider.job_status("quiz-bench", job.job_id)).status is JobStatus.completed
        assert await again.provider.job_result("quiz-bench", job.job_id) == before
    finally:
        await again.worker.stop()
        await again.store.close()
        env.store = Store(env.store.url)  # the fixture closes a fresh, unopened store harmlessly


async def test_evaluate_rows_generates_and_scores_without_storing(env: Env) -> None:
    rows = ROWS[1:3]
    result = await env.provider.evaluate_rows("quiz-bench", rows, ["basic::subset_of"], candidate())
    _, subset = expected_scores(rows)
    assert result.generations == [{"generated_answer": ANSWERS[row["input_query"]]} for row in rows]
    assert list(result.scores) == ["basic::subset_of"]
    assert [r["score"] for r in result.scores["basic::subset_of"].score_rows] == subset
    assert await env.store.list_jobs() == []


async def test_evaluate_rows_errors(env: Env) -> None:
    with pytest.raises(InvalidInputError, match="input_rows is empty"):
        await env.provider.evaluate_rows("quiz-bench", [], ["basic::equality"], candidate())
    with pytest.raises(InvalidInputError, match="Scoring function 'basic::nope' is not supported"):
        await env.provider.evaluate_rows("quiz-bench", ROWS, ["basic::nope"], candidate())
    with pytest.raises(InvalidInputError, match="all 1 samples failed: Invalid input row"):
        await env.provider.evaluate_rows("quiz-bench", [{"prompt": "x"}], ["basic::equality"], candidate())
    env.client.down = True
    with pytest.raises(UpstreamError, match="all 2 samples failed: connection refused"):
        await env.provider.evaluate_rows("quiz-bench", ROWS[:2], ["basic::equality"], candidate())


# ---- NeMo configs as benchmark metadata -------------------------------------------------------


class Contains:
    name = "accuracy"

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        return {"string-check": 1.0 if item["expected_answer"] in (output.text or "") else 0.0}


@pytest.fixture
def fake_nemo_plan(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Stands in for engine.nemo_plan: one chat task over ROWS, results as {tasks, groups}."""
    calls: list[tuple[dict[str, Any], dict[str, Any]]] = []

    async def compile_nemo_plan(
        config: dict[str, Any],
        target: dict[str, Any],
        *,
        registry: Registry,
        clients: Any,
        settings: Settings,
    ) -> EvalPlan:
        calls.append((config, target))
        endpoint = await registry.resolve_model(target["model"])

        async def rows() -> list[dict[str, Any]]:
            return ROWS

        def build(row: Mapping[str, Any]) -> InferenceRequest:
            return InferenceRequest(kind="chat", messages=[{"role": "user", "content": row["input_query"]}])

        def summarize(samples: Mapping[str, Sequence[SampleRecord]]) -> dict[str, Any]:
            values = [s.scores["accuracy"]["string-check"] for s in samples["qa"]]
            mean = sum(v or 0.0 for v in values) / len(values)
            score = {"value": mean, "stats": {"count": len(values)}}
            return {
                "tasks": {"qa": {"metrics": {"accuracy": {"scores": {"string-check": score}}}}},
                "groups": {},
            }

        task = TaskPlan(name="qa", rows=rows, metrics=[Contains()], build_request=build)
        return EvalPlan(tasks=[task], summarize=summarize, model=endpoint, parallelism=2)

    monkeypatch.setattr(evalstack.engine.compile, "compile_nemo_plan", compile_nemo_plan)
    return calls


async def test_a_nemo_config_benchmark_runs_with_the_candidate_as_target(
    env: Env, fake_nemo_plan: list[tuple[dict[str, Any], dict[str, Any]]]
) -> None:
    config = {"type": "custom", "tasks": {"qa": {"type": "chat-completion"}}}
    await env.provider.register_benchmark(
        Benchmark(
            identifier="nemo-bench", provider_id="local", dataset_id="", scoring_functions=[], metadata=config
        )
    )
    await env.registry.put_benchmark(
        Benchmark(
            identifier="nemo-bench", provider_id="local", dataset_id="", scoring_functions=[], metadata=config
        )
    )
    job = await env.provider.run_eval("nemo-bench", candidate())
    assert await finish(env, job.job_id) is JobStatus.completed
    assert fake_nemo_plan == [(config, {"type": "model", "model": "quiz"})]

    result = await env.provider.job_result("nemo-bench", job.job_id)
    _, subset = expected_scores(ROWS)
    assert [g["generated_answer"] for g in result.generations] == [ANSWERS[r["input_query"]] for r in ROWS]
    assert [g["item"] for g in result.generations] == ROWS
    assert list(result.scores) == ["nemo-bench"]
    assert result.scores["nemo-bench"].score_rows == [
        {"task": "qa", "metrics": {"accuracy": {"string-check": v}}, "score": v} for v in subset
    ]
    aggregated = result.scores["nemo-bench"].aggregated_results
    assert set(aggregated) == {"tasks", "groups"}
    value = aggregated["tasks"]["qa"]["metrics"]["accuracy"]["scores"]["string-check"]["value"]
    assert value == pytest.approx(sum(subset) / len(subset))

    with pytest.raises(UnsupportedError, match="NeMo Evaluator config"):
        await env.provider.evaluate_rows("nemo-bench", ROWS, [], candidate())


async def test_a_bad_nemo_type_is_refused_at_registration(env: Env) -> None:
    with pytest.raises(InvalidInputError, match=r"metadata\.type"):
        await env.provider.register_benchmark(
            Benchmark(
                identifier="b", provider_id="local", dataset_id="", scoring_functions=[], metadata={"type": 3}
            )
        )


def test_every_internal_status_maps_to_a_llama_stack_status() -> None:
    assert {k: v.value for k, v in STATUS_MAP.items()} == {
        "created": "scheduled",
        "pending": "scheduled",
        "running": "in_progress",
        "cancelling": "in_progress",
        "completed": "completed",
        "failed": "failed",
        "cancelled": "cancelled",
    }


# ---- the real stack: HTTP model client, NeMo compiler ------------------------------------------


@pytest.fixture
async def http_env(tmp_path: Path) -> AsyncIterator[tuple[Env, FakeModelServer]]:
    with FakeModelServer(answer=lambda prompt: ANSWERS.get(prompt, "?"), latency=0.01) as server:
        pool = ModelClientPool()
        env = await build_env(tmp_path, QuizClient(), pool)
        await env.registry.register_model("served", "fake-model", {"base_url": server.base_url})
        yield env, server
        await env.worker.stop()
        await pool.aclose()
        await env.store.close()


async def test_a_benchmark_over_http_with_its_rows_in_flight_together(
    http_env: tuple[Env, FakeModelServer],
) -> None:
    env, server = http_env
    rows = ROWS * 4
    await env.registry.register_dataset(
        RegisterDatasetRequest.model_validate(
            {
                "dataset_id": "qa20",
                "purpose": "eval/question-answer",
                "source": {"type": "rows", "rows": rows},
            }
        )
    )
    await env.registry.put_benchmark(
        Benchmark(
            identifier="b20", provider_id="local", dataset_id="qa20", scoring_functions=["basic::subset_of"]
        )
    )
    job = await env.provider.run_eval("b20", candidate("served", system="Short answers."))
    assert await finish(env, job.job_id) is JobStatus.completed
    result = await env.provider.job_result("b20", job.job_id)
    _, subset = expected_scores(rows)
    assert [r["score"] for r in result.scores["basic::subset_of"].score_rows] == subset
    assert len(server.requests) == len(rows)
    assert server.max_in_flight == 2  # settings.default_parallelism
    body = server.requests[0]
    assert body["model"] == "fake-model"
    assert body["temperature"] == 0.0 and body["max_tokens"] == 16
    assert body["messages"][0] == {"role": "system", "content": "Short answers."}


async def test_a_nemo_custom_config_benchmark_on_the_real_compiler(
    http_env: tuple[Env, FakeModelServer], tmp_path: Path
) -> None:
    env, server = http_env
    data = tmp_path / "qa.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": r["input_query"], "ideal": r["expected_answer"]}) + "\n" for r in ROWS)
    )
    config = {
        "type": "custom",
        "params": {"parallelism": 3},
        "tasks": {
            "qa": {
                "type": "chat-completion",
                "params": {
                    "template": {
                        "messages": [{"role": "user", "content": "{{item.prompt}}"}],
                        "max_tokens": 20,
                    }
                },
                "dataset": {"files_url": str(data)},
                "metrics": {
                    "accuracy": {
                        "type": "string-check",
                        "params": {"check": ["{{sample.output_text}}", "contains", "{{item.ideal}}"]},
                    }
                },
            }
        },
    }
    benchmark = Benchmark(
        identifier="nemo-real", provider_id="local", dataset_id="", scoring_functions=[], metadata=config
    )
    await env.provider.register_benchmark(benchmark)
    await env.registry.put_benchmark(benchmark)
    job = await env.provider.run_eval("nemo-real", candidate("served"))
    record = await env.worker.wait(job.job_id, timeout=10)
    assert record.status == "completed", record.error

    result = await env.provider.job_result("nemo-real", job.job_id)
    _, subset = expected_scores(ROWS)
    assert [g["generated_answer"] for g in result.generations] == [ANSWERS[r["input_query"]] for r in ROWS]
    assert result.scores["nemo-real"].score_rows == [
        {"task": "qa", "metrics": {"accuracy": {"string-check": v}}, "score": v} for v in subset
    ]
    tasks = result.scores["nemo-real"].aggregated_results["tasks"]
    value = tasks["qa"]["metrics"]["accuracy"]["scores"]["string-check"]["value"]
    assert value == pytest.approx(sum(subset) / len(subset))
    assert server.max_in_flight == 3
    assert all(body["max_tokens"] == 20 for body in server.requests)
