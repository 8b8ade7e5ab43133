"""Compile a Llama Stack benchmark and BenchmarkConfig into an EvalPlan.

Rows become requests (spec section 6):

- ``completion_input``: a completion request; the value is a JSON-encoded string (or content
  object) or a plain string, used as the prompt. A candidate ``system_message`` does not apply to
  completions and is ignored for them.
- ``chat_completion_input``: a chat request; the value is a JSON-encoded list of messages or the
  list itself.
- ``input_query``: a chat request with one user message.

When a row holds several, the first of that order wins (the reference checks ``completion_input``
first). Chat messages are ordered: the candidate's ``system_message``, the row's system messages,
then the row's other messages in their order.

Sampling parameters map to OpenAI request fields: ``greedy`` -> ``temperature: 0``; ``top_p`` ->
``temperature`` and ``top_p``; ``top_k`` -> ``top_k``; ``max_tokens`` (unset, ``null`` or ``0``
leaves it to the endpoint's default), ``stop`` (when not empty), ``repetition_penalty`` (only when
set and not ``1.0``).

The result (``summarize``) is an EvaluateResponse dict: ``generations`` in row order as
``{"generated_answer": text}`` and ``scores`` per scoring function with ``score_rows`` (what the
function returned for each row) and ``aggregated_results``. A sample that failed (model endpoint
down, a row without input, a row missing a column a scoring function needs) appears as
``{"generated_answer": null, "error": reason}`` and ``{"score": null, "error": reason}`` and is left
out of the aggregation: failures are not wrong answers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from evalstack.engine.plan import EvalPlan, Metric, TaskPlan
from evalstack.engine.types import (
    AgentCandidate,
    Benchmark,
    BenchmarkConfig,
    GreedySamplingStrategy,
    ModelCandidate,
    SamplingParams,
    ScoringFn,
    ScoringFnParams,
    SystemMessage,
    TopKSamplingStrategy,
    TopPSamplingStrategy,
)
from evalstack.errors import InvalidInputError
from evalstack.inference.base import InferenceRequest, ModelEndpoint
from evalstack.store.records import SampleRecord

if TYPE_CHECKING:
    from evalstack.config import Settings

logger = logging.getLogger(__name__)


class PlanRegistry(Protocol):
    """What the compiler asks the registry (``evalstack.registry.Registry``)."""

    async def resolve_model(self, name_or_url: str) -> ModelEndpoint: ...

    async def get_dataset(self, dataset_id: str) -> object: ...

    async def dataset_rows(self, dataset_id: str, limit: int | None = None) -> list[dict[str, Any]]: ...


class PlanScoring(Protocol):
    """What the compiler asks the scoring service (``evalstack.engine.scoring.ScoringService``)."""

    async def get_function(self, fn_id: str) -> ScoringFn: ...

    async def metric(self, fn_id: str, params: ScoringFnParams | None) -> Metric: ...

    def aggregate(
        self, fn: ScoringFn, params: ScoringFnParams | None, score_rows: list[dict[str, Any]]
    ) -> dict[str, Any]: ...


INPUT_FIELDS = ("completion_input", "chat_completion_input", "input_query")
CHAT_ROLES = frozenset({"system", "user", "assistant", "tool"})


# ---- sampling --------------------------------------------------------------------------------


def sampling_to_params(sampling: SamplingParams) -> dict[str, Any]:
    """OpenAI request fields for Llama Stack sampling params."""
    params: dict[str, Any] = {}
    strategy = sampling.strategy
    if isinstance(strategy, GreedySamplingStrategy):
        params["temperature"] = 0.0
    elif isinstance(strategy, TopPSamplingStrategy):
        params["temperature"] = strategy.temperature
        params["top_p"] = strategy.top_p
    elif isinstance(strategy, TopKSamplingStrategy):
        params["top_k"] = strategy.top_k
    if sampling.max_tokens:  # None and 0 (the 0.2.x default) leave it to the endpoint
        params["max_tokens"] = sampling.max_tokens
    if sampling.stop:
        params["stop"] = list(sampling.stop)
    if sampling.repetition_penalty is not None and sampling.repetition_penalty != 1.0:
        params["repetition_penalty"] = sampling.repetition_penalty
    return params


# ---- messages --------------------------------------------------------------------------------


def _convert_content(content: Any) -> Any:
    """Llama Stack message content (a string, an item or a list of items) as OpenAI content."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, Mapping):
        return _convert_content([content])
    if isinstance(content, list):
        parts: list[Any] = []
        for item in content:
            if isinstance(item, str):
                parts.append({"type": "text", "text": item})
            elif isinstance(item, Mapping) and item.get("type") == "image" and "image" in item:
                image = item["image"]
                url = image.get("url") if isinstance(image, Mapping) else None
                if isinstance(url, Mapping):
                    url = url.get("uri")
                if url is None and isinstance(image, Mapping) and image.get("data"):
                    url = f"data:image/png;base64,{image['data']}"
                parts.append({"type": "image_url", "image_url": {"url": url}})
            else:
                parts.append(item)
        return parts
    raise InvalidInputError(
        f"Message content must be a string or a list of content items, got {type(content).__name__}"
    )


