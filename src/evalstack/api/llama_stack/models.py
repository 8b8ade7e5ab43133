"""Wire models of the Llama Stack Eval, Benchmarks, Scoring, ScoringFunctions and Datasets APIs.

Field names, defaults and tags follow the spec for both client generations (0.2.x and 0.7.x).
Bodies ignore unknown keys, as the reference server does.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from evalstack.limits import MAX_INLINE_ROWS


class WireModel(BaseModel):
    """Base of every wire model: unknown keys are ignored, as the reference server does."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class JobStatus(StrEnum):
    completed = "completed"
    in_progress = "in_progress"
    failed = "failed"
    scheduled = "scheduled"
    cancelled = "cancelled"


class Job(WireModel):
    job_id: str
    status: JobStatus


# ---- sampling -------------------------------------------------------------------------------


class GreedySamplingStrategy(WireModel):
    type: Literal["greedy"] = "greedy"


class TopPSamplingStrategy(WireModel):
    type: Literal["top_p"] = "top_p"
    temperature: float = Field(gt=0.0, le=2.0)
    top_p: float = 0.95


class TopKSamplingStrategy(WireModel):
    type: Literal["top_k"] = "top_k"
    top_k: int = Field(ge=1)


SamplingStrategy = Annotated[
    GreedySamplingStrategy | TopPSamplingStrategy | TopKSamplingStrategy, Field(discriminator="type")
]


class SamplingParams(WireModel):
    strategy: SamplingStrategy = Field(default_factory=GreedySamplingStrategy)
    max_tokens: int | None = None
    repetition_penalty: float | None = 1.0
    stop: list[str] | None = None


class SystemMessage(WireModel):
    role: Literal["system"] = "system"
    content: str | list[Any]


class ModelCandidate(WireModel):
    type: Literal["model"] = "model"
    model: str = Field(min_length=1)
    sampling_params: SamplingParams
    system_message: SystemMessage | None = None


class AgentCandidate(WireModel):
    """Accepted for 0.2.x wire compatibility; only its ``config.model`` is ever read."""

    type: Literal["agent"] = "agent"
    config: dict[str, Any]


EvalCandidate = Annotated[ModelCandidate | AgentCandidate, Field(discriminator="type")]


# ---- scoring function params ------------------------------------------------------------------

AggregationFunctionType = Literal["average", "weighted_average", "median", "categorical_count", "accuracy"]


class LLMAsJudgeScoringFnParams(WireModel):
    type: Literal["llm_as_judge"] = "llm_as_judge"
    judge_model: str
    prompt_template: str | None = None
    judge_score_regexes: list[str] = Field(default_factory=list)
    aggregation_functions: list[AggregationFunctionType] = Field(default_factory=list)


class RegexParserScoringFnParams(WireModel):
    type: Literal["regex_parser"] = "regex_parser"
    parsing_regexes: list[str] = Field(default_factory=list)
    aggregation_functions: list[AggregationFunctionType] = Field(default_factory=list)


class BasicScoringFnParams(WireModel):
    type: Literal["basic"] = "basic"
    aggregation_functions: list[AggregationFunctionType] = Field(default_factory=list)


ScoringFnParams = Annotated[
    LLMAsJudgeScoringFnParams | RegexParserScoringFnParams | BasicScoringFnParams,
    Field(discriminator="type"),
]


class BenchmarkConfig(WireModel):
    eval_candidate: EvalCandidate
    scoring_params: dict[str, ScoringFnParams] = Field(default_factory=dict)
    num_examples: int | None = Field(default=None, ge=1)


# ---- results --------------------------------------------------------------------------------


class ScoringResult(WireModel):
    score_rows: list[dict[str, Any]]
    aggregated_results: dict[str, Any]


class EvaluateResponse(WireModel):
    generations: list[dict[str, Any]]
    scores: dict[str, ScoringResult]


class ScoreResponse(WireModel):
    results: dict[str, ScoringResult]


class ScoreBatchResponse(WireModel):
    dataset_id: str | None = None
    results: dict[str, ScoringResult]


# ---- resources ------------------------------------------------------------------------------

ParamTypeName = Literal[
    "string",
    "number",
    "boolean",
    "array",
    "object",
    "json",
    "union",
    "chat_completion_input",
    "completion_input",
    "agent_turn_input",
]


class ParamType(WireModel):
    type: ParamTypeName


class Resource(WireModel):
    identifier: str
    provider_resource_id: str | None = None
    provider_id: str


class Benchmark(Resource):
    type: Literal["benchmark"] = "benchmark"
    dataset_id: str
    scoring_functions: list[str]
    metadata: dict[str, Any] = Field(default_factory=dict)


class ScoringFn(Resource):
    type: Literal["scoring_function"] = "scoring_function"
    description: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    return_type: ParamType
    params: ScoringFnParams | None = None


DatasetPurpose = Literal["post-training/messages", "eval/question-answer", "eval/messages-answer"]


class URIDataSource(WireModel):
    type: Literal["uri"] = "uri"
    uri: str


class RowsDataSource(WireModel):
    type: Literal["rows"] = "rows"
    rows: list[dict[str, Any]]


DataSource = Annotated[URIDataSource | RowsDataSource, Field(discriminator="type")]


class Dataset(Resource):
    type: Literal["dataset"] = "dataset"
    purpose: DatasetPurpose
    source: DataSource
    metadata: dict[str, Any] = Field(default_factory=dict)


class PaginatedResponse(WireModel):
    data: list[dict[str, Any]]
    has_more: bool
    url: str | None = None


class Model(WireModel):
    """A model as both client generations read it: 0.2.x fields plus 0.7.x OpenAI-style fields."""

    identifier: str
    provider_resource_id: str | None = None
    provider_id: str
    type: Literal["model"] = "model"
    metadata: dict[str, Any] = Field(default_factory=dict)
    model_type: Literal["llm", "embedding"] = "llm"
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "evalstack"
    custom_metadata: dict[str, Any] = Field(default_factory=dict)


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


class RegisterScoringFnRequest(WireModel):
    scoring_fn_id: str = Field(min_length=1)
    description: str
    return_type: ParamType
    provider_scoring_fn_id: str | None = None
    provider_id: str | None = None
    params: ScoringFnParams | None = None


class RegisterDatasetRequest(WireModel):
    purpose: DatasetPurpose
    source: DataSource
    metadata: dict[str, Any] | None = None
    dataset_id: str | None = None


class AppendRowsRequest(WireModel):
    rows: list[dict[str, Any]]


class RegisterModelRequest(WireModel):
    model_id: str = Field(min_length=1)
    provider_model_id: str | None = None
    provider_id: str | None = None
    metadata: dict[str, Any] | None = None
    model_type: Literal["llm", "embedding"] | None = None
