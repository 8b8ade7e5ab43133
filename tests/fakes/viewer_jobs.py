"""Real jobs for the viewer's tests: an evalstack server, two fake models, jobs through the front doors.

``ViewerJobs.start(data_dir)`` serves ``create_app`` on a free port and runs, to completion:

- ``baseline`` and ``candidate``: the NeMo "squares" job (``POST /v1/evaluation/jobs``) on two fake
  models. Model A answers right for even N and writes :data:`XSS` for N = 3 mod 10; model B answers
  right for N divisible by 3. Both see the same items, so their samples pair up for comparison (and
  the pairs B got right where A wrote :data:`XSS` show it on the flips page).
- ``llama``: a Llama Stack job (dataset, benchmark, ``run_eval``) on model A.

Every expected count in the tests is computed from :func:`answer_a`, :func:`answer_b` and the rows.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

from evalstack.config import Settings
from evalstack.server import create_app
from tests.fakes.model_server import FakeModelServer
from tests.fakes.serving import BackgroundServer, free_port
from tests.fakes.squares import square_rows, squares_config

XSS = "<script>alert(1)</script><img src=x onerror=alert(1)>"
ROWS = 40
JOB_TIMEOUT = 60.0
SECRET = "sk-viewer-secret"


def _n(prompt: str) -> int | None:
    match = re.search(r"What is (\d+) squared\?", prompt)
    return int(match.group(1)) if match else None


def answer_a(prompt: str) -> str:
    """Model A: right for even N, the XSS string for N = 3 mod 10, else wrong."""
    n = _n(prompt)
    if n is None:
        return "I do not understand."
    if n % 10 == 3:
        return XSS
    return str(n * n) if n % 2 == 0 else "no idea"


def answer_b(prompt: str) -> str:
    """Model B: right for N divisible by 3, else wrong."""
    n = _n(prompt)
    if n is None:
        return "I do not understand."
    return str(n * n) if n % 3 == 0 else "not sure"


def right(answer: Any, n: int) -> bool:
    return bool(answer(f"What is {n} squared?") == str(n * n))


@dataclass
class ViewerJobs:
    """A running server holding finished jobs (ids in ``baseline``, ``candidate``, ``llama``)."""

    server: BackgroundServer
    models: list[FakeModelServer]
    http: httpx.Client
    baseline: str = ""
    candidate: str = ""
    llama: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)
    db_url: str = ""
    dataset: Path = Path()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def server_db(self) -> str:
        """The server's database URL (for ``evalstack view --db``)."""
        return self.db_url

    @classmethod
    def start(cls, data_dir: Path) -> Self:
        model_a, model_b = FakeModelServer(answer=answer_a), FakeModelServer(answer=answer_b)
        started: list[Any] = []
        try:
            for fake in (model_a, model_b):
                fake.start()
                started.append(fake)
            db_url = f"sqlite:///{data_dir / 'evalstack.db'}"
            settings = Settings(data_dir=data_dir, embedded_model=False, data_roots=[data_dir], db_url=db_url)
            server = BackgroundServer(
                create_app(settings), free_port(), name="evalstack server", start_timeout=30, stop_timeout=30
            )
            server.start()
            started.append(server)
            jobs = cls(
                server, [model_a, model_b], httpx.Client(timeout=30.0), rows=square_rows(ROWS), db_url=db_url
            )
            jobs._run_all(data_dir)
            return jobs
        except BaseException:
            for thing in reversed(started):
                thing.stop()
            raise

    def stop(self) -> None:
        self.http.close()
        self.server.stop()
        for fake in self.models:
            fake.stop()

    # ---- the jobs -------------------------------------------------------------------------------

    def nemo_job(self, model: FakeModelServer, name: str, *, parallelism: int = 4) -> str:
        """Submit the squares job on ``model`` (called ``name``); returns its id at once."""
        return self._nemo_job(self.dataset, model, name, parallelism=parallelism)

    def _nemo_job(self, dataset: Path, model: FakeModelServer, name: str, *, parallelism: int = 4) -> str:
        endpoint = {
            "url": f"{model.base_url}/chat/completions",
            "model_id": name,
            "api_key": SECRET,
            "format": "openai",
        }
        body = {
            "config": squares_config(dataset, parallelism=parallelism),
            "target": {"type": "model", "model": {"api_endpoint": endpoint}},
        }
        response = self.http.post(f"{self.url}/v1/evaluation/jobs", json=body)
        response.raise_for_status()
        return str(response.json()["id"])

    def _llama_job(self, model: FakeModelServer) -> str:
        base = f"{self.url}/v1"
        self.http.post(
            f"{base}/models",
            json={"model_id": "model-a-ls", "metadata": {"base_url": model.base_url}, "model_type": "llm"},
        ).raise_for_status()
        rows = [{"input_query": r["question"], "expected_answer": r["answer"]} for r in self.rows[:10]]
        self.http.post(
            f"{base}/datasets",
            json={
                "dataset_id": "squares",
                "purpose": "eval/question-answer",
                "source": {"type": "rows", "rows": rows},
            },
        ).raise_for_status()
        self.http.post(
            f"{base}/eval/benchmarks",
            json={
                "benchmark_id": "squares-ls",
                "dataset_id": "squares",
                "scoring_functions": ["basic::equality"],
            },
        ).raise_for_status()
        config = {
            "eval_candidate": {
                "type": "model",
                "model": "model-a-ls",
                "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 16},
            }
        }
        response = self.http.post(
            f"{base}/eval/benchmarks/squares-ls/jobs", json={"benchmark_config": config}
        )
        response.raise_for_status()
        return str(response.json()["job_id"])

    def wait(self, job_id: str) -> dict[str, Any]:
        """The job once it has finished (it must complete)."""
        return self._wait(job_id)

    def _wait(self, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + JOB_TIMEOUT
        while time.monotonic() < deadline:
            job = self.http.get(f"{self.url}/v1/evalstack/jobs/{job_id}").json()
            if job["status"] in ("completed", "failed", "cancelled"):
                assert job["status"] == "completed", job
                return dict(job)
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} did not finish in {JOB_TIMEOUT} s")

    def _run_all(self, data_dir: Path) -> None:
        dataset = self.dataset = data_dir / "squares.jsonl"
        dataset.write_text("".join(json.dumps(r) + "\n" for r in self.rows), encoding="utf-8")
        self.baseline = self._nemo_job(dataset, self.models[0], "model-a")
        self.candidate = self._nemo_job(dataset, self.models[1], "model-b")
        self.llama = self._llama_job(self.models[0])
        for job_id in (self.baseline, self.candidate, self.llama):
            self._wait(job_id)
