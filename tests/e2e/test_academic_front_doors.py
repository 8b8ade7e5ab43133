"""End to end: a small MMLU run through each front door, on ``../shared/data`` and our fake model server.

The same academic config (``{"type": "mmlu", "params": {"limit_samples": LIMIT}}``) runs

- (a) as a NeMo Evaluator job (``POST /v1/evaluation/jobs``, a ``model`` target),
- (b) as a Llama Stack benchmark whose ``metadata`` is the config, through ``run_eval`` on the local
  provider (driven by the real ``llama-stack-client``),
- (c) through ``evalstack run config.json --model <url> --limit LIMIT --output out.json``.

The fake model answers from the question it is asked: the right letter for even positions in the
subject, a wrong letter phrased ``The answer is (X).`` for positions 1 mod 4 and an unparsable
sentence for positions 3 mod 4, so every expected score and count is computed here from the data
file, never read back from the server.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from llama_stack_client import LlamaStackClient
from tests.fakes.model_server import FakeModelServer
from tests.fakes.serving import BackgroundServer, free_port

from evalstack.config import Settings
from evalstack.server import create_app

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = (REPO_ROOT / ".." / "shared" / "data").resolve()
MMLU_FILE = DATA_DIR / "mmlu" / "test.jsonl"
LIMIT = 20
SUBJECTS = 57
JOB_TIMEOUT = 180.0
CATEGORY_SIZES = {"stem": 19, "humanities": 13, "social_sciences": 12, "other": 13}  # as lm-eval groups them
STRICT = "exact_match__strict-match"
FLEXIBLE = "exact_match__flexible-extract"


# ---- the data and the fake model's rule ---------------------------------------------------------


def first_rows_per_subject() -> dict[str, list[dict[str, Any]]]:
    """The first LIMIT questions of each subject, in file order (what limit_samples selects)."""
    if not MMLU_FILE.is_file():
        pytest.skip("MMLU data mmlu/test.jsonl not found under ../shared/data (relative to the repo root)")
    first: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    with MMLU_FILE.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                if len(first[row["subject"]]) < LIMIT:
                    first[row["subject"]].append(row)
    return dict(first)


def question_key(subject: str, question: str, choice_a: str) -> str:
    return f"{subject}|{question.strip()}\nA. {choice_a.strip()}\n"


class Oracle:
    """Decides the fake model's reply to each question; the expected scores follow from it.

    A question asked twice in a subject (MMLU has a few) gets the reply of its first occurrence.
    """

    def __init__(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        self.replies: dict[str, str] = {}
        for subject, subject_rows in rows.items():
            for position, row in enumerate(subject_rows):
                key = question_key(subject, row["question"], row["choices"][0])
                self.replies.setdefault(key, self.reply(position, row["answer"]))
        self.unknown = 0

    @staticmethod
    def reply(position: int, gold: str) -> str:
        if position % 2 == 0:
            return gold
        if position % 4 == 1:
            return f"The answer is ({'B' if gold == 'A' else 'A'})."
        return "..."

    def reply_for(self, subject: str, row: dict[str, Any]) -> str:
        return self.replies[question_key(subject, row["question"], row["choices"][0])]

    def answer(self, prompt: str) -> str:
        head, _, body = prompt.partition("\n\n")  # the subject line, then the question
        subject = head.removeprefix("The following are multiple choice questions (with answers) about ")
        subject = subject.removesuffix(".").replace(" ", "_")
        reply = self.replies.get(f"{subject}|{body.split(chr(10) + 'B. ', 1)[0]}\n")
        if reply is None:  # a question holding a blank line, or one with a blank choice: search
            found = [
                text
                for key, text in self.replies.items()
                if key.startswith(f"{subject}|") and key.split("|", 1)[1] in prompt
            ]
            reply = found[0] if found else None
        if reply is None:
            self.unknown += 1
            return "???"
        return reply

    def expected(self, subject: str, row: dict[str, Any]) -> tuple[bool, bool, bool]:
        """(correct, strictly parsed, flexibly parsed) for one row."""
        reply = self.reply_for(subject, row)
        if reply == "...":
            return False, False, False
        if reply.startswith("The answer is"):
            return reply[-3] == row["answer"], False, True
        return reply == row["answer"], True, True


def check_grouped_result(
    result: dict[str, Any], rows: dict[str, list[dict[str, Any]]], oracle: Oracle
) -> None:
    """Every subject's counts and scores, the category groups and the overall micro and macro averages."""
    tasks, groups = result["tasks"], result["groups"]
    assert len(tasks) == SUBJECTS and set(tasks) == {f"mmlu_{s}" for s in rows}
    all_correct: list[bool] = []
    means: list[float] = []
    for subject, subject_rows in rows.items():
        task = tasks[f"mmlu_{subject}"]
        n = len(subject_rows)
        assert n == LIMIT
        outcomes = [oracle.expected(subject, row) for row in subject_rows]
        correct = sum(o[0] for o in outcomes)
        all_correct.extend(o[0] for o in outcomes)
        means.append(correct / n)
        assert task["data"]["samples"] == n
        assert task["data"]["samples_failed"] == 0
        assert task["data"]["unparsed"] == {
            "strict-match": sum(not o[1] for o in outcomes),
            "flexible-extract": sum(not o[2] for o in outcomes),
        }
        for name in (STRICT, FLEXIBLE):
            entry = task["metrics"][name]["scores"][name]
            assert entry["value"] == pytest.approx(correct / n)
            assert entry["stats"]["count"] == n
            assert entry["ci"]["lower"] <= entry["value"] <= entry["ci"]["upper"]
    total = len(all_correct)
    assert total == SUBJECTS * LIMIT
    overall = groups["mmlu"]
    assert overall["data"]["tasks"] == SUBJECTS and overall["data"]["samples"] == total
    micro = overall["metrics"][FLEXIBLE]["scores"][FLEXIBLE]
    macro = overall["metrics"][FLEXIBLE]["scores"][f"{FLEXIBLE}_macro"]
    assert micro["stats"]["count"] == total
    assert micro["value"] == pytest.approx(sum(all_correct) / total)
    assert macro["value"] == pytest.approx(sum(means) / len(means))
    for category, size in CATEGORY_SIZES.items():
        group = groups[f"mmlu_{category}"]
        assert group["data"]["tasks"] == size
        assert group["data"]["samples"] == size * LIMIT
        members = [s for s in rows if tasks[f"mmlu_{s}"]["data"]["category"] == category]
        assert len(members) == size
        expected = [oracle.expected(s, row)[0] for s in members for row in rows[s]]
        value = group["metrics"][STRICT]["scores"][STRICT]["value"]
        assert value == pytest.approx(sum(expected) / len(expected))


