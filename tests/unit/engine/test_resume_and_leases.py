"""What keeps work from being lost or run twice: resume per task, and who may take over a job's lease."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest

from evalstack.engine.plan import EvalPlan, SampleOutput, TaskPlan
from evalstack.engine.runner import JobWorker, owner_is_gone, worker_identity
from evalstack.inference.base import InferenceRequest, ModelEndpoint
from evalstack.inference.clients import ModelClientPool
from evalstack.store.records import JobRecord, SampleRecord, new_job_id
from evalstack.store.repository import Store
from tests.fakes.model_server import FakeModelServer, prompt_of

ROWS_PER_TASK = 12
# Two tasks with their own questions, so each request names its task: "t0-Q3" is task t0's row 3.
TASKS = ("t0", "t1")


class EndsWithIndex:
    """1.0 when the model's answer is the row's question (the fake server echoes it)."""

    name = "echo"

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        return {"score": 1.0 if output.text == item["q"] else 0.0}


def summarize(samples: Mapping[str, Any]) -> dict[str, Any]:
    return {
        task: {"indices": [s.index for s in rows], "outputs": [s.output_text for s in rows]}
        for task, rows in samples.items()
    }


def two_task_compiler(base_url: str) -> Any:
    endpoint = ModelEndpoint(kind="openai", model="fake", base_url=base_url)

    async def compile_job(job: JobRecord) -> EvalPlan:
        def rows_of(task: str) -> Any:
            async def rows() -> list[dict[str, Any]]:
                return [{"q": f"{task}-Q{i}"} for i in range(ROWS_PER_TASK)]

            return rows

        def build(row: Mapping[str, Any]) -> InferenceRequest:
            return InferenceRequest(kind="completion", prompt=row["q"], params={"max_tokens": 8})

        tasks = [
            TaskPlan(name=task, rows=rows_of(task), metrics=[EndsWithIndex()], build_request=build)
            for task in TASKS
        ]
        return EvalPlan(tasks=tasks, summarize=summarize, model=endpoint, parallelism=3, max_retries=0)

    return compile_job


def recorded(task: str, index: int) -> SampleRecord:
    question = f"{task}-Q{index}"
    return SampleRecord(task=task, index=index, item={"q": question}, output_text=question, scores={})


async def test_resume_asks_each_task_for_exactly_its_unrecorded_rows(store: Store) -> None:
    done = {"t0": {0, 1, 2, 7}, "t1": {3, 4, 5, 6, 11}}  # different sets: one task's must not leak
    job = await store.create_job(JobRecord(id=new_job_id(), front="nemo", spec={}))
    await store.add_samples(job.id, [recorded(task, i) for task, indices in done.items() for i in indices])
    await store.update_job(job.id, status="running")  # as a crash leaves it

    with FakeModelServer(answer="echo") as server:
        pool = ModelClientPool()
        worker = JobWorker(store, pool, two_task_compiler(server.base_url))
        await worker.start()  # resumes the interrupted job
        finished = await worker.wait(job.id, timeout=20)
        await worker.stop()
        await pool.aclose()
        asked = sorted(prompt_of(body) for body in server.requests)

    assert finished.status == "completed", finished.error
    expected = sorted(f"{task}-Q{i}" for task in TASKS for i in range(ROWS_PER_TASK) if i not in done[task])
    assert asked == expected
    assert finished.result == {
        task: {
            "indices": list(range(ROWS_PER_TASK)),
            "outputs": [f"{task}-Q{i}" for i in range(ROWS_PER_TASK)],
        }
        for task in TASKS
    }
    assert finished.progress["samples_processed"] == finished.progress["samples_total"] == 2 * ROWS_PER_TASK


# ---- leases --------------------------------------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


HOST = socket.gethostname()


@pytest.mark.parametrize(
    ("owner", "gone"),
    [
        (lambda: f"{HOST}:{os.getpid()}:abc", False),  # this very process
        (lambda: f"{HOST}:{dead_pid()}:abc", True),  # a process of this host that exited
        (lambda: f"{HOST}:1:abc", False),  # a live process of this host (init)
        (lambda: f"another-host.example:{dead_pid()}:abc", False),  # this host's process table says nothing
        (lambda: f"another-host.example:{os.getpid()}:abc", False),
        (lambda: f"{HOST}:not-a-pid:abc", False),  # malformed: never taken as gone
        (lambda: f"{HOST}:-5:abc", False),
        (lambda: f"{HOST}", False),
        (lambda: "", False),
    ],
    ids=[
        "own pid",
        "dead pid",
        "live pid",
        "other host, dead pid",
        "other host",
        "bad pid",
        "negative",
        "no pid",
        "empty",
    ],
)
def test_owner_is_gone(owner: Any, gone: bool) -> None:
    assert owner_is_gone(owner()) is gone


def test_a_live_child_is_not_gone_and_is_left_running() -> None:
    # Default handling for the signals a caller may have left ignored (nohup), so any real signal ends it.
    script = (
        "import signal, time\n"
        "for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):\n"
        "    signal.signal(s, signal.SIG_DFL)\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    try:
        assert owner_is_gone(f"{HOST}:{child.pid}:abc") is False
        assert owner_is_gone(f"{HOST}:{child.pid}") is False
        with pytest.raises(
            subprocess.TimeoutExpired
        ):  # still running: only probed (signal 0), never signalled
            child.wait(timeout=0.5)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert owner_is_gone(f"{HOST}:{child.pid}:abc") is True
    assert owner_is_gone(f"{HOST}:{child.pid}") is True  # an owner without a token names its process too


def test_a_process_we_may_not_signal_is_not_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(pid: int, signal: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", refuse)
    assert owner_is_gone(f"{HOST}:{os.getpid() + 1}:abc") is False


def test_worker_identity_names_this_host_and_process() -> None:
    host, pid, token = worker_identity().split(":")
    assert (host, int(pid)) == (HOST, os.getpid())
    assert len(token) == 8 and worker_identity() != worker_identity()


@pytest.mark.parametrize(
    ("holder", "taken_over"),
    [
        (lambda: f"{HOST}:{dead_pid()}:dead1234", True),
        (lambda: f"another-host.example:{dead_pid()}:live1234", False),
        (lambda: f"{HOST}:1:live1234", False),
    ],
    ids=["dead local holder", "holder on another host", "live local holder"],
)
async def test_a_worker_takes_over_only_a_lease_whose_holder_is_known_dead(
    store: Store, holder: Any, taken_over: bool
) -> None:
    job = await store.create_job(JobRecord(id=new_job_id(), front="nemo", spec={}))
    await store.update_job(job.id, status="running")
    assert await store.claim_job(job.id, holder(), ttl=60.0)  # a fresh lease, far from lapsing

    with FakeModelServer(answer="echo") as server:
        pool = ModelClientPool()
        worker = JobWorker(store, pool, two_task_compiler(server.base_url), lease_ttl=60.0)
        await worker.start()
        record = await worker.wait(job.id, timeout=20 if taken_over else 1.0)
        await worker.stop()
        await pool.aclose()
        requests = len(server.requests)

    if taken_over:
        assert record.status == "completed" and requests == 2 * ROWS_PER_TASK
    else:  # the live holder keeps its job: nothing was asked of the model, nothing changed
        assert record.status == "running" and requests == 0