def _convert_message(message: Any, position: int) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        raise InvalidInputError(
            f"chat_completion_input[{position}] must be a message object with 'role' and 'content', "
            f"got {type(message).__name__}"
        )
    role = message.get("role")
    if role not in CHAT_ROLES:
        raise InvalidInputError(
            f"chat_completion_input[{position}] has role {role!r}; accepted: {', '.join(sorted(CHAT_ROLES))}"
        )
    converted: dict[str, Any] = {"role": role, "content": _convert_content(message.get("content"))}
    if role == "tool":
        call_id = message.get("tool_call_id", message.get("call_id"))
        if call_id is not None:
            converted["tool_call_id"] = call_id
    if role == "assistant" and message.get("tool_calls"):
        converted["tool_calls"] = message["tool_calls"]
    if message.get("name"):
        converted["name"] = message["name"]
    return converted


def _parse_chat_input(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"chat_completion_input is not valid JSON ({exc.msg}); expected a JSON list of messages "
                'such as [{"role": "user", "content": "..."}]'
            ) from exc
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list) or not value:
        raise InvalidInputError(
            "chat_completion_input must be a non-empty list of messages (or a JSON string of one), "
            'such as [{"role": "user", "content": "..."}]'
        )
    return [_convert_message(message, position) for position, message in enumerate(value)]


def _content_text(content: Any) -> str:
    """The text of a completion prompt given as a string, a content item or a list of items."""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        for key in ("text", "content"):
            if isinstance(content.get(key), str):
                return str(content[key])
    if isinstance(content, list) and all(isinstance(part, (str, Mapping)) for part in content):
        return "".join(_content_text(part) for part in content)
    raise InvalidInputError(
        "completion_input must be a string, a JSON-encoded string, or a text content item; "
        f"got {type(content).__name__}"
    )


def _parse_completion_input(value: Any) -> str:
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value  # a plain string is the prompt itself
        # "42" or "true" decode to non-text values: then the string itself is meant.
        return _content_text(decoded) if isinstance(decoded, (str, Mapping, list)) else value
    return _content_text(value)


def _system_message(message: SystemMessage | None) -> list[dict[str, Any]]:
    if message is None:
        return []
    return [{"role": "system", "content": _convert_content(message.content)}]


def build_request(
    row: Mapping[str, Any], params: Mapping[str, Any], system_message: SystemMessage | None = None
) -> InferenceRequest:
    """The model request for one row (see the module docstring for the rules)."""
    present = [name for name in INPUT_FIELDS if row.get(name) is not None]
    if not present:
        raise InvalidInputError(
            f"Invalid input row: it has none of the input fields {', '.join(INPUT_FIELDS)} "
            f"(row keys: {', '.join(sorted(map(str, row))) or 'none'})"
        )
    field = present[0]
    if field == "completion_input":
        prompt = _parse_completion_input(row[field])
        return InferenceRequest(kind="completion", prompt=prompt, params=dict(params))
    if field == "chat_completion_input":
        messages = _parse_chat_input(row[field])
    else:
        query = row[field]
        messages = [{"role": "user", "content": query if isinstance(query, str) else json.dumps(query)}]
    system = [m for m in messages if m["role"] == "system"]
    others = [m for m in messages if m["role"] != "system"]
    ordered = _system_message(system_message) + system + others
    return InferenceRequest(kind="chat", messages=ordered, params=dict(params))


# ---- results ---------------------------------------------------------------------------------


