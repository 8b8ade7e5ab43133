"""What Ray buys and what it costs: the same jobs on the local executor and on Ray with one and two nodes.

    python bench/ray_scale.py [--rows 20000] [--parallelism 256] [--latency-ms 50] [--sandboxes 328]
                              [--only io,sandbox] [--stub PATH]

Everything runs inside a private network and PID namespace (``unshare -rn -p -f --mount-proc``, then
``lo`` up), so the Ray clusters listen on loopback only and nothing started here outlives the script.
Clusters are small: 2 CPUs in all (one node with 2, or a head and a worker with 1 each), an 80 MB
object store, no dashboard.

- ``io``: a ``--rows``-row NeMo custom job (one chat task, a string-check metric) against the stand-in
  model server at ``--latency-ms``, ``--parallelism`` requests in flight. Printed per executor: the
  cluster's start-up, the job's wall time (submit to completed), samples/s, the most requests in
  flight at the stub (never above the job's parallelism), shards, nodes, and the overhead against
  the local executor.
- ``sandbox``: a CPU-bound HumanEval job (``--sandboxes`` programs: 164 problems x n_samples, the
  stub's answers as completions, each program run in the sandbox), local and on Ray, where each
  sandbox is a Ray task with one CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, SHARED, Stub, stub_path, table
from throughput import custom_config, write_rows

OBJECT_STORE = 80 * 1024 * 1024
INSIDE = "EVALSTACK_RAY_BENCH_INSIDE"


def settings(work: Path, executor: Any) -> Any:
    from evalstack.config import Settings

    return Settings.model_validate(
        {
            "db_url": f"sqlite:///{work / 'evalstack.db'}",
            "data_dir": work / "data",
            "data_roots": [work, SHARED / "data"],
            "embedded_model": False,
            "executor": executor,
        }
    )


async def run_job(config_file: Path, work: Path, executor: Any, model: str) -> dict[str, Any]:
    """One job through ``evalstack run``'s path; its wall time and record."""
    from rich.console import Console

    from evalstack.local_run import run_file

    started = time.perf_counter()
    outcome = await run_file(
        config_file, settings=settings(work, executor), model=model, limit=None, console=Console(quiet=True)
    )
    wall = time.perf_counter() - started
    if outcome.job.status != "completed":
        raise SystemExit(f"job {outcome.job.id} ended {outcome.job.status}: {outcome.job.error}")
    return {"wall": wall, "progress": outcome.job.progress}


def start_cluster(nodes: int) -> tuple[float, Callable[[], None]]:
    """A Ray cluster of ``nodes`` nodes with 2 CPUs in all; its start-up seconds and a stopper."""
    import ray

    started = time.perf_counter()
    if nodes == 1:
        ray.init(num_cpus=2, object_store_memory=OBJECT_STORE, include_dashboard=False, log_to_driver=False)
        return time.perf_counter() - started, ray.shutdown
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": OBJECT_STORE, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)

    def stop() -> None:
        ray.shutdown()
        cluster.shutdown()

    return time.perf_counter() - started, stop


async def compare(
    name: str,
    run: Callable[[Any], Awaitable[dict[str, Any]]],
    stub: Stub,
    shard_size: int,
    count: int,
) -> list[list[Any]]:
    """Run one job on local, Ray (1 node) and Ray (2 nodes); one table row each."""
    rows: list[list[Any]] = []
    local_wall = float("nan")
    for nodes in (0, 1, 2):
        startup, stop = (0.0, lambda: None) if nodes == 0 else start_cluster(nodes)
        executor: Any = "local" if nodes == 0 else {"type": "ray", "shard_size": shard_size}
        try:
            stub.reset()
            done = await run(executor)
        finally:
            stop()
        in_flight = stub.stats().get("max_in_flight")
        ray_info = done["progress"].get("executor") or {}
        if nodes == 0:
            local_wall = done["wall"]
        overhead = (
            "-" if nodes == 0 else f"{done['wall'] - local_wall:+.1f} s ({done['wall'] / local_wall:.2f}x)"
        )
        rows.append(
            [
                name,
                "local" if nodes == 0 else f"ray, {nodes} node{'s' if nodes > 1 else ''}",
                "-" if nodes == 0 else round(startup, 1),
                round(done["wall"], 1),
                round(count / done["wall"], 1),
                in_flight,
                ray_info.get("shards", "-"),
                ray_info.get("nodes", "-"),
                overhead,
            ]
        )
        print(" | ".join(str(cell) for cell in rows[-1]), flush=True)
    return rows


async def inside(args: argparse.Namespace) -> None:
    """The measurements, in a working folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as folder:
        await measure(args, Path(folder))


async def measure(args: argparse.Namespace, work: Path) -> None:
    results: list[list[Any]] = []
    with Stub(stub_path(args.stub), latency_ms=args.latency_ms) as stub:
        model = f"{stub.base_url}#stub"
        if "io" in args.only:
            data = work / "rows.jsonl"
            write_rows(data, args.rows)
            config_file = work / "io.json"
            config_file.write_text(json.dumps(custom_config(data, args.parallelism)), encoding="utf-8")

            async def io_job(executor: Any) -> dict[str, Any]:
                return await run_job(config_file, work, executor, model)

            results += await compare("io", io_job, stub, args.shard_size, args.rows)
        if "sandbox" in args.only:
            os.environ["EVALSTACK_DATA_DIR"] = str(SHARED / "data")
            n_samples = max(1, args.sandboxes // 164)
            config = {
                "type": "humaneval",
                "params": {
                    "parallelism": 16,
                    "extra": {"endpoint_type": "completions", "n_samples": n_samples},
                },
            }
            sandbox_file = work / "humaneval.json"
            sandbox_file.write_text(json.dumps(config), encoding="utf-8")

            async def sandbox_job(executor: Any) -> dict[str, Any]:
                return await run_job(sandbox_file, work, executor, model)

            results += await compare(
                "sandbox", sandbox_job, stub, max(1, 164 * n_samples // 4), 164 * n_samples
            )
    print()
    headers = ["job", "executor", "cluster start s", "job wall s", "samples/s", "max in flight"]
    headers += ["shards", "nodes", "overhead vs local"]
    print(table(headers, results))
    print(
        f"\nio: {args.rows} rows, parallelism {args.parallelism}, stub latency {args.latency_ms:g} ms; "
        "2 CPUs in all, whatever the node count."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--parallelism", type=int, default=256)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--shard-size", type=int, default=2500)
    parser.add_argument("--sandboxes", type=int, default=328)
    parser.add_argument("--only", type=lambda text: set(text.split(",")), default={"io", "sandbox"})
    parser.add_argument("--stub", default=None)
    args = parser.parse_args()
    if os.environ.get(INSIDE):
        asyncio.run(inside(args))
        return
    sys.path.insert(0, str(REPO))
    from tests.fakes.private_network import private_command, private_network_refusal

    refusal = private_network_refusal()
    if refusal is not None:
        raise SystemExit(f"ray_scale runs its clusters in a private network namespace only: {refusal}")
    private = tempfile.mkdtemp(prefix="ray-")  # Ray's token, sessions and sockets: this run's own
    env = {**os.environ, INSIDE: "1", "RAY_USAGE_STATS_ENABLED": "0", "HOME": private, "RAY_TMPDIR": private}
    command = private_command([sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]])
    try:
        code = subprocess.call(command, cwd=REPO, env=env)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
