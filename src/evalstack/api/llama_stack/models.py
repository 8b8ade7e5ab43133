"""Wire models of the Llama Stack Eval, Benchmarks, Scoring, ScoringFunctions and Datasets APIs.

Field names, defaults and tags follow the spec for both client generations (0.2.x and 0.7.x).
Bodies ignore unknown keys, as the reference server does. Where the public shape is the engine's own
(benchmarks, candidates, sampling, scoring functions: ``engine.types``), the registry's (models,
datasets: ``resources``) or the provider interface's (jobs: ``providers.base``), it is re-exported
from there; a wire shape that parts from them gets its own model here and a line in ``convert``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from evalstack.engine.types import (
    AgentCandidate,
    AggregationFunctionType,
    BasicScoringFnParams,
    Benchmark,
    BenchmarkConfig,
    EvalCandidate,
    EvaluateResponse,
    GreedySamplingStrategy,
    LLMAsJudgeScoringFnParams,
    ModelCandidate,
    ParamType,
    ParamTypeName,
    RegexParserScoringFnParams,
    Resource,
    SamplingParams,
    SamplingStrategy,
    ScoringFn,
    ScoringFnParams,
    ScoringFnRegistration,
    ScoringResult,
    SystemMessage,
    TopKSamplingStrategy,
    TopPSamplingStrategy,
)
from evalstack.limits import MAX_INLINE_ROWS
from evalstack.providers.base import Job, JobStatus
from evalstack.resources import (
    Dataset,
    DatasetPurpose,
    DatasetRegistration,
    DataSource,
    Model,
    PaginatedResponse,
    RowsDataSource,
    URIDataSource,
)

__all__ = [
    "AgentCandidate",
    "AggregationFunctionType",
    "BasicScoringFnParams",
    "Benchmark",
    "BenchmarkConfig",
    "DataSource",
    "Dataset",
    "DatasetPurpose",
    "EvalCandidate",
    "EvaluateResponse",
    "GreedySamplingStrategy",
    "Job",
    "JobStatus",
    "LLMAsJudgeScoringFnParams",
    "Model",
    "ModelCandidate",
    "PaginatedResponse",
    "ParamType",
    "ParamTypeName",
    "RegexParserScoringFnParams",
    "Resource",
    "RowsDataSource",
    "SamplingParams",
    "SamplingStrategy",
    "ScoringFn",
    "ScoringFnParams",
    "ScoringResult",
    "SystemMessage",
    "TopKSamplingStrategy",
    "TopPSamplingStrategy",
    "URIDataSource",
]


class WireModel(BaseModel):
    """Base of every wire-only model: unknown keys are ignored, as the reference server does."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


# ---- results --------------------------------------------------------------------------------


class ScoreResponse(WireModel):
    results: dict[str, ScoringResult]


class ScoreBatchResponse(WireModel):
    dataset_id: str | None = None
    results: dict[str, ScoringResult]


# ---- resources ------------------------------------------------------------------------------


class ProviderInfo(WireModel):
    """A provider as ``GET /v1/providers`` lists it (the 0.2.x ``ProviderInfo`` shape)."""

    api: str
    provider_id: str
    provider_type: str
    config: dict[str, Any] = Field(default_factory=dict)
    health: dict[str, Any] = Field(default_factory=dict)


# ---- request bodies ---------------------------------------------------------------------------


class RegisterBenchmarkRequest(WireModel):
    benchmark_id: str = Field(min_length=1)
    dataset_id: str
    scoring_functions: list[str]
    provider_benchmark_id: str | None = None
    provider_id: str | None = None
    metadata: dict[str, Any] | None = None


class RunEvalRequest(WireModel):
    benchmark_config: BenchmarkConfig


class EvaluateRowsRequest(WireModel):
    input_rows: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_INLINE_ROWS)
    scoring_functions: list[str] = Field(min_length=1)
    benchmark_config: BenchmarkConfig


class ScoreRequest(WireModel):
    input_rows: list[dict[str, Any]] = Field(max_length=MAX_INLINE_ROWS)
    scoring_functions: dict[str, ScoringFnParams | None]


class ScoreBatchRequest(WireModel):
    dataset_id: str
    scoring_functions: dict[str, ScoringFnParams | None]
    save_results_dataset: bool = False


class RegisterScoringFnRequest(ScoringFnRegistration):
    """The body of ``POST /scoring-functions``: a scoring function registration."""


class RegisterDatasetRequest(DatasetRegistration):
    """The body of ``POST /datasets``: a dataset registration."""


class AppendRowsRequest(WireModel):
    rows: list[dict[str, Any]]


class RegisterModelRequest(WireModel):
    model_id: str = Field(min_length=1)
    provider_model_id: str | None = None
    provider_id: str | None = None
    metadata: dict[str, Any] | None = None
    model_type: Literal["llm", "embedding"] | None = None
