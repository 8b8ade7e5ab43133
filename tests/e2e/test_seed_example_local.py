"""End to end: the custom-evaluation example of the original change's README on the local provider.

    llama-stack-client 0.2.12 -> evalstack serve (providers: local only; hf_endpoint -> fake Hub)
                              -> the fake model server

The benchmark registration body is the README's JSON, verbatim. Its dataset,
``hf://datasets/default/sample-basic-test/testing/testing.jsonl``, is served by our fake Hugging
Face Hub; the candidate is a model registered through ``client.models.register`` on our fake model
server. Expected BLEU scores are computed here with sacrebleu from the fake's answers.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sacrebleu
import yaml
from llama_stack_client import LlamaStackClient
from tests.e2e.test_cli_run import evalstack_command
from tests.fakes.hf_hub import FakeHub
from tests.fakes.model_server import FakeModelServer
from tests.fakes.seed_example import BENCHMARK_ID, HUB_PATH, HUB_REPO, SEED_REGISTER_BODY
from tests.fakes.serving import ServeProcess

pytestmark = pytest.mark.slow


ROWS = [
    {"prompt": "What is the capital of France?", "ideal_response": "The capital of France is Paris."},
    {"prompt": "What colour is a clear sky?", "ideal_response": "A clear sky is blue during the day."},
    {"prompt": "How many legs does a spider have?", "ideal_response": "A spider has eight legs."},
    {"prompt": "Which planet is the largest?", "ideal_response": "Jupiter is the largest planet of all."},
    {"prompt": "What do bees make?", "ideal_response": "Bees make honey from the nectar of flowers."},
]
ANSWERS = {
    ROWS[0]["prompt"]: "The capital of France is Paris.",  # exact
    ROWS[1]["prompt"]: "The sky is blue during the day.",  # close
    ROWS[2]["prompt"]: "Spiders have eight legs.",  # partial
    ROWS[3]["prompt"]: "Jupiter is the largest planet of all.",  # exact
    ROWS[4]["prompt"]: "zzz qqq xxx",  # nothing in common
}


def answer(prompt: str) -> str:
    return ANSWERS.get(prompt.strip(), "unknown prompt")


def local_only_server(tmp: Path, hub_url: str) -> ServeProcess:
    """``evalstack serve`` with only the local provider and the fake Hub as hf_endpoint."""
    config = {
        "embedded_model": False,
        "hf_endpoint": hub_url,
        "providers": [{"provider_id": "local", "provider_type": "inline::local"}],
    }
    return ServeProcess(tmp, yaml.safe_dump(config), db_url=f"sqlite:///{tmp / 'x.db'}", offline=False)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake_hub:
        fake_hub.add_file(HUB_REPO, HUB_PATH, "".join(json.dumps(row) + "\n" for row in ROWS))
        yield fake_hub


@pytest.fixture
def model() -> Iterator[FakeModelServer]:
    with FakeModelServer(answer=answer, model_id="seed-candidate-v1") as server:
        yield server


@pytest.fixture
def server(tmp_path: Path, hub: FakeHub) -> Iterator[ServeProcess]:
    proc = local_only_server(tmp_path, hub.url).start()
    try:
        yield proc
    finally:
        proc.stop()


def test_seed_custom_evaluation_runs_on_the_local_provider(
    server: ServeProcess, hub: FakeHub, model: FakeModelServer
) -> None:
    client = LlamaStackClient(base_url=server.url, max_retries=0, timeout=30.0)
    client.models.register(
        model_id="seed-candidate",
        provider_model_id=model.model_id,
        metadata={"base_url": model.base_url},
    )
    client.benchmarks.register(**SEED_REGISTER_BODY)  # no provider_id: the only provider is used
    registered = client.benchmarks.retrieve(BENCHMARK_ID)
    assert registered.provider_id == "local"
    assert registered.metadata == SEED_REGISTER_BODY["metadata"]

    job = client.eval.run_eval(
        BENCHMARK_ID,
        benchmark_config={
            "eval_candidate": {
                "type": "model",
                "model": "seed-candidate",
                "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 100},
            },
            "scoring_params": {},
        },
    )
    assert job.status in ("scheduled", "in_progress")
    deadline = time.monotonic() + 30
    status: str = job.status
    while status in ("scheduled", "in_progress"):
        assert time.monotonic() < deadline, f"job {job.job_id} still {status}"
        time.sleep(0.1)
        status = client.eval.jobs.status(job.job_id, benchmark_id=BENCHMARK_ID).status
    assert status == "completed", server.log.read_text()

    # The dataset came from the fake Hub, and every row was one completion request for its prompt.
    assert hub.downloads >= 1
    assert set(model.paths) == {"/v1/completions"}
    assert sorted(body["prompt"] for body in model.requests) == sorted(row["prompt"] for row in ROWS)
    assert {body["model"] for body in model.requests} == {model.model_id}

    result = client.eval.jobs.retrieve(job.job_id, benchmark_id=BENCHMARK_ID)
    hypotheses = [answer(row["prompt"]) for row in ROWS]
    references = [row["ideal_response"] for row in ROWS]
    assert [g["generated_answer"] for g in result.generations] == hypotheses

    sentence = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hypotheses, references, strict=True)]
    corpus = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert 0 < corpus < 100 and len(set(sentence)) > 2  # not a degenerate case

    scored = result.scores[BENCHMARK_ID]
    aggregated: dict[str, Any] = dict(scored.aggregated_results)
    bleu = aggregated["tasks"]["qa"]["metrics"]["bleu"]["scores"]
    assert bleu["sentence"]["value"] == pytest.approx(sum(sentence) / len(sentence), abs=1e-6)
    assert bleu["corpus"]["value"] == pytest.approx(corpus, abs=1e-6)
    assert bleu["sentence"]["stats"]["count"] == len(ROWS)

    score_rows: list[dict[str, Any]] = [dict(row) for row in scored.score_rows]
    assert len(score_rows) == len(ROWS)
    assert [row["metrics"]["bleu"]["sentence"] for row in score_rows] == pytest.approx(sentence, abs=1e-6)


def test_the_readme_examples_work_with_plain_http(server: ServeProcess, model: FakeModelServer) -> None:
    """Register, trigger, status, cancel (POST .../cancel) and results (GET .../results), as the README
    of the original change writes them, with plain HTTP requests."""
    http = httpx.Client(base_url=f"{server.url}/v1", timeout=30.0)
    candidate = "meta-llama/Llama3.1-8B-Instruct"  # the README's model name
    registered = http.post(
        "/models",
        json={
            "model_id": candidate,
            "provider_model_id": model.model_id,
            "metadata": {"base_url": model.base_url},
        },
    )
    assert registered.status_code == 200, registered.text
    assert http.post("/eval/benchmarks", json=SEED_REGISTER_BODY).status_code == 200
    trigger = {  # the README's body, verbatim
        "benchmark_id": BENCHMARK_ID,
        "benchmark_config": {
            "eval_candidate": {
                "type": "model",
                "model": candidate,
                "sampling_params": {"max_tokens": 100, "temperature": 0.7},
            },
            "scoring_params": {},
        },
    }
    jobs = f"/eval/benchmarks/{BENCHMARK_ID}/jobs"

    def wait(job_id: str) -> str:
        deadline = time.monotonic() + 30
        while True:
            status = http.get(f"{jobs}/{job_id}")
            assert status.status_code == 200, status.text
            assert set(status.json()) == {"job_id", "status"}
            if status.json()["status"] not in ("scheduled", "in_progress"):
                return str(status.json()["status"])
            assert time.monotonic() < deadline, f"job {job_id} still running"
            time.sleep(0.1)

    # Cancel: POST .../jobs/{job_id}/cancel (the API's own verb is DELETE .../jobs/{job_id}).
    model.hang = True
    try:
        started = http.post(jobs, json=trigger)
        assert started.status_code == 200, started.text
        hanging = started.json()["job_id"]
        cancelled = http.post(f"{jobs}/{hanging}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert wait(hanging) == "cancelled"
    finally:
        model.hang = False
    results = http.get(f"/eval/benchmarks/{BENCHMARK_ID}/results")  # the latest job was cancelled
    assert results.status_code == 400 and "not completed" in results.text, results.text

    done = http.post(jobs, json=trigger).json()["job_id"]
    assert wait(done) == "completed", server.log.read_text()
    latest = http.get(f"/eval/benchmarks/{BENCHMARK_ID}/results")
    assert latest.status_code == 200, latest.text
    body = latest.json()
    assert set(body) == {"generations", "scores"}
    assert set(body["scores"]) == {BENCHMARK_ID}
    scored = body["scores"][BENCHMARK_ID]
    assert set(scored) == {"score_rows", "aggregated_results"}
    assert set(scored["aggregated_results"]) == {"tasks", "groups"}
    assert body == http.get(f"{jobs}/{done}/result").json()  # the same as the job's own result
    assert [g["generated_answer"] for g in body["generations"]] == [answer(row["prompt"]) for row in ROWS]
    assert http.get("/eval/benchmarks/no-such-benchmark/results").status_code == 400


def test_jobs_rescore_scores_the_stored_outputs_with_new_metrics(
    server: ServeProcess, model: FakeModelServer
) -> None:
    """`evalstack jobs rescore ID --metrics JSON` against the server: a new job, no model request."""
    http = httpx.Client(base_url=f"{server.url}/v1", timeout=30.0)
    http.post(
        "/models",
        json={
            "model_id": "cand",
            "provider_model_id": model.model_id,
            "metadata": {"base_url": model.base_url},
        },
    )
    assert http.post("/eval/benchmarks", json=SEED_REGISTER_BODY).status_code == 200
    config = {"eval_candidate": {"type": "model", "model": "cand", "sampling_params": {"max_tokens": 100}}}
    first = http.post(f"/eval/benchmarks/{BENCHMARK_ID}/jobs", json={"benchmark_config": config}).json()[
        "job_id"
    ]
    deadline = time.monotonic() + 30
    while http.get(f"/evalstack/jobs/{first}").json()["status"] != "completed":
        assert time.monotonic() < deadline, server.log.read_text()
        time.sleep(0.1)
    model.reset_stats()

    exact = {
        "type": "string-check",
        "params": {"check": ["{{sample.output_text}}", "equals", "{{item.ideal_response}}"]},
    }
    rescore = [*evalstack_command(), "jobs", "rescore", first, "--url", server.url, "--metrics"]
    done = subprocess.run(
        [*rescore, json.dumps({"exact": exact})], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    second = done.stdout.split()[1]
    assert f"re-scores {first}" in done.stdout
    while (job := http.get(f"/evalstack/jobs/{second}").json())["status"] != "completed":
        assert job["status"] in ("created", "pending", "running"), job
        assert time.monotonic() < deadline + 30, server.log.read_text()
        time.sleep(0.1)
    assert model.requests == []
    value = job["result"]["tasks"]["qa"]["metrics"]["exact"]["scores"]["string-check"]["value"]
    assert value == pytest.approx(sum(answer(r["prompt"]) == r["ideal_response"] for r in ROWS) / len(ROWS))
    unknown = json.dumps({"exact": {"type": "no-such-metric"}})
    refused = subprocess.run([*rescore, unknown], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "400" in refused.stderr and "no-such-metric" in refused.stderr and "string-check" in refused.stderr
    assert "Traceback" not in refused.stderr
