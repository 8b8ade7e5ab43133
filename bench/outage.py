"""A job survives its model server going away: the issue's scenario, measured.

    python bench/outage.py [--rows 20000] [--parallelism 64] [--outage-s 20] [--latency-ms 100] [--stub PATH]

A NeMo custom job (chat + string-check) runs through the in-process services against the stand-in
model server. Mid-job the server is stopped (connections refused, as in a redeploy) for
``--outage-s`` seconds, then started again on the same port. The same job then runs without an
outage. A third job meets a server that stays away, with ``max_outage`` = ``--max-outage-s``, and is
resumed once the server is back.

Printed: for each run its status, wall time, samples recorded as errors, the probes the circuit
breaker sent during the outage (``progress.outage.probes`` at its last report), whether its results
equal the uninterrupted run's, and for the lasting outage how long after the stop the job failed.
Targets: zero error samples, identical results, probes at most one per ``probe_interval_max``
second plus the backoff's first steps, and failing within ``max_outage`` + 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Stub, stub_path, table
from throughput import custom_config, write_rows


class Outage:
    """Stops the stub when told to and, unless ``seconds`` is None, starts it again that much later."""

    def __init__(self, stub: Stub, seconds: float | None) -> None:
        self.stub = stub
        self.seconds = seconds
        self.stopped_at: float | None = None

    def go_down(self) -> None:
        self.stub.__exit__()
        self.stopped_at = time.monotonic()
        if self.seconds is not None:
            threading.Timer(self.seconds, self.come_back).start()

    def come_back(self) -> None:
        self.stub.__enter__()


async def run_job(
    data: Path,
    work: Path,
    stub: Stub,
    *,
    parallelism: int,
    outage: Outage | None,
    stop_after: int,
    **spec: Any,
) -> dict[str, Any]:
    """One job through the in-process services; stops the stub once ``stop_after`` samples are done."""
    from evalstack.config import load_settings
    from evalstack.services import build_services
    from evalstack.store.records import JobRecord, new_job_id

    settings = load_settings(
        data_dir=work,
        db_url=f"sqlite:///{work / 'evalstack.db'}",
        data_roots=[data.parent],
        embedded_model=False,
    )
    services = build_services(settings)
    seen: dict[str, Any] = {"probes": 0}

    def listen(_: str, progress: dict[str, Any]) -> None:
        if outage is not None and outage.stopped_at is None and progress["samples_processed"] >= stop_after:
            outage.go_down()
        if "outage" in progress:
            seen["probes"] = max(seen["probes"], progress["outage"]["probes"])

    services.worker.add_progress_listener(listen)
    await services.start()
    try:
        body = {
            "config": custom_config(data, parallelism),
            "target": {"type": "model", "model": stub.base_url},
            "meta": {"source": "bench/outage.py"},
            **spec,
        }
        started = time.perf_counter()
        job = await services.worker.submit(JobRecord(id=new_job_id(), front="nemo", spec=body))
        job = await services.worker.wait(job.id)
        result: dict[str, Any] = {"job": job, "wall": time.perf_counter() - started, "probes": seen["probes"]}
        if outage is not None and outage.stopped_at is not None:
            result["failed_after"] = time.monotonic() - outage.stopped_at
        if job.status == "failed" and outage is not None:
            if outage.seconds is None:
                outage.come_back()
            job = await services.worker.resume(job.id)
            job = await services.worker.wait(job.id)
            result["resumed"] = job
        samples = await services.store.read_samples(job.id)
        result["errors"] = sum(s.error is not None for s in samples)
    finally:
        await services.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--parallelism", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--outage-s", type=float, default=20.0)
    parser.add_argument("--max-outage-s", type=float, default=10.0)
    parser.add_argument("--stub", help="path of openai_stub.py (default ../shared/tools/openai_stub.py)")
    args = parser.parse_args()

    stop_after = args.rows // 2
    lines: list[list[Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="evalstack-bench-") as tmp,
        Stub(stub_path(args.stub), latency_ms=args.latency_ms) as stub,
    ):
        data = Path(tmp) / "rows.jsonl"
        write_rows(data, args.rows)
        runs: dict[str, dict[str, Any]] = {}
        for name, outage, spec in (
            ("uninterrupted", None, {}),
            (f"{args.outage_s:g} s outage", Outage(stub, args.outage_s), {}),
            ("lasting outage, resumed", Outage(stub, None), {"max_outage": args.max_outage_s}),
        ):
            work = Path(tmp) / name.replace(" ", "-").replace(",", "")
            work.mkdir()
            runs[name] = asyncio.run(
                run_job(
                    data,
                    work,
                    stub,
                    parallelism=args.parallelism,
                    outage=outage,
                    stop_after=stop_after,
                    **spec,
                )
            )
        reference = runs["uninterrupted"]["job"].result
        for name, run in runs.items():
            job = run["job"]
            final = run.get("resumed", job)
            lines.append(
                [
                    name,
                    job.status + (f" -> {final.status}" if "resumed" in run else ""),
                    run["wall"],
                    run["errors"],
                    run["probes"],
                    "yes" if final.result == reference else "NO",
                    run["failed_after"] if job.status == "failed" else float("nan"),
                ]
            )
    print(
        f"{args.rows:,} rows, parallelism {args.parallelism}, stub latency {args.latency_ms:g} ms; "
        f"the stub is stopped after {stop_after:,} samples"
    )
    print(
        table(
            ["run", "status", "wall s", "error samples", "probes", "same results", "failed after s"],
            lines,
        )
    )
    outage_run = runs[f"{args.outage_s:g} s outage"]
    # Probes back off from 0.5 s doubling to 15 s: the first five take 15.5 s, then one per 15 s.
    probe_bound = 5 + math.ceil(max(0.0, args.outage_s - 15.5) / 15.0) + 1
    lasting = runs["lasting outage, resumed"]
    ok = (
        all(run["errors"] == 0 for run in runs.values())
        and all(run.get("resumed", run["job"]).result == reference for run in runs.values())
        and outage_run["probes"] <= probe_bound
        and lasting["failed_after"] <= args.max_outage_s + 5
    )
    print(
        f"targets: 0 error samples, identical results, <= {probe_bound} probes during the outage, "
        f"the lasting outage failing within max_outage + 5 s -> {'ok' if ok else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
