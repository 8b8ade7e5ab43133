"""NeMo Evaluator v1 configs and targets, compiled into the engine's :class:`EvalPlan`.

Config types: ``custom`` (tasks of type ``completion``, ``chat-completion`` and ``data``) and the
academic types of :mod:`evalstack.engine.benchmarks` (``mmlu``, ``gsm8k``...), registered in
:data:`CONFIG_COMPILERS`; any other type is rejected with the list of supported ones.

Target types: ``model`` (an ``api_endpoint`` object, or a name the registry resolves), ``rows`` (inline
rows), ``dataset`` (a Dataset object, or a dataset registered in evalstack), ``cached_outputs``
(``{files_url}``: rows that already hold the outputs). A task with its own ``dataset`` reads it;
tasks without one read the target's rows. ``data`` tasks never call a model; ``completion`` and
``chat-completion`` tasks call the target model, or read their outputs from the rows with a
``cached_outputs`` target.

Inference parameters, lowest to highest precedence: config ``params``, task ``params``, extra keys
of the task's template (``max_tokens``, ``tools``, ``tool_choice``...). ``max_tokens``,
``temperature``, ``top_p`` and ``stop`` become request fields; from ``extra``, the sampling fields
``top_k``, ``min_p``, ``seed``, ``frequency_penalty``, ``presence_penalty``, ``repetition_penalty``,
``logprobs``, ``top_logprobs`` and ``n`` are sent too, ``use_greedy: true`` sends ``temperature: 0``,
``hf_token`` authenticates ``hf://`` downloads, and other keys (harness settings) are ignored.
``parallelism``, ``max_retries`` and ``request_timeout`` apply to the whole job (config params first,
else the largest task value). The number of rows is the smallest of ``dataset.limit`` and
``limit_samples`` (task, else config).

Results (``summarize``): ``{"tasks": {task: {"metrics": {metric: {"scores": {score: {"value",
"stats"}}}}, "data": {"samples", "samples_failed"}}}, "groups": {group: {"metrics": ...,
"groups": ...}}}``. ``value`` is the mean and ``stats`` the ScoreStats of the per-sample values;
corpus BLEU (``corpus``) is computed over all samples and has a value only. Samples that failed
(the model endpoint failed after its retries, a template did not render, a metric could not run)
have no scores: they are left out of every statistic and counted in the task's
``data.samples_failed``; ``data.samples`` counts all recorded samples. A score that could not be
computed for a sample that did not fail (an unparsable judge answer) is a NaN, counted in
``nan_count``. A group pools the samples of its ``tasks`` and of its nested ``groups`` (all tasks
when it names neither) for every metric name they share; its ``metrics`` keys, when given, pick
which metric names to report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evalstack.engine import datasets
from evalstack.engine.aggregate import score_value
from evalstack.engine.benchmarks import ACADEMIC_TYPES, compile_academic_plan, is_academic
from evalstack.engine.datasets import load_rows
from evalstack.engine.metrics.nemo import nemo_metric
from evalstack.engine.metrics.nemo_base import (
    MetricDeps,
    NemoMetric,
    request_from_rendered,
    resolve_model_spec,
)
from evalstack.engine.plan import EvalPlan, SampleOutput, TaskPlan
from evalstack.engine.ports import ClientSource, ModelResolver, RowSource
from evalstack.engine.templates import build_context, check_templates, render_value
from evalstack.errors import InvalidInputError, NotFoundError
from evalstack.inference.base import InferenceRequest, ModelEndpoint
from evalstack.store.records import SampleRecord

if TYPE_CHECKING:
    from evalstack.config import Settings

logger = logging.getLogger(__name__)

TASK_TYPES = ("completion", "chat-completion", "data")
TARGET_TYPES = ("model", "rows", "dataset", "cached_outputs")
SAMPLING_EXTRA = (
    "top_k",
    "min_p",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
    "logprobs",
    "top_logprobs",
    "n",
)
OUTPUT_FIELDS = (
    "output_text",
    "some_output",
    "output",
    "generated_output",
    "generated_text",
    "generation",
    "prediction",
    "completion",
    "model_output",
)


# ------------------------------------------------------------------------------------------ shapes


class _Public(BaseModel):
    """Public NeMo shapes: the fields the spec documents, nothing else."""

    model_config = ConfigDict(extra="forbid")


class NemoParams(_Public):
    """``params`` of a config (EvaluationParams); task params may hold the same keys plus ``template``."""

    parallelism: int | None = Field(default=None, ge=1)
    limit_samples: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    stop: str | list[str] | None = None
    max_retries: int | None = Field(default=None, ge=0)
    request_timeout: float | None = Field(default=None, gt=0)
    extra: dict[str, Any] | None = None


class NemoTaskParams(NemoParams):
    """Task ``params``: the config params plus the request ``template``."""

    template: dict[str, Any] | None = None


class NemoDataset(BaseModel):
    """A Dataset object (``files_url`` required); entity fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    files_url: str = Field(min_length=1)
    format: str | None = None
    split: str | None = None
    limit: int | None = Field(default=None, ge=0)
    hf_endpoint: str | None = None
    name: str | None = None
    namespace: str | None = None


