"""Reads under load: 200 concurrent clients read jobs, samples and results while 4 jobs run.

    python bench/load.py [--clients 200] [--think-s 2] [--jobs 4] [--rows 1000] [--parallelism 16]
                         [--latency-ms 50] [--stub PATH]

Starts the stand-in model server (``openai_stub.py``) and ``evalstack serve`` (a SQLite file in a
temporary folder) in subprocesses, then runs ``--jobs`` NeMo custom jobs (one chat task of ``--rows``
rows each) four times, alternating, so a drift of the machine shows up as a gap between the two runs
alone:

1. alone: nobody reads;
2. polling fleet (the target applies here): ``--clients`` clients, each with its own connection,
   read one thing, then wait a think time drawn uniformly from 0.5 to 1.5 times ``--think-s``
   (2 s, what the web viewer waits between two refreshes of a running job's progress), starting at
   random moments. This is what "200 clients read jobs, results and samples" means for a server:
   dashboards, viewer tabs and CI scripts that each poll while jobs run, about ``clients / think-s``
   reads a second in all;
3. alone again;
4. closed loop (the ceiling, no target): the same clients with no think time, each sending its
   next read the moment the last one answered. That only measures how many reads a second the
   server (sharing its cores with this script and the model server) sustains at saturation, and
   what that costs the jobs; no real fleet of 200 readers behaves so.

Each read picks at random: one job (``GET /v1/evalstack/jobs/{id}``), the job listing, a page of a
job's samples (first page or a deep one), the samples count, a NeMo job's status, or its results
(409 while it runs, which is the documented answer and not an error). The jobs read are those that
run and those of the earlier phases. Printed per phase: reads, errors (any other non-2xx answer or
a failed request), read latency p50/p99/max, reads/s, the jobs' wall time, samples/s and slowdown
against the mean of the two runs alone; and the load average before and after. Target (the polling
fleet): no errors, p99 read latency under 100 ms, jobs within 20% of alone. The clients run in this
process with aiohttp (light, so the script takes little of the CPU the server needs); the latency
is measured here, so it bounds the server's from above.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Server, Stub, stub_path, table
from throughput import custom_config, write_rows

TARGET_P99_MS = 100.0
TARGET_SLOWDOWN = 0.20
SETTINGS = "embedded_model: false\ndata_roots: [{work}]\n"
"""The server's settings: no embedded model; the jobs' data files live in the work folder."""
RAMP_S = 2.0  # readers start (and the polling ones spread their first reads) before the jobs do


async def create_jobs(
    http: httpx.AsyncClient, data: Path, stub: Stub, count: int, parallelism: int
) -> list[str]:
    """Create ``count`` jobs at once; their ids."""
    endpoint = {"url": f"{stub.base_url}/chat/completions", "model_id": "stub", "format": "openai"}
    body = {
        "config": custom_config(data, parallelism),
        "target": {"type": "model", "model": {"api_endpoint": endpoint}},
    }
    ids = []
    for _ in range(count):
        response = await http.post("/v1/evaluation/jobs", json=body)
        response.raise_for_status()
        ids.append(response.json()["id"])
    return ids


async def wait_for(http: httpx.AsyncClient, ids: list[str]) -> None:
    """Return once every job in ``ids`` completed (exit if one failed)."""
    pending = set(ids)
    while pending:
        await asyncio.sleep(0.2)
        for job_id in list(pending):
            status = (await http.get(f"/v1/evaluation/jobs/{job_id}")).json()["status"]
            if status in ("completed", "failed", "cancelled"):
                if status != "completed":
                    raise SystemExit(f"job {job_id} ended {status}")
                pending.discard(job_id)


@dataclass
class Reads:
    """What one phase's readers saw."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""


async def reader(
    url: str, job_ids: list[str], rows: int, think_s: float, stop: asyncio.Event, seed: int, reads: Reads
) -> None:
    """One client on its own connection: read at random until ``stop``, waiting ``think_s`` (0.5-1.5x)
    between two reads (none for 0). ``job_ids`` may grow meanwhile."""
    rng = random.Random(seed)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(30)) as http:
        if think_s:
            await asyncio.sleep(rng.uniform(0, RAMP_S))  # clients come at random moments
        while not stop.is_set():
            job_id = rng.choice(job_ids)
            path, params = rng.choice(
                [
                    (f"/v1/evalstack/jobs/{job_id}", {}),
                    ("/v1/evalstack/jobs", {"limit": "20"}),
                    (f"/v1/evalstack/jobs/{job_id}/samples", {"limit": "20"}),
                    (
                        f"/v1/evalstack/jobs/{job_id}/samples",
                        {"limit": "20", "after": f"{rng.randrange(rows)}:qa"},
                    ),
                    (f"/v1/evalstack/jobs/{job_id}/samples/count", {}),
                    (f"/v1/evaluation/jobs/{job_id}/status", {}),
                    (f"/v1/evaluation/jobs/{job_id}/results", {}),
                ]
            )
            started = time.perf_counter()
            try:
                async with http.get(path, params=params) as response:
                    await response.read()
                    status = response.status
                ok = status < 300 or (path.endswith("/results") and status == 409)
                problem = f"{status} from GET {path}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok, problem = False, f"{type(exc).__name__} on GET {path}: {exc}"
            reads.latencies.append(time.perf_counter() - started)
            if not ok:
                reads.errors += 1
                reads.first_error = reads.first_error or problem
            if think_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), think_s * rng.uniform(0.5, 1.5))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Phase:
    name: str
    clients: int
    think_s: float | None
    jobs_s: float
    reads: Reads
    window_s: float


