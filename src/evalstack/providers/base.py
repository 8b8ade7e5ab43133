"""The eval provider interface. The API layer only routes calls to a provider implementing it."""

from __future__ import annotations

from typing import Any, Protocol

from evalstack.api.llama_stack.models import Benchmark, BenchmarkConfig, EvaluateResponse, Job


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
