"""End to end: secrets a user hands in never come back out, through either API family.

One real server (uvicorn, in this process, so its log records are captured) runs, against our fake
model server: a Llama Stack model, dataset, benchmark and eval job, and two NeMo jobs (one completes,
one fails because the model answers 401 quoting the key it was sent). Every job and resource carries
the values below under nested keys, in lists and in mixed case. The table then checks each value
against every surface: each API response body, each file of each download archive, and each log line.
"""

from __future__ import annotations

import io
import json
import logging
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.fakes.model_server import FakeModelServer
from tests.fakes.serving import BackgroundServer, free_port
from tests.fakes.squares import answer, square_rows, squares_config

from evalstack.config import Settings
from evalstack.server import create_app

pytestmark = pytest.mark.slow

SECRETS = {
    "hf_token": "hf-secret-value-51f0",
    "password": "pw-secret-value-8c2e",
    "api_key": "sk-secret-value-3d7a",
    "authorization": "Bearer az-secret-value-6b94",
    "token": "tok-secret-value-0e1c",
}
JOB_TIMEOUT = 30.0


def secret_tree() -> dict[str, Any]:
    """Every secret once, under nested keys, in lists, in mixed case."""
    return {
        "HF_Token": SECRETS["hf_token"],
        "nested": {
            "Password": SECRETS["password"],
            "entries": [{"API_KEY": SECRETS["api_key"]}, {"note": "kept"}],
        },
        "headers": [[{"Authorization": SECRETS["authorization"]}]],
        "Token": SECRETS["token"],
    }