class NemoMetricConfig(_Public):
    type: str
    params: dict[str, Any] | None = None


class NemoTask(_Public):
    """One task (TaskConfig). Its ``type`` is checked against the config's type (see NemoConfig)."""

    type: str = Field(min_length=1)
    params: dict[str, Any] | None = None
    dataset: str | NemoDataset | None = None
    metrics: dict[str, NemoMetricConfig] | None = None


class NemoGroup(_Public):
    """A group of tasks (GroupConfig), possibly with nested groups."""

    tasks: list[str] | None = None
    metrics: dict[str, Any] | None = None
    groups: dict[str, NemoGroup] | None = None


class NemoEntity(BaseModel):
    """The entity fields every config and target carries; they pass through unchecked.

    Everything else in a config or target body belongs to the type-specific part.
    """

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    name: str | None = None
    namespace: str | None = None
    description: str | None = None
    project: str | None = None
    custom_fields: dict[str, Any] | None = None
    ownership: dict[str, Any] | None = None
    created_at: Any = None
    updated_at: Any = None
    schema_version: str | None = None
    type_prefix: str | None = None


ENTITY_FIELDS: frozenset[str] = frozenset(NemoEntity.model_fields)
"""Keys every config and target entity carries (``id``, ``name``, ``namespace``...)."""


class NemoConfig(NemoEntity):
    """An evaluation config (v1): ``type`` plus params, tasks and groups; entity fields pass through."""

    type: str = Field(min_length=1)
    params: NemoParams | None = None
    tasks: dict[str, NemoTask] | None = None
    groups: dict[str, NemoGroup] | None = None

    @model_validator(mode="after")
    def _custom_task_types(self) -> NemoConfig:
        """Tasks of a ``custom`` config are completion, chat-completion or data tasks."""
        if self.type == "custom":
            for name, task in (self.tasks or {}).items():
                normalised = task.type.strip().lower().replace("_", "-")
                if normalised not in TASK_TYPES:
                    raise ValueError(
                        f"task {name!r} has type {task.type!r}, which a custom config does not support; "
                        f"accepted: {', '.join(TASK_TYPES)}"
                    )
                task.type = normalised
        return self


class NemoTarget(NemoEntity):
    """An evaluation target (v1); entity fields pass through."""

    type: str = Field(min_length=1)
    model: str | dict[str, Any] | None = None
    rows: list[dict[str, Any]] | None = None
    dataset: str | NemoDataset | None = None
    cached_outputs: dict[str, Any] | None = None
    retriever: dict[str, Any] | None = None
    rag: dict[str, Any] | None = None


def _validation_message(exc: ValidationError, what: str) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{what}.{location}: {message}" if location else f"{what}: {message}")
    return "; ".join(parts)


def parse_config(config: Mapping[str, Any]) -> NemoConfig:
    """Validate a config; InvalidInputError names each bad field and the accepted values."""
    if not isinstance(config, Mapping):
        raise InvalidInputError(f"A NeMo config must be an object, got {type(config).__name__}.")
    if "type" not in config:
        raise InvalidInputError(
            f"A NeMo config needs a 'type'; supported by the local engine: {', '.join(CONFIG_COMPILERS)}."
        )
    if isinstance(config.get("tasks"), list):
        raise InvalidInputError(
            "config.tasks is a list (the early-access format); current configs map task names to tasks: "
            '{"tasks": {"my-task": {"type": "completion", ...}}}.'
        )
    try:
        return NemoConfig.model_validate(dict(config))
    except ValidationError as exc:
        raise InvalidInputError(_validation_message(exc, "config")) from exc


