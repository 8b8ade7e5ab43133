"""Conformance with how the Llama Stack reference servers behave (0.2.12 under /v1, 0.7.x under /v1alpha
and /v1beta), on the whole app: real registry, store, scoring and local eval provider.

The candidate model is the fake OpenAI-compatible server; expected scores are computed here from the
rows and the fake's fixed answer, never read back from the server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from llama_stack_client import BadRequestError, LlamaStackClient

from evalstack.config import ProviderEntry, Settings
from evalstack.server import create_app
from tests.fakes.model_server import FakeModelServer
from tests.fakes.serving import BackgroundServer, free_port

ANSWER = "Answer: B"


@pytest.fixture
def fake_model() -> Iterator[FakeModelServer]:
    with FakeModelServer(answer=ANSWER) as server:
        yield server


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(data_dir=tmp_path, embedded_model=False))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as c,
    ):
        yield c


def chat_rows(expected: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "input_query": f"q{i}",
            "expected_answer": e,
            "chat_completion_input": json.dumps([{"role": "user", "content": f"q{i}"}]),
        }
        for i, e in enumerate(expected)
    ]


async def register_dataset(c: httpx.AsyncClient, dataset_id: str, rows: list[dict[str, Any]]) -> None:
    body = {
        "purpose": "eval/messages-answer",
        "source": {"type": "rows", "rows": rows},
        "dataset_id": dataset_id,
    }
    response = await c.post("/v1beta/datasets", json=body)
    assert response.status_code == 200, response.text


# ---- iterrows url: the route template on /v1 (0.2), null on /v1beta (0.7) ------------------------


async def test_iterrows_url_is_the_route_template_on_v1_and_null_on_v1beta(client: httpx.AsyncClient) -> None:
    await register_dataset(client, "team/qa", chat_rows(["A", "B", "C"]))
    old = await client.get("/v1/datasetio/iterrows/team/qa", params={"limit": 2})
    new = await client.get("/v1beta/datasetio/iterrows/team%2Fqa", params={"limit": 2})
    assert old.status_code == new.status_code == 200
    assert old.json()["url"] == "/v1/datasetio/iterrows/{dataset_id:path}"
    assert "url" in new.json() and new.json()["url"] is None
    assert old.json()["data"] == new.json()["data"]
    assert [r["expected_answer"] for r in new.json()["data"]] == ["A", "B"]
    assert new.json()["has_more"] is True


# ---- dataset purpose: 0.7 (/v1beta) accepts two, 0.2 (/v1) also post-training/messages -----------


async def test_v1beta_refuses_post_training_purpose_without_registering(client: httpx.AsyncClient) -> None:
    body = {
        "purpose": "post-training/messages",
        "source": {"type": "rows", "rows": [{"messages": []}]},
        "dataset_id": "pt",
    }
    refused = await client.post("/v1beta/datasets", json=body)
    assert refused.status_code == 400
    message = refused.json()["error"]["message"]
    assert "post-training/messages" in message
    assert "'eval/question-answer'" in message and "'eval/messages-answer'" in message
    assert (await client.get("/v1beta/datasets/pt")).status_code == 404
    assert (await client.get("/v1beta/datasets")).json()["data"] == []

    accepted = await client.post("/v1/datasets", json=body)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["purpose"] == "post-training/messages"
    qa = await client.post(
        "/v1beta/datasets", json={**body, "purpose": "eval/question-answer", "dataset_id": "qa"}
    )
    assert qa.status_code == 200


# ---- providers ---------------------------------------------------------------------------------


async def test_providers_list_shape_in_process(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/providers")
    assert response.status_code == 200
    data = response.json()["data"]
    assert all(set(p) == {"api", "provider_id", "provider_type", "config", "health"} for p in data)
    by_api: dict[str, set[tuple[str, str]]] = {}
    for p in data:
        by_api.setdefault(p["api"], set()).add((p["provider_id"], p["provider_type"]))
    assert by_api["eval"] == {("local", "inline::local")}
    assert {("basic", "inline::basic"), ("llm-as-judge", "inline::llm-as-judge")} <= by_api["scoring"]
    # The provider ids resources carry are listed providers.
    fn_providers = {f["provider_id"] for f in (await client.get("/v1/scoring-functions")).json()["data"]}
    assert fn_providers <= {pid for pid, _ in by_api["scoring"]}
    one = await client.get("/v1/providers/local")
    assert one.status_code == 200 and one.json()["api"] == "eval"
    missing = await client.get("/v1/providers/nope")
    assert missing.status_code == 400
    assert "nope" in missing.json()["error"]["message"] and "'local'" in missing.json()["error"]["message"]


def test_providers_list_with_the_real_0_2_client(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        embedded_model=False,
        providers=[
            ProviderEntry(provider_id="local", provider_type="inline::local"),
            ProviderEntry(
                provider_id="nemo",
                provider_type="remote::nvidia",
                config={"evaluator_url": "http://127.0.0.1:9", "api_key": "nv-secret-key"},
            ),
        ],
    )
    with BackgroundServer(create_app(settings), free_port(), name="evalstack") as server:
        client = LlamaStackClient(base_url=server.url, max_retries=0, timeout=10.0)
        providers = client.providers.list()
        evals = {p.provider_id: p for p in providers if p.api == "eval"}
        assert set(evals) == {"local", "nemo"}
        assert evals["local"].provider_type == "inline::local"
        assert evals["local"].health["status"] == "OK"
        assert evals["nemo"].provider_type == "remote::nvidia"
        assert evals["nemo"].config["evaluator_url"] == "http://127.0.0.1:9"
        assert "api_key" not in evals["nemo"].config
        scoring = {p.provider_id: p.provider_type for p in providers if p.api == "scoring"}
        assert scoring["basic"] == "inline::basic"
        assert scoring["llm-as-judge"] == "inline::llm-as-judge"
        assert client.providers.retrieve("nemo").provider_type == "remote::nvidia"
        with pytest.raises(BadRequestError, match="no-such-provider"):
            client.providers.retrieve("no-such-provider")
        raw = httpx.get(f"{server.url}/v1/providers").text
        assert "nv-secret-key" not in raw


# ---- regression guards for the Appendix's "Copy" list ---------------------------------------------


async def wait_done(c: httpx.AsyncClient, prefix: str, benchmark_id: str, job_id: str) -> dict[str, Any]:
    for _ in range(200):
        status = (await c.get(f"{prefix}/eval/benchmarks/{benchmark_id}/jobs/{job_id}")).json()
        if status["status"] not in ("scheduled", "in_progress"):
            return dict(status)
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.mark.parametrize("prefix", ["/v1", "/v1alpha"])
async def test_result_shape_and_aggregations_match_the_reference(
    client: httpx.AsyncClient, fake_model: FakeModelServer, prefix: str
) -> None:
    model = {
        "model_id": "my-model",
        "metadata": {"base_url": fake_model.base_url},
        "provider_model_id": "my-model",
    }
    assert (await client.post("/v1/models", json=model)).status_code == 200
    expected = ["B", "C", "B", "A"]
    await register_dataset(client, "mc", chat_rows(expected))
    fn = "basic::regex_parser_multiple_choice_answer"
    bm = {"benchmark_id": "mc-bench", "dataset_id": "mc", "scoring_functions": [fn]}
    registered = await client.post(f"{prefix}/eval/benchmarks", json=bm)
    assert (registered.status_code, registered.json()) == (200, None)
    config = {
        "eval_candidate": {
            "type": "model",
            "model": "my-model",
            "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 16},
        },
        "scoring_params": {
            fn: {"type": "basic", "aggregation_functions": ["accuracy", "average", "categorical_count"]}
        },
    }
    job = (
        await client.post(f"{prefix}/eval/benchmarks/mc-bench/jobs", json={"benchmark_config": config})
    ).json()
    assert set(job) == {"job_id", "status"}
    assert await wait_done(client, prefix, "mc-bench", job["job_id"]) == {
        "job_id": job["job_id"],
        "status": "completed",
    }
    result = (await client.get(f"{prefix}/eval/benchmarks/mc-bench/jobs/{job['job_id']}/result")).json()

    scores = [1.0 if e == ANSWER.split(": ")[1] else 0.0 for e in expected]
    assert result["generations"] == [{"generated_answer": ANSWER}] * len(expected)
    assert list(result["scores"]) == [fn]
    assert result["scores"][fn]["score_rows"] == [{"score": s} for s in scores]
    aggregated = result["scores"][fn]["aggregated_results"]
    accuracy = aggregated["accuracy"]
    assert accuracy == {
        "accuracy": sum(scores) / len(scores),
        "num_correct": sum(scores),
        "num_total": len(scores),
    }
    assert isinstance(accuracy["num_correct"], float) and isinstance(accuracy["num_total"], int)
    assert aggregated["average"] == {"average": sum(scores) / len(scores)}
    counts = {"1.0": scores.count(1.0), "0.0": scores.count(0.0)}
    assert aggregated["categorical_count"] == {"categorical_count": counts}


async def test_status_codes_and_messages_match_the_reference(client: httpx.AsyncClient) -> None:
    await register_dataset(client, "d", chat_rows(["A"]))
    bm = {"benchmark_id": "b", "dataset_id": "d", "scoring_functions": ["basic::subset_of"]}
    assert (await client.post("/v1alpha/eval/benchmarks", json=bm)).status_code == 200
    # Register checks nothing, and identical re-registration is fine.
    assert (await client.post("/v1alpha/eval/benchmarks", json=bm)).status_code == 200
    unchecked = {"benchmark_id": "u", "dataset_id": "no-such-ds", "scoring_functions": ["no::fn"]}
    assert (await client.post("/v1alpha/eval/benchmarks", json=unchecked)).status_code == 200
    candidate = {"type": "model", "model": "ghost", "sampling_params": {"max_tokens": 4}}
    config = {"benchmark_config": {"eval_candidate": candidate}}

    cases: list[tuple[httpx.Response, int, str]] = [
        (
            await client.post("/v1alpha/eval/benchmarks/nope/jobs", json=config),
            400,
            "Benchmark `nope` not served by provider: `local`. "
            "Make sure there is an Eval provider serving this benchmark.",
        ),
        (await client.get("/v1alpha/eval/benchmarks/nope"), 400, "Benchmark 'nope' not found"),
        (await client.get("/v1alpha/eval/benchmarks/b/jobs/999"), 400, "Job 999 not found"),
        (await client.get("/v1beta/datasets/nope"), 404, "Dataset 'nope' not found."),
        (await client.post("/v1alpha/eval/benchmarks/b/jobs", json=config), 404, "Model 'ghost' not found."),
        (
            await client.post(
                "/v1/scoring/score",
                json={
                    "input_rows": [{"expected_answer": "a", "generated_answer": "a"}],
                    "scoring_functions": {"no::fn": None},
                },
            ),
            400,
            "no::fn",
        ),
        (await client.post("/v1alpha/eval/benchmarks", json={}), 400, "benchmark_id: Field required"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, (response.request.url, response.text)
        assert message in response.json()["error"]["message"], response.text

    # A benchmark's old jobs answer "not served" once it is deleted (0.7).
    deleted = await client.request(
        "DELETE", "/v1alpha/eval/benchmarks/b", headers={"Content-Type": "application/json"}
    )
    assert (deleted.status_code, deleted.json()) == (200, None)
    gone = await client.get("/v1alpha/eval/benchmarks/b/jobs/999")
    assert gone.status_code == 400 and "not served by provider" in gone.json()["error"]["message"]
