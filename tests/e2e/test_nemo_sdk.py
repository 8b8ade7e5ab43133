"""End to end: evalstack's NeMo Evaluator v1 API on a real uvicorn server, driven by the real
``nemo-microservices`` SDK (``NeMoMicroservices``), with our fake OpenAI-compatible model server as
the model under test.

The fake model answers "What is N squared?" correctly for even N and wrongly for odd N; expected
scores are computed here from that rule, never read back from the server.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nemo_microservices import ConflictError, NeMoMicroservices, NotFoundError, UnprocessableEntityError
from tests.fakes.model_server import FakeModelServer
from tests.fakes.serving import BackgroundServer, free_port
from tests.fakes.squares import answer, expected_accuracy, square_rows, squares_config

from evalstack.config import Settings
from evalstack.server import create_app

pytestmark = pytest.mark.slow

JOB_TIMEOUT = 30.0


def qa_config(dataset: Path, *, limit: int | None = None, parallelism: int = 4) -> Any:
    return squares_config(
        dataset, parallelism=parallelism, **({} if limit is None else {"limit_samples": limit})
    )


def model_target(model: FakeModelServer) -> Any:
    endpoint = {
        "url": f"{model.base_url}/chat/completions",
        "model_id": model.model_id,
        "api_key": "sk-very-secret",
        "format": "openai",
    }
    return {"type": "model", "model": {"api_endpoint": endpoint}}


# ---- the server under test ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nemo-e2e")


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[BackgroundServer]:
    """``create_app(settings)`` served by uvicorn on a free port in a background thread."""
    settings = Settings(data_dir=data_dir, embedded_model=False, data_roots=[data_dir])
    with BackgroundServer(
        create_app(settings), free_port(), name="evalstack server", start_timeout=30, stop_timeout=30
    ) as running:
        yield running


@pytest.fixture
def client(server: BackgroundServer) -> Iterator[NeMoMicroservices]:
    with NeMoMicroservices(base_url=server.url) as sdk:
        yield sdk


@pytest.fixture
def model() -> Iterator[FakeModelServer]:
    with FakeModelServer(answer=answer) as fake:
        yield fake


@pytest.fixture
def dataset(data_dir: Path, request: pytest.FixtureRequest) -> Path:
    path = data_dir / f"{request.node.name}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in square_rows(8)))
    return path


def wait_for(client: NeMoMicroservices, job_id: str, *statuses: str, timeout: float = JOB_TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.evaluation.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        assert job.status not in {"failed", "cancelled", "completed"} - set(statuses), job.status_details
        assert time.monotonic() < deadline, f"job {job_id} stayed {job.status}"
        time.sleep(0.05)


# ---- tests --------------------------------------------------------------------------------------


def test_job_from_stored_config_and_target_runs_to_results(
    client: NeMoMicroservices, model: FakeModelServer, dataset: Path
) -> None:
    model.latency = 0.15
    body = qa_config(dataset, limit=6, parallelism=1)
    config = client.evaluation.configs.create(name="squares", namespace="e2e", **body)
    assert config.id and config.id.startswith("eval-config-")
    assert config.name == "squares" and config.namespace == "e2e" and config.created_at is not None
    target = client.evaluation.targets.create(name="fake", namespace="e2e", **model_target(model))
    assert target.id and target.id.startswith("eval-target-")

    job = client.evaluation.jobs.create(config="e2e/squares", target="e2e/fake", description="squares")
    job_id = job.id
    assert job_id is not None and job_id.startswith("eval-")
    assert job.config.name == "squares" and job.config.tasks and "qa" in job.config.tasks
    assert job.target.type == "model"

    seen: list[tuple[str, float | None, int | None]] = []
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:
        status = client.evaluation.jobs.retrieve(job_id).status
        details = client.evaluation.jobs.status(job_id)
        seen.append((status or "", details.progress, details.samples_processed))
        if status == "completed":
            break
        assert status in ("created", "pending", "running"), details
        assert time.monotonic() < deadline
        time.sleep(0.05)
    progress = [p for s, p, _ in seen if s == "running" and p is not None]
    assert progress == sorted(progress), "progress went backwards"
    assert any(0 < p < 100 for p in progress), f"no intermediate progress seen: {seen}"
    assert seen[-1][1] == 100.0 and seen[-1][2] == 6
    assert details.task_status == {"qa": "completed"}

    rows = square_rows(8)[:6]
    result = client.evaluation.jobs.results(job_id)
    assert result.job == job_id
    assert result.tasks is not None
    metrics = result.tasks["qa"].metrics
    assert metrics is not None
    scores = metrics["accuracy"].scores
    assert scores is not None
    assert scores["string-check"].value == pytest.approx(expected_accuracy(rows))
    finished = client.evaluation.jobs.retrieve(job_id)
    assert finished.result == result.id

    archive = client.evaluation.jobs.download_results(job_id).read()
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        names = zipped.namelist()
        files = {name: zipped.read(name).decode() for name in names}
    flavours = [name for name in names if name.endswith("results.json")]
    assert len(flavours) == 2
    per_sample_file = next(name for name in flavours if name != "results.json")
    per_sample = json.loads(files[per_sample_file])["qa"]
    assert len(per_sample) == 6
    for entry in per_sample:
        assert entry["sample"]["output_text"] == answer(entry["item"]["question"])
        assert entry["sample"]["response"]["usage"]["total_tokens"] > 0
        expected = float(answer(entry["item"]["question"]) == entry["item"]["answer"])
        assert entry["metrics"]["accuracy"]["scores"]["string-check"]["value"] == expected
    assert json.loads(files["results.json"])["tasks"]["qa"]["metrics"]["accuracy"]["scores"]["string-check"][
        "value"
    ] == pytest.approx(expected_accuracy(rows))
    assert "sk-very-secret" not in files["target.json"]
    assert json.loads(files["target.json"])["model"]["api_endpoint"]["model_id"] == model.model_id
    assert "sk-very-secret" not in client.evaluation.jobs.retrieve(job_id).model_dump_json()

    logs = client.evaluation.jobs.with_raw_response.download_logs(job_id)
    assert logs.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(logs.read())) as zipped:
        log_text = "".join(zipped.read(n).decode() for n in zipped.namelist())
    assert job_id in log_text and "completed" in log_text


def test_cancel_a_job_whose_model_hangs(
    client: NeMoMicroservices, model: FakeModelServer, dataset: Path
) -> None:
    model.hang = True
    job_id = client.evaluation.jobs.create(config=qa_config(dataset), target=model_target(model)).id
    assert job_id is not None
    wait_for(client, job_id, "running")
    deadline = time.monotonic() + JOB_TIMEOUT
    while model.in_flight == 0:
        assert time.monotonic() < deadline, "the model never received a request"
        time.sleep(0.02)

    started = time.monotonic()
    client.evaluation.jobs.cancel(job_id)
    cancelled = wait_for(client, job_id, "cancelled", timeout=10)
    assert time.monotonic() - started < 10
    assert cancelled.status == "cancelled"
    with pytest.raises(ConflictError):
        client.evaluation.jobs.results(job_id)


def test_list_pages_and_filters(client: NeMoMicroservices) -> None:
    config: Any = {"type": "custom", "tasks": {"t": {"type": "data"}}}
    for i in range(5):
        client.evaluation.configs.create(name=f"page-{i}", namespace="paging", **config)
    client.evaluation.configs.create(name="elsewhere", namespace="other-ns", **config)

    first = client.evaluation.configs.list(page_size=2, filter={"namespace": "paging"})
    assert [c.name for c in first.data] == ["page-4", "page-3"]
    assert first.pagination is not None and first.pagination.total_results == 5
    assert first.pagination.total_pages == 3
    every = [c.name for c in client.evaluation.configs.list(page_size=2, filter={"namespace": "paging"})]
    assert every == [f"page-{i}" for i in range(4, -1, -1)]
    oldest = client.evaluation.configs.list(page_size=2, sort="created_at", filter={"namespace": "paging"})
    assert [c.name for c in oldest.data] == ["page-0", "page-1"]
    found = client.evaluation.configs.list(search={"name": "elsew"})
    assert [c.name for c in found.data] == ["elsewhere"]

    completed = list(client.evaluation.jobs.list(filter={"status": "completed"}, page_size=50))
    assert all(job.status == "completed" for job in completed)


def test_errors_map_to_sdk_exceptions(client: NeMoMicroservices) -> None:
    config: Any = {"type": "custom", "tasks": {"t": {"type": "data"}}}
    client.evaluation.configs.create(name="twice", namespace="errors", **config)
    started = time.monotonic()
    with pytest.raises(ConflictError):
        client.evaluation.configs.create(name="twice", namespace="errors", **config)
    assert time.monotonic() - started < 2, "the SDK retried a duplicate"
    with pytest.raises(NotFoundError):
        client.evaluation.configs.retrieve("missing", namespace="errors")
    with pytest.raises(NotFoundError):
        client.evaluation.jobs.create(config="errors/missing", target={"type": "rows", "rows": [{"a": 1}]})
    with pytest.raises(NotFoundError):
        client.evaluation.jobs.status("eval-doesnotexist")
    with pytest.raises(UnprocessableEntityError) as invalid:
        client.evaluation.configs.create(type="no-such-type", name="bad", namespace="errors")
    assert "custom" in json.dumps(invalid.value.body)


def test_update_and_delete_config(client: NeMoMicroservices) -> None:
    config: Any = {"type": "custom", "tasks": {"t": {"type": "data"}}}
    client.evaluation.configs.create(name="editable", namespace="crud", **config)
    updated = client.evaluation.configs.update("editable", path_namespace="crud", description="second")
    assert updated.description == "second"
    assert client.evaluation.configs.retrieve("editable", namespace="crud").description == "second"
    deleted = client.evaluation.configs.delete("editable", namespace="crud")
    assert deleted.message and "crud/editable" in deleted.message
    with pytest.raises(NotFoundError):
        client.evaluation.configs.retrieve("editable", namespace="crud")


def test_live_scores_rows(client: NeMoMicroservices) -> None:
    rows: Any = [{"some_output": "yes", "expected": "yes"}, {"some_output": "no", "expected": "yes"}]
    config: Any = {
        "type": "custom",
        "tasks": {
            "qa": {
                "type": "data",
                "metrics": {
                    "accuracy": {
                        "type": "string-check",
                        "params": {"check": ["{{some_output}}", "contains", "{{expected}}"]},
                    }
                },
            }
        },
    }
    live = client.evaluation.live(config=config, target={"type": "rows", "rows": rows})
    assert live.status == "completed"
    assert live.result is not None and live.result.tasks is not None
    metrics = live.result.tasks["qa"].metrics
    assert metrics is not None
    scores = metrics["accuracy"].scores
    assert scores is not None
    assert scores["string-check"].value == pytest.approx(0.5)