def parse_target(target: Mapping[str, Any]) -> NemoTarget:
    """Validate a target; InvalidInputError names each bad field."""
    if not isinstance(target, Mapping):
        raise InvalidInputError(f"A NeMo target must be an object, got {type(target).__name__}.")
    try:
        parsed = NemoTarget.model_validate(dict(target))
    except ValidationError as exc:
        raise InvalidInputError(_validation_message(exc, "target")) from exc
    if parsed.type not in TARGET_TYPES:
        raise InvalidInputError(
            f"Target type {parsed.type!r} is not supported by the local engine; "
            f"supported: {', '.join(TARGET_TYPES)}."
        )
    if getattr(parsed, parsed.type) is None:
        raise InvalidInputError(f"A target of type {parsed.type!r} needs the field {parsed.type!r}.")
    if parsed.type == "cached_outputs" and not isinstance(parsed.cached_outputs.get("files_url"), str):  # type: ignore[union-attr]
        raise InvalidInputError("target.cached_outputs needs a files_url naming the file with the outputs.")
    return parsed


# --------------------------------------------------------------------------------------- compiling


ConfigCompiler = Callable[..., Awaitable[EvalPlan]]


@dataclass
class _CompiledTask:
    name: str
    metrics: list[NemoMetric]


def _min_limit(*limits: int | None) -> int | None:
    given = [limit for limit in limits if limit is not None]
    return min(given) if given else None


def _request_params(params: Sequence[NemoParams | None]) -> dict[str, Any]:
    """OpenAI request fields from the params, later params overriding earlier ones."""
    result: dict[str, Any] = {}
    for p in params:
        if p is None:
            continue
        for key in ("max_tokens", "temperature", "top_p", "stop"):
            value = getattr(p, key)
            if value is not None:
                result[key] = value
        extra = p.extra or {}
        for key in SAMPLING_EXTRA:
            if extra.get(key) is not None:
                result[key] = extra[key]
        if extra.get("use_greedy") is True:
            result["temperature"] = 0.0
    return result


def _hf_token(params: Sequence[NemoParams | None]) -> str | None:
    token = None
    for p in params:
        if p is not None and p.extra and isinstance(p.extra.get("hf_token"), str):
            token = p.extra["hf_token"]
    return token


def _text_of_response(response: Mapping[str, Any]) -> str | None:
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        choice = choices[0]
        message = choice.get("message")
        if isinstance(message, Mapping) and isinstance(message.get("content"), str):
            return str(message["content"])
        if isinstance(choice.get("text"), str):
            return str(choice["text"])
    return None


def read_output(row: Mapping[str, Any]) -> SampleOutput:
    """The output a row already holds: a NeMo per-sample ``sample`` object, else the first of
    :data:`OUTPUT_FIELDS`, else the text of an OpenAI ``response`` object. Metrics may reference
    any field of the row directly."""
    sample = row.get("sample")
    if isinstance(sample, Mapping) and ("output_text" in sample or "response" in sample):
        response = sample.get("response")
        text = sample.get("output_text")
        return SampleOutput(
            text if isinstance(text, str) else None, dict(response) if isinstance(response, Mapping) else None
        )
    raw_response = row.get("response")
    response_dict = dict(raw_response) if isinstance(raw_response, Mapping) else None
    for field in OUTPUT_FIELDS:
        value = row.get(field)
        if isinstance(value, str):
            return SampleOutput(value, response_dict)
    text = _text_of_response(response_dict) if response_dict is not None else None
    return SampleOutput(text, response_dict)


def check_files_url(files_url: str, settings: Settings, where: str) -> None:
    """Check a dataset location without reading it, so a bad one fails the job's creation, not its run.

    Local paths and ``file://`` URLs must lie under the data roots and exist; ``hf://`` style URLs must
    parse; other schemes than those :func:`load_rows` reads are rejected. Errors are prefixed with ``where``.
    """
    try:
        datasets.check_dataset_uri(files_url, settings=settings)
    except (InvalidInputError, NotFoundError) as exc:
        raise type(exc)(f"{where}: {exc.message}", detail=exc.detail) from None


async def _dataset_source(
    dataset: str | NemoDataset,
    *,
    limit: int | None,
    settings: Settings,
    registry: Any,
    hf_token: str | None,
    where: str,
) -> RowSource:
    """Rows of a Dataset object (by its files_url) or of a dataset registered in evalstack."""
    if isinstance(dataset, NemoDataset):
        files_url = dataset.files_url
        effective = _min_limit(limit, dataset.limit)
        hf_endpoint = dataset.hf_endpoint

        async def from_files() -> list[dict[str, Any]]:
            return await load_rows(
                files_url, settings=settings, limit=effective, hf_endpoint=hf_endpoint, hf_token=hf_token
            )

        return from_files
    if registry is None:
        raise InvalidInputError(
            f"{where}: dataset {dataset!r} names a registered dataset, but no registry is set."
        )
    dataset_id = await _registered_dataset_id(registry, dataset, where)

    async def from_registry() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await registry.dataset_rows(dataset_id, limit=limit)
        return rows

    return from_registry


