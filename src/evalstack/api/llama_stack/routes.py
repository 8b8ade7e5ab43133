"""Routers of the Llama Stack Benchmarks, Eval, Scoring, ScoringFunctions, Datasets(IO) and Models APIs.

Mounted under both prefix families (see :func:`include_llama_stack_api`):

- ``/v1``: everything, for 0.2.x clients and the NVIDIA notebooks;
- ``/v1alpha``: benchmarks and eval, ``/v1beta``: datasets and datasetio (0.7.x clients);
  0.7.x clients use ``/v1`` for scoring, scoring functions and models.

Ids may contain ``/`` and ``:``; 0.2.x clients send them raw, 0.7.x clients percent-encode ``/``
as ``%2F``. Both work: id parameters are ``{x:path}`` and :class:`LlamaStackRoute` routes by the raw
path when a ``/`` was encoded. The routes for ``.../jobs/{job_id}/result``, ``.../jobs/{job_id}``,
``.../jobs/{job_id}/cancel`` and ``.../results`` (aliases from the original NVIDIA provider's README:
cancel by POST, and the latest job's result), ``.../jobs`` and ``.../evaluations`` come before the
bare ``/eval/benchmarks/{benchmark_id}``.

Registering a dataset or benchmark id again replaces it under ``/v1`` (0.2.x servers answer 200);
under ``/v1alpha`` and ``/v1beta`` the same registration again is a no-op and a different one a 400
"already exists", as 0.7.x servers answer. A scoring function id is never registered twice (400),
as both generations' llm-as-judge provider refuses it.

``NotFoundError`` gives 404 on the models and datasets routes (as the 0.7 reference), and 400 on the
benchmark, eval, job, scoring, scoring-function and dataset-rows routes (as the reference's
``ValueError``); ``run_eval`` and ``evaluate_rows`` give 404 for an unknown candidate model (the
benchmark itself was checked before, with a 400 "not served by provider").
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Query, Response

from evalstack import __version__
from evalstack.api.llama_stack import convert
from evalstack.api.llama_stack.convert import data_list, public
from evalstack.api.llama_stack.errors import LlamaStackRoute, not_found_status
from evalstack.api.llama_stack.models import (
    AppendRowsRequest,
    Benchmark,
    Dataset,
    EvaluateResponse,
    EvaluateRowsRequest,
    Job,
    Model,
    PaginatedResponse,
    ProviderInfo,
    RegisterBenchmarkRequest,
    RegisterDatasetRequest,
    RegisterModelRequest,
    RegisterScoringFnRequest,
    RowsDataSource,
    RunEvalRequest,
    ScoreBatchRequest,
    ScoreBatchResponse,
    ScoreRequest,
    ScoreResponse,
    ScoringFn,
    ScoringResult,
)
from evalstack.errors import InvalidInputError, NotFoundError
from evalstack.limits import MAX_ROW_INDEX

if TYPE_CHECKING:
    from evalstack.config import Settings
    from evalstack.engine.scoring import ScoringService
    from evalstack.providers.base import EvalProvider
    from evalstack.registry import Registry
    from evalstack.services import Services

logger = logging.getLogger(__name__)


def _router() -> APIRouter:
    return APIRouter(route_class=LlamaStackRoute, strict_content_type=False)


# ---- provider routing ---------------------------------------------------------------------------


class ProviderRouter:
    """Chooses the eval provider of a benchmark, as the Llama Stack routing table does."""

    def __init__(self, providers: Mapping[str, EvalProvider], registry: Registry) -> None:
        self.providers = providers
        self._registry = registry

    def default_id(self) -> str:
        """The provider named in messages when a benchmark is unknown."""
        ids = list(self.providers)
        if "local" in ids or not ids:
            return "local"
        return ids[0]

    def for_registration(self, provider_id: str | None) -> EvalProvider:
        """The provider that will serve a new benchmark."""
        providers = self.providers
        if provider_id is None:
            if len(providers) == 1:
                return next(iter(providers.values()))
            if not providers:
                raise InvalidInputError("No eval provider is configured on this server.")
            raise InvalidInputError(
                "No provider specified and multiple providers available. Please specify a provider_id."
            )
        provider = providers.get(provider_id)
        if provider is None:
            available = ", ".join(f"'{p}'" for p in providers) or "none"
            raise InvalidInputError(
                f"Provider '{provider_id}' not found. Available eval providers: {available}."
            )
        return provider

    async def for_benchmark(self, benchmark_id: str) -> tuple[EvalProvider, Benchmark]:
        """The provider serving a registered benchmark; 400 "not served by provider" otherwise."""
        try:
            benchmark = await self._registry.get_benchmark(benchmark_id)
        except NotFoundError:
            raise InvalidInputError(self._not_served(benchmark_id, self.default_id())) from None
        provider = self.providers.get(benchmark.provider_id)
        if provider is None:
            raise InvalidInputError(self._not_served(benchmark_id, benchmark.provider_id))
        return provider, benchmark

    @staticmethod
    def _not_served(benchmark_id: str, provider_id: str) -> str:
        return (
            f"Benchmark `{benchmark_id}` not served by provider: `{provider_id}`. "
            "Make sure there is an Eval provider serving this benchmark."
        )


# ---- benchmarks and eval ------------------------------------------------------------------------


def benchmarks_router(
    registry: Registry, providers: Mapping[str, EvalProvider], *, replace_existing: bool
) -> APIRouter:
    """Benchmarks and Eval routes (``/eval/benchmarks...``) under ``/v1`` or ``/v1alpha``.

    ``replace_existing``: registering an existing id replaces it (0.2.x), or else must match it (0.7.x).
    """
    router = _router()
    routing = ProviderRouter(providers, registry)

    @router.get("/eval/benchmarks", tags=["benchmarks"])
    async def list_benchmarks() -> dict[str, Any]:
        return data_list([public(b) for b in await registry.list_benchmarks()])

    @router.post("/eval/benchmarks", tags=["benchmarks"])
    async def register_benchmark(body: RegisterBenchmarkRequest) -> None:
        provider = routing.for_registration(body.provider_id)
        benchmark = convert.benchmark(body, provider.provider_id)
        if not replace_existing:
            await registry.check_benchmark_replacement(benchmark)
        # The provider first: if it refuses, nothing is registered.
        await provider.register_benchmark(benchmark)
        await registry.put_benchmark(benchmark)
        return None

    # Specific routes first: a raw (0.2.x) id may itself contain "/".
    @router.get("/eval/benchmarks/{benchmark_id:path}/jobs/{job_id}/result", tags=["eval"])
    async def job_result(benchmark_id: str, job_id: str) -> EvaluateResponse:
        provider, _ = await routing.for_benchmark(benchmark_id)
        return await provider.job_result(benchmark_id, job_id)

    @router.get("/eval/benchmarks/{benchmark_id:path}/jobs/{job_id}", tags=["eval"])
    async def job_status(benchmark_id: str, job_id: str) -> Job:
        provider, _ = await routing.for_benchmark(benchmark_id)
        return await provider.job_status(benchmark_id, job_id)

    @router.delete("/eval/benchmarks/{benchmark_id:path}/jobs/{job_id}", tags=["eval"])
    async def job_cancel(benchmark_id: str, job_id: str) -> None:
        provider, _ = await routing.for_benchmark(benchmark_id)
        await provider.job_cancel(benchmark_id, job_id)
        return None

    # The original NVIDIA provider's README: cancel by POST, and the latest job's result per benchmark.
    @router.post("/eval/benchmarks/{benchmark_id:path}/jobs/{job_id}/cancel", tags=["eval"])
    async def job_cancel_by_post(benchmark_id: str, job_id: str) -> None:
        return await job_cancel(benchmark_id, job_id)

    @router.get("/eval/benchmarks/{benchmark_id:path}/results", tags=["eval"])
    async def latest_result(benchmark_id: str) -> EvaluateResponse:
        provider, _ = await routing.for_benchmark(benchmark_id)
        return await provider.job_result(benchmark_id, await registry.latest_eval_job(benchmark_id))

    @router.post("/eval/benchmarks/{benchmark_id:path}/jobs", tags=["eval"])
    @not_found_status(404)
    async def run_eval(benchmark_id: str, body: RunEvalRequest) -> Job:
        provider, _ = await routing.for_benchmark(benchmark_id)
        job = await provider.run_eval(benchmark_id, body.benchmark_config)
        await registry.note_eval_job(benchmark_id, job.job_id)
        return job

    @router.post("/eval/benchmarks/{benchmark_id:path}/evaluations", tags=["eval"])
    @not_found_status(404)
    async def evaluate_rows(benchmark_id: str, body: EvaluateRowsRequest) -> EvaluateResponse:
        provider, _ = await routing.for_benchmark(benchmark_id)
        return await provider.evaluate_rows(
            benchmark_id, body.input_rows, body.scoring_functions, body.benchmark_config
        )

    @router.get("/eval/benchmarks/{benchmark_id:path}", tags=["benchmarks"])
    async def get_benchmark(benchmark_id: str) -> Benchmark:
        return public(await registry.get_benchmark(benchmark_id))

    @router.delete("/eval/benchmarks/{benchmark_id:path}", tags=["benchmarks"])
    async def unregister_benchmark(benchmark_id: str) -> None:
        benchmark = await registry.get_benchmark(benchmark_id)
        provider = providers.get(benchmark.provider_id)
        if provider is not None:
            await provider.unregister_benchmark(benchmark_id)
        else:
            logger.warning(
                "Benchmark %s belongs to provider %s, which is not configured; removing it from the registry",
                benchmark_id,
                benchmark.provider_id,
            )
        await registry.delete_benchmark(benchmark_id)
        return None

    return router


# ---- scoring and scoring functions --------------------------------------------------------------


def scoring_router(scoring: ScoringService, registry: Registry) -> APIRouter:
    """Scoring and ScoringFunctions routes (``/v1`` only)."""
    router = _router()

    @router.post("/scoring/score", tags=["scoring"])
    async def score(body: ScoreRequest) -> ScoreResponse:
        results = await scoring.score(body.input_rows, dict(body.scoring_functions))
        return ScoreResponse(results=results)

    @router.post("/scoring/score-batch", tags=["scoring"])
    async def score_batch(body: ScoreBatchRequest) -> ScoreBatchResponse:
        rows = await registry.dataset_rows(body.dataset_id)
        results = await scoring.score(rows, dict(body.scoring_functions))
        if not body.save_results_dataset:
            return ScoreBatchResponse(dataset_id=None, results=results)
        saved = await save_scored_rows(registry, body.dataset_id, rows, results)
        return ScoreBatchResponse(dataset_id=saved.identifier, results=results)

    @router.get("/scoring-functions", tags=["scoring-functions"])
    async def list_scoring_functions() -> dict[str, Any]:
        return data_list(await scoring.list_functions())

    @router.get("/scoring-functions/{scoring_fn_id:path}", tags=["scoring-functions"])
    async def get_scoring_function(scoring_fn_id: str) -> ScoringFn:
        return await scoring.get_function(scoring_fn_id)

    @router.post("/scoring-functions", tags=["scoring-functions"])
    async def register_scoring_function(body: RegisterScoringFnRequest) -> None:
        await scoring.register_function(body)
        return None

    @router.delete("/scoring-functions/{scoring_fn_id:path}", tags=["scoring-functions"])
    async def unregister_scoring_function(scoring_fn_id: str) -> None:
        await scoring.unregister_function(scoring_fn_id)
        return None

    return router


async def save_scored_rows(
    registry: Registry, dataset_id: str, rows: list[dict[str, Any]], results: Mapping[str, ScoringResult]
) -> Dataset:
    """Register a new ``rows`` dataset ``<dataset_id>-scored-<hex>``: each row of ``dataset_id`` with,
    under each scoring function's id, that function's score row for it (score-batch's
    ``save_results_dataset``). Its metadata names the source dataset and the scoring functions."""
    source = await registry.get_dataset(dataset_id)
    scored = [
        {**row, **{fn_id: result.score_rows[i] for fn_id, result in results.items()}}
        for i, row in enumerate(rows)
    ]
    request = RegisterDatasetRequest(
        dataset_id=f"{dataset_id}-scored-{uuid.uuid4().hex[:12]}",
        purpose=source.purpose,
        source=RowsDataSource(rows=scored),
        metadata={"scored_from": dataset_id, "scoring_functions": sorted(results)},
    )
    return await registry.register_dataset(request, replace=False)


# ---- datasets and datasetio ---------------------------------------------------------------------


# What 0.7.x servers (``/v1beta``) accept as a dataset purpose; 0.2.x (``/v1``) also took post-training.
V1BETA_PURPOSES = ("eval/question-answer", "eval/messages-answer")
# The ``url`` of a 0.2.x iterrows page: the literal route template, as 0.2 servers send it.
V1_ITERROWS_URL = "/v1/datasetio/iterrows/{dataset_id:path}"


def datasets_router(
    registry: Registry,
    *,
    append_rows_status: int,
    replace_existing: bool,
    purposes: tuple[str, ...] | None = None,
    iterrows_url: str | None = None,
) -> APIRouter:
    """Datasets and DatasetIO routes of one API generation.

    ``append_rows_status``: 204, or 200 with ``null``; ``replace_existing``: registering an existing id
    replaces it (0.2.x), or else must match it (0.7.x); ``purposes``: the dataset purposes accepted
    (``None``: every purpose of the wire model); ``iterrows_url``: the ``url`` of iterrows pages.
    """
    router = _router()

    @router.post("/datasets", tags=["datasets"])
    async def register_dataset(body: RegisterDatasetRequest) -> Dataset:
        if purposes is not None and body.purpose not in purposes:
            accepted = ", ".join(f"'{p}'" for p in purposes)
            raise InvalidInputError(
                f"purpose '{body.purpose}' is not accepted here; accepted: {accepted}. "
                "(Llama Stack 0.2.x clients, under /v1, may also register 'post-training/messages'.)"
            )
        return public(await registry.register_dataset(body, replace=replace_existing))

    @router.get("/datasets", tags=["datasets"])
    async def list_datasets() -> dict[str, Any]:
        return data_list([public(d) for d in await registry.list_datasets()])

    @router.get("/datasets/{dataset_id:path}", tags=["datasets"])
    @not_found_status(404)
    async def get_dataset(dataset_id: str) -> Dataset:
        return public(await registry.get_dataset(dataset_id))

    @router.delete("/datasets/{dataset_id:path}", tags=["datasets"])
    @not_found_status(404)
    async def unregister_dataset(dataset_id: str) -> None:
        await registry.unregister_dataset(dataset_id)
        return None

    @router.get("/datasetio/iterrows/{dataset_id:path}", tags=["datasetio"])
    async def iterrows(
        dataset_id: str,
        start_index: int | None = Query(default=None, ge=0, le=MAX_ROW_INDEX),
        limit: int | None = Query(default=None, ge=-1, le=MAX_ROW_INDEX),
    ) -> PaginatedResponse:
        page = await registry.iterrows(dataset_id, start_index, limit)
        return page.model_copy(update={"url": iterrows_url})

    if append_rows_status == 204:

        @router.post("/datasetio/append-rows/{dataset_id:path}", status_code=204, tags=["datasetio"])
        async def append_rows_204(dataset_id: str, body: AppendRowsRequest) -> Response:
            await registry.append_rows(dataset_id, body.rows)
            return Response(status_code=204)

    else:

        @router.post("/datasetio/append-rows/{dataset_id:path}", tags=["datasetio"])
        async def append_rows(dataset_id: str, body: AppendRowsRequest) -> None:
            await registry.append_rows(dataset_id, body.rows)
            return None

    return router


# ---- models -------------------------------------------------------------------------------------


def models_router(registry: Registry) -> APIRouter:
    """Models routes (``/v1``). Responses carry the 0.2.x and 0.7.x field sets; keys are never shown."""
    router = _router()

    @router.get("/models", tags=["models"])
    async def list_models() -> dict[str, Any]:
        return data_list([public(m) for m in await registry.list_models()])

    @router.post("/models", tags=["models"])
    async def register_model(body: RegisterModelRequest) -> Model:
        if body.model_type == "embedding":
            raise InvalidInputError("Only 'llm' models can be registered: evalstack does not use embeddings.")
        model = await registry.register_model(
            body.model_id,
            body.provider_model_id,
            dict(body.metadata or {}),
            provider_id=body.provider_id,
            model_type=body.model_type,
        )
        return public(model)

    @router.get("/models/{model_id:path}", tags=["models"])
    @not_found_status(404)
    async def get_model(model_id: str) -> Model:
        return public(await registry.get_model(model_id))

    @router.delete("/models/{model_id:path}", tags=["models"])
    @not_found_status(404)
    async def unregister_model(model_id: str) -> None:
        await registry.unregister_model(model_id)
        return None

    return router


# ---- providers ----------------------------------------------------------------------------------


def providers_router(providers: Mapping[str, EvalProvider], settings: Settings) -> APIRouter:
    """``/v1/providers`` (``client.providers.list()`` / ``.retrieve(id)``)."""
    router = _router()

    @router.get("/providers", tags=["providers"])
    async def list_providers() -> dict[str, Any]:
        return data_list(convert.provider_infos(providers, settings))

    @router.get("/providers/{provider_id}", tags=["providers"])
    async def get_provider(provider_id: str) -> ProviderInfo:
        infos = convert.provider_infos(providers, settings)
        # Eval providers come first, so a configured id shadows a fixed one of the same name.
        for info in infos:
            if info.provider_id == provider_id:
                return info
        available = ", ".join(sorted({f"'{i.provider_id}'" for i in infos}))
        raise NotFoundError(f"Provider '{provider_id}' not found. Available providers: {available}.")

    return router


def meta_router() -> APIRouter:
    """``/v1/health`` and ``/v1/version``, as Llama Stack servers answer them."""
    router = _router()

    @router.get("/health", tags=["inspect"])
    async def health() -> dict[str, str]:
        return {"status": "OK"}

    @router.get("/version", tags=["inspect"])
    async def version() -> dict[str, str]:
        return {"version": __version__}

    return router


def include_llama_stack_api(app: FastAPI, services: Services) -> None:
    """Mount every Llama Stack router on ``app`` under both prefix families."""
    registry, providers = services.registry, services.providers
    app.include_router(meta_router(), prefix="/v1")
    app.include_router(benchmarks_router(registry, providers, replace_existing=True), prefix="/v1")
    app.include_router(benchmarks_router(registry, providers, replace_existing=False), prefix="/v1alpha")
    app.include_router(
        datasets_router(
            registry, append_rows_status=200, replace_existing=True, iterrows_url=V1_ITERROWS_URL
        ),
        prefix="/v1",
    )
    app.include_router(
        datasets_router(registry, append_rows_status=204, replace_existing=False, purposes=V1BETA_PURPOSES),
        prefix="/v1beta",
    )
    app.include_router(scoring_router(services.scoring, registry), prefix="/v1")
    app.include_router(models_router(registry), prefix="/v1")
    app.include_router(providers_router(providers, services.settings), prefix="/v1")
