"""The nvidia eval provider: Llama Stack's unit tests, ported, plus tests of the improvements.

Ported: the original tests (0.2.3, with 0.2.22's unregister test) and their later versions (0.2.23
to 0.7.0).

The ported tests patch the provider's HTTP helpers exactly as the original ones did. The others
drive the provider against a small NeMo Evaluator stand-in served over real HTTP.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import zipfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest.mock import MagicMock, patch

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from evalstack.api.llama_stack.models import (
    Benchmark,
    BenchmarkConfig,
    EvaluateResponse,
    Job,
    JobStatus,
    ModelCandidate,
    SamplingParams,
    TopPSamplingStrategy,
)
from evalstack.errors import (
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
    UpstreamError,
    UpstreamTimeoutError,
)
from evalstack.providers.nvidia import (
    NVIDIA_MODEL_ALIASES,
    NVIDIAEvalConfig,
    NVIDIAEvalImpl,
    map_model_id,
    parse_per_sample_results,
)
from tests.fakes.serving import BackgroundServer, free_port

MOCK_DATASET_ID = "default/test-dataset"
MOCK_BENCHMARK_ID = "test-benchmark"

PATCH_BASE = "evalstack.providers.nvidia.NVIDIAEvalImpl"


def custom_config(
    files_url: str = f"hf://datasets/{MOCK_DATASET_ID}/testing/testing.jsonl",
) -> dict[str, Any]:
    """The custom-evaluation config of the original change (its README and tests)."""
    return {
        "type": "custom",
        "params": {"parallelism": 8},
        "tasks": {
            "qa": {
                "type": "completion",
                "params": {"template": {"prompt": "{{prompt}}", "max_tokens": 200}},
                "dataset": {"files_url": files_url},
                "metrics": {"bleu": {"type": "bleu", "params": {"references": ["{{ideal_response}}"]}}},
            }
        },
    }


# ---- the original tests, ported -----------------------------------------------------------------


@dataclass
class Mocks:
    impl: NVIDIAEvalImpl
    get: Any
    post: Any
    delete: Any


@contextmanager
def patched_helpers(impl: NVIDIAEvalImpl) -> Iterator[Mocks]:
    """The provider's HTTP helpers patched, as the original tests patched them."""
    with (
        patch(f"{PATCH_BASE}._evaluator_get") as get,
        patch(f"{PATCH_BASE}._evaluator_post") as post,
        patch(f"{PATCH_BASE}._evaluator_delete") as delete,
        # the extra per-sample download is not part of the original tests; keep them offline
        patch(f"{PATCH_BASE}._evaluator_download", side_effect=NotFoundError("no per-sample results")),
    ):
        yield Mocks(impl, get, post, delete)


@pytest.fixture
def nvidia_eval(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mocks]:
    """The provider built as the original tests built it, with its HTTP helpers patched."""
    monkeypatch.setenv("NVIDIA_EVALUATOR_URL", "http://nemo.test")
    config = NVIDIAEvalConfig(evaluator_url="http://nemo.test")
    impl = NVIDIAEvalImpl(
        config=config,
        datasetio_api=MagicMock(),
        datasets_api=MagicMock(),
        scoring_api=MagicMock(),
        inference_api=MagicMock(),
        agents_api=MagicMock(),
    )
    with patched_helpers(impl) as mocks:
        yield mocks


def _assert_request_body(post: Any, expected: dict[str, Any]) -> None:
    """Every expected key is in the posted body; dict values are compared one level deep."""
    actual = post.call_args[0][1]
    for key, value in expected.items():
        assert key in actual
        if isinstance(value, dict):
            for nested_key, nested_value in value.items():
                assert actual[key][nested_key] == nested_value
        else:
            assert actual[key] == value


async def test_register_benchmark(nvidia_eval: Mocks) -> None:
    cfg = custom_config()
    benchmark = Benchmark(
        provider_id="nvidia",
        type="benchmark",
        identifier=MOCK_BENCHMARK_ID,
        dataset_id=MOCK_DATASET_ID,
        scoring_functions=["basic::equality"],
        metadata=cfg,
    )
    nvidia_eval.post.return_value = {"id": MOCK_BENCHMARK_ID, "status": "created"}

    await nvidia_eval.impl.register_benchmark(benchmark)

    nvidia_eval.post.assert_called_once()
    _assert_request_body(nvidia_eval.post, {"namespace": "nvidia", "name": MOCK_BENCHMARK_ID, **cfg})


async def test_unregister_benchmark(nvidia_eval: Mocks) -> None:
    nvidia_eval.delete.return_value = None

    await nvidia_eval.impl.unregister_benchmark(benchmark_id=MOCK_BENCHMARK_ID)

    nvidia_eval.delete.assert_called_once_with(f"/v1/evaluation/configs/nvidia/{MOCK_BENCHMARK_ID}")