def academic_config() -> dict[str, Any]:
    return {"type": "mmlu", "params": {"limit_samples": LIMIT, "parallelism": 16}}


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict[str, Any]]]:
    loaded = first_rows_per_subject()
    assert len(loaded) == SUBJECTS
    return loaded


@pytest.fixture(scope="module")
def oracle(rows: dict[str, list[dict[str, Any]]]) -> Oracle:
    return Oracle(rows)


@pytest.fixture(scope="module")
def fake(oracle: Oracle) -> Iterator[FakeModelServer]:
    with FakeModelServer(answer=oracle.answer) as server:
        yield server


@pytest.fixture(scope="module")
def data_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVALSTACK_DATA_DIR", str(DATA_DIR))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_env: None) -> Iterator[str]:
    """``create_app(settings)`` served by uvicorn on a free port in a background thread."""
    home = tmp_path_factory.mktemp("academic-e2e")
    settings = Settings(data_dir=home, embedded_model=False, data_roots=[home])
    app = create_app(settings)
    with BackgroundServer(
        app, free_port(), name="evalstack server", start_timeout=30, stop_timeout=30
    ) as running:
        yield running.url


# ---- the three front doors ----------------------------------------------------------------------


def test_nemo_job_reports_mmlu_grouped_by_subject_and_category(
    server: str, fake: FakeModelServer, rows: dict[str, list[dict[str, Any]]], oracle: Oracle
) -> None:
    target = {
        "type": "model",
        "model": {"api_endpoint": {"url": f"{fake.base_url}/chat/completions", "model_id": fake.model_id}},
    }
    with httpx.Client(base_url=server, timeout=30.0) as client:
        created = client.post("/v1/evaluation/jobs", json={"config": academic_config(), "target": target})
        assert created.status_code == 200, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + JOB_TIMEOUT
        status = ""
        while time.monotonic() < deadline:
            status = client.get(f"/v1/evaluation/jobs/{job_id}").json()["status"]
            if status not in ("created", "pending", "running"):
                break
            time.sleep(0.2)
        assert status == "completed", client.get(f"/v1/evaluation/jobs/{job_id}").json()
        result = client.get(f"/v1/evaluation/jobs/{job_id}/results")
        assert result.status_code == 200, result.text
    check_grouped_result(result.json(), rows, oracle)
    assert oracle.unknown == 0