async def _registered_dataset_id(registry: Any, ref: str, where: str) -> str:
    """The registered dataset a ``namespace/name`` (or plain id) reference means."""
    candidates = [ref]
    namespace, _, name = ref.partition("/")
    if name and namespace == "default":
        candidates.append(name)
    for candidate in candidates:
        try:
            await registry.get_dataset(candidate)
        except NotFoundError:
            continue
        return candidate
    raise NotFoundError(
        f"{where}: dataset {ref!r} is not registered in evalstack; register it first, or give a "
        'Dataset object {"files_url": ...} instead.'
    )


async def _target_source(
    target: NemoTarget, settings: Settings, registry: Any, hf_token: str | None
) -> RowSource | None:
    """The rows a rows / dataset / cached_outputs target provides (None for a model target).

    File-backed rows are loaded once and shared by every task that reads them.
    """
    if target.type == "rows":
        rows = list(target.rows or [])

        async def inline() -> list[dict[str, Any]]:
            return rows

        return inline
    if target.type == "cached_outputs":
        files_url = str((target.cached_outputs or {})["files_url"])

        async def cached() -> list[dict[str, Any]]:
            return await load_rows(files_url, settings=settings, hf_token=hf_token)

        inner: RowSource = cached
    elif target.type == "dataset" and target.dataset is not None:
        inner = await _dataset_source(
            target.dataset,
            limit=None,
            settings=settings,
            registry=registry,
            hf_token=hf_token,
            where="target",
        )
    else:
        return None
    loaded: list[dict[str, Any]] | None = None
    lock = asyncio.Lock()

    async def shared() -> list[dict[str, Any]]:
        nonlocal loaded
        async with lock:
            if loaded is None:
                loaded = await inner()
        return loaded

    return shared


def _request_builder(
    kind: str, template: dict[str, Any], params: dict[str, Any], where: str
) -> Callable[[Mapping[str, Any]], InferenceRequest]:
    def build(row: Mapping[str, Any]) -> InferenceRequest:
        rendered = render_value(template, build_context(row))
        return request_from_rendered(kind, rendered, params, where)

    return build


def _limited(source: RowSource, limit: int | None) -> RowSource:
    if limit is None:
        return source

    async def rows() -> list[dict[str, Any]]:
        return (await source())[:limit]

    return rows