async def _check_run_eval(mocks: Mocks, sampling_params: SamplingParams, target_model: str) -> None:
    """The original run_eval test's body: the candidate Llama3.1-8B-Instruct goes out as ``target_model``."""
    benchmark_config = BenchmarkConfig(
        eval_candidate=ModelCandidate(
            type="model", model="Llama3.1-8B-Instruct", sampling_params=sampling_params
        )
    )
    mocks.post.return_value = {"id": "job-123", "status": "created"}

    result = await mocks.impl.run_eval(benchmark_id=MOCK_BENCHMARK_ID, benchmark_config=benchmark_config)

    mocks.post.assert_called_once()
    _assert_request_body(
        mocks.post,
        {"config": f"nvidia/{MOCK_BENCHMARK_ID}", "target": {"type": "model", "model": target_model}},
    )
    assert isinstance(result, Job)
    assert result.job_id == "job-123"
    assert result.status == JobStatus.in_progress


async def _check_job_result(mocks: Mocks) -> None:
    """The original job_result test's body: a completed job's results, read in two GETs."""
    mocks.get.side_effect = [
        {"id": "job-123", "status": "completed"},
        {
            "id": "job-123",
            "status": "completed",
            "results": {MOCK_BENCHMARK_ID: {"score": 0.85, "details": {"accuracy": 0.85, "f1": 0.84}}},
        },
    ]

    result = await mocks.impl.job_result(benchmark_id=MOCK_BENCHMARK_ID, job_id="job-123")

    assert isinstance(result, EvaluateResponse)
    assert MOCK_BENCHMARK_ID in result.scores
    assert result.scores[MOCK_BENCHMARK_ID].aggregated_results["results"][MOCK_BENCHMARK_ID]["score"] == 0.85
    assert mocks.get.call_count == 2
    mocks.get.assert_any_call("/v1/evaluation/jobs/job-123")
    mocks.get.assert_any_call("/v1/evaluation/jobs/job-123/results")


async def test_run_eval(nvidia_eval: Mocks) -> None:
    sampling = SamplingParams(max_tokens=100, temperature=0.7)  # type: ignore[call-arg]
    await _check_run_eval(nvidia_eval, sampling, "meta/llama-3.1-8b-instruct")


async def test_job_status(nvidia_eval: Mocks) -> None:
    nvidia_eval.get.return_value = {"id": "job-123", "status": "completed"}

    result = await nvidia_eval.impl.job_status(benchmark_id=MOCK_BENCHMARK_ID, job_id="job-123")

    assert isinstance(result, Job)
    assert result.job_id == "job-123"
    assert result.status == JobStatus.completed
    nvidia_eval.get.assert_called_once_with("/v1/evaluation/jobs/job-123")


async def test_job_cancel(nvidia_eval: Mocks) -> None:
    nvidia_eval.post.return_value = {"id": "job-123", "status": "cancelled"}

    await nvidia_eval.impl.job_cancel(benchmark_id=MOCK_BENCHMARK_ID, job_id="job-123")

    nvidia_eval.post.assert_called_once_with("/v1/evaluation/jobs/job-123/cancel", {})


async def test_job_result(nvidia_eval: Mocks) -> None:
    await _check_job_result(nvidia_eval)


# ---- the later versions, ported (Llama Stack 0.2.23 to 0.7.0) -------------------------------------
#
# 0.2.23 stopped mapping Llama model names to NVIDIA ids (the candidate's id goes out unchanged: our
# ``map_model_ids: false``); 0.5.0 passed request objects and a top-p strategy; 0.7.0 built the
# provider with ``responses_api`` instead of ``agents_api``. Same patch points, same assertions.


@pytest.fixture
def later_nvidia_eval(monkeypatch: pytest.MonkeyPatch) -> Iterator[Mocks]:
    """The provider built as the 0.7.0 tests build it, configured as a 0.2.23+ provider behaves."""
    monkeypatch.setenv("NVIDIA_EVALUATOR_URL", "http://nemo.test")
    config = NVIDIAEvalConfig(evaluator_url="http://nemo.test", map_model_ids=False)
    impl = NVIDIAEvalImpl(
        config=config,
        datasetio_api=MagicMock(),
        datasets_api=MagicMock(),
        scoring_api=MagicMock(),
        inference_api=MagicMock(),
        responses_api=MagicMock(),
    )
    with patched_helpers(impl) as mocks:
        yield mocks


async def test_later_register_benchmark(later_nvidia_eval: Mocks) -> None:
    cfg = custom_config()
    benchmark = Benchmark(
        provider_id="nvidia",
        type="benchmark",
        identifier=MOCK_BENCHMARK_ID,
        dataset_id=MOCK_DATASET_ID,
        scoring_functions=["basic::equality"],
        metadata=cfg,
    )
    later_nvidia_eval.post.return_value = {"id": MOCK_BENCHMARK_ID, "status": "created"}

    await later_nvidia_eval.impl.register_benchmark(benchmark)

    later_nvidia_eval.post.assert_called_once()
    _assert_request_body(
        later_nvidia_eval.post, {"namespace": benchmark.provider_id, "name": benchmark.identifier, **cfg}
    )


