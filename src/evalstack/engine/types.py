"""The engine's own types: what a Llama Stack run is made of (benchmark, candidate, sampling,
scoring functions) and what scoring answers.

These are the shapes a stored job spec (``engine.spec``) is written in, so changing one is a change
of the spec: bump ``SPEC_VERSION`` and teach ``engine.spec`` to read the old one. The Llama Stack wire
module (``api/llama_stack/models.py``) reuses them while the public shape is the same, and declares
its own model (plus a line in ``api/llama_stack/convert.py``) where the two part. Unknown keys are
ignored, so a spec written by a newer build still loads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EngineModel(BaseModel):
    """Base of the engine's types: unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


# ---- sampling -------------------------------------------------------------------------------


class GreedySamplingStrategy(EngineModel):
    type: Literal["greedy"] = "greedy"


class TopPSamplingStrategy(EngineModel):
    type: Literal["top_p"] = "top_p"
    temperature: float = Field(gt=0.0, le=2.0)
    top_p: float = 0.95


class TopKSamplingStrategy(EngineModel):
    type: Literal["top_k"] = "top_k"
    top_k: int = Field(ge=1)


SamplingStrategy = Annotated[
    GreedySamplingStrategy | TopPSamplingStrategy | TopKSamplingStrategy, Field(discriminator="type")
]


class SamplingParams(EngineModel):
    strategy: SamplingStrategy = Field(default_factory=GreedySamplingStrategy)
    max_tokens: int | None = None
    repetition_penalty: float | None = 1.0
    stop: list[str] | None = None


# ---- candidates -----------------------------------------------------------------------------


class SystemMessage(EngineModel):
    role: Literal["system"] = "system"
    content: str | list[Any]


class ModelCandidate(EngineModel):
    """The model a run asks, with its sampling parameters and optional system message."""

    type: Literal["model"] = "model"
    model: str = Field(min_length=1)
    sampling_params: SamplingParams
    system_message: SystemMessage | None = None


class AgentCandidate(EngineModel):
    """An agent candidate; only its ``config.model`` is ever read (runs ask that model)."""

    type: Literal["agent"] = "agent"
    config: dict[str, Any]


EvalCandidate = Annotated[ModelCandidate | AgentCandidate, Field(discriminator="type")]


# ---- scoring functions ----------------------------------------------------------------------

AggregationFunctionType = Literal["average", "weighted_average", "median", "categorical_count", "accuracy"]


class LLMAsJudgeScoringFnParams(EngineModel):
    type: Literal["llm_as_judge"] = "llm_as_judge"
    judge_model: str
    prompt_template: str | None = None
    judge_score_regexes: list[str] = Field(default_factory=list)
    aggregation_functions: list[AggregationFunctionType] = Field(default_factory=list)


class RegexParserScoringFnParams(EngineModel):
    type: Literal["regex_parser"] = "regex_parser"
    parsing_regexes: list[str] = Field(default_factory=list)
    aggregation_functions: list[AggregationFunctionType] = Field(default_factory=list)


class BasicScoringFnParams(EngineModel):
    type: Literal["basic"] = "basic"
    aggregation_functions: list[AggregationFunctionType] = Field(default_factory=list)


ScoringFnParams = Annotated[
    LLMAsJudgeScoringFnParams | RegexParserScoringFnParams | BasicScoringFnParams,
    Field(discriminator="type"),
]

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


class ParamType(EngineModel):
    type: ParamTypeName


class Resource(EngineModel):
    """Something registered under an id with a provider."""

    identifier: str
    provider_resource_id: str | None = None
    provider_id: str


class ScoringFn(Resource):
    """A scoring function: built in, or registered with parameters (a judge, regexes)."""

    type: Literal["scoring_function"] = "scoring_function"
    description: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    return_type: ParamType
    params: ScoringFnParams | None = None


# ---- benchmarks and runs --------------------------------------------------------------------


class Benchmark(Resource):
    """A dataset plus scoring functions; a ``metadata`` with a ``type`` is a NeMo Evaluator config."""

    type: Literal["benchmark"] = "benchmark"
    dataset_id: str
    scoring_functions: list[str]
    metadata: dict[str, Any] = Field(default_factory=dict)


class BenchmarkConfig(EngineModel):
    """How to run a benchmark: the candidate, per-function scoring parameters, how many rows."""

    eval_candidate: EvalCandidate
    scoring_params: dict[str, ScoringFnParams] = Field(default_factory=dict)
    num_examples: int | None = Field(default=None, ge=1)


# ---- scoring results ------------------------------------------------------------------------


class ScoringResult(EngineModel):
    """One scoring function's per-row scores and their aggregate."""

    score_rows: list[dict[str, Any]]
    aggregated_results: dict[str, Any]


class EvaluateResponse(EngineModel):
    """Generations and scores of an evaluation (a job's result or rows evaluated at once)."""

    generations: list[dict[str, Any]]
    scores: dict[str, ScoringResult]


class ScoringFnRegistration(EngineModel):
    """A scoring function to register: its id, description, return type and parameters."""

    scoring_fn_id: str = Field(min_length=1)
    description: str
    return_type: ParamType
    provider_scoring_fn_id: str | None = None
    provider_id: str | None = None
    params: ScoringFnParams | None = None
