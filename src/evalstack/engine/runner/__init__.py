"""The job runner, split by concern.

- ``pipeline``: ``run_plan``, the pipelined rows -> request -> inference -> scoring -> sink loop.
- ``writer``: ``BatchWriter``, the single batched writer of one job's samples.
- ``leases``: who holds a job's lease and whether that holder is still alive.
- ``worker``: ``JobWorker``, which owns job lifecycles in the store and resumes them after a restart.
"""

from evalstack.engine.ports import ClientSource, JobStore
from evalstack.engine.runner.leases import owner_is_gone, worker_identity
from evalstack.engine.runner.pipeline import (
    ERROR_KIND_INFERENCE,
    ERROR_KIND_INVALID,
    ProgressCallback,
    RunProgress,
    Sink,
    TaskState,
    run_plan,
)
from evalstack.engine.runner.worker import (
    ACTIVE_STATUSES,
    CompileJob,
    JobProgressListener,
    JobWorker,
    all_failed_reason,
    group_samples,
)
from evalstack.engine.runner.writer import BatchWriter

__all__ = [
    "ACTIVE_STATUSES",
    "ERROR_KIND_INFERENCE",
    "ERROR_KIND_INVALID",
    "BatchWriter",
    "ClientSource",
    "CompileJob",
    "JobProgressListener",
    "JobStore",
    "JobWorker",
    "ProgressCallback",
    "RunProgress",
    "Sink",
    "TaskState",
    "all_failed_reason",
    "group_samples",
    "owner_is_gone",
    "run_plan",
    "worker_identity",
]