def summarize_samples(
    samples: Sequence[SampleRecord],
    functions: Sequence[tuple[str, ScoringFn, Any]],
    scoring: PlanScoring,
) -> dict[str, Any]:
    """An EvaluateResponse dict from samples in row order (failed samples are not aggregated)."""
    generations: list[dict[str, Any]] = []
    for sample in samples:
        if sample.error is not None:
            generations.append({"generated_answer": None, "error": sample.error})
        else:
            generations.append({"generated_answer": sample.output_text})
    scores: dict[str, Any] = {}
    for fn_id, fn_def, params in functions:
        score_rows: list[dict[str, Any]] = []
        scored: list[dict[str, Any]] = []
        for sample in samples:
            if sample.error is not None:
                score_rows.append({"score": None, "error": sample.error})
            else:
                row = dict(sample.scores.get(fn_id) or {"score": None})
                score_rows.append(row)
                scored.append(row)
        aggregated = scoring.aggregate(fn_def, params, scored) if scored else {}
        scores[fn_id] = {"score_rows": score_rows, "aggregated_results": aggregated}
    return {"generations": generations, "scores": scores}


# ---- compile ---------------------------------------------------------------------------------


def candidate_model(config: BenchmarkConfig) -> str:
    """The model name the candidate asks for."""
    candidate = config.eval_candidate
    if isinstance(candidate, ModelCandidate):
        return candidate.model
    model = candidate.config.get("model") if isinstance(candidate, AgentCandidate) else None
    if not isinstance(model, str) or not model:
        raise InvalidInputError("eval_candidate of type 'agent' needs config.model (the model to evaluate)")
    return model


def _candidate_sampling(config: BenchmarkConfig) -> tuple[SamplingParams, SystemMessage | None]:
    candidate = config.eval_candidate
    if isinstance(candidate, ModelCandidate):
        return candidate.sampling_params, candidate.system_message
    raw = candidate.config
    try:
        sampling = SamplingParams.model_validate(raw.get("sampling_params") or {})
    except ValueError as exc:
        raise InvalidInputError(f"eval_candidate.config.sampling_params is invalid: {exc}") from exc
    instructions = raw.get("instructions")
    system = SystemMessage(content=instructions) if isinstance(instructions, str) and instructions else None
    return sampling, system


async def compile_llama_stack_plan(
    benchmark: Benchmark,
    config: BenchmarkConfig,
    *,
    registry: PlanRegistry,
    scoring: PlanScoring,
    settings: Settings,
    rows: list[dict[str, Any]] | None = None,
    scoring_functions: Sequence[str] | None = None,
    parallelism: int | None = None,
) -> EvalPlan:
    """The plan of one benchmark run (``rows`` and ``scoring_functions`` override the benchmark's,
    as ``evaluate_rows`` does). One task, named after the benchmark."""
    endpoint = await registry.resolve_model(candidate_model(config))
    sampling, system_message = _candidate_sampling(config)
    params = sampling_to_params(sampling)
    fn_ids = list(benchmark.scoring_functions if scoring_functions is None else scoring_functions)

    metrics: list[Metric] = []
    functions: list[tuple[str, ScoringFn, Any]] = []
    for fn_id in dict.fromkeys(fn_ids):  # a function listed twice is scored once
        fn_params = config.scoring_params.get(fn_id)
        metrics.append(await scoring.metric(fn_id, fn_params))  # unknown: InvalidInputError (a 400)
        fn_def = await scoring.get_function(fn_id)
        functions.append((fn_id, fn_def, fn_params))

    limit = config.num_examples
    if rows is None:
        dataset_id = benchmark.dataset_id
        await registry.get_dataset(dataset_id)  # unknown dataset: fail now, with the registry's message

        async def load_rows() -> list[dict[str, Any]]:
            loaded = await registry.dataset_rows(dataset_id, limit=limit)
            if not loaded:
                raise InvalidInputError(f"Dataset '{dataset_id}' has no rows to evaluate")
            return loaded

    else:
        given = list(rows)

        async def load_rows() -> list[dict[str, Any]]:
            return given

    task_name = benchmark.identifier

    def request_for(row: Mapping[str, Any]) -> InferenceRequest:
        return build_request(row, params, system_message)

    def summarize(samples: Mapping[str, Sequence[SampleRecord]]) -> dict[str, Any]:
        return summarize_samples(samples.get(task_name, []), functions, scoring)

    task = TaskPlan(name=task_name, rows=load_rows, metrics=metrics, build_request=request_for, limit=limit)
    return EvalPlan(
        tasks=[task],
        summarize=summarize,
        model=endpoint,
        parallelism=parallelism or settings.default_parallelism,
    )
