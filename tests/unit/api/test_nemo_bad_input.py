"""Bad input to the NeMo Evaluator v1 routes: each is a 4xx naming the field and what is accepted.

Driven in-process (httpx ASGITransport) over the real services, as in test_nemo_routes.py. Also checks
that ``download-results`` is a ZIP the ``remote::nvidia`` provider's parser reads back, and that a
template naming a missing column fails only its sample.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from evalstack.api.nemo.routes import include_nemo_api
from evalstack.config import Settings
from evalstack.providers.nvidia import parse_per_sample_results
from evalstack.services import Services, build_services
from tests.fakes.model_server import FakeModelServer

ROWS = [
    {"question": "a", "output": "x", "expected": "x"},
    {"question": "b", "output": "y", "expected": "z"},
    {"question": "c", "output": "w", "expected": "w"},
]
EXACT = {"type": "string-check", "params": {"check": ["{{output}}", "equals", "{{expected}}"]}}
ROWS_TARGET = {"type": "rows", "rows": ROWS}
ENDPOINT_TARGET = {
    "type": "model",
    "model": {"api_endpoint": {"url": "http://127.0.0.1:9/v1", "model_id": "m"}},
}
CONFIGS, TARGETS, JOBS = "/v1/evaluation/configs", "/v1/evaluation/targets", "/v1/evaluation/jobs"


def config(task: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A custom config of one ``data`` task ``qa``, with ``task`` merged into the task."""
    body: dict[str, Any] = {
        "type": "custom",
        "tasks": {"qa": {"type": "data", "metrics": {"exact": EXACT}, **(task or {})}},
    }
    body.update(extra)
    return body


def metric(spec: dict[str, Any]) -> dict[str, Any]:
    return config({"metrics": {"m": spec}})


def job(cfg: dict[str, Any], target: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"config": cfg, "target": ROWS_TARGET if target is None else target}


def completion(dataset_url: str, prompt: str) -> dict[str, Any]:
    check = {"type": "string-check", "params": {"check": ["{{output_text}}", "equals", "{{expected}}"]}}
    return config(
        {
            "type": "completion",
            "metrics": {"exact": check},
            "params": {"template": {"prompt": prompt}},
            "dataset": {"files_url": dataset_url},
        }
    )


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    built = build_services(Settings(data_dir=tmp_path, embedded_model=False, data_roots=[tmp_path]))
    await built.start()
    yield built
    await built.stop()


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    include_nemo_api(app, services)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
def dataset(tmp_path: Path) -> str:
    path = tmp_path / "questions.jsonl"
    path.write_text(
        "".join(f'{{"question": "{r["question"]}", "expected": "{r["expected"]}"}}\n' for r in ROWS)
    )
    return path.as_uri()