async def test_later_run_eval_sends_the_model_id_unchanged(later_nvidia_eval: Mocks) -> None:
    sampling = SamplingParams(max_tokens=100, strategy=TopPSamplingStrategy(temperature=0.7))
    await _check_run_eval(later_nvidia_eval, sampling, "Llama3.1-8B-Instruct")


async def test_later_job_status(later_nvidia_eval: Mocks) -> None:
    later_nvidia_eval.get.return_value = {"id": "job-123", "status": "completed"}

    result = await later_nvidia_eval.impl.job_status(benchmark_id=MOCK_BENCHMARK_ID, job_id="job-123")

    assert isinstance(result, Job)
    assert result.job_id == "job-123"
    assert result.status == JobStatus.completed
    later_nvidia_eval.get.assert_called_once_with(f"/v1/evaluation/jobs/{result.job_id}")


async def test_later_job_cancel(later_nvidia_eval: Mocks) -> None:
    later_nvidia_eval.post.return_value = {"id": "job-123", "status": "cancelled"}

    await later_nvidia_eval.impl.job_cancel(benchmark_id=MOCK_BENCHMARK_ID, job_id="job-123")

    later_nvidia_eval.post.assert_called_once_with("/v1/evaluation/jobs/job-123/cancel", {})


async def test_later_job_result(later_nvidia_eval: Mocks) -> None:
    await _check_job_result(later_nvidia_eval)


def test_model_ids_are_mapped_unless_the_config_says_not() -> None:
    assert NVIDIAEvalConfig(evaluator_url="http://nemo.test").map_model_ids is True
    with pytest.raises(ValueError, match="map_model_ids"):
        NVIDIAEvalConfig.model_validate({"evaluator_url": "http://nemo.test", "map_model_idz": False})


# ---- status mapping and unsupported calls (patched helpers) ---------------------------------------


@pytest.mark.parametrize(
    ("nemo_status", "expected"),
    [
        ("created", JobStatus.scheduled),
        ("pending", JobStatus.scheduled),
        ("running", JobStatus.in_progress),
        ("cancelling", JobStatus.in_progress),
        ("completed", JobStatus.completed),
        ("cancelled", JobStatus.cancelled),
        ("failed", JobStatus.failed),
    ],
)
async def test_job_status_maps_every_nemo_status(
    nvidia_eval: Mocks, nemo_status: str, expected: JobStatus
) -> None:
    nvidia_eval.get.return_value = {"id": "job-1", "status": nemo_status}
    job = await nvidia_eval.impl.job_status(MOCK_BENCHMARK_ID, "job-1")
    assert job.status == expected


async def test_unknown_status_is_failed_and_the_reason_names_it(nvidia_eval: Mocks) -> None:
    nvidia_eval.get.return_value = {"id": "job-1", "status": "paused"}
    job = await nvidia_eval.impl.job_status(MOCK_BENCHMARK_ID, "job-1")
    assert job.status == JobStatus.failed
    reason = nvidia_eval.impl.job_failure_reason("job-1")
    assert reason is not None and "'paused'" in reason


async def test_failed_job_keeps_the_service_message_as_reason(nvidia_eval: Mocks) -> None:
    nvidia_eval.get.return_value = {
        "id": "job-1",
        "status": "failed",
        "status_details": {"message": "model endpoint refused the connection"},
    }
    await nvidia_eval.impl.job_status(MOCK_BENCHMARK_ID, "job-1")
    assert "model endpoint refused" in (nvidia_eval.impl.job_failure_reason("job-1") or "")
    with pytest.raises(InvalidInputError, match=r"Job job-1 not completed\. Status: failed.*refused"):
        await nvidia_eval.impl.job_result(MOCK_BENCHMARK_ID, "job-1")


async def test_job_result_of_an_unfinished_job_is_invalid_input(nvidia_eval: Mocks) -> None:
    nvidia_eval.get.return_value = {"id": "job-1", "status": "running"}
    with pytest.raises(InvalidInputError, match=r"Job job-1 not completed\. Status: in_progress"):
        await nvidia_eval.impl.job_result(MOCK_BENCHMARK_ID, "job-1")
    assert nvidia_eval.get.call_count == 1


async def test_evaluate_rows_is_unsupported(nvidia_eval: Mocks) -> None:
    config = BenchmarkConfig(eval_candidate=ModelCandidate(model="m", sampling_params=SamplingParams()))
    with pytest.raises(UnsupportedError, match="evaluate_rows is not supported"):
        await nvidia_eval.impl.evaluate_rows(MOCK_BENCHMARK_ID, [{"q": "x"}], ["basic::equality"], config)
    nvidia_eval.post.assert_not_called()


async def test_agent_candidate_uses_its_config_model(nvidia_eval: Mocks) -> None:
    nvidia_eval.post.return_value = {"id": "job-9", "status": "created"}
    config = BenchmarkConfig.model_validate(
        {"eval_candidate": {"type": "agent", "config": {"model": "meta-llama/Llama-3.3-70B-Instruct"}}}
    )
    await nvidia_eval.impl.run_eval(MOCK_BENCHMARK_ID, config)
    assert nvidia_eval.post.call_args[0][1]["target"]["model"] == "meta/llama-3.3-70b-instruct"


