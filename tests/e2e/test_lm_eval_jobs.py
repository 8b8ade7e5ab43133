"""lm-eval tasks as jobs: ``evalstack run lm-eval:TASK``, and a server killed with -9 mid-job.

The fake model server answers GSM8K prompts (token ids decoded with a tokenizer built here) by a rule
that makes some answers right in the strict format, some right only loosely and some wrong; the data
is the real GSM8K through include-path override YAMLs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.test_cli_run import Workspace
from tests.e2e.test_durability import Server, read_samples, sample_view
from tests.fakes.lm_eval_fixtures import build_tokenizer, gsm8k_answerer, write_tasks
from tests.fakes.model_server import FakeModelServer, prompt_of

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DATA / "gsm8k" / "test.jsonl").exists(), reason=f"benchmark data not found at {DATA}"
    ),
]

SCORES = {"exact_match__strict-match", "exact_match__flexible-extract"}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("lm_eval_jobs")
    lines = (DATA / "gsm8k/test.jsonl").read_text().split("\n")[:300]
    tokenizer = build_tokenizer(root / "tokenizer", [json.loads(line)["question"] for line in lines if line])
    return {"tokenizer": str(tokenizer), "include_path": str(write_tasks(root / "tasks", DATA))}


@pytest.fixture
def fake(local: dict[str, str]) -> Iterator[FakeModelServer]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(local["tokenizer"])
    with FakeModelServer(answer=gsm8k_answerer(DATA), model_id="fake", apply_stop=True) as server:
        server.decode = tokenizer.decode
        yield server


def extra(local: dict[str, str]) -> dict[str, Any]:
    return {**local, "include_defaults": False, "endpoint_type": "completions"}


def test_cli_runs_an_lm_eval_task_by_name_and_names_scores_like_native_benchmarks(
    tmp_path: Path, fake: FakeModelServer, local: dict[str, str]
) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    ws = Workspace(root=tmp_path, cwd=cwd, db_path=tmp_path / "x.db")
    options = [arg for key, value in extra(local).items() for arg in ("-x", f"{key}={value}")]
    out = tmp_path / "out.json"
    run = ws.run("lm-eval:gsm8k", "-m", f"{fake.base_url}#fake", "--limit", "8", *options, "-o", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())["result"]
    assert set(result["tasks"]["gsm8k"]["metrics"]) == SCORES
    assert result["tasks"]["gsm8k"]["data"]["samples"] == 8
    assert len(fake.requests) == 8
    assert "exact_match__strict-match" in run.stdout

    bad = ws.run("lm-eval:no_such_task_xyz", "-m", f"{fake.base_url}#fake", *options)
    assert bad.returncode != 0
    assert "unknown lm-eval task or group 'no_such_task_xyz'" in bad.stdout + bad.stderr


def test_kill_9_mid_lm_eval_job_resumes_with_the_records_and_results_of_a_clean_run(
    tmp_path: Path, fake: FakeModelServer, local: dict[str, str]
) -> None:
    db = tmp_path / "evalstack.db"
    server = Server(tmp_path, db).start()
    config = {
        "type": "lm-eval",
        "tasks": {"gsm8k": {"type": "gsm8k"}},
        "params": {"limit_samples": 40, "parallelism": 4, "extra": extra(local)},
    }
    endpoint = {"url": f"{fake.base_url}/completions", "model_id": "fake", "format": "openai"}
    body = {"config": config, "target": {"type": "model", "model": {"api_endpoint": endpoint}}}
    try:
        server.http.timeout = 120.0
        fake.latency = 0.1
        job_id = server.create_job(body)
        server.wait_recorded(job_id, 8, timeout=60.0)
        server.stop(kill=True)
        before = {(s.task, s.index): sample_view(s) for s in read_samples(db, job_id)}
        assert 8 <= len(before) < 40, len(before)
        fake.reset_stats()
        fake.latency = 0.0
        server.start()
        assert server.wait_done(job_id, timeout=120.0)["status"] == "completed"
        asked = [prompt_of(b) for b in fake.requests]
        assert len(asked) == 40 - len(before), "a document recorded before the kill was asked again"
        after = read_samples(db, job_id)
        assert {(s.task, s.index): sample_view(s) for s in after if (s.task, s.index) in before} == before

        clean_id = server.create_job(body)
        assert server.wait_done(clean_id, timeout=120.0)["status"] == "completed"
        clean = read_samples(db, clean_id)
        assert [sample_view(s) for s in after] == [sample_view(s) for s in clean]
        assert [s.extra["lm_eval"] for s in after] == [s.extra["lm_eval"] for s in clean]
        resumed, fresh = server.results(job_id), server.results(clean_id)
        assert resumed["tasks"] == fresh["tasks"] and resumed["groups"] == fresh["groups"]
        assert set(resumed["tasks"]["gsm8k"]["metrics"]) == SCORES
    finally:
        server.stop()


def test_benchmarks_are_listed_with_their_path_and_output_type_by_cli_and_api(tmp_path: Path) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    ws = Workspace(root=tmp_path, cwd=cwd, db_path=tmp_path / "x.db")
    listed = ws.run("--search", "gpqa_diamond_cot_zero", db=False, command="benchmarks")
    assert listed.returncode == 0, listed.stderr
    assert "gpqa_diamond_cot_zeroshot" in listed.stdout and "generate_until" in listed.stdout

    server = Server(tmp_path, tmp_path / "evalstack.db").start()
    try:
        server.http.timeout = 120.0
        data = server.http.get(f"{server.url}/v1/evalstack/benchmarks", params={"search": "arc_easy"}).json()[
            "data"
        ]
    finally:
        server.stop()
    by_name = {entry["name"]: entry for entry in data}
    assert by_name["arc_easy"] == {
        "name": "arc_easy",
        "path": "native",
        "kind": "benchmark",
        "output_type": "multiple_choice",
        "description": by_name["arc_easy"]["description"],
    }
    assert any(e["path"] == "lm-eval" and e["output_type"] == "multiple_choice" for e in data), data