async def _compile_custom(
    config: NemoConfig,
    target: NemoTarget,
    *,
    registry: Any,
    clients: ClientSource | None,
    settings: Settings,
) -> EvalPlan:
    if not config.tasks:
        raise InvalidInputError(
            'A custom config needs at least one task: {"tasks": {"name": {"type": "completion" | '
            '"chat-completion" | "data", ...}}}.'
        )
    config_params = config.params
    task_params: dict[str, NemoTaskParams] = {}
    for task_name, task in config.tasks.items():
        try:
            task_params[task_name] = NemoTaskParams.model_validate(task.params or {})
        except ValidationError as exc:
            raise InvalidInputError(_validation_message(exc, f"config.tasks.{task_name}.params")) from exc

    def job_setting(key: str) -> Any:
        value = getattr(config_params, key) if config_params is not None else None
        if value is not None:
            return value
        values = [getattr(p, key) for p in task_params.values() if getattr(p, key) is not None]
        return max(values) if values else None

    parallelism = job_setting("parallelism") or settings.default_parallelism
    max_retries = job_setting("max_retries")
    request_timeout = job_setting("request_timeout")
    max_retries = 5 if max_retries is None else int(max_retries)
    request_timeout = 600.0 if request_timeout is None else float(request_timeout)

    model: ModelEndpoint | None = None
    if target.type == "model":
        model = await resolve_model_spec(target.model, registry, "target.model")
    hf_token = _hf_token([config_params])
    target_rows = await _target_source(target, settings, registry, hf_token)

    deps = MetricDeps(
        registry=registry, clients=clients, max_retries=max_retries, request_timeout=request_timeout
    )
    plans: list[TaskPlan] = []
    compiled: dict[str, _CompiledTask] = {}
    for task_name, task in config.tasks.items():
        where = f"Task {task_name!r}"
        params = task_params[task_name]
        limit = params.limit_samples
        if limit is None and config_params is not None:
            limit = config_params.limit_samples
        metrics = [
            await nemo_metric(name, spec.model_dump(), deps) for name, spec in (task.metrics or {}).items()
        ]
        token = _hf_token([config_params, params]) or hf_token
        if task.dataset is not None:
            rows = await _dataset_source(
                task.dataset, limit=limit, settings=settings, registry=registry, hf_token=token, where=where
            )
        elif target_rows is not None:
            rows = target_rows
        else:
            raise InvalidInputError(
                f"{where} has no dataset and the target (type {target.type!r}) provides no rows; give the "
                'task a dataset {"files_url": ...} or use a rows, dataset or cached_outputs target.'
            )
        plan = TaskPlan(name=task_name, rows=_limited(rows, limit), metrics=metrics, limit=limit)
        if task.type == "data" or target.type == "cached_outputs":
            plan.read_output = read_output
        elif model is None:
            raise InvalidInputError(
                f"{where} is a {task.type} task: it needs a model target (or a cached_outputs target holding "
                f"the outputs), but the target has type {target.type!r}."
            )
        else:
            template = params.template
            kind = "chat" if task.type == "chat-completion" else "completion"
            key = "messages" if kind == "chat" else "prompt"
            if not template or key not in template:
                raise InvalidInputError(
                    f"{where} is a {task.type} task: params.template needs {key!r} "
                    f'(e.g. {{"template": {{"{key}": ...}}}}).'
                )
            try:
                check_templates(template)
            except InvalidInputError as exc:
                raise InvalidInputError(f"{where} params.template: {exc.message}") from None
            request_params = _request_params([config_params, params])
            plan.build_request = _request_builder(kind, dict(template), request_params, where)
        plans.append(plan)
        compiled[task_name] = _CompiledTask(task_name, metrics)

    groups = config.groups or {}
    _check_groups(groups, set(compiled), "config.groups")
    _check_dataset_files(config, target, settings)

    def summarize(samples: Mapping[str, Sequence[SampleRecord]]) -> dict[str, Any]:
        return summarize_results(compiled, groups, samples)

    return EvalPlan(
        tasks=plans,
        summarize=summarize,
        model=model,
        parallelism=int(parallelism),
        max_retries=max_retries,
        request_timeout=request_timeout,
    )


def _check_dataset_files(config: NemoConfig, target: NemoTarget, settings: Settings) -> None:
    """Locate every dataset file the plan will read (see :func:`check_files_url`), after the other checks."""
    if target.type == "cached_outputs":
        url = str((target.cached_outputs or {})["files_url"])
        check_files_url(url, settings, "target.cached_outputs.files_url")
    elif target.type == "dataset" and isinstance(target.dataset, NemoDataset):
        check_files_url(target.dataset.files_url, settings, "target.dataset.files_url")
    for name, task in (config.tasks or {}).items():
        if isinstance(task.dataset, NemoDataset):
            check_files_url(task.dataset.files_url, settings, f"Task {name!r} dataset.files_url")


def _check_groups(groups: Mapping[str, NemoGroup], tasks: set[str], where: str) -> None:
    for name, group in groups.items():
        unknown = [t for t in group.tasks or [] if t not in tasks]
        if unknown:
            raise InvalidInputError(
                f"{where}.{name} names unknown task{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))}; "
                f"the config's tasks are: {', '.join(sorted(tasks))}."
            )
        _check_groups(group.groups or {}, tasks, f"{where}.{name}.groups")


async def _compile_academic(
    config: NemoConfig,
    target: NemoTarget,
    *,
    registry: ModelResolver | Any,
    clients: ClientSource | None,
    settings: Settings,
) -> EvalPlan:
    """An academic type's entry: :func:`compile_nemo_plan` routes these configs before parsing them."""
    return await compile_nemo_plan(
        config.model_dump(exclude_none=True),
        target.model_dump(exclude_none=True),
        registry=registry,
        clients=clients,
        settings=settings,
    )


CONFIG_COMPILERS: dict[str, ConfigCompiler] = {
    "custom": _compile_custom,
    **{name: _compile_academic for name in ACADEMIC_TYPES},
}
"""Config type to compiler: ``async (NemoConfig, NemoTarget, *, registry, clients, settings) -> EvalPlan``.

Academic benchmark types (``mmlu``, ``gsm8k``...) plug in here, one entry per type, with a compiler
that resolves the target's model (:func:`resolve_model_spec`) and builds the benchmark's plan."""


