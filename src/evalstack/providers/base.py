"""The eval provider interface. The API layer only routes calls to a provider implementing it."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from evalstack.engine.types import Benchmark, BenchmarkConfig, EvaluateResponse


class JobStatus(StrEnum):
    """A job's status as the Llama Stack Eval API names it."""

    completed = "completed"
    in_progress = "in_progress"
    failed = "failed"
    scheduled = "scheduled"
    cancelled = "cancelled"


class Job(BaseModel):
    """A provider's answer about a job: its id and status."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    status: JobStatus


class EvalProvider(Protocol):
    """An eval provider as the Llama Stack Eval API sees it.

    Errors are raised as ``evalstack.errors`` types (NotFoundError, InvalidInputError,
    UnsupportedError, UpstreamError), never as HTTP responses.
    """

    provider_id: str
    provider_type: str

    async def initialize(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def register_benchmark(self, task_def: Benchmark) -> None: ...

    async def unregister_benchmark(self, benchmark_id: str) -> None: ...

    async def run_eval(self, benchmark_id: str, benchmark_config: BenchmarkConfig) -> Job: ...

    async def evaluate_rows(
        self,
        benchmark_id: str,
        input_rows: list[dict[str, Any]],
        scoring_functions: list[str],
        benchmark_config: BenchmarkConfig,
    ) -> EvaluateResponse: ...

    async def job_status(self, benchmark_id: str, job_id: str) -> Job: ...

    async def job_cancel(self, benchmark_id: str, job_id: str) -> None: ...

    async def job_result(self, benchmark_id: str, job_id: str) -> EvaluateResponse: ...
