"""The Llama Stack routers in-process: status codes, error bodies, id encoding, provider routing.

The registry, scoring service and providers here are small in-memory stand-ins, so these tests
check what the HTTP layer decides (routing, mapping errors to statuses, response shapes); the real
components are driven end to end in tests/e2e/test_llama_stack_client.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from evalstack.api.llama_stack.models import (
    Benchmark,
    BenchmarkConfig,
    Dataset,
    EvaluateResponse,
    Job,
    JobStatus,
    Model,
    PaginatedResponse,
    RegisterDatasetRequest,
    RegisterScoringFnRequest,
    RowsDataSource,
    ScoringFn,
    ScoringResult,
)
from evalstack.api.llama_stack.routes import include_llama_stack_api
from evalstack.config import Settings
from evalstack.errors import ConflictError, InvalidInputError, NotFoundError, UnsupportedError, UpstreamError

# ---- stand-ins ----------------------------------------------------------------------------------


class FakeRegistry:
    """Benchmarks, datasets and models in dicts, raising the errors the real registry raises."""

    def __init__(self) -> None:
        self.benchmarks: dict[str, Benchmark] = {}
        self.datasets: dict[str, Dataset] = {}
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.models: dict[str, tuple[Model, dict[str, Any]]] = {}
        self.eval_jobs: dict[str, str] = {}
        self.dataset_replace_flags: list[bool] = []

    async def check_benchmark_replacement(self, b: Benchmark) -> None:
        existing = self.benchmarks.get(b.identifier)
        if existing is not None and existing != b:
            raise ConflictError(f"Benchmark '{b.identifier}' already exists with other settings.")

    async def put_benchmark(self, b: Benchmark) -> None:
        self.benchmarks[b.identifier] = b

    async def get_benchmark(self, benchmark_id: str) -> Benchmark:
        if benchmark_id not in self.benchmarks:
            raise NotFoundError(f"Benchmark '{benchmark_id}' not found")
        return self.benchmarks[benchmark_id]

    async def list_benchmarks(self) -> list[Benchmark]:
        return list(self.benchmarks.values())

    async def delete_benchmark(self, benchmark_id: str) -> None:
        await self.get_benchmark(benchmark_id)
        del self.benchmarks[benchmark_id]

    async def note_eval_job(self, benchmark_id: str, job_id: str) -> None:
        self.eval_jobs[benchmark_id] = job_id

    async def latest_eval_job(self, benchmark_id: str) -> str:
        if benchmark_id not in self.eval_jobs:
            raise NotFoundError(f"No eval job has been run for benchmark '{benchmark_id}'")
        return self.eval_jobs[benchmark_id]

    async def register_dataset(self, req: RegisterDatasetRequest, *, replace: bool = True) -> Dataset:
        self.dataset_replace_flags.append(replace)
        dataset_id = req.dataset_id or "dataset-generated"
        ds = Dataset(
            identifier=dataset_id,
            provider_resource_id=dataset_id,
            provider_id="localfs",
            purpose=req.purpose,
            source=req.source,
            metadata=req.metadata or {},
        )
        self.datasets[dataset_id] = ds
        if isinstance(req.source, RowsDataSource):
            self.rows[dataset_id] = list(req.source.rows)
        return ds

    async def get_dataset(self, dataset_id: str) -> Dataset:
        if dataset_id not in self.datasets:
            raise NotFoundError(f"Dataset '{dataset_id}' not found.")
        return self.datasets[dataset_id]

    async def list_datasets(self) -> list[Dataset]:
        return list(self.datasets.values())

    async def unregister_dataset(self, dataset_id: str) -> None:
        await self.get_dataset(dataset_id)
        del self.datasets[dataset_id]

    async def dataset_rows(self, dataset_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        await self.get_dataset(dataset_id)
        return self.rows.get(dataset_id, [])[:limit]

    async def iterrows(
        self, dataset_id: str, start_index: int | None, limit: int | None
    ) -> PaginatedResponse:
        rows = await self.dataset_rows(dataset_id)
        start = start_index or 0
        if limit is None or limit == -1:
            return PaginatedResponse(data=rows, has_more=False)
        return PaginatedResponse(data=rows[start : start + limit], has_more=start + limit < len(rows))

    async def append_rows(self, dataset_id: str, rows: list[dict[str, Any]]) -> None:
        await self.get_dataset(dataset_id)
        self.rows.setdefault(dataset_id, []).extend(rows)

    async def register_model(
        self,
        model_id: str,
        provider_model_id: str | None,
        metadata: dict[str, Any],
        *,
        provider_id: str | None = None,
        model_type: str | None = None,
    ) -> Model:
        if "base_url" not in metadata:
            raise InvalidInputError("metadata.base_url is required")
        # Deliberately careless about the key: the routes must hide it anyway.
        model = Model(
            identifier=model_id,
            provider_resource_id=provider_model_id or model_id,
            provider_id="openai",
            metadata=dict(metadata),
            id=model_id,
            created=0,
            custom_metadata=dict(metadata),
        )
        self.models[model_id] = (model, metadata)
        return model

    async def get_model(self, model_id: str) -> Model:
        if model_id not in self.models:
            raise NotFoundError(f"Model '{model_id}' not found.")
        return self.models[model_id][0]

    async def list_models(self) -> list[Model]:
        return [m for m, _ in self.models.values()]

    async def unregister_model(self, model_id: str) -> None:
        await self.get_model(model_id)
        del self.models[model_id]


class FakeScoring:
    """Scores ``basic::equality`` only; anything else is unknown."""

    def __init__(self) -> None:
        self.registered: dict[str, ScoringFn] = {}

    async def score(self, rows: list[dict[str, Any]], functions: dict[str, Any]) -> dict[str, ScoringResult]:
        results = {}
        for fn_id in functions:
            if fn_id != "basic::equality":
                raise NotFoundError(f"Scoring function '{fn_id}' not found")
            scores = [{"score": float(r["expected_answer"] == r["generated_answer"])} for r in rows]
            results[fn_id] = ScoringResult(
                score_rows=scores, aggregated_results={"accuracy": {"num_total": len(rows)}}
            )
        return results

    async def list_functions(self) -> list[ScoringFn]:
        return list(self.registered.values())

    async def get_function(self, fn_id: str) -> ScoringFn:
        if fn_id not in self.registered:
            raise NotFoundError(f"Scoring function '{fn_id}' not found")
        return self.registered[fn_id]

    async def register_function(self, req: RegisterScoringFnRequest) -> None:
        self.registered[req.scoring_fn_id] = ScoringFn(
            identifier=req.scoring_fn_id,
            provider_id="llm-as-judge",
            description=req.description,
            return_type=req.return_type,
            params=req.params,
        )

    async def unregister_function(self, fn_id: str) -> None:
        if fn_id.startswith("basic::"):
            raise UnsupportedError("Built-in scoring functions cannot be unregistered")
        await self.get_function(fn_id)
        del self.registered[fn_id]


@dataclass
class FakeProvider:
    """Records every call; knows the jobs it created."""

    provider_id: str
    provider_type: str = "inline::fake"
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    jobs: dict[str, JobStatus] = field(default_factory=dict)

    async def initialize(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def register_benchmark(self, task_def: Benchmark) -> None:
        self.calls.append(("register", task_def.identifier))
        if task_def.metadata.get("refuse"):
            raise UpstreamError("the evaluator refused the config")

    async def unregister_benchmark(self, benchmark_id: str) -> None:
        self.calls.append(("unregister", benchmark_id))

    async def run_eval(self, benchmark_id: str, benchmark_config: BenchmarkConfig) -> Job:
        self.calls.append(("run_eval", benchmark_id, benchmark_config.eval_candidate.type))
        model = getattr(benchmark_config.eval_candidate, "model", "")
        if model == "missing-model":
            raise NotFoundError(f"Model '{model}' not found.")
        job_id = f"job-{len(self.jobs)}"
        self.jobs[job_id] = JobStatus.scheduled
        return Job(job_id=job_id, status=JobStatus.scheduled)

    async def evaluate_rows(
        self,
        benchmark_id: str,
        input_rows: list[dict[str, Any]],
        scoring_functions: list[str],
        benchmark_config: BenchmarkConfig,
    ) -> EvaluateResponse:
        self.calls.append(("evaluate_rows", benchmark_id, len(input_rows)))
        return EvaluateResponse(generations=[{"generated_answer": "x"}] * len(input_rows), scores={})

    def _job(self, job_id: str) -> JobStatus:
        if job_id not in self.jobs:
            raise NotFoundError(f"Job {job_id} not found")
        return self.jobs[job_id]

    async def job_status(self, benchmark_id: str, job_id: str) -> Job:
        self.calls.append(("job_status", benchmark_id, job_id))
        return Job(job_id=job_id, status=self._job(job_id))

    async def job_cancel(self, benchmark_id: str, job_id: str) -> None:
        self.calls.append(("job_cancel", benchmark_id, job_id))
        self._job(job_id)
        self.jobs[job_id] = JobStatus.cancelled

    async def job_result(self, benchmark_id: str, job_id: str) -> EvaluateResponse:
        self.calls.append(("job_result", benchmark_id, job_id))
        self._job(job_id)
        if benchmark_id == "explodes":
            raise RuntimeError("database on fire")
        return EvaluateResponse(generations=[], scores={})


@dataclass
class FakeServices:
    registry: FakeRegistry = field(default_factory=FakeRegistry)
    scoring: FakeScoring = field(default_factory=FakeScoring)
    providers: dict[str, FakeProvider] = field(default_factory=lambda: {"local": FakeProvider("local")})
    settings: Settings = field(default_factory=Settings)


class Body(BaseModel):
    name: str


def build_app(services: FakeServices) -> FastAPI:
    app = FastAPI()
    include_llama_stack_api(app, cast(Any, services))
    # Another API family on the same app keeps FastAPI's own error format.
    other = APIRouter()

    @other.post("/v1/evaluation/things")
    async def make_thing(body: Body) -> dict[str, str]:
        return {"name": body.name}

    app.include_router(other)
    return app


@pytest.fixture
def services() -> FakeServices:
    return FakeServices()


@pytest.fixture
async def client(services: FakeServices) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(services))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


CANDIDATE = {"type": "model", "model": "m", "sampling_params": {"max_tokens": 8}}


async def register(
    client: httpx.AsyncClient, benchmark_id: str, prefix: str = "/v1alpha", **extra: Any
) -> None:
    body = {
        "benchmark_id": benchmark_id,
        "dataset_id": "ds",
        "scoring_functions": ["basic::equality"],
        **extra,
    }
    response = await client.post(f"{prefix}/eval/benchmarks", json=body)
    assert response.status_code == 200, response.text
    assert response.json() is None


# ---- validation and error bodies ----------------------------------------------------------------


async def test_validation_error_is_400_with_message_naming_fields(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1alpha/eval/benchmarks", json={"benchmark_id": "b"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert "dataset_id: Field required" in error["message"]
    assert "scoring_functions: Field required" in error["message"]
    locs = [e["loc"] for e in error["detail"]["errors"]]
    assert ["body", "dataset_id"] in locs
    assert all(set(e) == {"loc", "msg", "type"} for e in error["detail"]["errors"])


async def test_malformed_json_and_bad_query_are_400(
    client: httpx.AsyncClient, services: FakeServices
) -> None:
    response = await client.post(
        "/v1/scoring/score", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "JSON decode error" in response.json()["error"]["message"]
    response = await client.get("/v1beta/datasetio/iterrows/x", params={"limit": "many"})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("query.limit:")


async def test_bad_sampling_strategy_is_400_naming_the_field(client: httpx.AsyncClient) -> None:
    await register(client, "b")
    candidate = {**CANDIDATE, "sampling_params": {"strategy": {"type": "top_p", "temperature": 0}}}
    response = await client.post(
        "/v1alpha/eval/benchmarks/b/jobs", json={"benchmark_config": {"eval_candidate": candidate}}
    )
    assert response.status_code == 400
    assert "temperature" in response.json()["error"]["message"]


async def test_other_api_families_keep_their_own_error_format(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/evaluation/things", json={})
    assert response.status_code == 422
    assert "detail" in response.json() and "error" not in response.json()


async def test_unexpected_error_is_500_with_generic_message_and_logged(
    client: httpx.AsyncClient, services: FakeServices, caplog: pytest.LogCaptureFixture
) -> None:
    await register(client, "explodes")
    services.providers["local"].jobs["job-9"] = JobStatus.completed
    with caplog.at_level(logging.ERROR, logger="evalstack.api.llama_stack.errors"):
        response = await client.get("/v1alpha/eval/benchmarks/explodes/jobs/job-9/result")
    assert response.status_code == 500
    assert response.json() == {"error": {"message": "Internal server error: An unexpected error occurred."}}
    assert "database on fire" not in response.text
    assert any(r.exc_info and "database on fire" in str(r.exc_info[1]) for r in caplog.records)


# ---- benchmarks: ids, null bodies, provider routing ---------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "path_id"),
    [("/v1", "team/mmlu:v1"), ("/v1alpha", "team%2Fmmlu:v1"), ("/v1alpha", "team%2Fmmlu%3Av1")],
)
async def test_benchmark_ids_with_slash_and_colon_raw_or_encoded(
    client: httpx.AsyncClient, services: FakeServices, prefix: str, path_id: str
) -> None:
    await register(client, "team/mmlu:v1", prefix=prefix)
    response = await client.get(f"{prefix}/eval/benchmarks/{path_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["identifier"] == "team/mmlu:v1"
    assert body["provider_id"] == "local"
    assert body["provider_resource_id"] == "team/mmlu:v1"
    assert body["metadata"] == {}

    run = await client.post(
        f"{prefix}/eval/benchmarks/{path_id}/jobs", json={"benchmark_config": {"eval_candidate": CANDIDATE}}
    )
    assert run.status_code == 200, run.text
    job_id = run.json()["job_id"]
    assert run.json()["status"] == "scheduled"
    status = await client.get(f"{prefix}/eval/benchmarks/{path_id}/jobs/{job_id}")
    assert status.json() == {"job_id": job_id, "status": "scheduled"}
    result = await client.get(f"{prefix}/eval/benchmarks/{path_id}/jobs/{job_id}/result")
    assert result.json() == {"generations": [], "scores": {}}
    cancel = await client.delete(f"{prefix}/eval/benchmarks/{path_id}/jobs/{job_id}")
    assert (cancel.status_code, cancel.json()) == (200, None)
    calls = services.providers["local"].calls
    assert ("job_status", "team/mmlu:v1", job_id) in calls
    assert ("job_result", "team/mmlu:v1", job_id) in calls
    assert ("job_cancel", "team/mmlu:v1", job_id) in calls


async def test_encoded_id_that_looks_like_a_job_path_is_a_benchmark(client: httpx.AsyncClient) -> None:
    await register(client, "odd/jobs/job-0")
    response = await client.get("/v1alpha/eval/benchmarks/odd%2Fjobs%2Fjob-0")
    assert response.status_code == 200
    assert response.json()["identifier"] == "odd/jobs/job-0"
    listing = await client.get("/v1alpha/eval/benchmarks")
    assert [b["identifier"] for b in listing.json()["data"]] == ["odd/jobs/job-0"]


async def test_register_benchmark_keeps_provider_benchmark_id_and_metadata(client: httpx.AsyncClient) -> None:
    await register(client, "b", provider_benchmark_id="remote-b", metadata={"k": 1})
    body = (await client.get("/v1/eval/benchmarks/b")).json()
    assert body["provider_resource_id"] == "remote-b"
    assert body["metadata"] == {"k": 1}
    assert body["type"] == "benchmark"


async def test_several_providers_need_a_provider_id(
    client: httpx.AsyncClient, services: FakeServices
) -> None:
    services.providers["nvidia"] = FakeProvider("nvidia")
    body = {"benchmark_id": "b", "dataset_id": "d", "scoring_functions": []}
    response = await client.post("/v1alpha/eval/benchmarks", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "No provider specified and multiple providers available. Please specify a provider_id."
    )
    response = await client.post("/v1alpha/eval/benchmarks", json={**body, "provider_id": "nvidia"})
    assert response.status_code == 200
    assert services.providers["nvidia"].calls == [("register", "b")]
    assert services.providers["local"].calls == []
    assert (await client.get("/v1alpha/eval/benchmarks/b")).json()["provider_id"] == "nvidia"


async def test_unknown_provider_id_names_it_and_the_available_ones(client: httpx.AsyncClient) -> None:
    body = {"benchmark_id": "b", "dataset_id": "d", "scoring_functions": [], "provider_id": "nope"}
    response = await client.post("/v1alpha/eval/benchmarks", json=body)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "'nope'" in message and "'local'" in message


async def test_provider_refusal_registers_nothing(client: httpx.AsyncClient) -> None:
    body = {"benchmark_id": "b", "dataset_id": "d", "scoring_functions": [], "metadata": {"refuse": True}}
    response = await client.post("/v1alpha/eval/benchmarks", json=body)
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "the evaluator refused the config"
    assert (await client.get("/v1alpha/eval/benchmarks")).json() == {"data": []}


async def test_unknown_benchmark_is_400_everywhere(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1alpha/eval/benchmarks/nope")
    assert response.status_code == 400
    assert "nope" in response.json()["error"]["message"]
    not_served = (
        "Benchmark `nope` not served by provider: `local`. "
        "Make sure there is an Eval provider serving this benchmark."
    )
    for method, path, body in [
        ("POST", "/v1alpha/eval/benchmarks/nope/jobs", {"benchmark_config": {"eval_candidate": CANDIDATE}}),
        ("GET", "/v1alpha/eval/benchmarks/nope/jobs/job-0", None),
        ("DELETE", "/v1/eval/benchmarks/nope/jobs/job-0", None),
        ("GET", "/v1/eval/benchmarks/nope/jobs/job-0/result", None),
    ]:
        response = await client.request(method, path, json=body)
        assert response.status_code == 400, (method, path)
        assert response.json() == {"error": {"message": not_served}}


async def test_unknown_job_is_400(client: httpx.AsyncClient) -> None:
    await register(client, "b")
    response = await client.get("/v1alpha/eval/benchmarks/b/jobs/999")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Job 999 not found"


async def test_unknown_candidate_model_is_404(client: httpx.AsyncClient) -> None:
    await register(client, "b")
    candidate = {**CANDIDATE, "model": "missing-model"}
    response = await client.post(
        "/v1alpha/eval/benchmarks/b/jobs", json={"benchmark_config": {"eval_candidate": candidate}}
    )
    assert response.status_code == 404
    assert "missing-model" in response.json()["error"]["message"]


async def test_unregister_benchmark_calls_provider_then_forgets_it(
    client: httpx.AsyncClient, services: FakeServices
) -> None:
    await register(client, "a/b")
    response = await client.delete(
        "/v1alpha/eval/benchmarks/a%2Fb", headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()) == (200, None)
    assert services.providers["local"].calls[-1] == ("unregister", "a/b")
    assert (await client.get("/v1alpha/eval/benchmarks/a%2Fb")).status_code == 400


async def test_evaluate_rows_needs_rows_and_functions(
    client: httpx.AsyncClient, services: FakeServices
) -> None:
    await register(client, "b")
    body: dict[str, Any] = {
        "input_rows": [],
        "scoring_functions": ["basic::equality"],
        "benchmark_config": {"eval_candidate": CANDIDATE},
    }
    response = await client.post("/v1alpha/eval/benchmarks/b/evaluations", json=body)
    assert response.status_code == 400
    assert "input_rows" in response.json()["error"]["message"]
    body["input_rows"] = [{"input_query": "q"}, {"input_query": "r"}]
    response = await client.post("/v1alpha/eval/benchmarks/b/evaluations", json=body)
    assert response.status_code == 200
    assert len(response.json()["generations"]) == 2


# ---- scoring, scoring functions -----------------------------------------------------------------


async def test_score_and_unknown_function(client: httpx.AsyncClient) -> None:
    rows = [
        {"expected_answer": "a", "generated_answer": "a"},
        {"expected_answer": "a", "generated_answer": "b"},
    ]
    response = await client.post(
        "/v1/scoring/score", json={"input_rows": rows, "scoring_functions": {"basic::equality": None}}
    )
    assert response.status_code == 200
    assert response.json()["results"]["basic::equality"]["score_rows"] == [{"score": 1.0}, {"score": 0.0}]
    response = await client.post(
        "/v1/scoring/score", json={"input_rows": rows, "scoring_functions": {"x::y": None}}
    )
    assert response.status_code == 400


async def test_score_batch_scores_dataset_rows_and_saves_them_as_a_new_dataset(
    client: httpx.AsyncClient,
) -> None:
    rows = [
        {"expected_answer": "a", "generated_answer": "a"},
        {"expected_answer": "a", "generated_answer": "b"},
    ]
    await client.post(
        "/v1beta/datasets",
        json={"purpose": "eval/question-answer", "source": {"type": "rows", "rows": rows}, "dataset_id": "d"},
    )
    body: dict[str, Any] = {"dataset_id": "d", "scoring_functions": {"basic::equality": None}}
    response = await client.post("/v1/scoring/score-batch", json=body)
    assert response.status_code == 200
    assert response.json()["dataset_id"] is None
    assert response.json()["results"]["basic::equality"]["score_rows"] == [{"score": 1.0}, {"score": 0.0}]
    datasets_before = (await client.get("/v1beta/datasets")).json()["data"]

    response = await client.post("/v1/scoring/score-batch", json={**body, "save_results_dataset": True})
    assert response.status_code == 200, response.text
    saved_id = response.json()["dataset_id"]
    assert saved_id.startswith("d-scored-")
    assert response.json()["results"]["basic::equality"]["score_rows"] == [{"score": 1.0}, {"score": 0.0}]
    saved = (await client.get(f"/v1beta/datasets/{saved_id}")).json()
    assert saved["purpose"] == "eval/question-answer"
    assert saved["metadata"] == {"scored_from": "d", "scoring_functions": ["basic::equality"]}
    page = (await client.get(f"/v1beta/datasetio/iterrows/{saved_id}")).json()
    assert page["data"] == [
        {**rows[0], "basic::equality": {"score": 1.0}},
        {**rows[1], "basic::equality": {"score": 0.0}},
    ]
    again = await client.post("/v1/scoring/score-batch", json={**body, "save_results_dataset": True})
    assert again.json()["dataset_id"] not in (saved_id, None), "each save is a new dataset"
    datasets_after = (await client.get("/v1beta/datasets")).json()["data"]
    assert len(datasets_after) == len(datasets_before) + 2
    assert (await client.get("/v1beta/datasetio/iterrows/d")).json()["data"] == rows, "the source changed"
    response = await client.post("/v1/scoring/score-batch", json={**body, "dataset_id": "nope"})
    assert response.status_code == 400


async def test_scoring_function_register_get_unregister(client: httpx.AsyncClient) -> None:
    body = {
        "scoring_fn_id": "judge/strict:v2",
        "description": "d",
        "return_type": {"type": "number"},
        "params": {"type": "llm_as_judge", "judge_model": "m", "judge_score_regexes": ["(\\d)"]},
    }
    response = await client.post("/v1/scoring-functions", json=body)
    assert (response.status_code, response.json()) == (200, None)
    got = await client.get("/v1/scoring-functions/judge%2Fstrict:v2")
    assert got.status_code == 200
    assert got.json()["params"]["judge_model"] == "m"
    assert (await client.get("/v1/scoring-functions/judge/strict:v2")).status_code == 200
    assert (await client.delete("/v1/scoring-functions/basic::equality")).status_code == 501
    response = await client.delete("/v1/scoring-functions/judge/strict:v2")
    assert (response.status_code, response.json()) == (200, None)
    assert (await client.get("/v1/scoring-functions/judge/strict:v2")).status_code == 400


# ---- datasets and datasetio ---------------------------------------------------------------------


async def test_dataset_register_returns_dataset_and_unknown_is_404(client: httpx.AsyncClient) -> None:
    rows = [{"input_query": str(i)} for i in range(3)]
    body = {
        "purpose": "eval/question-answer",
        "source": {"type": "rows", "rows": rows},
        "dataset_id": "team/qa",
    }
    response = await client.post("/v1beta/datasets", json=body)
    assert response.status_code == 200
    assert response.json()["identifier"] == "team/qa"
    assert response.json()["type"] == "dataset"
    assert (await client.get("/v1beta/datasets/team%2Fqa")).json()["identifier"] == "team/qa"
    assert (await client.get("/v1/datasets/team/qa")).json()["identifier"] == "team/qa"
    missing = await client.get("/v1beta/datasets/nope")
    assert missing.status_code == 404
    assert "nope" in missing.json()["error"]["message"]
    bad = await client.post("/v1beta/datasets", json={**body, "purpose": "chitchat"})
    assert bad.status_code == 400
    assert bad.json()["error"]["message"].startswith("purpose:")
    deleted = await client.delete("/v1beta/datasets/team%2Fqa")
    assert (deleted.status_code, deleted.json()) == (200, None)
    assert (await client.delete("/v1beta/datasets/team%2Fqa")).status_code == 404


async def test_append_rows_is_204_on_v1beta_and_null_on_v1(
    client: httpx.AsyncClient, services: FakeServices
) -> None:
    body = {"purpose": "eval/question-answer", "source": {"type": "rows", "rows": []}, "dataset_id": "a/b"}
    await client.post("/v1beta/datasets", json=body)
    response = await client.post("/v1beta/datasetio/append-rows/a%2Fb", json={"rows": [{"x": 1}]})
    assert response.status_code == 204
    assert response.content == b""
    response = await client.post("/v1/datasetio/append-rows/a/b", json={"rows": [{"x": 2}]})
    assert (response.status_code, response.json()) == (200, None)
    assert services.registry.rows["a/b"] == [{"x": 1}, {"x": 2}]
    assert (await client.post("/v1beta/datasetio/append-rows/nope", json={"rows": []})).status_code == 400


async def test_iterrows_passes_paging_through(client: httpx.AsyncClient) -> None:
    rows = [{"i": i} for i in range(10)]
    body = {"purpose": "eval/question-answer", "source": {"type": "rows", "rows": rows}, "dataset_id": "p/q"}
    await client.post("/v1beta/datasets", json=body)
    page = await client.get("/v1beta/datasetio/iterrows/p%2Fq", params={"start_index": 5, "limit": 3})
    assert page.json()["data"] == [{"i": 5}, {"i": 6}, {"i": 7}]
    assert page.json()["has_more"] is True
    assert (
        await client.get("/v1beta/datasetio/iterrows/p%2Fq", params={"start_index": -1})
    ).status_code == 400
    assert (await client.get("/v1beta/datasetio/iterrows/nope")).status_code == 400


# ---- models -------------------------------------------------------------------------------------


async def test_models_never_echo_api_keys(client: httpx.AsyncClient) -> None:
    body = {
        "model_id": "my/model",
        "provider_model_id": "served-name",
        "metadata": {"base_url": "http://host/v1", "api_key": "sk-secret"},
    }
    response = await client.post("/v1/models", json=body)
    assert response.status_code == 200
    assert response.json()["identifier"] == "my/model"
    assert response.json()["id"] == "my/model"
    assert response.json()["provider_resource_id"] == "served-name"
    texts = [
        response.text,
        (await client.get("/v1/models")).text,
        (await client.get("/v1/models/my/model")).text,
        (await client.get("/v1/models/my%2Fmodel")).text,
    ]
    assert all("sk-secret" not in t for t in texts)
    assert "http://host/v1" in texts[1]
    assert (await client.delete("/v1/models/my/model")).json() is None
    assert (await client.get("/v1/models/my/model")).status_code == 404


async def test_model_without_base_url_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models", json={"model_id": "m"})
    assert response.status_code == 400
    assert "base_url" in response.json()["error"]["message"]


async def test_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/health")).json() == {"status": "OK"}


# ---- with the real registry and store -----------------------------------------------------------


@pytest.fixture
async def stored_client(tmp_path: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The routers over the real Registry on a SQLite file (providers and scoring still stand-ins)."""
    from evalstack.config import Settings
    from evalstack.registry import Registry
    from evalstack.store.repository import Store

    settings = Settings(data_dir=tmp_path, embedded_model=False)
    store = Store(f"sqlite:///{tmp_path / 'routes.db'}")
    await store.open()
    registry = Registry(store, settings)
    await registry.initialize()
    services = FakeServices(registry=cast(Any, registry))
    transport = httpx.ASGITransport(app=build_app(services))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("query", "expected", "has_more"),
    [
        ({"start_index": 2, "limit": 3}, [2, 3, 4], True),
        ({"start_index": 7, "limit": 3}, [7, 8, 9], False),
        ({"start_index": 8, "limit": 5}, [8, 9], False),
        ({"limit": 4}, [0, 1, 2, 3], True),
        ({"start_index": 4}, list(range(10)), False),  # no limit: everything, start ignored
        ({"start_index": 4, "limit": -1}, list(range(10)), False),
        ({"start_index": 3, "limit": 0}, [], True),
        ({"start_index": 12, "limit": 2}, [], False),
    ],
)
async def test_iterrows_pages_like_the_reference(
    stored_client: httpx.AsyncClient, query: dict[str, int], expected: list[int], has_more: bool
) -> None:
    rows = [{"i": i} for i in range(10)]
    body = {
        "purpose": "eval/question-answer",
        "source": {"type": "rows", "rows": rows},
        "dataset_id": "ns/ten",
    }
    assert (await stored_client.post("/v1beta/datasets", json=body)).status_code == 200
    for path in ("/v1beta/datasetio/iterrows/ns%2Ften", "/v1/datasetio/iterrows/ns/ten"):
        page = await stored_client.get(path, params=query)
        assert page.status_code == 200, page.text
        assert [r["i"] for r in page.json()["data"]] == expected
        assert page.json()["has_more"] is has_more


