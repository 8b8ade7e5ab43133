"""HumanEval: the sandbox stops bad programs, canonical solutions pass, pass@k is unbiased."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from evalstack.engine.benchmarks.humaneval import pass_at_k, program_for
from evalstack.engine.benchmarks.sandbox import run_program
from tests.fakes.model_server import FakeModelServer
from tests.unit.engine.benchmarks.helpers import need_data, run_config, score


def test_pass_at_k_estimator() -> None:
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 10) == 1.0
    assert pass_at_k(5, 1, 2) == pytest.approx(1 - (4 * 3) / (5 * 4))


async def test_sandbox_runs_a_passing_program_and_reports_a_failing_one() -> None:
    assert (await run_program("assert 1 + 1 == 2\n", timeout=5)).passed
    failed = await run_program("assert 1 + 1 == 3\n", timeout=5)
    assert not failed.passed and "AssertionError" in failed.output


async def test_sandbox_stops_an_infinite_loop() -> None:
    result = await run_program("while True:\n    pass\n", timeout=1)
    assert not result.passed and result.status == "timeout"


async def test_sandbox_stops_unbounded_allocation() -> None:
    result = await run_program("x = []\nwhile True:\n    x.append(bytearray(10**7))\n", timeout=5)
    assert not result.passed
    assert "MemoryError" in result.output or result.status == "timeout"


async def test_sandbox_refuses_network_and_subprocesses() -> None:
    opened = await run_program("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))\n", timeout=5)
    assert not opened.passed and ("sandbox" in opened.output or "Error" in opened.output)
    spawned = await run_program("import os\nos.system('true')\n", timeout=5)
    assert not spawned.passed and "sandbox" in spawned.output


async def test_sandbox_works_in_a_throwaway_directory() -> None:
    result = await run_program("import os\nopen('x.txt', 'w').write('1')\nprint(os.getcwd())\n", timeout=5)
    assert result.passed
    assert not Path(result.output.strip()).exists()


def _problems(data: Path) -> list[dict[str, str]]:
    with gzip.open(data / "humaneval/HumanEval.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


async def test_canonical_solutions_pass_and_bad_completions_fail_while_the_job_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = need_data("humaneval/HumanEval.jsonl.gz")
    problems = _problems(data)[:8]
    by_prompt = {p["prompt"]: p["canonical_solution"] for p in problems}
    bad = {
        problems[0]["prompt"]: "",
        problems[1]["prompt"]: "    while True:\n        pass\n",
        problems[2]["prompt"]: "    import socket\n    socket.socket().connect(('127.0.0.1', 9))\n",
        problems[3]["prompt"]: "    x = []\n    while True:\n        x.append(bytearray(10**7))\n",
    }
    config = {
        "type": "humaneval",
        "params": {"limit_samples": 8, "extra": {"endpoint_type": "completions", "sandbox_timeout": 3}},
    }
    with FakeModelServer(answer=lambda prompt: by_prompt[prompt]) as server:
        samples, result = await run_config(config, server.base_url, tmp_path, monkeypatch)
        assert score(result, "humaneval", "pass@1")["value"] == 1.0
        server.set_answer(lambda prompt: bad.get(prompt, by_prompt[prompt]))
        samples, result = await run_config(config, server.base_url, tmp_path, monkeypatch)
    assert len(samples["humaneval"]) == 8 and all(s.error is None for s in samples["humaneval"])
    passed = [s.scores["execution"]["passed"] for s in samples["humaneval"]]
    assert passed == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert score(result, "humaneval", "pass@1")["value"] == 0.5


@pytest.mark.slow
async def test_all_canonical_solutions_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = need_data("humaneval/HumanEval.jsonl.gz")
    problems = _problems(data)
    gate = asyncio.Semaphore(4)

    async def check(problem: dict[str, str]) -> tuple[str, bool, str]:
        async with gate:
            result = await run_program(
                program_for(problem, problem["canonical_solution"], chat=False), timeout=10
            )
        return problem["task_id"], result.passed, result.output

    results = await asyncio.gather(*(check(p) for p in problems))
    assert len(results) == 164
    assert [r for r in results if not r[1]] == []


def test_chat_reply_with_the_whole_function_is_checked() -> None:
    item = {
        "prompt": 'def add(a, b):\n    """Add."""\n',
        "test": "def check(f):\n    assert f(1, 2) == 3\n",
        "entry_point": "add",
    }
    reply = "Sure!\n```python\ndef add(a, b):\n    return a + b\n```"
    program = program_for(item, reply, chat=True)
    assert "return a + b" in program and program.endswith("check(add)\n")
