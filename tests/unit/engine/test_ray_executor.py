"""The Ray executor's parts that need no cluster: shards, concurrency shares, the plan that travels
(sealed: no API key in what Ray stores), the model replicas' resource requests and load balancing, the
shard actor's pipeline and batches (run in-process), sandbox routing, and lazy imports."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle
import subprocess
import sys
from typing import Any

import cloudpickle
import pytest

from evalstack.egress import EgressPolicy
from evalstack.engine.benchmarks import sandbox
from evalstack.engine.benchmarks.sandbox import RunResult, program_runner, run_program
from evalstack.engine.metrics.nemo import nemo_metric
from evalstack.engine.metrics.nemo_base import MetricDeps
from evalstack.engine.runner import run_plan
from evalstack.engine.runner.ray_executor import (
    cut_shards,
    model_replica_options,
    shard_plan,
    split_parallelism,
)
from evalstack.engine.runner.ray_shard import ReplicaClient, ShardRunner
from evalstack.engine.runner.sealed_plan import seal_plan, unseal_plan
from evalstack.errors import EvalstackError
from evalstack.inference.base import InferenceError, InferenceRequest, InferenceResult, ModelEndpoint
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
    batches = [batch.samples async for batch in runner.run(plan, shard, parallelism=4, batch_size=8)]
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


KEYED = ModelEndpoint(kind="openai", model="fake", base_url="http://fake.invalid/v1", api_key="sk-model-4242")
JUDGE = {
    "type": "llm-judge",
    "params": {
        "model": {
            "api_endpoint": {"url": "http://judge.invalid/v1", "model_id": "j", "api_key": "sk-judge-77"}
        },
        "template": {"messages": [{"role": "user", "content": "Rate: {{ sample.output_text }}"}]},
        "scores": {"rating": {"type": "int", "parser": {"type": "regex", "pattern": r"(\d+)"}}},
    },
}


async def keyed_plan(pool: ModelClientPool) -> Any:
    """A plan whose model and judge both have API keys."""
    plan = dataclasses.replace(make_plan(make_rows(3)), model=KEYED)
    judge = await nemo_metric("judge", JUDGE, MetricDeps(clients=pool))
    plan.tasks[0].metrics = [*plan.tasks[0].metrics, judge]
    return shard_plan(plan)


async def test_a_sealed_plan_holds_no_api_key_and_unseals_with_the_keys_sent_apart() -> None:
    pool = ModelClientPool(egress=EgressPolicy(deny=["169.254.0.0/16"]))
    try:
        sealed, keys = seal_plan(await keyed_plan(pool))
    finally:
        await pool.aclose()
    travelled = pickle.loads(cloudpickle.dumps(sealed))  # what Ray's object store holds
    assert b"sk-model-4242" not in travelled.blob and b"sk-judge-77" not in travelled.blob
    assert sorted(keys.values()) == ["sk-judge-77", "sk-model-4242"]
    plan = unseal_plan(travelled, keys)
    assert plan.model == KEYED
    judge = plan.tasks[0].metrics[1]
    assert judge.client.endpoint.api_key == "sk-judge-77"  # type: ignore[attr-defined]  # the judge's endpoint
    assert [str(entry) for entry in judge.client._egress.deny] == ["169.254.0.0/16"]  # type: ignore[attr-defined]
    await judge.client.aclose()  # type: ignore[attr-defined]
    with pytest.raises(EvalstackError, match="did not come with its plan"):
        unseal_plan(travelled, {})


def test_a_key_held_outside_an_endpoint_is_refused_rather_than_sent() -> None:
    plan = make_plan(make_rows(2))
    plan = dataclasses.replace(plan, model=KEYED)
    leaky = dataclasses.replace(plan.tasks[0], name="sk-model-4242")  # the key, somewhere else
    with pytest.raises(EvalstackError, match="outside the endpoint"):
        seal_plan(dataclasses.replace(plan, tasks=[leaky]))


async def test_a_shard_actor_runs_a_sealed_plan_with_the_keys_it_is_given() -> None:
    client = FakeClient()
    pool = FakePool(client)
    runner = ShardRunner()
    runner.clients = pool  # type: ignore[assignment]
    plan = dataclasses.replace(make_plan(make_rows(6)), model=KEYED)
    sealed, keys = seal_plan(shard_plan(plan))
    shard = {"t0": [(i, {"q": f"Q{i}", "expected": f"A{i}"}) for i in range(6)]}
    batches = [batch.samples async for batch in runner.run(sealed, shard, parallelism=2, keys=keys)]
    assert sorted(s.index for batch in batches for s in batch) == list(range(6))
    assert {request["endpoint"].api_key for request in pool.requests} == {"sk-model-4242"}


def test_a_model_replica_asks_for_a_whole_gpu_where_the_cluster_has_gpus() -> None:
    options = model_replica_options({"CPU": 32.0, "GPU": 4.0, "memory": 1e11}, replicas=4)
    assert options["num_gpus"] == 1 and options["num_cpus"] == 1
    assert options["scheduling_strategy"] == "SPREAD"


def test_a_model_replica_asks_for_one_cpu_and_no_gpu_on_a_cpu_cluster() -> None:
    options = model_replica_options({"CPU": 2.0, "memory": 1e9}, replicas=2)
    assert options["num_cpus"] == 1 and "num_gpus" not in options


@pytest.mark.parametrize(
    ("resources", "what"), [({"CPU": 8.0, "GPU": 2.0}, "2 GPUs"), ({"CPU": 2.0}, "2 CPUs")]
)
def test_more_replicas_than_the_cluster_can_hold_is_a_clear_error(
    resources: dict[str, float], what: str
) -> None:
    with pytest.raises(EvalstackError, match=f"model_replicas is 3 but the Ray cluster has {what}"):
        model_replica_options(resources, replicas=3)


class FakeReplica:
    """Stands in for a replica actor handle: ``generate.remote(request)`` is awaitable; a dead one
    raises as Ray does for an actor that died."""

    def __init__(self, name: str, latency: float, dead: bool = False) -> None:
        self.name, self.latency, self.answered, self.asked, self.dead = name, latency, 0, 0, dead
        self.generate = self

    def remote(self, request: InferenceRequest) -> Any:
        async def answer() -> InferenceResult:
            self.asked += 1
            await asyncio.sleep(self.latency)
            if self.dead:
                import ray

                raise ray.exceptions.ActorDiedError()
            self.answered += 1
            return InferenceResult(f"{self.name}:{request.prompt}")

        return answer()


async def test_replica_requests_go_to_the_least_busy_replica() -> None:
    even = [FakeReplica("a", 0.01), FakeReplica("b", 0.01)]
    client = ReplicaClient(even)
    answers = await asyncio.gather(
        *(client.generate(InferenceRequest(kind="completion", prompt=str(n))) for n in range(10))
    )
    assert [replica.answered for replica in even] == [5, 5]
    assert all(answer.text.endswith(f":{n}") for n, answer in enumerate(answers))
    slow, fast = FakeReplica("slow", 0.2), FakeReplica("fast", 0.0)
    client = ReplicaClient([slow, fast])
    sent = []
    for n in range(6):  # one at a time: the slow one is busy, so the fast one answers the rest
        sent.append(
            asyncio.ensure_future(client.generate(InferenceRequest(kind="completion", prompt=str(n))))
        )
        await asyncio.sleep(0.01)
    await asyncio.gather(*sent)
    assert (slow.answered, fast.answered) == (1, 5)


async def test_a_replica_that_died_is_left_out_and_its_requests_go_to_the_others() -> None:
    pytest.importorskip("ray")
    dead, living = FakeReplica("dead", 0.0, dead=True), FakeReplica("living", 0.01)
    client = ReplicaClient([dead, living])
    answers = await asyncio.gather(
        *(client.generate(InferenceRequest(kind="completion", prompt=str(n))) for n in range(8))
    )
    assert [answer.text for answer in answers] == [f"living:{n}" for n in range(8)]
    asked_before_known = dead.asked  # requests already sent to it when it died went to the other
    await client.generate(InferenceRequest(kind="completion", prompt="later"))
    assert dead.asked == asked_before_known and living.answered == 9  # then never asked again
    alone = ReplicaClient([FakeReplica("gone", 0.0, dead=True)])
    with pytest.raises(InferenceError, match="every replica of the embedded model is gone"):
        await alone.generate(InferenceRequest(kind="completion", prompt="x"))
