"""End to end: two real jobs on our fake model servers, then ``evalstack compare``, ``gate`` and ``report``
as a user runs them (subprocesses, over the store with ``--db`` and over a running server with
``--url``), and the same through ``GET /v1/evalstack/compare`` and ``/v1/evalstack/jobs/{id}/report``.

The two "models" answer "What is N squared?" right on known sets of N, so every expected count,
difference, interval and p-value is computed here with scipy from those sets, never read back
from evalstack.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from scipy import stats
from tests.fakes.model_server import FakeModelServer
from tests.fakes.serving import ServeProcess

pytestmark = pytest.mark.slow

N = 90
RUN_TIMEOUT = 90.0


def right_a(n: int) -> bool:
    return n % 2 == 0


def right_b(n: int) -> bool:
    return n % 3 != 0


def model(right: Any) -> Any:
    def answer(prompt: str) -> str:
        n = int(prompt.split("What is ")[1].split(" squared")[0])
        return str(n * n) if right(n) else "no idea"

    return answer


def scores(right: Any) -> np.ndarray:
    return np.array([float(right(n)) for n in range(N)])


@dataclass
class Setup:
    root: Path
    db_url: str
    job_a: str
    job_b: str

    def cli(self, *args: str, db: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "EVALSTACK_DATA_HOME": str(self.root / "home"), "COLUMNS": "250"}
        for name in ("EVALSTACK_URL", "EVALSTACK_DB_URL", "NVIDIA_EVALUATOR_URL", "HF_ENDPOINT"):
            env.pop(name, None)
        env["HF_HUB_OFFLINE"] = "1"
        command = [sys.executable, "-m", "evalstack.cli", *args]
        if db:
            command += ["--db", self.db_url]
        return subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=self.root, timeout=RUN_TIMEOUT
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("compare")
    bench = root / "squares.yaml"
    bench.write_text(
        yaml.safe_dump(
            {
                "benchmark_id": "squares",
                "dataset": {
                    "rows": [
                        {"input_query": f"What is {n} squared?", "expected_answer": str(n * n)}
                        for n in range(N)
                    ]
                },
                "scoring_functions": ["basic::equality"],
                "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 8},
            }
        ),
        encoding="utf-8",
    )
    setup = Setup(root=root, db_url=f"sqlite:///{root / 'evalstack.db'}", job_a="", job_b="")
    ids = []
    for name, right in (("a", right_a), ("b", right_b)):
        with FakeModelServer(answer=model(right), model_id=f"model-{name}") as server:
            out = root / f"{name}.json"
            done = setup.cli("run", str(bench), "--model", f"{server.base_url}#model-{name}", "-o", str(out))
            assert done.returncode == 0, done.stdout + done.stderr
            ids.append(json.loads(out.read_text())["job_id"])
    setup.job_a, setup.job_b = ids
    yield setup


@pytest.fixture(scope="module")
def server(setup: Setup) -> Iterator[ServeProcess]:
    (setup.root / "serve").mkdir()
    proc = ServeProcess(setup.root / "serve", "embedded_model: false\n", db_url=setup.db_url).start()
    try:
        yield proc
    finally:
        proc.stop()


def expected_comparison() -> dict[str, Any]:
    a, b = scores(right_a), scores(right_b)
    n10 = int(np.sum((a == 1) & (b == 0)))
    n01 = int(np.sum((a == 0) & (b == 1)))
    interval = stats.ttest_rel(b, a).confidence_interval()
    return {
        "n10": n10,
        "n01": n01,
        "delta": float(np.mean(b - a)),
        "ci": (interval.low, interval.high),
        "p": stats.binomtest(n10, n10 + n01, 0.5).pvalue,
        "means": (a.mean(), b.mean()),
    }


def check_row(row: dict[str, Any]) -> None:
    expected = expected_comparison()
    assert (row["scope"], row["name"], row["metric"], row["kind"]) == (
        "task",
        "squares",
        "basic::equality",
        "binary",
    )
    assert row["n"] == N
    assert (row["n10"], row["n01"]) == (expected["n10"], expected["n01"]) == (15, 30)
    assert row["delta"] == pytest.approx(expected["delta"])
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(expected["ci"])
    assert (row["baseline_mean"], row["candidate_mean"]) == pytest.approx(expected["means"])
    assert row["p_value"] == pytest.approx(expected["p"]) and row["test"] == "mcnemar_exact"
    assert row["p_holm"] == pytest.approx(expected["p"])  # one row: nothing to adjust for
    assert row["bootstrap_ci_low"] < row["delta"] < row["bootstrap_ci_high"]
    assert row["flip_rate"] == pytest.approx(45 / N)
    assert not row["clustered"]


def test_compare_over_the_store_pairs_every_item_and_matches_scipy(setup: Setup) -> None:
    done = setup.cli("compare", setup.job_a, setup.job_b, "--format", "json")
    assert done.returncode == 0, done.stderr
    comparison = json.loads(done.stdout)
    assert comparison["matched"] == N and comparison["unmatched_count"] == 0
    assert comparison["baseline"]["id"] == setup.job_a and comparison["candidate"]["id"] == setup.job_b
    assert comparison["baseline"]["model"].endswith("#model-a")
    assert comparison["warnings"] == []  # the runs differ only in the model
    (row,) = comparison["rows"]
    check_row(row)


def test_compare_table_and_markdown_show_the_figures(setup: Setup, tmp_path: Path) -> None:
    table = setup.cli("compare", setup.job_a, setup.job_b)
    assert table.returncode == 0, table.stderr
    assert "basic::equality" in table.stdout and "15/30" in table.stdout
    page = tmp_path / "compare.html"
    html = setup.cli("compare", setup.job_a, setup.job_b, "--format", "html", "-o", str(page))
    assert html.returncode == 0, html.stderr
    text = page.read_text(encoding="utf-8")
    assert "<svg" in text and "<script" not in text and "basic::equality" in text
    md = setup.cli("compare", setup.job_a, setup.job_b, "--format", "md")
    assert "| task | squares | basic::equality | binary | 90 |" in md.stdout


def test_compare_names_unknown_jobs(setup: Setup) -> None:
    done = setup.cli("compare", setup.job_a, "eval-missing")
    assert done.returncode == 2
    assert "candidate job 'eval-missing' not found" in done.stderr


def write_policy(path: Path, **metric: Any) -> Path:
    path.write_text(yaml.safe_dump({"metrics": [{"metric": "basic::equality", **metric}]}), encoding="utf-8")
    return path


def test_gate_verdicts_and_exit_codes(setup: Setup, tmp_path: Path) -> None:
    low, high = expected_comparison()["ci"]
    assert 0.0 < low < high  # B is better than A beyond doubt; A is worse than B
    cases = [
        # (baseline, candidate, policy, exit code, overall, metric verdict)
        (setup.job_a, setup.job_b, {"max_drop": 0.0}, 0, "GO", "PASS"),
        (setup.job_b, setup.job_a, {"max_drop": 0.01}, 1, "NO-GO", "BREACH"),
        (setup.job_b, setup.job_a, {"max_drop": 0.1}, 2, "INCONCLUSIVE", "INSUFFICIENT_EVIDENCE"),
    ]
    assert -low < -0.01 and -high < -0.1 < -low  # so the reversed comparison breaches 0.01, straddles 0.1
    for position, (base, cand, rule, code, overall, verdict) in enumerate(cases):
        policy = write_policy(tmp_path / f"gate{position}.yaml", **rule)
        done = setup.cli("gate", base, cand, "--policy", str(policy), "--format", "json")
        assert done.returncode == code, (rule, done.stdout, done.stderr)
        result = json.loads(done.stdout)
        assert (result["verdict"], result["metrics"][0]["verdict"]) == (overall, verdict), rule
        assert result["reasons"]


def test_gate_report_says_why(setup: Setup, tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "gate.yaml", max_drop=0.01)
    report = tmp_path / "gate.md"
    done = setup.cli("gate", setup.job_b, setup.job_a, "--policy", str(policy), "-o", str(report))
    assert done.returncode == 1
    assert "Verdict: NO-GO" in done.stdout and "regressed" in done.stdout
    text = report.read_text(encoding="utf-8")
    assert text.startswith("# Gate: NO-GO") and "lies wholly below -max_drop = -0.01" in text


def test_gate_rejects_a_bad_policy_naming_what_is_accepted(setup: Setup, tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "bad.yaml", max_drop=0.01, treshold=2)
    done = setup.cli("gate", setup.job_a, setup.job_b, "--policy", str(policy))
    assert done.returncode == 3
    assert "treshold" in done.stderr and "accepted: metric, task, direction, max_drop, tier" in done.stderr
    unknown = write_policy(tmp_path / "unknown.yaml", metric="accuracy", max_drop=0.01)
    done = setup.cli("gate", setup.job_a, setup.job_b, "--policy", str(unknown))
    assert done.returncode == 3 and "no metric 'accuracy'" in done.stderr and "basic::equality" in done.stderr


def test_report_formats_hold_metrics_with_cis_and_counts(setup: Setup, tmp_path: Path) -> None:
    done = setup.cli("report", setup.job_a, "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"]["samples"] == N and report["counts"]["scored"] == N
    (metric,) = report["metrics"]
    assert metric["n"] == N and metric["mean"] == pytest.approx(scores(right_a).mean())
    assert metric["ci_low"] < metric["mean"] < metric["ci_high"]

    csv_file = tmp_path / "a.csv"
    assert setup.cli("report", setup.job_a, "--format", "csv", "-o", str(csv_file)).returncode == 0
    rows = list(csv.DictReader(io.StringIO(csv_file.read_text(encoding="utf-8"))))
    assert len(rows) == N
    for row in rows:
        n = int(row["index"])
        assert row["metric"] == "basic::equality"
        assert float(row["value"]) == float(right_a(n))
        assert row["output"] == (str(n * n) if right_a(n) else "no idea")

    html_file = tmp_path / "a.html"
    assert setup.cli("report", setup.job_a, "--format", "html", "-o", str(html_file)).returncode == 0
    html = html_file.read_text(encoding="utf-8")
    assert "<svg" in html and "<script" not in html and "<link" not in html
    md = setup.cli("report", setup.job_a, "--format", "md").stdout
    assert "| task | squares | basic::equality | 90 | 0.5 |" in md


def test_the_server_answers_the_same_comparison_and_reports(setup: Setup, server: ServeProcess) -> None:
    local = json.loads(setup.cli("compare", setup.job_a, setup.job_b, "--format", "json").stdout)
    response = httpx.get(
        f"{server.url}/v1/evalstack/compare", params={"baseline": setup.job_a, "candidate": setup.job_b}
    )
    assert response.status_code == 200
    assert response.json() == local
    check_row(response.json()["rows"][0])

    page = httpx.get(
        f"{server.url}/v1/evalstack/compare",
        params={"baseline": setup.job_a, "candidate": setup.job_b, "format": "html"},
    )
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert "<svg" in page.text and "<script" not in page.text and "<td>15</td><td>30</td>" in page.text

    remote = setup.cli("compare", setup.job_a, setup.job_b, "--format", "json", "--url", server.url, db=False)
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout) == local

    page = httpx.get(f"{server.url}/v1/evalstack/jobs/{setup.job_a}/report", params={"format": "html"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src" not in page.headers["content-security-policy"]
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    table = httpx.get(f"{server.url}/v1/evalstack/jobs/{setup.job_a}/report", params={"format": "csv"})
    assert table.status_code == 200 and len(table.text.strip().splitlines()) == N + 1

    missing = httpx.get(f"{server.url}/v1/evalstack/jobs/eval-missing/report")
    assert missing.status_code == 404 and "eval-missing" in missing.json()["error"]["message"]
    bad = httpx.get(f"{server.url}/v1/evalstack/jobs/{setup.job_a}/report", params={"format": "pdf"})
    assert bad.status_code == 400 and "md" in bad.json()["error"]["message"]
    gone = httpx.get(f"{server.url}/v1/evalstack/compare", params={"baseline": "x", "candidate": setup.job_b})
    assert gone.status_code == 404 and "baseline job 'x' not found" in gone.json()["error"]["message"]

    policy = write_policy(setup.root / "remote-gate.yaml", max_drop=0.0)
    gate = setup.cli("gate", setup.job_a, setup.job_b, "--policy", str(policy), "--url", server.url, db=False)
    assert gate.returncode == 0, gate.stdout + gate.stderr
