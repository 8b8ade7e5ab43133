"""`evalstack run --adaptive-concurrency`: the job backs off on 429s and records its concurrency history."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.fakes.model_server import FakeModelServer


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evalstack.cli", "run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "EVALSTACK_DATA_HOME": str(cwd / "data"), "HF_HUB_OFFLINE": "1"},
    )


@pytest.mark.slow
@pytest.mark.parametrize("adaptive", [True, False])
def test_adaptive_concurrency_is_recorded_only_when_asked(tmp_path: Path, adaptive: bool) -> None:
    rows = [{"input_query": f"q{i}", "expected_answer": f"q{i}"} for i in range(40)]
    bench = tmp_path / "bench.json"
    bench.write_text(
        json.dumps({"dataset": {"rows": rows}, "scoring_functions": ["basic::equality"], "parallelism": 16})
    )
    with FakeModelServer(latency=0.01) as fake:
        fake.fail_next(4, status=429, retry_after=0)
        args = ["bench.json", "--model", fake.base_url, "--db", f"sqlite:///{tmp_path / 'x.db'}"]
        args += ["--output", "out.json"] + (["--adaptive-concurrency"] if adaptive else [])
        done = run_cli(tmp_path, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    # Retried 429s are not wrong answers: every row still scores.
    accuracy = result["result"]["scores"]["basic::equality"]["aggregated_results"]["accuracy"]["accuracy"]
    assert accuracy == 1.0
    concurrency = result["progress"].get("concurrency")
    if not adaptive:
        assert concurrency is None
        return
    assert concurrency["mode"] == "adaptive"
    assert concurrency["maximum"] == 16
    limits = [entry[1] for entry in concurrency["history"]]
    assert min(limits) < 16  # it backed off on the 429s
