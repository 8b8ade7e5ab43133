"""The Ray executor on real local Ray clusters, each inside a private network namespace.

Every scenario (``ray_scenarios.py``) runs in ``unshare -rn -p -f --mount-proc``: loopback is the only
interface, so a multi-node cluster sends nothing off the machine, and `ray stop` reaches only the
scenario's own processes. Clusters are small (2 CPUs in all, an 80 MB object store, no dashboard).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from tests.fakes.embedded import missing_embedded_model
from tests.fakes.private_network import private_network_refusal, run_private

from evalstack.inference.embedded import ENV_CACHE, default_cache_dir

pytestmark = pytest.mark.slow
DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def run_scenario(name: str, tmp_path: Path) -> dict[str, Any]:
    """Run one scenario in its own namespace and return what it observed."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (pip install 'evalstack[ray]')")
    refusal = private_network_refusal()
    if refusal is not None:
        pytest.skip(f"Ray tests run only inside a private network namespace: {refusal}")
    # Ray's files (its token, sessions, sockets, the address of the last cluster) stay the scenario's own;
    # the sockets need a short path.
    ray_tmp = tempfile.mkdtemp(prefix="ray-")
    env = {**os.environ, "HOME": str(tmp_path), "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    converted = default_cache_dir()  # the embedded model converted once, as the user's HOME keeps it
    env[ENV_CACHE] = str(converted) if converted is not None else "off"
    try:
        command = [sys.executable, "-m", "tests.e2e.ray_scenarios", name, str(tmp_path / name)]
        done = run_private(command, timeout=540, env=env)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, (
        f"scenario {name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    )
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def test_a_5000_row_job_on_ray_stores_the_same_samples_and_results_as_the_local_executor(
    tmp_path: Path,
) -> None:
    seen = run_scenario("equal", tmp_path)
    assert seen["statuses"] == ["completed", "completed"], seen["errors"]
    assert seen["sample_count"] == [5000, 5000]
    assert seen["same_samples"] and seen["same_result"]
    assert seen["result_keys"] == ["basic::equality", "basic::subset_of"]
    assert seen["local_executor"] is None  # the local executor's record is as before
    assert seen["executor"] == {"type": "ray", "shards": 5, "nodes": 1, "actors": 2}


def test_removing_the_worker_node_mid_job_still_stores_every_sample_exactly_once(tmp_path: Path) -> None:
    seen = run_scenario("node_loss", tmp_path)
    assert seen["status"] == "completed", seen["error"]
    assert seen["removed_at"] < seen["rows"]  # the node went while work remained
    assert seen["stored"] == seen["distinct"] == seen["processed"] == seen["rows"]
    assert seen["indices_complete"]
    executor = seen["executor"]
    assert executor["nodes"] == 2 and executor["shards"] == 12
    assert executor["actors"] >= 3  # the lost actor's shard ran again on a new one


def test_cancelling_a_ray_job_stops_every_actor_and_every_request(tmp_path: Path) -> None:
    seen = run_scenario("cancel", tmp_path)
    assert seen["status"] == "cancelled"
    assert seen["alive_before"] == 2
    assert seen["gone_after"] == [True, True]  # ray.get_actor finds neither any more
    assert seen["listed_after"] == []
    assert seen["requests_after_cancel"] == 0
    assert 0 < seen["stored"] < 4000  # finished samples were kept


def test_a_humaneval_jobs_sandboxes_run_as_ray_tasks_on_the_worker_node(tmp_path: Path) -> None:
    if not (DATA_DIR / "humaneval" / "HumanEval.jsonl.gz").is_file():
        pytest.skip("benchmark data humaneval/HumanEval.jsonl.gz not found under ../shared/data")
    seen = run_scenario("humaneval", tmp_path)
    assert seen["status"] == "completed", seen["error"]
    # The head node has no CPU, so only the worker node can run a sandbox task (num_cpus=1).
    assert seen["passed"] == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    # Each sandbox task reports the node it ran on: all six on the worker node (2 CPUs), none on the
    # coordinator's node (the head, 0 CPUs).
    assert seen["runs_by_node_cpus"] == [[2, 6]]
    assert seen["runs_on_the_coordinators_node"] == 0
    assert seen["executor"]["shards"] == 2


def test_the_response_cache_answers_before_sharding_and_keeps_what_the_actors_asked(tmp_path: Path) -> None:
    seen = run_scenario("cache", tmp_path)
    assert seen["statuses"] == ["completed"] * 3, seen["errors"]
    assert seen["counts"] == [300, 600, 600]
    # Ray, 300 rows: all asked; Ray, 600 rows: the first 300 from the cache, never sent to an actor;
    # local, 600 rows: every answer from the cache (the second run's actors' answers were kept).
    assert seen["requests"] == [300, 300, 0]
    assert seen["cache"] == [
        {"hits": 0, "misses": 300},
        {"hits": 300, "misses": 300},
        {"hits": 600, "misses": 0},
    ]
    assert seen["same_samples"] and seen["same_result"]


@pytest.mark.embedded
def test_an_embedded_model_job_on_ray_stores_the_same_samples_with_two_replicas_each_loaded_once(
    tmp_path: Path,
) -> None:
    missing = missing_embedded_model()
    if missing is not None:
        pytest.skip(f"embedded model unavailable: {missing}")
    seen = run_scenario("embedded", tmp_path)
    assert seen["statuses"] == ["completed", "completed"], seen["errors"]
    assert seen["sample_count"] == [24, 24] and seen["outputs"] == 24
    assert seen["same_samples"], seen["differences"]
    assert seen["same_result"]
    replicas = seen["executor"]["model_replicas"]
    assert [replica["loads"] for replica in replicas] == [1, 1]  # each replica loaded the model once
    assert all(replica["requests"] > 0 for replica in replicas)  # and both answered
    assert sum(replica["requests"] for replica in replicas) == 24
    # On a cluster with GPUs each replica asks for one: Ray gave them one each, a different one.
    assert sorted(gpu for replica in replicas for gpu in replica["gpus"]) == ["0", "1"]
    assert seen["cuda"] or {replica["device"] for replica in replicas} == {"cpu"}  # no CUDA: the CPU


def test_evalstack_run_executor_ray_against_a_cluster_started_with_ray_start(tmp_path: Path) -> None:
    seen = run_scenario("cli", tmp_path)
    assert seen["returncode"] == 0, seen["stderr"]
    assert seen["status"] == "completed"
    assert seen["executor"] == {"type": "ray", "shards": 3, "nodes": 2, "actors": 2}
    accuracy = {line["source"]: line["value"] for line in seen["summary"]}
    assert accuracy == {"basic::equality": 0.5, "basic::subset_of": 0.5}
    assert seen["requests"] == 600
    # The registered model's API key reached every request from the actors, and no file Ray wrote (logs,
    # session data, spilled objects) holds it: the plan travels sealed, the key apart.
    assert seen["authorized_requests"] == 600
    assert seen["ray_files"] > 0 and seen["files_with_the_key"] == []