async def test_namespace_is_configurable(nvidia_eval: Mocks) -> None:
    impl = NVIDIAEvalImpl(NVIDIAEvalConfig(evaluator_url="http://nemo.test", namespace="team-a"))
    nvidia_eval.post.return_value = {"id": "job-2", "status": "created"}
    await impl.register_benchmark(
        Benchmark(provider_id="nvidia", identifier="b1", dataset_id="", scoring_functions=[], metadata={})
    )
    assert nvidia_eval.post.call_args[0][1]["namespace"] == "team-a"
    config = BenchmarkConfig(
        eval_candidate=ModelCandidate(model="my-model", sampling_params=SamplingParams())
    )
    await impl.run_eval("b1", config)
    assert nvidia_eval.post.call_args[0][1]["config"] == "team-a/b1"
    await impl.unregister_benchmark("b1")
    nvidia_eval.delete.assert_called_once_with("/v1/evaluation/configs/team-a/b1")


# ---- model ids and configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "nvidia_id"),
    [
        ("Llama3.1-8B-Instruct", "meta/llama-3.1-8b-instruct"),
        ("meta-llama/Llama-3.1-8B-Instruct", "meta/llama-3.1-8b-instruct"),
        ("Llama3-8B-Instruct", "meta/llama3-8b-instruct"),
        ("meta-llama/Llama-3-70B-Instruct", "meta/llama3-70b-instruct"),
        ("Llama3.1-405B-Instruct", "meta/llama-3.1-405b-instruct"),
        ("Llama3.2-3B-Instruct", "meta/llama-3.2-3b-instruct"),
        ("meta-llama/Llama-3.2-11B-Vision-Instruct", "meta/llama-3.2-11b-vision-instruct"),
        ("Llama3.2-90B-Vision-Instruct", "meta/llama-3.2-90b-vision-instruct"),
        ("Llama3.3-70B-Instruct", "meta/llama-3.3-70b-instruct"),
    ],
)
def test_llama_names_map_to_nvidia_ids(model: str, nvidia_id: str) -> None:
    assert map_model_id(model) == nvidia_id


@pytest.mark.parametrize(
    "model", ["candidate", "meta/llama-3.1-8b-instruct", "llama3.1-8b-instruct", "gpt-x"]
)
def test_other_model_ids_pass_through(model: str) -> None:
    assert map_model_id(model) == model


def test_alias_table_targets_nvidia_meta_ids() -> None:
    assert all(v.startswith("meta/") and v == v.lower() for v in NVIDIA_MODEL_ALIASES.values())
    assert len(set(NVIDIA_MODEL_ALIASES.values())) == 10


def test_config_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVIDIA_EVALUATOR_URL", raising=False)
    monkeypatch.delenv("NVIDIA_EVALUATOR_API_KEY", raising=False)
    config = NVIDIAEvalConfig()
    assert config.evaluator_url == "http://0.0.0.0:7331"
    assert config.api_key is None
    assert config.namespace == "nvidia"
    monkeypatch.setenv("NVIDIA_EVALUATOR_URL", "https://evaluator.example/")
    monkeypatch.setenv("NVIDIA_EVALUATOR_API_KEY", "secret-key")
    config = NVIDIAEvalConfig()
    assert config.evaluator_url == "https://evaluator.example"
    assert config.api_key == "secret-key"
    assert "secret-key" not in repr(config)
    assert NVIDIAEvalImpl(config).provider_id == "nvidia"
    assert NVIDIAEvalImpl(config).provider_type == "remote::nvidia"


def test_config_rejects_unknown_keys_and_names_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"evaluator_ur.*accepted keys: evaluator_url, api_key, namespace"):
        NVIDIAEvalConfig.model_validate({"evaluator_ur": "http://x"})
    with pytest.raises(ValueError, match="http:// or https://"):
        NVIDIAEvalConfig(evaluator_url="nemo.test:7331")


# ---- a NeMo Evaluator stand-in over real HTTP ----------------------------------------------------


@dataclass
class NeMoState:
    """What the stand-in holds and what it was asked."""

    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    archives: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    faults: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0
    token: str | None = None
    patch_supported: bool = True
    next_id: int = 0