async def test_dataset_register_generates_an_id_and_appended_rows_are_served(
    stored_client: httpx.AsyncClient,
) -> None:
    body = {"purpose": "eval/messages-answer", "source": {"type": "rows", "rows": [{"a": 1}]}}
    response = await stored_client.post("/v1beta/datasets", json=body)
    assert response.status_code == 200
    dataset = response.json()
    assert dataset["identifier"].startswith("dataset-")
    assert dataset["provider_id"] == "localfs"
    dataset_id = dataset["identifier"]
    assert (
        await stored_client.post(f"/v1beta/datasetio/append-rows/{dataset_id}", json={"rows": [{"a": 2}]})
    ).status_code == 204
    page = await stored_client.get(f"/v1beta/datasetio/iterrows/{dataset_id}")
    assert page.json()["data"] == [{"a": 1}, {"a": 2}]
    listed = (await stored_client.get("/v1beta/datasets")).json()["data"]
    assert [d["identifier"] for d in listed] == [dataset_id]


async def test_registered_model_carries_both_client_field_sets(stored_client: httpx.AsyncClient) -> None:
    body = {"model_id": "m1", "metadata": {"base_url": "http://h:8000/v1", "api_key": "sk-x"}}
    assert (await stored_client.post("/v1/models", json=body)).status_code == 200
    listed = (await stored_client.get("/v1/models")).json()["data"]
    (model,) = listed
    assert model["identifier"] == model["id"] == "m1"  # 0.2.x and 0.7.x readers
    assert model["provider_resource_id"] == "m1"
    assert model["model_type"] == "llm" and model["object"] == "model"
    assert "sk-x" not in str(listed)


