"""The ``local`` eval provider (``inline::local``): Llama Stack benchmarks run on evalstack's own engine.

Jobs are ``JobRecord(front="llama_stack")`` run in the background by the ``JobWorker``; their
samples and results live in the store, so they survive a restart. Internal statuses map to Llama
Stack's through ``providers.nemo_shapes.STATUS_MAP``: created/pending -> scheduled,
running/cancelling -> in_progress, completed, failed, cancelled.

A benchmark whose ``metadata`` is a NeMo Evaluator config (it has a ``type``) runs as that config
with the candidate model as target. Its result has per-sample ``generations`` and
``scores[benchmark_id]`` whose ``aggregated_results`` is the NeMo results object (``tasks``,
``groups``) and whose ``generations`` and ``score_rows`` are shaped by ``providers.nemo_shapes``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evalstack.engine.compile import is_nemo_config
from evalstack.engine.llama_stack_plan import candidate_model, compile_llama_stack_plan
from evalstack.engine.runner import ERROR_KIND_INFERENCE, JobWorker, all_failed_reason
from evalstack.engine.spec import LlamaStackRunSpec, new_job, read_spec
from evalstack.engine.types import Benchmark, BenchmarkConfig, EvaluateResponse, ScoringResult
from evalstack.errors import InvalidInputError, NotFoundError, UnsupportedError, UpstreamError
from evalstack.providers.base import Job
from evalstack.providers.nemo_shapes import STATUS_MAP, generation_row, score_row
from evalstack.store.records import JobRecord, SampleRecord

if TYPE_CHECKING:
    from evalstack.config import Settings
    from evalstack.engine.scoring import ScoringService
    from evalstack.registry import Registry

logger = logging.getLogger(__name__)


class LocalEvalProvider:
    """Implements ``providers.base.EvalProvider`` on the local engine."""

    provider_type = "inline::local"

    def __init__(
        self,
        registry: Registry,
        worker: JobWorker,
        scoring: ScoringService,
        settings: Settings,
        *,
        provider_id: str = "local",
    ) -> None:
        self.registry = registry
        self.worker = worker
        self.scoring = scoring
        self.settings = settings
        self.provider_id = provider_id

    async def initialize(self) -> None:
        """Nothing to do: the worker is started by the server."""

    async def shutdown(self) -> None:
        """Nothing to do: the worker is stopped by the server."""

    # ---- benchmarks --------------------------------------------------------------------------

    async def register_benchmark(self, task_def: Benchmark) -> None:
        """Accept the benchmark (like the reference, unknown datasets or functions are not checked here)."""
        metadata = task_def.metadata
        if is_nemo_config(metadata) and not isinstance(metadata.get("type"), str):
            raise InvalidInputError(
                f"Benchmark '{task_def.identifier}': metadata.type must be a NeMo Evaluator config type "
                f"such as 'custom', got {metadata.get('type')!r}"
            )

    async def unregister_benchmark(self, benchmark_id: str) -> None:
        """Nothing to release: jobs and their samples stay in the store."""

    # ---- jobs --------------------------------------------------------------------------------

    async def run_eval(self, benchmark_id: str, benchmark_config: BenchmarkConfig) -> Job:
        """Create a job and return at once; the worker runs it in the background."""
        benchmark = await self.registry.get_benchmark(benchmark_id)
        # An unknown model is the caller's mistake: answer it now, as the reference does.
        await self.registry.resolve_model(candidate_model(benchmark_config))
        spec = LlamaStackRunSpec(benchmark=benchmark, benchmark_config=benchmark_config)
        record = await self.worker.submit(
            new_job(spec, benchmark_id=benchmark_id, provider_id=self.provider_id)
        )
        return Job(job_id=record.id, status=STATUS_MAP[record.status])

    async def _job(self, benchmark_id: str, job_id: str) -> JobRecord:
        job = await self.worker.store.get_job(job_id)
        if job is None or job.front != "llama_stack" or job.benchmark_id != benchmark_id:
            raise NotFoundError(f"Job {job_id} not found")
        return job

    async def job_status(self, benchmark_id: str, job_id: str) -> Job:
        job = await self._job(benchmark_id, job_id)
        return Job(job_id=job.id, status=STATUS_MAP[job.status])

    async def job_error(self, benchmark_id: str, job_id: str) -> str | None:
        """Why the job failed, or None when it did not fail."""
        job = await self._job(benchmark_id, job_id)
        return job.error if job.status == "failed" else None

    async def job_cancel(self, benchmark_id: str, job_id: str) -> None:
        await self._job(benchmark_id, job_id)
        await self.worker.cancel(job_id)

    async def job_result(self, benchmark_id: str, job_id: str) -> EvaluateResponse:
        job = await self._job(benchmark_id, job_id)
        if job.status == "failed":
            raise InvalidInputError(f"Job {job_id} failed: {job.error or 'no reason recorded'}")
        if job.status != "completed":
            raise InvalidInputError(f"Job {job_id} not completed. Status: {STATUS_MAP[job.status].value}")
        spec = read_spec(job)
        if isinstance(spec, LlamaStackRunSpec) and is_nemo_config(spec.benchmark.metadata):
            samples = await self.worker.store.read_samples(job_id)
            return EvaluateResponse(
                generations=[generation_row(s.task, s.item, s.output_text, s.error) for s in samples],
                scores={
                    benchmark_id: ScoringResult(
                        score_rows=[score_row(s.task, s.scores, s.error) for s in samples],
                        aggregated_results=job.result or {},
                    )
                },
            )
        if job.result is None:
            raise InvalidInputError(f"Job {job_id} completed but has no result recorded")
        return EvaluateResponse.model_validate(job.result)

    # ---- synchronous ----------------------------------------------------------------------------

    async def evaluate_rows(
        self,
        benchmark_id: str,
        input_rows: list[dict[str, Any]],
        scoring_functions: list[str],
        benchmark_config: BenchmarkConfig,
    ) -> EvaluateResponse:
        """Generate for ``input_rows`` and score with ``scoring_functions`` now; nothing is stored."""
        benchmark = await self.registry.get_benchmark(benchmark_id)
        if is_nemo_config(benchmark.metadata):
            raise UnsupportedError(
                f"evaluate_rows is not supported for benchmark '{benchmark_id}': its metadata is a NeMo "
                "Evaluator config, which brings its own dataset; use run_eval"
            )
        if not input_rows:
            raise InvalidInputError("input_rows is empty: give at least one row to evaluate")
        plan = await compile_llama_stack_plan(
            benchmark,
            benchmark_config,
            registry=self.registry,
            scoring=self.scoring,
            settings=self.settings,
            rows=input_rows,
            scoring_functions=scoring_functions,
        )
        samples = await self.worker.run_inline(plan)
        flat: Sequence[SampleRecord] = [s for group in samples.values() for s in group]
        reason = all_failed_reason(flat)
        if reason is not None:
            if all(s.extra.get("error_kind") == ERROR_KIND_INFERENCE for s in flat):
                raise UpstreamError(reason)
            raise InvalidInputError(reason)
        return EvaluateResponse.model_validate(plan.summarize(samples))