async def compile_nemo_plan(
    config: dict[str, Any],
    target: dict[str, Any],
    *,
    registry: ModelResolver | Any,
    clients: ClientSource | None,
    settings: Settings,
) -> EvalPlan:
    """Compile a NeMo Evaluator config and target into an EvalPlan (see the module docstring).

    Raises InvalidInputError for a malformed or unsupported config or target (naming the field and
    what is accepted) and NotFoundError for a model or dataset reference that names nothing.
    """
    if isinstance(config, Mapping) and is_academic(str(config.get("type", ""))):
        parsed_target = parse_target(target)
        if parsed_target.type != "model" or parsed_target.model is None:
            raise InvalidInputError("Academic benchmarks need a target of type 'model'.")
        endpoint = await resolve_model_spec(parsed_target.model, registry, "target.model")
        return await compile_academic_plan(dict(config), endpoint, settings=settings, clients=clients)
    parsed_config = parse_config(config)
    parsed_target = parse_target(target)
    compiler = CONFIG_COMPILERS.get(parsed_config.type)
    if compiler is None:
        raise InvalidInputError(
            f"Config type {parsed_config.type!r} is not supported by the local engine; "
            f"supported: {', '.join(CONFIG_COMPILERS)}."
        )
    return await compiler(parsed_config, parsed_target, registry=registry, clients=clients, settings=settings)


# -------------------------------------------------------------------------------------- summarising


def _scores_for(parts: Sequence[tuple[NemoMetric, Sequence[SampleRecord]]]) -> dict[str, Any]:
    """The ``scores`` object of one metric name over the scored samples of one or more tasks."""
    first = parts[0][0]
    score_names: list[str] = []
    for metric, _ in parts:
        score_names.extend(n for n in metric.score_names if n not in score_names)
    scores: dict[str, Any] = {}
    for score_name in score_names:
        values = [
            (record.scores.get(metric.name) or {}).get(score_name)
            for metric, records in parts
            if score_name in metric.score_names
            for record in records
        ]
        scores[score_name] = score_value(values)
    if first.corpus_score_names and all(type(metric) is type(first) for metric, _ in parts):
        pooled = [
            (metric, [(r.item, SampleOutput(r.output_text, r.response)) for r in records])
            for metric, records in parts
        ]
        for score_name, value in type(first).pooled_corpus_scores(pooled).items():
            scores[score_name] = {"value": value}
    return scores


def summarize_results(
    tasks: Mapping[str, _CompiledTask],
    groups: Mapping[str, NemoGroup],
    samples: Mapping[str, Sequence[SampleRecord]],
) -> dict[str, Any]:
    """The NeMo results object (``tasks`` and ``groups``) from the recorded samples."""
    scored: dict[str, list[SampleRecord]] = {}
    tasks_out: dict[str, Any] = {}
    for name, task in tasks.items():
        records = list(samples.get(name, []))
        ok = [r for r in records if r.error is None]
        scored[name] = ok
        tasks_out[name] = {
            "metrics": {m.name: {"scores": _scores_for([(m, ok)])} for m in task.metrics},
            "data": {"samples": len(records), "samples_failed": len(records) - len(ok)},
        }

    def group_tasks(group: NemoGroup) -> list[str]:
        names = list(group.tasks or [])
        for nested in (group.groups or {}).values():
            names.extend(n for n in group_tasks(nested) if n not in names)
        if not group.tasks and not group.groups:
            names = list(tasks)
        return names

    def group_result(group: NemoGroup) -> dict[str, Any]:
        members = group_tasks(group)
        by_metric: dict[str, list[tuple[NemoMetric, Sequence[SampleRecord]]]] = {}
        for task_name in members:
            for metric in tasks[task_name].metrics:
                by_metric.setdefault(metric.name, []).append((metric, scored[task_name]))
        wanted = set(group.metrics) if group.metrics else None
        result: dict[str, Any] = {
            "metrics": {
                name: {"scores": _scores_for(parts)}
                for name, parts in by_metric.items()
                if wanted is None or name in wanted
            }
        }
        if group.groups:
            result["groups"] = {name: group_result(nested) for name, nested in group.groups.items()}
        return result

    return {"tasks": tasks_out, "groups": {name: group_result(group) for name, group in groups.items()}}