# ---- the app factory ----------------------------------------------------------------------------


async def test_create_app_builds_configured_providers_and_mounts_both_api_families(tmp_path: Any) -> None:
    from evalstack.config import ProviderEntry, Settings
    from evalstack.server import create_app

    settings = Settings(
        data_dir=tmp_path,
        embedded_model=False,
        providers=[
            ProviderEntry(provider_id="local", provider_type="inline::local"),
            ProviderEntry(
                provider_id="nemo-remote",
                provider_type="remote::nvidia",
                config={"evaluator_url": "http://127.0.0.1:9"},
            ),
        ],
    )
    app = create_app(settings)
    assert sorted(app.state.services.providers) == ["local", "nemo-remote"]
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        body = {"benchmark_id": "b", "dataset_id": "d", "scoring_functions": ["basic::equality"]}
        response = await c.post("/v1alpha/eval/benchmarks", json=body)
        assert response.status_code == 400
        assert "multiple providers" in response.json()["error"]["message"]
        response = await c.post("/v1alpha/eval/benchmarks", json={**body, "provider_id": "local"})
        assert response.status_code == 200
        assert (await c.get("/v1alpha/eval/benchmarks/b")).json()["provider_id"] == "local"
        jobs = (await c.get("/v1/evalstack/jobs")).json()
        assert (jobs["data"], jobs["total"]) == ([], 0)
        nemo = await c.get("/v1/evaluation/configs")
        assert nemo.status_code == 200
        ids = {fn["identifier"] for fn in (await c.get("/v1/scoring-functions")).json()["data"]}
        assert "basic::equality" in ids