class FakeNeMoEvaluator:
    """The v1 evaluation routes the provider uses, with injectable faults, on a loopback port."""

    def __init__(self) -> None:
        self.state = NeMoState()
        self.epoch = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: BackgroundServer | None = None

    def _app(self) -> FastAPI:
        app = FastAPI()
        state = self.state

        @app.middleware("http")
        async def record_and_fault(request: Request, call_next: Any) -> Response:
            body = await request.body()
            state.requests.append(
                (request.method, request.url.path, dict(request.headers), json.loads(body) if body else None)
            )
            if state.delay:
                epoch = self.epoch
                await asyncio.sleep(state.delay)
                if epoch != self.epoch:  # the test that sent it is over: touch nothing of the next one
                    return JSONResponse({"detail": "stale request"}, 503)
            if state.token is not None and request.headers.get("authorization") != f"Bearer {state.token}":
                return JSONResponse({"detail": "Invalid or missing token"}, 401)
            if state.faults:
                status, headers = state.faults.pop(0)
                return JSONResponse({"detail": f"injected failure {status}"}, status, headers=headers)
            response: Response = await call_next(request)
            return response

        @app.post("/v1/evaluation/configs")
        async def create_config(request: Request) -> Response:
            body = await request.json()
            ref = f"{body.get('namespace', 'default')}/{body['name']}"
            if ref in state.configs:
                return JSONResponse({"detail": f"Evaluation config {ref} already exists"}, 409)
            state.configs[ref] = body
            return JSONResponse({"id": body["name"], **body})

        @app.patch("/v1/evaluation/configs/{namespace}/{name}")
        async def update_config(namespace: str, name: str, request: Request) -> Response:
            if not state.patch_supported:
                return JSONResponse({"detail": "Method Not Allowed"}, 405)
            ref = f"{namespace}/{name}"
            if ref not in state.configs:
                return JSONResponse({"detail": f"Evaluation config {ref} not found"}, 404)
            state.configs[ref] = {**state.configs[ref], **(await request.json())}
            return JSONResponse(state.configs[ref])

        @app.delete("/v1/evaluation/configs/{namespace}/{name}")
        async def delete_config(namespace: str, name: str) -> Response:
            ref = f"{namespace}/{name}"
            if state.configs.pop(ref, None) is None:
                return JSONResponse({"detail": f"Evaluation config {ref} not found"}, 404)
            return JSONResponse({"id": name, "deleted_at": "2025-01-01T00:00:00Z", "message": "deleted"})

        @app.post("/v1/evaluation/jobs")
        async def create_job(request: Request) -> Response:
            body = await request.json()
            if body["config"] not in state.configs:
                return JSONResponse({"detail": f"Evaluation config {body['config']} not found"}, 404)
            state.next_id += 1
            job = {"id": f"eval-{state.next_id}", "status": "created", **body}
            state.jobs[job["id"]] = job
            return JSONResponse(job)

        @app.get("/v1/evaluation/jobs/{job_id}")
        async def get_job(job_id: str) -> Response:
            if job_id not in state.jobs:
                return JSONResponse({"detail": f"Job {job_id} not found"}, 404)
            return JSONResponse(state.jobs[job_id])

        @app.post("/v1/evaluation/jobs/{job_id}/cancel")
        async def cancel_job(job_id: str) -> Response:
            if job_id not in state.jobs:
                return JSONResponse({"detail": f"Job {job_id} not found"}, 404)
            state.jobs[job_id]["status"] = "cancelling"
            return JSONResponse(state.jobs[job_id])

        @app.get("/v1/evaluation/jobs/{job_id}/results")
        async def job_results(job_id: str) -> Response:
            if job_id not in state.results:
                return JSONResponse({"detail": f"No results for job {job_id}"}, 404)
            return JSONResponse(state.results[job_id])

        @app.get("/v1/evaluation/jobs/{job_id}/download-results")
        async def download_results(job_id: str) -> Response:
            if job_id not in state.archives:
                return JSONResponse({"detail": f"No result files for job {job_id}"}, 404)
            return Response(state.archives[job_id], media_type="application/zip")

        return app

    def start(self) -> FakeNeMoEvaluator:
        self._server = BackgroundServer(self._app(), self.port, name="fake NeMo Evaluator").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def paths(self, method: str | None = None) -> list[str]:
        return [p for m, p, _, _ in self.state.requests if method is None or m == method]


@pytest.fixture(scope="module")
def nemo_server() -> Iterator[FakeNeMoEvaluator]:
    server = FakeNeMoEvaluator().start()
    yield server
    server.stop()


@pytest.fixture
def nemo(nemo_server: FakeNeMoEvaluator) -> FakeNeMoEvaluator:
    """The stand-in with a clean state for each test."""
    nemo_server.state.__init__()  # type: ignore[misc]
    nemo_server.epoch += 1
    return nemo_server


@pytest.fixture
async def provider(nemo: FakeNeMoEvaluator) -> AsyncIterator[NVIDIAEvalImpl]:
    impl = NVIDIAEvalImpl(NVIDIAEvalConfig(evaluator_url=nemo.url, max_retries=3, retry_backoff=0.01))
    yield impl
    await impl.shutdown()


def benchmark(identifier: str = MOCK_BENCHMARK_ID, metadata: dict[str, Any] | None = None) -> Benchmark:
    return Benchmark(
        provider_id="nvidia",
        identifier=identifier,
        dataset_id="",
        scoring_functions=[],
        metadata=custom_config() if metadata is None else metadata,
    )