def test_llama_stack_benchmark_with_mmlu_metadata_runs_on_the_local_provider(
    server: str, fake: FakeModelServer, rows: dict[str, list[dict[str, Any]]], oracle: Oracle
) -> None:
    client = LlamaStackClient(base_url=server, max_retries=0, timeout=30.0)
    client.models.register(
        model_id="fake-mmlu", provider_model_id=fake.model_id, metadata={"base_url": fake.base_url}
    )
    client.benchmarks.register(
        benchmark_id="academic/mmlu",
        dataset_id="mmlu",
        scoring_functions=[],
        metadata=academic_config(),
    )
    candidate: Any = {
        "type": "model",
        "model": "fake-mmlu",
        "sampling_params": {"strategy": {"type": "greedy"}},
    }
    job = client.eval.run_eval(
        "academic/mmlu", benchmark_config={"eval_candidate": candidate, "scoring_params": {}}
    )
    deadline = time.monotonic() + JOB_TIMEOUT
    status = ""
    while time.monotonic() < deadline:
        status = client.eval.jobs.status(job.job_id, benchmark_id="academic/mmlu").status
        if status not in ("scheduled", "in_progress"):
            break
        time.sleep(0.2)
    assert status == "completed"
    response = client.eval.jobs.retrieve(job.job_id, benchmark_id="academic/mmlu")
    scored = response.scores["academic/mmlu"]
    assert len(response.generations) == len(scored.score_rows) == SUBJECTS * LIMIT
    check_grouped_result(scored.aggregated_results, rows, oracle)
    assert oracle.unknown == 0


def test_evalstack_run_writes_the_grouped_result(
    tmp_path: Path, fake: FakeModelServer, rows: dict[str, list[dict[str, Any]]], oracle: Oracle
) -> None:
    if not MMLU_FILE.is_file():
        pytest.skip("MMLU data mmlu/test.jsonl not found under ../shared/data (relative to the repo root)")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"type": "mmlu"}), encoding="utf-8")
    out = tmp_path / "out.json"
    env = {
        **os.environ,
        "EVALSTACK_DATA_DIR": str(DATA_DIR),
        "EVALSTACK_DATA_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "200",
    }
    env.pop("NVIDIA_EVALUATOR_URL", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "evalstack.cli",
            "run",
            str(config),
            "--model",
            f"{fake.base_url}#{fake.model_id}",
            "--limit",
            str(LIMIT),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=JOB_TIMEOUT,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["status"] == "completed"
    assert document["progress"]["samples_processed"] == SUBJECTS * LIMIT
    check_grouped_result(document["result"], rows, oracle)
    assert "group mmlu_stem" in done.stdout
    assert oracle.unknown == 0
