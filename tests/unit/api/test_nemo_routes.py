"""The NeMo Evaluator v1 routes in-process (httpx ASGITransport): shapes, lifecycle, listing, errors.

The services are the real ones (``server.build_services``: SQLite store, registry, engine, worker)
in a temporary folder. Jobs run ``data`` tasks scored with ``string-check`` (no model needed); jobs
that must stay running call our fake model server while it hangs. The same API is driven end to end
with the ``nemo-microservices`` SDK in tests/e2e/test_nemo_sdk.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from evalstack.api.nemo import routes
from evalstack.api.nemo.routes import include_nemo_api
from evalstack.config import Settings
from evalstack.errors import UpstreamError, UpstreamTimeoutError
from evalstack.services import Services, build_services
from evalstack.store.records import JobRecord, new_job_id
from tests.fakes.model_server import FakeModelServer
from tests.fakes.serving import free_port

ROWS = [
    {"question": "a", "output": "x", "expected": "x"},
    {"question": "b", "output": "y", "expected": "z"},
    {"question": "c", "output": "w", "expected": "w"},
    {"question": "d", "output": "v", "expected": "v"},
]
EXACT = {"type": "string-check", "params": {"check": ["{{output}}", "equals", "{{expected}}"]}}


def expected_accuracy(rows: list[dict[str, Any]]) -> float:
    scored = [r for r in rows if "expected" in r]
    return sum(r["output"] == r["expected"] for r in scored) / len(scored)


def config_body(name: str | None = "cfg", task: str = "qa", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "custom", "tasks": {task: {"type": "data", "metrics": {"exact": EXACT}}}}
    if name is not None:
        body["name"] = name
    body.update(extra)
    return body


def rows_target(name: str | None = "tgt", rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "rows", "rows": ROWS if rows is None else rows}
    if name is not None:
        body["name"] = name
    return body


@pytest.fixture
def hanging_model() -> Iterator[FakeModelServer]:
    """A model server that never answers (until the test ends)."""
    with FakeModelServer() as server:
        server.hang = True
        yield server


@pytest.fixture
def stuck_job(tmp_path: Path, hanging_model: FakeModelServer) -> dict[str, Any]:
    """A job body whose only task asks the hanging model: the job stays running until cancelled."""
    dataset = tmp_path / "questions.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    config = {
        "type": "custom",
        "tasks": {
            "forever": {
                "type": "completion",
                "params": {"template": {"prompt": "{{question}}"}},
                "dataset": {"files_url": dataset.as_uri()},
                "metrics": {"exact": EXACT},
            }
        },
    }
    endpoint = {"url": f"{hanging_model.base_url}/completions", "model_id": hanging_model.model_id}
    return {"config": config, "target": {"type": "model", "model": {"api_endpoint": endpoint}}}


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    settings = Settings(data_dir=tmp_path, embedded_model=False, data_roots=[tmp_path])
    built = build_services(settings)
    await built.start()
    yield built
    await built.stop()


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    include_nemo_api(app, services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def wait_status(
    client: httpx.AsyncClient, job_id: str, *statuses: str, timeout: float = 30.0
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = (await client.get(f"/v1/evaluation/jobs/{job_id}")).json()
        if job["status"] in statuses:
            return job
        assert job["status"] not in {"completed", "failed", "cancelled"}, job["status_details"]
        assert asyncio.get_running_loop().time() < deadline, f"job stayed {job['status']}"
        await asyncio.sleep(0.02)


def zip_files(content: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


# ---- configs and targets ------------------------------------------------------------------------


async def test_config_create_assigns_id_namespace_and_timestamps(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/evaluation/configs", json=config_body(name=None))).json()
    assert created["id"].startswith("eval-config-")
    assert created["name"] == created["id"]
    assert created["namespace"] == "default"
    assert created["created_at"] == created["updated_at"]
    assert created["tasks"]["qa"]["type"] == "data"

    fetched = await client.get(f"/v1/evaluation/configs/default/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == created


async def test_duplicate_config_is_409_without_retry(client: httpx.AsyncClient) -> None:
    assert (
        await client.post("/v1/evaluation/configs", json=config_body(namespace="team"))
    ).status_code == 200
    again = await client.post("/v1/evaluation/configs", json=config_body(namespace="team"))
    assert again.status_code == 409
    assert "team/cfg" in again.json()["detail"]
    assert again.headers["x-should-retry"] == "false"
    # Another namespace is another identity.
    assert (await client.post("/v1/evaluation/configs", json=config_body())).status_code == 200


async def test_unknown_config_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/evaluation/configs/default/nope")
    assert response.status_code == 404
    assert "default/nope" in response.json()["detail"]
    assert (await client.delete("/v1/evaluation/targets/default/nope")).status_code == 404


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({"name": "x", "tasks": {}}, ["body", "type"], "required"),
        ({"type": "custom", "tasks": {}, "taks": {}}, ["body", "taks"], "accepted keys"),
        ({"type": "bfclv3", "tasks": {}}, ["body", "type"], "custom"),
        ({"type": "custom", "tasks": {"t": {"type": "nope"}}}, ["body"], "chat-completion, data"),
        ({"type": "custom", "tasks": {}, "name": "a/b"}, ["body", "name"], "pattern"),
        (
            {"type": "custom", "tasks": {"t": {"type": "data", "params": {"tempreature": 1}}}},
            ["body", "tasks", "t", "params", "tempreature"],
            "Extra inputs",
        ),
        ({"type": "custom", "params": {"parallelism": 0}}, ["body", "params", "parallelism"], "greater"),
        ({"type": "custom", "tasks": [{"type": "data"}]}, ["body", "tasks"], "early-access"),
    ],
)
async def test_invalid_config_is_422_with_field_and_reason(
    client: httpx.AsyncClient, body: dict[str, Any], loc: list[str], words: str
) -> None:
    response = await client.post("/v1/evaluation/configs", json=body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert any(item["loc"][: len(loc)] == loc and words in item["msg"] for item in detail), detail


async def test_patch_updates_fields_and_renames(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/evaluation/configs", json=config_body())).json()
    await asyncio.sleep(0.01)
    patched = await client.patch("/v1/evaluation/configs/default/cfg", json={"description": "v2"})
    assert patched.status_code == 200
    assert patched.json()["description"] == "v2"
    assert patched.json()["updated_at"] > created["updated_at"]
    assert patched.json()["id"] == created["id"]

    bad = await client.patch("/v1/evaluation/configs/default/cfg", json={"tasks": {"t": {"type": "x"}}})
    assert bad.status_code == 422

    renamed = await client.patch("/v1/evaluation/configs/default/cfg", json={"name": "cfg2"})
    assert renamed.json()["name"] == "cfg2"
    assert (await client.get("/v1/evaluation/configs/default/cfg")).status_code == 404
    assert (await client.get("/v1/evaluation/configs/default/cfg2")).json()["description"] == "v2"

    await client.post("/v1/evaluation/configs", json=config_body(name="other"))
    clash = await client.patch("/v1/evaluation/configs/default/cfg2", json={"name": "other"})
    assert clash.status_code == 409


async def test_a_target_read_and_sent_back_keeps_its_api_key(
    client: httpx.AsyncClient, services: Services
) -> None:
    endpoint = {"url": "http://h/v1/chat/completions", "model_id": "meta/llama", "api_key": "sk-kept-secret"}
    await client.post(
        "/v1/evaluation/targets", json={"type": "model", "name": "m", "model": {"api_endpoint": endpoint}}
    )
    shown = (await client.get("/v1/evaluation/targets/default/m")).json()
    assert shown["model"]["api_endpoint"]["api_key"] == "*****"
    patched = await client.patch("/v1/evaluation/targets/default/m", json={"model": shown["model"]})
    assert patched.status_code == 200 and "sk-kept-secret" not in patched.text
    stored = await services.registry.get_nemo("target", "default/m")
    assert stored["model"]["api_endpoint"]["api_key"] == "sk-kept-secret"
    renewed = {**endpoint, "api_key": "sk-new-secret"}
    await client.patch("/v1/evaluation/targets/default/m", json={"model": {"api_endpoint": renewed}})
    stored = await services.registry.get_nemo("target", "default/m")
    assert stored["model"]["api_endpoint"]["api_key"] == "sk-new-secret"


async def test_delete_returns_delete_response(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/evaluation/targets", json=rows_target())).json()
    deleted = await client.delete("/v1/evaluation/targets/default/tgt")
    assert deleted.status_code == 200
    body = deleted.json()
    assert body["id"] == created["id"]
    assert body["deleted_at"] and "default/tgt" in body["message"]
    assert (await client.get("/v1/evaluation/targets/default/tgt")).status_code == 404


# ---- listing ------------------------------------------------------------------------------------


async def test_list_pages_sorts_and_envelope(client: httpx.AsyncClient) -> None:
    for i in range(7):
        await client.post("/v1/evaluation/configs", json=config_body(name=f"c{i}"))
    first = (await client.get("/v1/evaluation/configs", params={"page_size": 3})).json()
    assert first["object"] == "list"
    assert first["sort"] == "-created_at"
    assert first["pagination"] == {
        "page": 1,
        "page_size": 3,
        "current_page_size": 3,
        "total_pages": 3,
        "total_results": 7,
    }
    assert [c["name"] for c in first["data"]] == ["c6", "c5", "c4"]
    last = (await client.get("/v1/evaluation/configs", params={"page_size": 3, "page": 3})).json()
    assert [c["name"] for c in last["data"]] == ["c0"]
    past = (await client.get("/v1/evaluation/configs", params={"page_size": 3, "page": 4})).json()
    assert past["data"] == [] and past["pagination"]["current_page_size"] == 0
    oldest = (
        await client.get("/v1/evaluation/configs", params={"sort": "created_at", "page_size": 2})
    ).json()
    assert [c["name"] for c in oldest["data"]] == ["c0", "c1"]
    assert (await client.get("/v1/evaluation/configs")).json()["pagination"]["page_size"] == 10


async def test_list_filters_and_search(client: httpx.AsyncClient) -> None:
    await client.post("/v1/evaluation/configs", json=config_body(name="alpha", namespace="ns1", project="p"))
    await client.post("/v1/evaluation/configs", json=config_body(name="beta", namespace="ns2"))
    await client.post(
        "/v1/evaluation/configs", json=config_body(name="alphabet", custom_fields={"team": "red"})
    )

    async def names(**params: str) -> list[str]:
        response = await client.get("/v1/evaluation/configs", params=params)
        assert response.status_code == 200, response.text
        return sorted(c["name"] for c in response.json()["data"])

    assert await names(**{"filter[namespace]": "ns1"}) == ["alpha"]
    assert await names(**{"filter[namespace]": "ns1,ns2"}) == ["alpha", "beta"]
    assert await names(**{"filter[name]": "alpha"}) == ["alpha"]
    assert await names(**{"filter[project]": "p"}) == ["alpha"]
    assert await names(**{"filter[custom_fields][team]": "red"}) == ["alphabet"]
    assert await names(**{"search[name]": "ALPHA"}) == ["alpha", "alphabet"]
    assert await names(**{"search[name]": "bet"}) == ["alphabet", "beta"]
    assert await names(**{"search[name]": "bet", "filter[namespace]": "default"}) == ["alphabet"]
    assert await names(**{"filter[created_at][gte]": "2000-01-01"}) == ["alpha", "alphabet", "beta"]
    assert await names(**{"filter[created_at][lt]": "2000-01-01T00:00:00Z"}) == []
    listed = (await client.get("/v1/evaluation/configs", params={"filter[namespace]": "ns1"})).json()
    assert listed["filter"] == {"namespace": "ns1"}


async def test_target_model_filter_matches_endpoint_model_id(client: httpx.AsyncClient) -> None:
    endpoint = {
        "api_endpoint": {"url": "http://h/v1/chat/completions", "model_id": "meta/llama", "api_key": "k"}
    }
    await client.post("/v1/evaluation/targets", json={"type": "model", "name": "m1", "model": endpoint})
    await client.post(
        "/v1/evaluation/targets", json={"type": "model", "name": "m2", "model": "default/other"}
    )
    await client.post("/v1/evaluation/targets", json=rows_target("r1"))

    async def names(**params: str) -> list[str]:
        return sorted(
            t["name"] for t in (await client.get("/v1/evaluation/targets", params=params)).json()["data"]
        )

    assert await names(**{"filter[model]": "meta/llama"}) == ["m1"]
    assert await names(**{"filter[model]": "default/other"}) == ["m2"]
    assert await names(**{"filter[type]": "rows"}) == ["r1"]
    assert await names(**{"search[model]": "llama"}) == ["m1"]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"page": "0"}, "page must be"),
        ({"page_size": "abc"}, "integer"),
        ({"sort": "name"}, "created_at"),
        ({"filter[colour]": "red"}, "accepted: "),
        ({"search[created_at][after]": "2024-01-01"}, "start, end"),
        ({"filter[created_at][gte]": "yesterday"}, "ISO 8601"),
    ],
)
async def test_bad_list_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, str], words: str
) -> None:
    response = await client.get("/v1/evaluation/configs", params=params)
    assert response.status_code == 422
    assert words in response.json()["detail"][0]["msg"]


# ---- jobs ---------------------------------------------------------------------------------------


async def test_job_by_reference_runs_and_exposes_results(client: httpx.AsyncClient) -> None:
    await client.post("/v1/evaluation/configs", json=config_body(params={"limit_samples": 4}))
    await client.post("/v1/evaluation/targets", json=rows_target())
    created = await client.post(
        "/v1/evaluation/jobs", json={"config": "default/cfg", "target": "default/tgt", "project": "proj"}
    )
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["id"].startswith("eval-")
    assert job["status"] in ("created", "pending", "running")
    assert job["config"]["name"] == "cfg" and job["config"]["tasks"]["qa"]["type"] == "data"
    assert job["target"]["rows"] == ROWS
    assert job["namespace"] == "default" and job["project"] == "proj"

    done = await wait_status(client, job["id"], "completed")
    assert done["result"] == "evaluation_result-" + job["id"].removeprefix("eval-")
    assert done["output_files_url"].endswith(f"/v1/evaluation/jobs/{job['id']}/download-results")

    status = (await client.get(f"/v1/evaluation/jobs/{job['id']}/status")).json()
    assert status["samples_processed"] == 4
    assert status["progress"] == 100.0
    assert status["task_status"] == {"qa": "completed"}
    assert status["message"]

    result = (await client.get(f"/v1/evaluation/jobs/{job['id']}/results")).json()
    assert result["job"] == job["id"]
    assert result["id"] == done["result"]
    score = result["tasks"]["qa"]["metrics"]["exact"]["scores"]["string-check"]
    assert score["value"] == pytest.approx(expected_accuracy(ROWS))
    assert score["stats"]["count"] == len(ROWS)
    assert result["namespace"] == "default" and result["created_at"]

    same = (await client.get(f"/v1/evaluation/results/{done['result']}")).json()
    assert same["tasks"] == result["tasks"]
    listed = (await client.get("/v1/evaluation/results", params={"filter[job_id]": job["id"]})).json()
    assert [r["id"] for r in listed["data"]] == [done["result"]]


async def test_progress_is_null_without_limit_samples(client: httpx.AsyncClient) -> None:
    job = (
        await client.post(
            "/v1/evaluation/jobs", json={"config": config_body(name=None), "target": rows_target(None)}
        )
    ).json()
    await wait_status(client, job["id"], "completed")
    status = (await client.get(f"/v1/evaluation/jobs/{job['id']}/status")).json()
    assert status["progress"] is None
    assert status["samples_processed"] == len(ROWS)


async def test_job_create_errors(client: httpx.AsyncClient) -> None:
    await client.post("/v1/evaluation/targets", json=rows_target())
    missing = await client.post(
        "/v1/evaluation/jobs", json={"config": "default/nope", "target": "default/tgt"}
    )
    assert missing.status_code == 404
    assert "default/nope" in missing.json()["detail"]

    inline_bad = await client.post(
        "/v1/evaluation/jobs",
        json={"config": {"type": "custom", "tasks": {"t": {}}}, "target": "default/tgt"},
    )
    assert inline_bad.status_code == 422
    assert inline_bad.json()["detail"][0]["loc"][:4] == ["body", "config", "tasks", "t"]

    no_target = await client.post("/v1/evaluation/jobs", json={"config": config_body()})
    assert no_target.status_code == 422
    assert no_target.json()["detail"][0]["loc"] == ["body", "target"]

    unknown = await client.post(
        "/v1/evaluation/jobs", json={"config": config_body(), "target": "default/tgt", "priority": 1}
    )
    assert unknown.status_code == 422
    assert "accepted keys" in unknown.json()["detail"][0]["msg"]

    unknown_model = await client.post(
        "/v1/evaluation/jobs",
        json={"config": config_body(), "target": {"type": "model", "model": "missing/model"}},
    )
    assert unknown_model.status_code == 404
    assert "missing/model" in unknown_model.json()["detail"]

    unknown_metric = config_body()
    unknown_metric["tasks"]["qa"]["metrics"]["exact"] = {"type": "no-such-metric"}
    engine_refuses = await client.post(
        "/v1/evaluation/jobs", json={"config": unknown_metric, "target": rows_target()}
    )
    assert engine_refuses.status_code == 422
    assert "no-such-metric" in json.dumps(engine_refuses.json())
    assert (await client.get("/v1/evaluation/jobs")).json()["data"] == []


async def test_results_before_completion_are_409(
    client: httpx.AsyncClient, stuck_job: dict[str, Any]
) -> None:
    job = (await client.post("/v1/evaluation/jobs", json=stuck_job)).json()
    await wait_status(client, job["id"], "running")
    for path in ("results", "download-results"):
        response = await client.get(f"/v1/evaluation/jobs/{job['id']}/{path}")
        assert response.status_code == 409
        assert "running" in response.json()["detail"]
    await client.post(f"/v1/evaluation/jobs/{job['id']}/cancel")


async def test_cancel_goes_through_cancelling_to_cancelled(
    client: httpx.AsyncClient, stuck_job: dict[str, Any]
) -> None:
    job = (await client.post("/v1/evaluation/jobs", json=stuck_job)).json()
    await wait_status(client, job["id"], "running")
    cancelled = await client.post(f"/v1/evaluation/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] in ("cancelling", "cancelled")
    await wait_status(client, job["id"], "cancelled")
    again = await client.post(f"/v1/evaluation/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert "already cancelled" in again.json()["detail"]


async def test_status_while_running_reports_progress(client: httpx.AsyncClient, services: Services) -> None:
    spec = {
        "config": {
            "type": "custom",
            "params": {"limit_samples": 10, "extra": {"hf_token": "hf-secret"}},
            "tasks": {"a": {"type": "data"}},
        },
        "target": {
            "type": "model",
            "model": {"api_endpoint": {"url": "http://h/v1", "api_key": "sk-secret"}},
        },
        "meta": {"namespace": "default"},
    }
    record = JobRecord(
        id=new_job_id(),
        front="nemo",
        spec=spec,
        status="running",
        progress={"samples_processed": 4, "samples_total": 8, "task_status": {"a": "running"}},
    )
    await services.store.create_job(record)
    job = (await client.get(f"/v1/evaluation/jobs/{record.id}")).json()
    assert job["status_details"] == {
        "message": "Running: 4 of 8 samples processed",
        "progress": 50.0,
        "samples_processed": 4,
        "task_status": {"a": "running"},
    }
    assert job["target"]["model"]["api_endpoint"]["api_key"] == "*****"
    assert "sk-secret" not in json.dumps(job) and "hf-secret" not in json.dumps(job)
    assert "result" not in job


async def test_download_results_zip_holds_aggregate_and_per_sample_outputs(client: httpx.AsyncClient) -> None:
    target = {"type": "rows", "rows": [*ROWS, {"question": "e", "output": "q"}], "name": "t"}
    job = (await client.post("/v1/evaluation/jobs", json={"config": config_body(), "target": target})).json()
    await wait_status(client, job["id"], "completed")
    response = await client.get(f"/v1/evaluation/jobs/{job['id']}/download-results")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    files = zip_files(response.content)
    result_files = sorted(name for name in files if name.endswith("results.json"))
    assert result_files == ["results.json", "results/qa/results.json"]

    aggregate = json.loads(files["results.json"])
    assert aggregate["job"] == job["id"] and "qa" in aggregate["tasks"]
    per_sample = json.loads(files["results/qa/results.json"])["qa"]
    assert [entry["item"]["question"] for entry in per_sample] == ["a", "b", "c", "d", "e"]
    assert [entry["sample"]["output_text"] for entry in per_sample] == ["x", "y", "w", "v", "q"]
    assert per_sample[1]["metrics"] == {"exact": {"scores": {"string-check": {"value": 0.0}}}}
    assert per_sample[0]["metrics"] == {"exact": {"scores": {"string-check": {"value": 1.0}}}}
    assert "expected" in per_sample[4]["error"] and per_sample[4]["metrics"] == {}
    assert json.loads(files["config.json"])["tasks"]["qa"]["type"] == "data"
    assert json.loads(files["target.json"])["rows"][0]["question"] == "a"
    assert "task qa sample 4" in files["logs/evaluation.log"]

    logs = await client.get(f"/v1/evaluation/jobs/{job['id']}/logs")
    assert logs.headers["content-type"] == "application/zip"
    log_text = zip_files(logs.content)["logs/evaluation.log"]
    assert f"job {job['id']} created" in log_text
    assert "status completed: 5 samples processed, 1 failed" in log_text


async def test_list_jobs_filters_by_status_and_config(
    client: httpx.AsyncClient, stuck_job: dict[str, Any]
) -> None:
    await client.post("/v1/evaluation/configs", json=config_body())
    first = (await client.post("/v1/evaluation/jobs", json={"config": "cfg", "target": rows_target()})).json()
    second = (await client.post("/v1/evaluation/jobs", json=stuck_job)).json()
    await wait_status(client, first["id"], "completed")
    await wait_status(client, second["id"], "running")

    async def ids(**params: str) -> list[str]:
        response = await client.get("/v1/evaluation/jobs", params=params)
        assert response.status_code == 200, response.text
        return [j["id"] for j in response.json()["data"]]

    assert await ids() == [second["id"], first["id"]]
    assert await ids(**{"filter[status]": "completed"}) == [first["id"]]
    assert await ids(**{"filter[config]": "default/cfg"}) == [first["id"]]
    assert await ids(**{"filter[config][name]": "cfg"}) == [first["id"]]
    assert await ids(**{"search[config]": "forever"}) == [second["id"]]
    assert await ids(page_size="1", page="2") == [first["id"]]
    await client.post(f"/v1/evaluation/jobs/{second['id']}/cancel")


async def test_delete_job_removes_it_and_its_result(client: httpx.AsyncClient) -> None:
    job = (
        await client.post("/v1/evaluation/jobs", json={"config": config_body(), "target": rows_target()})
    ).json()
    done = await wait_status(client, job["id"], "completed")
    derived = await client.delete(f"/v1/evaluation/results/{done['result']}")
    assert derived.status_code == 409
    deleted = await client.delete(f"/v1/evaluation/jobs/{job['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await client.get(f"/v1/evaluation/jobs/{job['id']}")).status_code == 404
    assert (await client.get(f"/v1/evaluation/results/{done['result']}")).status_code == 404


async def test_delete_running_job_cancels_it_first(
    client: httpx.AsyncClient, services: Services, stuck_job: dict[str, Any]
) -> None:
    job = (await client.post("/v1/evaluation/jobs", json=stuck_job)).json()
    await wait_status(client, job["id"], "running")
    assert (await client.delete(f"/v1/evaluation/jobs/{job['id']}")).status_code == 204
    assert await services.store.get_job(job["id"]) is None


async def test_jobs_of_the_other_front_door_are_invisible(
    client: httpx.AsyncClient, services: Services
) -> None:
    other = JobRecord(id=new_job_id(), front="llama_stack", spec={}, status="completed")
    await services.store.create_job(other)
    assert (await client.get(f"/v1/evaluation/jobs/{other.id}")).status_code == 404
    assert (await client.get("/v1/evaluation/jobs")).json()["data"] == []


# ---- live ---------------------------------------------------------------------------------------


async def test_live_scores_rows_synchronously_without_storing(
    client: httpx.AsyncClient, services: Services
) -> None:
    response = await client.post(
        "/v1/evaluation/live", json={"config": config_body(), "target": rows_target()}
    )
    assert response.status_code == 200, response.text
    live = response.json()
    assert live["status"] == "completed"
    assert live["status_details"]["samples_processed"] == len(ROWS)
    assert live["status_details"]["task_status"] == {"qa": "completed"}
    score = live["result"]["tasks"]["qa"]["metrics"]["exact"]["scores"]["string-check"]
    assert score["value"] == pytest.approx(expected_accuracy(ROWS))
    assert await services.store.list_jobs() == []


@pytest.mark.parametrize(
    ("config", "target", "loc"),
    [
        (config_body(), {"type": "model", "model": "m/x"}, ["body", "target", "type"]),
        (
            {"type": "custom", "tasks": {"gen": {"type": "completion"}}},
            rows_target(),
            ["body", "config", "tasks", "gen", "type"],
        ),
        (config_body(), rows_target(rows=[ROWS[0]] * (routes.LIVE_MAX_ROWS + 1)), ["body", "target", "rows"]),
    ],
)
async def test_live_rejects_what_it_cannot_run(
    client: httpx.AsyncClient, config: dict[str, Any], target: dict[str, Any], loc: list[str]
) -> None:
    response = await client.post("/v1/evaluation/live", json={"config": config, "target": target})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc


# ---- error scoping ------------------------------------------------------------------------------


async def test_error_format_is_scoped_to_the_nemo_routes(services: Services) -> None:
    app = FastAPI()

    async def other_format(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": {"message": "other family"}}, status_code=400)

    app.add_exception_handler(RequestValidationError, other_format)

    @app.post("/v1/other")
    async def other(body: dict[str, int]) -> dict[str, Any]:
        return body

    include_nemo_api(app, services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        theirs = await http.post("/v1/other", json={"a": "b"})
        assert theirs.status_code == 400 and theirs.json() == {"error": {"message": "other family"}}
        ours = await http.post("/v1/evaluation/configs", json={"name": "x"})
        assert ours.status_code == 422 and ours.json()["detail"][0]["loc"] == ["body", "type"]


# ---- stored results -----------------------------------------------------------------------------


async def test_result_entities_are_created_read_updated_listed_and_deleted(client: httpx.AsyncClient) -> None:
    tasks = {"qa": {"metrics": {"exact": {"scores": {"string-check": {"value": 0.75}}}}}}
    created = await client.post(
        "/v1/evaluation/results",
        json={"job": "eval-elsewhere", "description": "imported", "tasks": tasks, "id": "mine"},
    )
    assert created.status_code == 200, created.text
    result = created.json()
    assert result["id"].startswith("evaluation_result-") and result["id"] != "mine"  # the server names it
    assert result["namespace"] == "default" and result["created_at"] == result["updated_at"]
    assert result["job"] == "eval-elsewhere" and result["tasks"] == tasks
    url = f"/v1/evaluation/results/{result['id']}"
    assert (await client.get(url)).json() == result
    assert [r["id"] for r in (await client.get("/v1/evaluation/results")).json()["data"]] == [result["id"]]

    await asyncio.sleep(0.01)
    patched = await client.patch(url, json={"description": "checked", "custom_fields": {"by": "me"}})
    assert patched.status_code == 200
    changed = patched.json()
    assert changed["description"] == "checked" and changed["custom_fields"] == {"by": "me"}
    assert changed["tasks"] == tasks and changed["job"] == "eval-elsewhere"  # the rest is kept
    assert changed["updated_at"] > result["updated_at"] and changed["created_at"] == result["created_at"]
    assert (await client.get(url)).json() == changed

    deleted = await client.delete(url)
    assert deleted.status_code == 200 and deleted.json()["id"] == result["id"]
    assert (await client.get(url)).status_code == 404
    assert (await client.patch(url, json={"description": "x"})).status_code == 404
    assert (await client.delete(url)).status_code == 404
    assert (await client.get("/v1/evaluation/results")).json()["data"] == []


async def test_a_jobs_own_result_cannot_be_changed_or_deleted(client: httpx.AsyncClient) -> None:
    body = {"config": config_body(name=None), "target": rows_target(name=None)}
    job = (await client.post("/v1/evaluation/jobs", json=body)).json()
    await wait_status(client, job["id"], "completed")
    result_id = job["id"].replace("eval-", "evaluation_result-", 1)
    before = (await client.get(f"/v1/evaluation/results/{result_id}")).json()
    assert before["job"] == job["id"]
    patched = await client.patch(f"/v1/evaluation/results/{result_id}", json={"description": "x"})
    assert patched.status_code == 409 and "computed from its job's samples" in patched.json()["detail"]
    deleted = await client.delete(f"/v1/evaluation/results/{result_id}")
    assert deleted.status_code == 409 and "delete the job" in deleted.json()["detail"]
    assert (await client.get(f"/v1/evaluation/results/{result_id}")).json() == before


async def test_target_update_replaces_the_fields_given(client: httpx.AsyncClient) -> None:
    created = (await client.post("/v1/evaluation/targets", json=rows_target())).json()
    await asyncio.sleep(0.01)
    new_rows = [{"question": "q", "output": "o", "expected": "o"}]
    patched = await client.patch(
        "/v1/evaluation/targets/default/tgt", json={"rows": new_rows, "description": "smaller"}
    )
    assert patched.status_code == 200, patched.text
    target = patched.json()
    assert target["rows"] == new_rows and target["description"] == "smaller"
    assert target["id"] == created["id"] and target["type"] == "rows"
    assert target["updated_at"] > created["updated_at"]
    assert (await client.get("/v1/evaluation/targets/default/tgt")).json() == target
    # A job on the target now reads the new rows.
    job = (
        await client.post(
            "/v1/evaluation/jobs", json={"config": config_body(name=None), "target": "default/tgt"}
        )
    ).json()
    done = await wait_status(client, job["id"], "completed")
    assert done["status_details"]["samples_processed"] == 1
    missing = await client.patch("/v1/evaluation/targets/default/nope", json={"description": "x"})
    assert missing.status_code == 404


# ---- upstream failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UpstreamError("the registry's database did not answer"), 502),
        (UpstreamTimeoutError("the registry's database timed out after 30 s"), 504),
    ],
)
async def test_an_upstream_failure_is_a_retryable_502_or_504_with_its_reason(
    client: httpx.AsyncClient,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    error: UpstreamError,
    status: int,
) -> None:
    async def fail(*_args: Any, **_kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(services.registry, "get_nemo", fail)
    response = await client.get("/v1/evaluation/configs/default/cfg")
    assert response.status_code == status
    assert response.json() == {"detail": error.message}
    assert response.headers.get("x-should-retry") != "false"  # clients may retry a gateway error


async def test_a_dataset_server_nobody_answers_fails_the_live_run_naming_the_url(
    client: httpx.AsyncClient,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/rows.jsonl"  # nothing listens there
    config = {
        "type": "custom",
        "tasks": {"qa": {"type": "data", "dataset": {"files_url": url}, "metrics": {"exact": EXACT}}},
    }
    response = await client.post("/v1/evaluation/live", json={"config": config, "target": rows_target()})
    assert response.status_code == 200, response.text  # a live run reports its failure in its status
    live = response.json()
    assert live["status"] == "failed" and live["result"] is None
    assert f"Could not download dataset '{url}'" in live["status_details"]["message"]