def model_config(model: str = "candidate") -> BenchmarkConfig:
    return BenchmarkConfig(
        eval_candidate=ModelCandidate(model=model, sampling_params=SamplingParams(max_tokens=8))
    )


def results_zip(per_sample: dict[str, list[dict[str, Any]]], aggregate: dict[str, Any]) -> bytes:
    """A download-results archive as the NeMo Evaluator lays it out: aggregate and per-sample results."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("results/results.json", json.dumps(aggregate))
        zf.writestr("results/config.json", json.dumps({"type": "custom"}))
        zf.writestr("results/qa/results.json", json.dumps(per_sample))
    return buffer.getvalue()


async def test_full_flow_against_a_service(provider: NVIDIAEvalImpl, nemo: FakeNeMoEvaluator) -> None:
    await provider.register_benchmark(benchmark())
    assert nemo.state.configs["nvidia/test-benchmark"]["tasks"]["qa"]["type"] == "completion"

    job = await provider.run_eval(MOCK_BENCHMARK_ID, model_config("Llama3.1-8B-Instruct"))
    assert job.status == JobStatus.in_progress
    assert nemo.state.jobs[job.job_id]["target"] == {"type": "model", "model": "meta/llama-3.1-8b-instruct"}
    assert (await provider.job_status(MOCK_BENCHMARK_ID, job.job_id)).status == JobStatus.scheduled

    aggregate = {
        "tasks": {"qa": {"metrics": {"bleu": {"scores": {"corpus": {"value": 42.5}}}}}},
        "groups": {},
    }
    nemo.state.jobs[job.job_id]["status"] = "completed"
    nemo.state.results[job.job_id] = aggregate
    result = await provider.job_result(MOCK_BENCHMARK_ID, job.job_id)
    assert result.scores[MOCK_BENCHMARK_ID].aggregated_results == aggregate
    assert result.generations == []  # this service keeps no per-sample files
    assert result.scores[MOCK_BENCHMARK_ID].score_rows == []

    await provider.unregister_benchmark(MOCK_BENCHMARK_ID)
    assert "nvidia/test-benchmark" not in nemo.state.configs


async def test_job_result_reads_per_sample_outputs_from_download_results(
    provider: NVIDIAEvalImpl, nemo: FakeNeMoEvaluator
) -> None:
    await provider.register_benchmark(benchmark())
    job = await provider.run_eval(MOCK_BENCHMARK_ID, model_config())
    aggregate = {
        "id": "evaluation_result-1",
        "job": job.job_id,
        "tasks": {"qa": {"metrics": {"bleu": {"scores": {"corpus": {"value": 61.0}}}}}},
        "groups": {},
    }
    per_sample = {
        "qa": [
            {
                "item": {"prompt": "2+2?", "ideal_response": "4"},
                "sample": {"output_text": "4", "response": {"choices": [{"text": "4"}]}},
                "metrics": {"bleu": {"scores": {"sentence": {"value": 100.0}}}},
            },
            {
                "item": {"prompt": "capital of France?", "ideal_response": "Paris"},
                "sample": {"output_text": "Lyon", "response": {"choices": [{"text": "Lyon"}]}},
                "metrics": {"bleu": {"scores": {"sentence": {"value": 0.0}}}},
            },
        ]
    }
    nemo.state.jobs[job.job_id]["status"] = "completed"
    nemo.state.results[job.job_id] = aggregate
    nemo.state.archives[job.job_id] = results_zip(per_sample, aggregate)

    result = await provider.job_result(MOCK_BENCHMARK_ID, job.job_id)

    scores = result.scores[MOCK_BENCHMARK_ID]
    assert scores.aggregated_results == aggregate
    assert [g["generated_answer"] for g in result.generations] == ["4", "Lyon"]
    assert result.generations[1]["item"]["ideal_response"] == "Paris"
    assert [r["score"] for r in scores.score_rows] == [100.0, 0.0]
    assert scores.score_rows[0] == {"task": "qa", "metrics": {"bleu": {"sentence": 100.0}}, "score": 100.0}
    download = [h for m, p, h, _ in nemo.state.requests if p.endswith("/download-results")]
    assert download and download[0]["accept"] == "application/zip"


async def test_a_broken_download_keeps_the_aggregate_results(
    provider: NVIDIAEvalImpl, nemo: FakeNeMoEvaluator
) -> None:
    await provider.register_benchmark(benchmark())
    job = await provider.run_eval(MOCK_BENCHMARK_ID, model_config())
    nemo.state.jobs[job.job_id]["status"] = "completed"
    nemo.state.results[job.job_id] = {"tasks": {}, "groups": {}}
    nemo.state.archives[job.job_id] = b"this is not a zip file"
    result = await provider.job_result(MOCK_BENCHMARK_ID, job.job_id)
    assert result.scores[MOCK_BENCHMARK_ID].aggregated_results == {"tasks": {}, "groups": {}}
    assert result.generations == []


def test_per_sample_parser_skips_aggregate_files_and_handles_several_scores() -> None:
    per_sample = {
        "t1": [
            {
                "item": {"q": "a"},
                "sample": {"output_text": "x"},
                "metrics": {
                    "bleu": {"scores": {"sentence": {"value": 10.0}}},
                    "string-check": {"scores": {"string-check": {"value": 1.0}}},
                },
            }
        ],
        "t2": [{"item": {"q": "b"}, "sample": {"output_text": None}, "metrics": {}, "error": "timeout"}],
    }
    generations, rows = parse_per_sample_results(results_zip(per_sample, {"tasks": {}, "groups": {}}))
    assert [g["task"] for g in generations] == ["t1", "t2"]
    assert rows[0]["metrics"] == {"bleu": {"sentence": 10.0}, "string-check": {"string-check": 1.0}}
    assert "score" not in rows[0]
    assert generations[1]["generated_answer"] is None and generations[1]["error"] == "timeout"
    with pytest.raises(zipfile.BadZipFile):
        parse_per_sample_results(b"nope")


async def test_register_on_an_existing_config_updates_it(
    provider: NVIDIAEvalImpl, nemo: FakeNeMoEvaluator
) -> None:
    await provider.register_benchmark(benchmark())
    changed = custom_config(files_url="hf://datasets/default/other/testing/testing.jsonl")
    await provider.register_benchmark(benchmark(metadata=changed))
    assert ("PATCH", "/v1/evaluation/configs/nvidia/test-benchmark") in [
        (m, p) for m, p, _, _ in nemo.state.requests
    ]
    stored = nemo.state.configs["nvidia/test-benchmark"]
    assert stored["tasks"]["qa"]["dataset"]["files_url"].endswith("/other/testing/testing.jsonl")


async def test_register_falls_back_to_delete_and_create_without_patch(
    provider: NVIDIAEvalImpl, nemo: FakeNeMoEvaluator
) -> None:
    nemo.state.patch_supported = False
    await provider.register_benchmark(benchmark())
    await provider.register_benchmark(benchmark(metadata={"type": "mmlu"}))
    assert nemo.state.configs["nvidia/test-benchmark"] == {
        "namespace": "nvidia",
        "name": "test-benchmark",
        "type": "mmlu",
    }
    assert nemo.paths("DELETE") == ["/v1/evaluation/configs/nvidia/test-benchmark"]


async def test_retries_5xx_then_succeeds(provider: NVIDIAEvalImpl, nemo: FakeNeMoEvaluator) -> None:
    nemo.state.jobs["eval-x"] = {"id": "eval-x", "status": "running"}
    nemo.state.faults = [(503, {}), (502, {})]
    job = await provider.job_status(MOCK_BENCHMARK_ID, "eval-x")
    assert job.status == JobStatus.in_progress
    assert nemo.paths() == ["/v1/evaluation/jobs/eval-x"] * 3


async def test_retries_429_honouring_retry_after(provider: NVIDIAEvalImpl, nemo: FakeNeMoEvaluator) -> None:
    await provider.register_benchmark(benchmark())
    nemo.state.requests.clear()
    nemo.state.faults = [(429, {"Retry-After": "0.2"})]
    started = time.monotonic()
    job = await provider.run_eval(MOCK_BENCHMARK_ID, model_config())
    assert time.monotonic() - started >= 0.2
    assert job.job_id in nemo.state.jobs
    assert nemo.paths("POST") == ["/v1/evaluation/jobs"] * 2


async def test_5xx_after_all_retries_is_an_upstream_error_with_the_service_message(
    provider: NVIDIAEvalImpl, nemo: FakeNeMoEvaluator
) -> None:
    nemo.state.faults = [(500, {})] * 10
    with pytest.raises(
        UpstreamError, match=r"failed with 500 after 4 attempt\(s\): injected failure 500"
    ) as info:
        await provider.job_status(MOCK_BENCHMARK_ID, "eval-x")
    assert nemo.url in info.value.message
    assert len(nemo.paths()) == 4


async def test_x_should_retry_false_stops_retries(provider: NVIDIAEvalImpl, nemo: FakeNeMoEvaluator) -> None:
    nemo.state.faults = [(503, {"x-should-retry": "false"})]
    with pytest.raises(UpstreamError, match="503"):
        await provider.job_status(MOCK_BENCHMARK_ID, "eval-x")
    assert len(nemo.paths()) == 1


async def test_unreachable_service_names_its_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    impl = NVIDIAEvalImpl(NVIDIAEvalConfig(evaluator_url=url, max_retries=1, retry_backoff=0.01))
    try:
        with pytest.raises(UpstreamError, match=rf"NeMo Evaluator at {url} is unreachable.*2 attempt"):
            await impl.run_eval(MOCK_BENCHMARK_ID, model_config())
    finally:
        await impl.shutdown()


async def test_unknown_job_is_not_found(provider: NVIDIAEvalImpl, nemo: FakeNeMoEvaluator) -> None:
    with pytest.raises(NotFoundError, match=r"Job 'eval-missing' not found on the NeMo Evaluator"):
        await provider.job_status(MOCK_BENCHMARK_ID, "eval-missing")
    with pytest.raises(NotFoundError, match="eval-missing"):
        await provider.job_cancel(MOCK_BENCHMARK_ID, "eval-missing")
    assert len(nemo.paths()) == 2  # a 404 is not retried


async def test_run_on_an_unregistered_config_is_not_found(provider: NVIDIAEvalImpl) -> None:
    with pytest.raises(NotFoundError, match="nvidia/never-registered"):
        await provider.run_eval("never-registered", model_config())


async def test_unregister_of_a_config_already_gone_succeeds(
    provider: NVIDIAEvalImpl, nemo: FakeNeMoEvaluator
) -> None:
    await provider.unregister_benchmark("gone")
    assert nemo.paths("DELETE") == ["/v1/evaluation/configs/nvidia/gone"]


async def test_cancelling_is_still_in_progress_then_cancelled(
    provider: NVIDIAEvalImpl, nemo: FakeNeMoEvaluator
) -> None:
    await provider.register_benchmark(benchmark())
    job = await provider.run_eval(MOCK_BENCHMARK_ID, model_config())
    await provider.job_cancel(MOCK_BENCHMARK_ID, job.job_id)
    cancel_requests = [(p, b) for m, p, _, b in nemo.state.requests if p.endswith("/cancel")]
    assert cancel_requests == [(f"/v1/evaluation/jobs/{job.job_id}/cancel", {})]
    assert nemo.state.jobs[job.job_id]["status"] == "cancelling"
    assert (await provider.job_status(MOCK_BENCHMARK_ID, job.job_id)).status == JobStatus.in_progress
    nemo.state.jobs[job.job_id]["status"] = "cancelled"
    assert (await provider.job_status(MOCK_BENCHMARK_ID, job.job_id)).status == JobStatus.cancelled


async def test_bearer_token_is_sent(nemo: FakeNeMoEvaluator) -> None:
    nemo.state.token = "s3cret"
    nemo.state.jobs["eval-x"] = {"id": "eval-x", "status": "completed"}
    anonymous = NVIDIAEvalImpl(NVIDIAEvalConfig(evaluator_url=nemo.url, api_key=None, max_retries=0))
    keyed = NVIDIAEvalImpl(NVIDIAEvalConfig(evaluator_url=nemo.url, api_key="s3cret", max_retries=0))
    try:
        with pytest.raises(UpstreamError, match=r"refused \(401\).*api_key"):
            await anonymous.job_status(MOCK_BENCHMARK_ID, "eval-x")
        assert (await keyed.job_status(MOCK_BENCHMARK_ID, "eval-x")).status == JobStatus.completed
        assert nemo.state.requests[-1][2]["authorization"] == "Bearer s3cret"
    finally:
        await anonymous.shutdown()
        await keyed.shutdown()


async def test_a_slow_service_times_out(nemo: FakeNeMoEvaluator) -> None:
    nemo.state.delay = 1.0
    impl = NVIDIAEvalImpl(NVIDIAEvalConfig(evaluator_url=nemo.url, timeout=0.2, max_retries=0))
    try:
        with pytest.raises(
            UpstreamTimeoutError, match=r"did not answer GET /v1/evaluation/jobs/eval-x within 0.2s"
        ):
            await impl.job_status(MOCK_BENCHMARK_ID, "eval-x")
    finally:
        await impl.shutdown()


async def test_a_rejected_config_is_invalid_input(provider: NVIDIAEvalImpl, nemo: FakeNeMoEvaluator) -> None:
    nemo.state.faults = [(422, {})]
    with pytest.raises(InvalidInputError, match=r"rejected \(422\): injected failure 422"):
        await provider.register_benchmark(benchmark())
    assert len(nemo.paths()) == 1


async def test_one_shared_client_created_lazily_and_closed_on_shutdown(
    nemo: FakeNeMoEvaluator,
) -> None:
    impl = NVIDIAEvalImpl(NVIDIAEvalConfig(evaluator_url=nemo.url))
    nemo.state.jobs["eval-x"] = {"id": "eval-x", "status": "pending"}
    assert impl._client is None
    await impl.job_status(MOCK_BENCHMARK_ID, "eval-x")
    client = impl._client
    assert client is not None
    await impl.job_status(MOCK_BENCHMARK_ID, "eval-x")
    assert impl._client is client
    await impl.shutdown()
    assert client.is_closed and impl._client is None

    await impl.initialize()
    assert impl._client is not None and not impl._client.is_closed
    await impl.shutdown()


async def test_missing_results_of_a_completed_job_are_not_found(
    provider: NVIDIAEvalImpl, nemo: FakeNeMoEvaluator
) -> None:
    nemo.state.jobs["eval-x"] = {"id": "eval-x", "status": "completed"}
    with pytest.raises(NotFoundError, match=r"results of job 'eval-x' are not on the NeMo Evaluator"):
        await provider.job_result(MOCK_BENCHMARK_ID, "eval-x")
