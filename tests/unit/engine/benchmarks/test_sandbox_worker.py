"""The sandbox refuses writes outside its folder; the sandbox worker calls a function in a fork per call."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evalstack.engine.benchmarks.sandbox import SandboxWorker, run_program


async def test_a_program_cannot_write_outside_its_folder(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    for attempt in (
        f"open({str(target)!r}, 'w').write('x')",
        f"import os\nos.close(os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT))",
        f"import os\nos.mkdir({str(tmp_path / 'folder')!r})",
        f"import os\nos.symlink({str(target)!r}, 'link')\nopen('link', 'w').write('x')",
    ):
        result = await run_program(attempt, timeout=5)
        assert not result.passed and "outside the working directory" in result.output, attempt
    assert list(tmp_path.iterdir()) == []
    inside = await run_program("import os\nos.mkdir('here')\nopen('here/x', 'w').write('1')\n", timeout=5)
    assert inside.passed


def where(_: Any) -> dict[str, int]:
    return {"pid": os.getpid(), "parent": os.getppid()}


def misbehave(kind: str, target: str = "") -> Any:
    if kind == "loop":
        while True:
            pass
    if kind == "raise":
        raise ValueError("no good")
    if kind == "print":
        print('{"value": "forged"}')
        return "honest"
    if kind == "fork":
        import subprocess

        return subprocess.run(["true"], check=False).returncode
    if kind == "write":
        return open(target, "w").write("x")
    if kind == "numpy":  # numpy is imported when the worker loads this module, before the guard
        return {"n": np.float64(0.5), "t": (1, 2)}
    return kind


@pytest.fixture
def worker() -> Any:
    sandbox = SandboxWorker(misbehave, timeout=2, idle_timeout=30)
    yield sandbox
    sandbox.close()


def test_each_call_runs_in_a_fork_of_the_worker_never_here() -> None:
    sandbox = SandboxWorker(where, timeout=5)
    try:
        first, second = sandbox.call(None), sandbox.call(None)
    finally:
        sandbox.close()
    assert first.status == second.status == "ok"
    assert first.value["pid"] != os.getpid() and first.value["parent"] != os.getpid()
    assert first.value["pid"] != second.value["pid"] and first.value["parent"] == second.value["parent"]


def test_a_call_that_hangs_fails_it_alone_and_the_worker_goes_on(worker: SandboxWorker) -> None:
    started = time.monotonic()
    hung = worker.call("loop")
    assert hung.status == "timeout" and "timed out after 2 s" in hung.message
    assert time.monotonic() - started < 15
    assert worker.call("fine").value == "fine"


def test_faults_are_answers_and_nothing_but_json_comes_back(worker: SandboxWorker, tmp_path: Path) -> None:
    raised = worker.call("raise")
    assert raised.status == "error" and raised.message == "ValueError: no good"
    assert worker.call("print").value == "honest"  # what a call prints never becomes an answer
    assert worker.call("numpy").value == {"n": 0.5, "t": [1, 2]}
    spawned = worker.call("fork")
    assert spawned.status == "error" and "subprocess.Popen is not allowed" in spawned.message
    wrote = worker.call("write", str(tmp_path / "escaped"))
    assert wrote.status == "error" and "outside the working directory" in wrote.message
    assert list(tmp_path.iterdir()) == []


def test_an_idle_worker_exits_and_the_next_call_starts_another() -> None:
    sandbox = SandboxWorker(misbehave, timeout=2, idle_timeout=0.5)
    try:
        assert sandbox.call("one").value == "one"
        first = sandbox.pid
        time.sleep(1.5)
        assert sandbox.pid is None  # it went away by itself
        assert sandbox.call("two").value == "two" and sandbox.pid not in (None, first)
    finally:
        sandbox.close()