async def run_phase(
    name: str,
    args: argparse.Namespace,
    http: httpx.AsyncClient,
    server: Server,
    data: Path,
    stub: Stub,
    known_ids: list[str],
    think_s: float | None,
) -> Phase:
    """Run the jobs once; with ``think_s`` (None: nobody reads) while ``--clients`` readers read."""
    reads = Reads()
    stop = asyncio.Event()
    readers: list[asyncio.Task[None]] = []
    started_reading = time.perf_counter()
    if think_s is not None:
        readers = [
            asyncio.create_task(reader(server.url, known_ids, args.rows, think_s, stop, seed, reads))
            for seed in range(args.clients)
        ]
        await asyncio.sleep(RAMP_S)
    started = time.perf_counter()
    ids = await create_jobs(http, data, stub, args.jobs, args.parallelism)
    known_ids.extend(ids)  # the readers read the running jobs too
    await wait_for(http, ids)
    jobs_s = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*readers)
    phase = Phase(
        name, args.clients if readers else 0, think_s, jobs_s, reads, time.perf_counter() - started_reading
    )
    print(f"  {name}: jobs in {jobs_s:.1f}s, {len(reads.latencies)} reads", flush=True)
    return phase


async def measure(args: argparse.Namespace, work: Path, stub: Stub, server: Server) -> None:
    data = work / "rows.jsonl"
    write_rows(data, args.rows)
    samples = args.jobs * args.rows
    load_before = os.getloadavg()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        known: list[str] = []
        warm = await create_jobs(
            http, data, stub, 1, args.parallelism
        )  # a finished job to read from the start
        await wait_for(http, warm)
        known.extend(warm)
        phases = [
            await run_phase("alone", args, http, server, data, stub, known, None),
            await run_phase("polling fleet", args, http, server, data, stub, known, args.think_s),
            await run_phase("alone again", args, http, server, data, stub, known, None),
            await run_phase("closed loop", args, http, server, data, stub, known, 0.0),
        ]
    load_after = os.getloadavg()
    alone = (phases[0].jobs_s + phases[2].jobs_s) / 2
    rows = []
    for phase in phases:
        lat = phase.reads.latencies
        read = bool(phase.clients)
        rows.append(
            [
                phase.name,
                phase.clients or "-",
                "-" if phase.think_s is None else f"{phase.think_s:g}",
                len(lat) if read else "-",
                phase.reads.errors if read else "-",
                percentile(lat, 0.5) * 1000 if read else "-",
                percentile(lat, 0.99) * 1000 if read else "-",
                max(lat) * 1000 if read else "-",
                len(lat) / phase.window_s if read else "-",
                phase.jobs_s,
                samples / phase.jobs_s,
                f"{phase.jobs_s / alone - 1:+.0%}",
            ]
        )
    print(
        f"\n{args.jobs} jobs x {args.rows} rows (parallelism {args.parallelism}, model latency "
        f"{args.latency_ms:g} ms); {os.cpu_count()} CPUs; load average before "
        f"{', '.join(f'{x:.2f}' for x in load_before)}, after {', '.join(f'{x:.2f}' for x in load_after)}"
    )
    headers = [
        "phase",
        "clients",
        "think s",
        "reads",
        "errors",
        "p50 ms",
        "p99 ms",
        "max ms",
        "reads/s",
        "jobs s",
    ]
    print(table([*headers, "samples/s", "vs alone"], rows))
    for phase in phases:
        if phase.reads.first_error:
            print(f"{phase.name}: first error: {phase.reads.first_error}")
    fleet = phases[1]
    p99_ms = percentile(fleet.reads.latencies, 0.99) * 1000
    slowdown = fleet.jobs_s / alone - 1
    verdict = fleet.reads.errors == 0 and p99_ms < TARGET_P99_MS and slowdown <= TARGET_SLOWDOWN
    print(
        f"target (polling fleet): no errors ({fleet.reads.errors}), p99 < {TARGET_P99_MS:.0f} ms "
        f"({p99_ms:.0f}), jobs within {TARGET_SLOWDOWN:.0%} of alone ({slowdown:+.0%}): "
        + ("met" if verdict else "NOT met")
    )
    print("closed loop: the saturation ceiling, no target (no think time; see the docstring)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--think-s", type=float, default=2.0, help="the polling fleet's mean think time")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--parallelism", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--stub", default=None)
    args = parser.parse_args()
    if args.think_s <= 0:
        parser.error("--think-s must be above 0 (the closed loop runs anyway)")
    with tempfile.TemporaryDirectory(prefix="evalstack-load-") as folder:
        work = Path(folder)
        settings = SETTINGS.format(work=json.dumps(str(work)))
        db = f"sqlite:///{work / 'evalstack.db'}"
        with (
            Stub(stub_path(args.stub), latency_ms=args.latency_ms) as stub,
            Server(work, settings=settings, db=db) as server,
        ):
            asyncio.run(measure(args, work, stub, server))


if __name__ == "__main__":
    main()
