"""Throughput of the engine in-process: a 10,000-row NeMo custom job at several concurrency levels.

    python bench/throughput.py [--rows 10000] [--levels 16,64,256] [--latency-ms 200] [--stub PATH]

Each level runs in a fresh subprocess (so peak RSS is that level's), through the same services as
the server (store, registry, JobWorker, batched writes): one ``chat-completion`` task, the row's
prompt as the user message, a ``string-check`` metric. The model is the stand-in server with a fixed
latency, so concurrency decides the throughput. Printed per level: samples/s, the most requests in
flight (the stub's ``/stats``), the busy fraction (most in flight / configured, and the mean in flight
by Little's law: samples/s x latency / configured), and peak RSS. Target: >= 90% busy at every level.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Stub, self_peak_rss_mb, stub_path, table

TARGET_BUSY = 0.90


def custom_config(data_file: Path, parallelism: int, *, max_tokens: int = 8) -> dict[str, Any]:
    """A NeMo custom config: one chat task over ``data_file`` (rows with ``prompt`` and ``answer``)."""
    return {
        "type": "custom",
        "params": {"parallelism": parallelism, "max_tokens": max_tokens},
        "tasks": {
            "qa": {
                "type": "chat-completion",
                "params": {"template": {"messages": [{"role": "user", "content": "{{item.prompt}}"}]}},
                "dataset": {"files_url": data_file.resolve().as_uri()},
                "metrics": {
                    "accuracy": {
                        "type": "string-check",
                        "params": {"check": ["{{sample.output_text | trim}}", "equals", "{{item.answer}}"]},
                    }
                },
            }
        },
    }


def write_rows(path: Path, count: int) -> None:
    """``count`` synthetic rows (distinct prompts, so answers vary)."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            out.write(json.dumps({"prompt": f"Question {i}: which letter?", "answer": "ABCD"[i % 4]}) + "\n")


async def run_level(data_file: Path, work: Path, base_url: str, parallelism: int) -> dict[str, Any]:
    """Run one job through the in-process services; its wall time, samples and progress."""
    from evalstack.config import load_settings
    from evalstack.services import build_services
    from evalstack.store.records import JobRecord, new_job_id

    settings = load_settings(
        data_dir=work,
        db_url=f"sqlite:///{work / 'evalstack.db'}",
        data_roots=[data_file.parent],
        embedded_model=False,
    )
    services = build_services(settings)
    await services.start()
    try:
        spec = {
            "config": custom_config(data_file, parallelism),
            "target": {"type": "model", "model": base_url},
            "meta": {"source": "bench/throughput.py"},
        }
        started = time.perf_counter()
        job = await services.worker.submit(JobRecord(id=new_job_id(), front="nemo", spec=spec))
        job = await services.worker.wait(job.id)
        wall = time.perf_counter() - started
    finally:
        await services.stop()
    if job.status != "completed":
        raise SystemExit(f"job ended {job.status}: {job.error}")
    progress = job.progress
    return {"wall": wall, "samples": progress.get("samples_processed", 0), "errors": progress.get("errors")}


def child(args: argparse.Namespace) -> None:
    """One level, in this process; prints one JSON line."""
    work = Path(args.work)
    result = asyncio.run(run_level(Path(args.data), work, args.base_url, args.one_level))
    result["peak_rss_mb"] = self_peak_rss_mb()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--levels", default="16,64,256", help="comma-separated concurrency levels")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=200.0,
        help="stub latency per request (a model server's; at 20 ms, 256 in flight would need 12,800 "
        "requests/s, more than two cores serve)",
    )
    parser.add_argument("--stub", help="path of openai_stub.py (default ../shared/tools/openai_stub.py)")
    parser.add_argument("--one-level", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_level:
        child(args)
        return

    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    rows: list[list[Any]] = []
    failed = False
    with (
        tempfile.TemporaryDirectory(prefix="evalstack-bench-") as tmp,
        Stub(stub_path(args.stub), latency_ms=args.latency_ms) as stub,
    ):
        data = Path(tmp) / "rows.jsonl"
        write_rows(data, args.rows)
        for level in levels:
            work = Path(tmp) / f"level-{level}"
            work.mkdir()
            stub.reset()
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one-level",
                    str(level),
                    "--data",
                    str(data),
                    "--work",
                    str(work),
                    "--base-url",
                    stub.base_url,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise SystemExit(f"level {level} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            stats = stub.stats()
            rate = result["samples"] / result["wall"]
            max_busy = stats["max_in_flight"] / level
            mean_busy = rate * args.latency_ms / 1000 / level
            failed |= max_busy < TARGET_BUSY
            rows.append(
                [
                    level,
                    result["samples"],
                    result["wall"],
                    rate,
                    stats["max_in_flight"],
                    f"{max_busy:.0%}",
                    f"{mean_busy:.0%}",
                    result["peak_rss_mb"],
                    result["errors"],
                ]
            )
    print(
        f"{args.rows:,} rows, stub latency {args.latency_ms:g} ms, NeMo custom job (chat + string-check) "
        "through the in-process engine and store"
    )
    print(
        table(
            [
                "concurrency",
                "samples",
                "wall s",
                "samples/s",
                "max in flight",
                "busy (max)",
                "busy (mean)",
                "peak RSS MB",
                "errors",
            ],
            rows,
        )
    )
    print(
        f"target: busy (max in flight / concurrency) >= {TARGET_BUSY:.0%} at every level"
        f" -> {'FAIL' if failed else 'ok'}"
    )
    print(
        "busy (mean) = samples/s x latency / concurrency: the average share of slots in use over the"
        " whole job, start-up included"
    )


if __name__ == "__main__":
    main()
