"""Reads under load: 200 concurrent clients read jobs, samples and results while 4 jobs run.

    python bench/load.py [--clients 200] [--jobs 4] [--rows 2000] [--parallelism 16] [--latency-ms 50]
                         [--stub PATH]

Starts the stand-in model server (``openai_stub.py``) and ``evalstack serve`` (a SQLite file in a
temporary folder) in subprocesses. First ``--jobs`` NeMo custom jobs (one chat task of ``--rows``
rows each) run with nobody reading: their throughput alone. Then the same jobs run again while
``--clients`` client coroutines, each with its own connection, read in a loop, picking at random:
one job (``GET /v1/evalstack/jobs/{id}``), the job listing, a page of a job's samples (first page or
a deep one), the samples count, a NeMo job's status and, once it finished, its results.

Printed: reads done, errors (a non-2xx answer or a failed request), read latency p50/p99/max and
reads/s, and the jobs' samples/s alone and under load. Target: no errors, p99 read latency under
100 ms, and the jobs' throughput under load within 20% of alone. The clients share this process
and its cores with nothing else, but on a small machine they compete with the server for the CPU,
so the latency measured here bounds the server's from above.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, Stub, free_port, stub_path, table
from throughput import custom_config, write_rows

TARGET_P99_MS = 100.0
TARGET_SLOWDOWN = 0.20


class Server:
    """``evalstack serve`` in a subprocess over a SQLite file in ``work``."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        config = self.work / "evalstack.yaml"
        config.write_text(f"embedded_model: false\ndata_roots: [{json.dumps(str(self.work))}]\n")
        env = {**os.environ, "EVALSTACK_DATA_HOME": str(self.work / "data"), "HF_HUB_OFFLINE": "1"}
        env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
        command = [sys.executable, "-m", "evalstack.cli", "serve", "--config", str(config)]
        command += ["--port", str(self.port), "--db", f"sqlite:///{self.work / 'evalstack.db'}"]
        command += ["--log-level", "warning"]
        log = (self.work / "server.log").open("ab")
        self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"evalstack serve exited:\n{(self.work / 'server.log').read_text()}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise SystemExit("evalstack serve did not start within 60 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def run_jobs(
    http: httpx.AsyncClient, data: Path, stub: Stub, count: int, parallelism: int
) -> tuple[list[str], float]:
    """Create ``count`` jobs at once; their ids and the wall time until all of them finished."""
    endpoint = {"url": f"{stub.base_url}/chat/completions", "model_id": "stub", "format": "openai"}
    body = {
        "config": custom_config(data, parallelism),
        "target": {"type": "model", "model": {"api_endpoint": endpoint}},
    }
    started = time.perf_counter()
    ids = []
    for _ in range(count):
        response = await http.post("/v1/evaluation/jobs", json=body)
        response.raise_for_status()
        ids.append(response.json()["id"])
    pending = set(ids)
    while pending:
        await asyncio.sleep(0.2)
        for job_id in list(pending):
            status = (await http.get(f"/v1/evaluation/jobs/{job_id}")).json()["status"]
            if status in ("completed", "failed", "cancelled"):
                if status != "completed":
                    raise SystemExit(f"job {job_id} ended {status}")
                pending.discard(job_id)
    return ids, time.perf_counter() - started


async def reader(
    url: str, job_ids: list[str], rows: int, stop: asyncio.Event, seed: int
) -> tuple[list[float], int]:
    """One client: read at random until ``stop``; its latencies (s) and its error count."""
    rng = random.Random(seed)
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while not stop.is_set():
            job_id = rng.choice(job_ids)
            path, params = rng.choice(
                [
                    (f"/v1/evalstack/jobs/{job_id}", {}),
                    ("/v1/evalstack/jobs", {"limit": 20}),
                    (f"/v1/evalstack/jobs/{job_id}/samples", {"limit": 20}),
                    (
                        f"/v1/evalstack/jobs/{job_id}/samples",
                        {"limit": 20, "after": f"{rng.randrange(rows)}:qa"},
                    ),
                    (f"/v1/evalstack/jobs/{job_id}/samples/count", {}),
                    (f"/v1/evaluation/jobs/{job_id}/status", {}),
                    (f"/v1/evaluation/jobs/{job_id}/results", {}),
                ]
            )
            started = time.perf_counter()
            try:
                response = await http.get(path, params=params)
                ok = response.status_code < 300 or (
                    path.endswith("/results") and response.status_code in (404, 409)
                )
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok
    return latencies, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def measure(args: argparse.Namespace, work: Path, stub: Stub, server: Server) -> None:
    data = work / "rows.jsonl"
    write_rows(data, args.rows)
    samples = args.jobs * args.rows
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        _, alone = await run_jobs(http, data, stub, args.jobs, args.parallelism)
        print(
            f"alone: {args.jobs} jobs x {args.rows} rows in {alone:.1f}s ({samples / alone:,.0f} samples/s)"
        )

        stop = asyncio.Event()
        first_ids = [
            job["id"] for job in (await http.get("/v1/evalstack/jobs", params={"limit": 50})).json()["data"]
        ]
        clients = [
            asyncio.create_task(reader(server.url, first_ids, args.rows, stop, seed))
            for seed in range(args.clients)
        ]
        await asyncio.sleep(2.0)  # every client connected and reading before the jobs start
        _, loaded = await run_jobs(http, data, stub, args.jobs, args.parallelism)
        stop.set()
        results = await asyncio.gather(*clients)
    latencies = [latency for client, _ in results for latency in client]
    errors = sum(count for _, count in results)
    window = loaded + 2.0
    slowdown = loaded / alone - 1
    p99_ms = percentile(latencies, 0.99) * 1000
    print(
        table(
            [
                "clients",
                "reads",
                "errors",
                "p50 ms",
                "p99 ms",
                "max ms",
                "reads/s",
                "jobs alone s",
                "jobs loaded s",
                "slowdown",
            ],
            [
                [
                    args.clients,
                    len(latencies),
                    errors,
                    percentile(latencies, 0.5) * 1000,
                    p99_ms,
                    max(latencies, default=float("nan")) * 1000,
                    len(latencies) / window,
                    alone,
                    loaded,
                    f"{slowdown:+.0%}",
                ]
            ],
        )
    )
    verdict = errors == 0 and p99_ms < TARGET_P99_MS and slowdown <= TARGET_SLOWDOWN
    print(
        f"target: no errors, p99 < {TARGET_P99_MS:.0f} ms, jobs within {TARGET_SLOWDOWN:.0%} of alone: "
        + ("met" if verdict else "NOT met")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--stub", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="evalstack-load-") as folder:
        work = Path(folder)
        with Stub(stub_path(args.stub), latency_ms=args.latency_ms) as stub, Server(work) as server:
            asyncio.run(measure(args, work, stub, server))


if __name__ == "__main__":
    main()
