"""The Ray executor's parts that need no cluster: shards, concurrency shares, the plan that travels,
the shard actor's pipeline and batches (run in-process), sandbox routing, and lazy imports."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import cloudpickle
import pytest

from evalstack.engine.benchmarks import sandbox
from evalstack.engine.benchmarks.sandbox import RunResult, program_runner, run_program
from evalstack.engine.runner import run_plan
from evalstack.engine.runner.ray_executor import cut_shards, shard_plan, split_parallelism
from evalstack.engine.runner.ray_shard import ShardRunner
from evalstack.errors import EvalstackError
from evalstack.inference.clients import ModelClientPool
from evalstack.store.records import SampleRecord
from tests.unit.engine.test_runner import ENDPOINT, FakeClient, FakePool, make_plan, make_rows


def test_shards_keep_row_order_and_cover_every_item_once() -> None:
    items = [("t0", i, {"q": f"Q{i}"}) for i in range(10)] + [("t1", 3, {"q": "Q3"})]
    shards = cut_shards(items, 4)
    assert [len(shard) for shard in shards] == [4, 4, 3]
    assert [item for shard in shards for item in shard] == items
    assert cut_shards([], 4) == []


@pytest.mark.parametrize(("parallelism", "actors"), [(16, 2), (17, 3), (3, 8), (1, 1), (64, 5)])
def test_parallelism_split_among_actors_never_exceeds_the_jobs(parallelism: int, actors: int) -> None:
    shares = split_parallelism(parallelism, actors)
    assert sum(shares) == parallelism
    assert len(shares) == min(actors, parallelism)
    assert min(shares) >= 1 and max(shares) - min(shares) <= 1


async def test_the_plan_sent_to_actors_carries_requests_and_metrics_but_no_rows_or_summary() -> None:
    plan = make_plan(make_rows(3), parallelism=6)
    travelling = pickle.loads(cloudpickle.dumps(shard_plan(plan)))
    task = travelling.tasks[0]
    assert task.build_request is not None and task.build_request({"q": "Q1"}).prompt == "Q1"
    assert [metric.name for metric in task.metrics] == ["exact"]
    assert travelling.parallelism == 6 and travelling.model == plan.model
    with pytest.raises(EvalstackError, match="travel with"):
        await task.rows()
    with pytest.raises(EvalstackError, match="coordinator"):
        travelling.summarize({})


async def test_a_client_pool_travels_empty_so_the_receiver_opens_its_own_clients() -> None:
    pool = ModelClientPool()
    client = pool.get(ENDPOINT, max_connections=4)
    try:
        copy = pickle.loads(cloudpickle.dumps(pool))
        fresh = copy.get(ENDPOINT, max_connections=4)
        assert fresh is not client and isinstance(fresh, type(client))
        assert copy.breaker_settings == pool.breaker_settings
        await copy.aclose()
    finally:
        await pool.aclose()


async def test_run_plan_runs_exactly_the_given_rows_with_their_own_indices() -> None:
    plan = make_plan(make_rows(20), parallelism=3)
    rows = {"t0": [(i, {"q": f"Q{i}", "expected": f"A{i}"}) for i in (4, 5, 11, 19)]}
    seen: list[SampleRecord] = []

    async def sink(sample: SampleRecord) -> None:
        seen.append(sample)

    progress = await run_plan(plan, FakePool(FakeClient()), sink=sink, rows=rows, skip={"t0": {5}})
    assert sorted(s.index for s in seen) == [4, 11, 19]
    assert all(s.scores["exact"]["score"] == 1.0 for s in seen)
    assert progress.samples_total == 4 and progress.samples_processed == 4
    assert progress.task_status == {"t0": "completed"}


async def test_a_shard_actor_streams_its_samples_in_batches_within_its_share_of_parallelism() -> None:
    client = FakeClient(latency=0.01)
    runner = ShardRunner()
    runner.clients = FakePool(client)  # type: ignore[assignment]
    plan = shard_plan(make_plan(make_rows(50), parallelism=16))
    shard = {"t0": [(i, {"q": f"Q{i}", "expected": f"A{i}"}) for i in range(10, 40)]}
    batches = [batch async for batch in runner.run(plan, shard, parallelism=4, batch_size=8)]
    assert all(0 < len(batch) <= 8 for batch in batches)
    assert sorted(s.index for batch in batches for s in batch) == list(range(10, 40))
    assert client.max_in_flight == 4  # its share, not the job's 16


async def test_sandboxed_programs_go_to_the_program_runner_when_one_is_set() -> None:
    sent: list[tuple[str, float, int]] = []

    async def elsewhere(source: str, timeout: float, memory_bytes: int) -> RunResult:
        sent.append((source, timeout, memory_bytes))
        return RunResult(True, "passed", 0, "ran elsewhere")

    token = program_runner.set(elsewhere)
    try:
        result = await run_program("raise SystemExit(3)", timeout=2)
    finally:
        program_runner.reset(token)
    assert result.output == "ran elsewhere" and sent == [
        ("raise SystemExit(3)", 2, sandbox.MEMORY_LIMIT_BYTES)
    ]
    here = await run_program("raise SystemExit(3)", timeout=5)  # unset again: runs in this machine's sandbox
    assert here.status == "failed" and here.returncode == 3


def test_choosing_the_ray_executor_does_not_import_ray_until_a_job_runs(tmp_path: Any) -> None:
    code = (
        "import sys\n"
        "from evalstack.config import Settings\n"
        "from evalstack.services import build_services\n"
        f"services = build_services(Settings(data_dir={str(tmp_path)!r}, executor='ray'))\n"
        "print(type(services.worker.executor).__name__, 'ray' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["RayExecutor", "False"]