@dataclass
class Surfaces:
    """Everything a client or an operator could read, by surface."""

    texts: dict[str, list[str]] = field(default_factory=dict)

    def add(self, surface: str, text: str) -> None:
        self.texts.setdefault(surface, []).append(text)

    def response(self, surface: str, response: httpx.Response) -> httpx.Response:
        self.add(surface, f"{response.request.method} {response.request.url.path} -> {response.text}")
        return response

    def archive(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        with zipfile.ZipFile(io.BytesIO(response.content)) as zipped:
            for name in zipped.namelist():
                self.add("archives", f"{response.request.url.path}:{name}: {zipped.read(name).decode()}")


class Collector(logging.Handler):
    """Keeps every log record, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def wait_nemo(http: httpx.Client, job_id: str, surfaces: Surfaces) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        job = surfaces.response("nemo", http.get(f"/v1/evaluation/jobs/{job_id}")).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return dict(job)
        assert time.monotonic() < deadline, f"job {job_id} stayed {job['status']}"
        time.sleep(0.05)


def llama_stack_flow(http: httpx.Client, model: FakeModelServer, surfaces: Surfaces) -> None:
    def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = surfaces.response("llama_stack", http.request(method, path, **kwargs))
        assert response.status_code < 300, response.text
        return response

    metadata = {"base_url": model.base_url, "api_key": SECRETS["api_key"], "extra": secret_tree()}
    call(
        "POST",
        "/v1/models",
        json={"model_id": "squares", "provider_model_id": model.model_id, "metadata": metadata},
    )
    rows = [{"input_query": r["question"], "expected_answer": r["answer"]} for r in square_rows(4)]
    dataset = {
        "dataset_id": "squares/data",
        "purpose": "eval/question-answer",
        "source": {"type": "rows", "rows": rows},
        "metadata": secret_tree(),
    }
    call("POST", "/v1/datasets", json=dataset)
    benchmark = {
        "benchmark_id": "squares/bench",
        "dataset_id": "squares/data",
        "scoring_functions": ["basic::equality"],
        "metadata": secret_tree(),
    }
    call("POST", "/v1/eval/benchmarks", json=benchmark)
    candidate = {"type": "model", "model": "squares", "sampling_params": {"max_tokens": 16}}
    job = call(
        "POST",
        "/v1/eval/benchmarks/squares/bench/jobs",
        json={"benchmark_config": {"eval_candidate": candidate}},
    ).json()
    deadline = time.monotonic() + JOB_TIMEOUT
    while (
        call("GET", f"/v1/eval/benchmarks/squares/bench/jobs/{job['job_id']}").json()["status"] != "completed"
    ):
        assert time.monotonic() < deadline, "the Llama Stack job did not complete"
        time.sleep(0.05)
    result = call("GET", f"/v1/eval/benchmarks/squares/bench/jobs/{job['job_id']}/result").json()
    assert [g["generated_answer"] for g in result["generations"]] == [answer(r["input_query"]) for r in rows]
    for path in ("/v1/models", "/v1/models/squares", "/v1/datasets", "/v1/datasets/squares/data"):
        call("GET", path)
    call("GET", "/v1/eval/benchmarks")
    call("GET", "/v1/eval/benchmarks/squares/bench")


def nemo_flow(http: httpx.Client, model: FakeModelServer, dataset: Path, surfaces: Surfaces) -> list[str]:
    def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = surfaces.response("nemo", http.request(method, path, **kwargs))
        assert response.status_code < 300, response.text
        return response

    config = squares_config(dataset, parallelism=2, limit_samples=4, max_retries=0)
    config["params"]["extra"] = secret_tree()
    endpoint = {"url": f"{model.base_url}/chat/completions", "model_id": model.model_id}
    target = {"type": "model", "model": {"api_endpoint": {**endpoint, "api_key": SECRETS["api_key"]}}}
    call("POST", "/v1/evaluation/configs", json={"name": "squares", "namespace": "secrets", **config})
    call("POST", "/v1/evaluation/targets", json={"name": "fake", "namespace": "secrets", **target})
    invalid = surfaces.response(
        "nemo",
        http.post(
            "/v1/evaluation/targets",
            json={"type": "model", "name": "bad", "model": {"api_endpoint": {"api_key": SECRETS["api_key"]}}},
        ),
    )
    assert invalid.status_code == 422, invalid.text

    job_ids: list[str] = []
    job = call("POST", "/v1/evaluation/jobs", json={"config": config, "target": target}).json()
    assert wait_nemo(http, job["id"], surfaces)["status"] == "completed"
    job_ids.append(job["id"])

    # The model refuses the key and quotes it back; the job fails, and still shows no secret.
    model.fail_next(1000, status=401, message=f"invalid api key {SECRETS['api_key']} for {SECRETS['token']}")
    failing = {
        **config,
        "params": {**config["params"], "extra": {**secret_tree(), "token": SECRETS["token"]}},
    }
    job = call("POST", "/v1/evaluation/jobs", json={"config": failing, "target": target}).json()
    failed = wait_nemo(http, job["id"], surfaces)
    assert failed["status"] == "failed", failed
    assert "invalid api key" in failed["status_details"]["message"]  # the upstream reason is kept...
    job_ids.append(job["id"])

    for path in (
        "/v1/evaluation/configs",
        "/v1/evaluation/configs/secrets/squares",
        "/v1/evaluation/targets",
        "/v1/evaluation/targets/secrets/fake",
        "/v1/evaluation/jobs",
    ):
        call("GET", path)
    for job_id in job_ids:
        call("GET", f"/v1/evaluation/jobs/{job_id}/status")
        surfaces.archive(http.get(f"/v1/evaluation/jobs/{job_id}/logs"))
    call("GET", f"/v1/evaluation/jobs/{job_ids[0]}/results")
    surfaces.archive(http.get(f"/v1/evaluation/jobs/{job_ids[0]}/download-results"))
    return job_ids


@pytest.fixture(scope="module")
def surfaces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Surfaces]:
    data_dir = tmp_path_factory.mktemp("secrets")
    dataset = data_dir / "squares.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in square_rows(8)))
    collector = Collector()
    root, engine_logger = logging.getLogger(), logging.getLogger("evalstack")
    level = engine_logger.level
    root.addHandler(collector)
    engine_logger.setLevel(logging.DEBUG)
    found = Surfaces()
    try:
        settings = Settings(data_dir=data_dir, embedded_model=False, data_roots=[data_dir])
        app = create_app(settings)
        with (
            FakeModelServer(answer=answer) as model,
            BackgroundServer(app, free_port(), name="evalstack", start_timeout=30, stop_timeout=30) as server,
            httpx.Client(base_url=server.url, timeout=30) as http,
        ):
            llama_stack_flow(http, model, found)
            job_ids = nemo_flow(http, model, dataset, found)
            for job_id in job_ids:
                found.response("evalstack jobs", http.get(f"/v1/evalstack/jobs/{job_id}"))
            found.response("evalstack jobs", http.get("/v1/evalstack/jobs"))
            # The secrets were really carried: the model got the key on every request it answered.
            sent = {headers.get("authorization") for headers in model.headers}
            assert sent == {f"Bearer {SECRETS['api_key']}"}
    finally:
        root.removeHandler(collector)
        engine_logger.setLevel(level)
    found.texts["logs"] = collector.lines
    yield found


SURFACES = ("llama_stack", "nemo", "evalstack jobs", "archives", "logs")


def test_every_surface_was_read(surfaces: Surfaces) -> None:
    for surface in SURFACES:
        assert surfaces.texts.get(surface), f"nothing was read from {surface}"
    assert any("failed" in line for line in surfaces.texts["logs"])  # the failing job was logged


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("name", sorted(SECRETS))
def test_secret_never_appears(surfaces: Surfaces, name: str, surface: str) -> None:
    value = SECRETS[name]
    needle = value.removeprefix("Bearer ")
    leaks = [text[:400] for text in surfaces.texts[surface] if needle in text]
    assert not leaks, f"{name} shown on {surface}: {leaks}"