# (id, method, path, request kwargs, status, location, words the message must hold)
CASES: list[tuple[str, str, str, dict[str, Any], int, list[str | int] | None, list[str]]] = [
    (
        "not-json",
        "post",
        CONFIGS,
        {"content": b"{nope", "headers": {"content-type": "application/json"}},
        422,
        ["body"],
        ["not valid JSON", "type", "tasks"],
    ),
    (
        "text-body",
        "post",
        JOBS,
        {"content": b"hello", "headers": {"content-type": "text/plain"}},
        422,
        ["body"],
        ["JSON object", "config", "target"],
    ),
    ("array-body", "post", CONFIGS, {"json": [1, 2]}, 422, ["body"], ["JSON object", "got a list", "tasks"]),
    ("no-body", "post", JOBS, {}, 422, ["body"], ["missing", "config", "target"]),
    (
        "config-no-type",
        "post",
        CONFIGS,
        {"json": {"tasks": {}}},
        422,
        ["body", "type"],
        ["required", "custom", "mmlu"],
    ),
    (
        "target-no-type",
        "post",
        TARGETS,
        {"json": {"rows": ROWS}},
        422,
        ["body", "type"],
        ["required", "rows", "cached_outputs"],
    ),
    (
        "parallelism-x",
        "post",
        CONFIGS,
        {"json": config(params={"parallelism": "x"})},
        422,
        ["body", "params", "parallelism"],
        ["integer"],
    ),
    (
        "limit-samples-negative",
        "post",
        CONFIGS,
        {"json": config(params={"limit_samples": -1})},
        422,
        ["body", "params", "limit_samples"],
        ["greater than or equal to 0"],
    ),
    (
        "temperature-hot",
        "post",
        CONFIGS,
        {"json": config({"params": {"temperature": "hot"}})},
        422,
        ["body", "tasks", "qa", "params", "temperature"],
        ["number"],
    ),
    (
        "stop-number",
        "post",
        CONFIGS,
        {"json": config(params={"stop": 5})},
        422,
        ["body", "params", "stop"],
        ["a string or a list of strings"],
    ),
    (
        "unknown-param",
        "post",
        CONFIGS,
        {"json": config(params={"bogus": 1})},
        422,
        ["body", "params", "bogus"],
        ["accepted keys", "parallelism", "limit_samples"],
    ),
    (
        "unknown-top-key",
        "post",
        CONFIGS,
        {"json": config(bogus=1)},
        422,
        ["body", "bogus"],
        ["accepted keys", "tasks", "groups"],
    ),
    (
        "params-list",
        "post",
        CONFIGS,
        {"json": config(params=[1])},
        422,
        ["body", "params"],
        ["an object", "got a list"],
    ),
    (
        "tasks-list",
        "post",
        CONFIGS,
        {"json": {"type": "custom", "tasks": [{"type": "data"}]}},
        422,
        ["body", "tasks"],
        ["list", "map task names"],
    ),
    (
        "config-type-unknown",
        "post",
        CONFIGS,
        {"json": {"type": "bogus"}},
        422,
        ["body", "type"],
        ["'bogus'", "custom"],
    ),
    (
        "max-outage-not-seconds",
        "post",
        JOBS,
        {"json": job(config(params={"extra": {"max_outage": "soon"}}))},
        422,
        None,
        ["params.extra.max_outage", "number of seconds greater than 0", "'soon'"],
    ),
    (
        "task-type-unknown",
        "post",
        CONFIGS,
        {"json": config({"type": "bogus"})},
        422,
        None,
        ["'bogus'", "completion", "chat-completion", "data"],
    ),
    (
        "metric-type-unknown",
        "post",
        CONFIGS,
        {"json": metric({"type": "bogus"})},
        422,
        ["body", "tasks", "qa", "metrics", "m"],
        ["'bogus'", "string-check", "bleu"],
    ),
    (
        "metric-type-unknown-in-job",
        "post",
        JOBS,
        {"json": job(metric({"type": "bogus"}))},
        422,
        ["body", "config", "tasks", "qa", "metrics", "m"],
        ["'bogus'", "string-check"],
    ),
    (
        "string-check-two-elements",
        "post",
        JOBS,
        {"json": job(metric({"type": "string-check", "params": {"check": ["{{output}}", "equals"]}}))},
        422,
        ["body", "config", "tasks", "qa", "metrics", "m"],
        ["params.check", "left_template, operator, right_template"],
    ),
    (
        "string-check-unknown-operator",
        "post",
        CONFIGS,
        {"json": metric({"type": "string-check", "params": {"check": ["{{output}}", "frobs", "x"]}})},
        422,
        ["body", "tasks", "qa", "metrics", "m"],
        ["'frobs'", "equals", "contains"],
    ),
    (
        "metric-bad-jinja",
        "post",
        CONFIGS,
        {"json": metric({"type": "string-check", "params": {"check": ["{{output", "equals", "x"]}})},
        422,
        ["body", "tasks", "qa", "metrics", "m"],
        ["not valid Jinja"],
    ),
    (
        "template-bad-jinja",
        "post",
        CONFIGS,
        {"json": config({"type": "completion", "params": {"template": {"prompt": "{{ question "}}})},
        422,
        ["body", "tasks", "qa", "params", "template"],
        ["task 'qa'", "not valid Jinja"],
    ),
    (
        "target-unknown-model",
        "post",
        JOBS,
        {
            "json": job(
                completion("questions.jsonl", "{{question}}"), {"type": "model", "model": "nope/nothing"}
            )
        },
        404,
        None,
        ["target.model", "'nope/nothing'", "api_endpoint"],
    ),
    (
        "endpoint-without-url",
        "post",
        TARGETS,
        {"json": {"type": "model", "model": {"api_endpoint": {"model_id": "m"}}}},
        422,
        ["body", "model"],
        ["api_endpoint.url", "http(s)"],
    ),
    (
        "endpoint-without-url-in-job",
        "post",
        JOBS,
        {"json": job(config(), {"type": "model", "model": {"api_endpoint": {"model_id": "m"}}})},
        422,
        ["body", "target", "model"],
        ["api_endpoint.url"],
    ),
    (
        "target-rows-missing",
        "post",
        TARGETS,
        {"json": {"type": "rows"}},
        422,
        None,
        ["needs the field 'rows'"],
    ),
    (
        "files-url-outside-roots",
        "post",
        JOBS,
        {"json": job(config({"dataset": {"files_url": "/etc/hosts"}}))},
        422,
        None,
        ["Task 'qa'", "outside the allowed data roots"],
    ),
    (
        "file-uri-outside-roots",
        "post",
        JOBS,
        {"json": job(config({"dataset": {"files_url": "file:///etc/passwd"}}))},
        422,
        None,
        ["outside the allowed data roots"],
    ),
    (
        "cached-outputs-outside-roots",
        "post",
        JOBS,
        {"json": job(config(), {"type": "cached_outputs", "cached_outputs": {"files_url": "/etc/hosts"}})},
        422,
        None,
        ["target.cached_outputs.files_url", "outside"],
    ),
    (
        "files-url-bad-scheme",
        "post",
        JOBS,
        {"json": job(config({"dataset": {"files_url": "ftp://h/x.json"}}))},
        422,
        None,
        ["'ftp'", "hf://datasets", "file://"],
    ),
    (
        "files-url-missing-file",
        "post",
        JOBS,
        {"json": job(config({"dataset": {"files_url": "absent.jsonl"}}))},
        404,
        None,
        ["Task 'qa'", "not found"],
    ),
    (
        "dataset-number",
        "post",
        JOBS,
        {"json": job(config({"dataset": 5}))},
        422,
        ["body", "config", "tasks", "qa", "dataset"],
        ["registered dataset name", "files_url"],
    ),
    (
        "dataset-without-files-url",
        "post",
        JOBS,
        {"json": job(config({"dataset": {}}))},
        422,
        ["body", "config", "tasks", "qa", "dataset", "files_url"],
        ["required"],
    ),
    (
        "job-config-number",
        "post",
        JOBS,
        {"json": {"config": 5, "target": ROWS_TARGET}},
        422,
        ["body", "config"],
        ["'namespace/name' reference", "object"],
    ),
    (
        "job-config-reference-unknown",
        "post",
        JOBS,
        {"json": {"config": "default/none", "target": ROWS_TARGET}},
        404,
        None,
        ["'default/none'", "POST /v1/evaluation/configs"],
    ),
    (
        "group-unknown-task",
        "post",
        JOBS,
        {"json": job(config(groups={"g": {"tasks": ["zz"]}}))},
        422,
        None,
        ["'zz'", "tasks are: qa"],
    ),
    (
        "name-with-slash",
        "post",
        CONFIGS,
        {"json": config(name="a/b")},
        422,
        ["body", "name"],
        ["without '/'"],
    ),
    (
        "page-size-huge",
        "get",
        "/v1/evaluation/configs?page_size=100000000",
        {},
        422,
        ["query", "page_size"],
        ["between 1 and 1000"],
    ),
    ("page-zero", "get", "/v1/evaluation/jobs?page=0", {}, 422, ["query", "page"], ["at least 1"]),
    ("page-not-a-number", "get", "/v1/evaluation/targets?page=x", {}, 422, ["query", "page"], ["integer"]),
    (
        "sort-bogus",
        "get",
        "/v1/evaluation/configs?sort=bogus",
        {},
        422,
        ["query", "sort"],
        ["created_at, -created_at"],
    ),
    (
        "filter-unknown",
        "get",
        "/v1/evaluation/jobs?filter[unknown]=x",
        {},
        422,
        ["query", "filter[unknown]"],
        ["accepted:", "status"],
    ),
    (
        "filter-date-not-a-date",
        "get",
        "/v1/evaluation/jobs?filter[created_at][gte]=yesterday",
        {},
        422,
        None,
        ["ISO 8601"],
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "loc", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_bad_input_is_a_clear_4xx(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    loc: list[str | int] | None,
    words: list[str],
) -> None:
    response = await client.request(method.upper(), path, **kwargs)
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    detail = response.json()["detail"]
    if status == 422:
        message = " ".join(item["msg"] for item in detail)
        if loc is not None:
            assert detail[0]["loc"] == loc, detail
    else:
        message = detail
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert (await client.get("/v1/evaluation/jobs")).json()["pagination"]["total_results"] == 0


async def test_rejected_config_is_not_stored(client: httpx.AsyncClient) -> None:
    response = await client.post(CONFIGS, json={**metric({"type": "bogus"}), "name": "bad"})
    assert response.status_code == 422
    assert (await client.get(f"{CONFIGS}/default/bad")).status_code == 404


async def test_template_with_missing_column_fails_only_its_sample(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"question": "q1", "expected": "x"}\n{"expected": "y"}\n')
    with FakeModelServer() as model:
        target = {
            "type": "model",
            "model": {"api_endpoint": {"url": model.base_url, "model_id": model.model_id}},
        }
        created = await client.post(JOBS, json=job(completion(path.as_uri(), "{{ item.question }}"), target))
        assert created.status_code == 200, created.text
        job_id = created.json()["id"]
        for _ in range(500):
            done = (await client.get(f"{JOBS}/{job_id}")).json()
            if done["status"] in ("completed", "failed"):
                break
            await asyncio.sleep(0.02)
    assert done["status"] == "completed", done["status_details"]
    result = (await client.get(f"{JOBS}/{job_id}/results")).json()
    assert result["tasks"]["qa"]["data"] == {"samples": 2, "samples_failed": 1}
    generations, _ = parse_per_sample_results((await client.get(f"{JOBS}/{job_id}/download-results")).content)
    failed = [g for g in generations if g.get("error")]
    assert len(failed) == 1 and "question" in failed[0]["error"]


async def test_download_results_round_trips_through_the_nvidia_parser(client: httpx.AsyncClient) -> None:
    body = job(config({"metrics": {"exact": EXACT}}))
    body["config"]["tasks"]["other"] = {"type": "data", "metrics": {"exact": EXACT}}
    job_id = (await client.post(JOBS, json=body)).json()["id"]
    for _ in range(500):
        if (await client.get(f"{JOBS}/{job_id}")).json()["status"] == "completed":
            break
        await asyncio.sleep(0.02)
    response = await client.get(f"{JOBS}/{job_id}/download-results")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert archive.testzip() is None
        names = set(archive.namelist())
    assert {"results.json", "results/qa/results.json", "results/other/results.json"} <= names

    generations, score_rows = parse_per_sample_results(response.content)
    assert len(generations) == len(score_rows) == 2 * len(ROWS)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for generation, row in zip(generations, score_rows, strict=True):
        assert generation["task"] == row["task"]
        by_task.setdefault(row["task"], []).append(row)
    assert set(by_task) == {"qa", "other"}
    for rows in by_task.values():
        exact = [r["metrics"]["exact"]["string-check"] for r in rows]
        assert sorted(exact) == sorted(float(r["output"] == r["expected"]) for r in ROWS)
    aggregate = (await client.get(f"{JOBS}/{job_id}/results")).json()
    mean = aggregate["tasks"]["qa"]["metrics"]["exact"]["scores"]["string-check"]["value"]
    assert mean == pytest.approx(
        sum(by_task["qa"][i]["metrics"]["exact"]["string-check"] for i in range(len(ROWS))) / len(ROWS)
    )
