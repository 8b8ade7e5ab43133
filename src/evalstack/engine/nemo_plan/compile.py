"""Compiling a NeMo Evaluator config and target into the engine's :class:`EvalPlan`: ``custom``
configs here (requests from templates, metrics from ``engine.metrics.nemo``), academic types in
``engine.benchmarks``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from evalstack.engine.benchmarks import compile_academic_plan, is_academic
from evalstack.engine.lm_eval import compile_lm_eval_plan, is_lm_eval_config
from evalstack.engine.metrics.nemo import nemo_metric
from evalstack.engine.metrics.nemo_base import (
    MetricDeps,
    request_from_rendered,
    resolve_model_spec,
)
from evalstack.engine.nemo_plan.config import (
    CONFIG_TYPES,
    NemoConfig,
    NemoGroup,
    NemoParams,
    NemoTarget,
    NemoTaskParams,
    parse_config,
    parse_target,
    validation_message,
)
from evalstack.engine.nemo_plan.results import CompiledTask, summarize_results
from evalstack.engine.nemo_plan.sources import (
    check_dataset_files,
    dataset_source,
    limited,
    read_output,
    target_source,
)
from evalstack.engine.plan import EvalPlan, TaskPlan
from evalstack.engine.ports import ClientSource, ModelResolver
from evalstack.engine.templates import build_context, check_templates, render_value
from evalstack.errors import InvalidInputError
from evalstack.inference.base import InferenceRequest, ModelEndpoint
from evalstack.store.records import SampleRecord

if TYPE_CHECKING:
    from evalstack.config import Settings

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


def _request_builder(
    kind: str, template: dict[str, Any], params: dict[str, Any], where: str
) -> Callable[[Mapping[str, Any]], InferenceRequest]:
    def build(row: Mapping[str, Any]) -> InferenceRequest:
        rendered = render_value(template, build_context(row))
        return request_from_rendered(kind, rendered, params, where)

    return build


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
            raise InvalidInputError(validation_message(exc, f"config.tasks.{task_name}.params")) from exc

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
    target_rows = await target_source(target, settings, registry, hf_token)

    deps = MetricDeps(
        registry=registry, clients=clients, max_retries=max_retries, request_timeout=request_timeout
    )
    plans: list[TaskPlan] = []
    compiled: dict[str, CompiledTask] = {}
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
            rows = await dataset_source(
                task.dataset, limit=limit, settings=settings, registry=registry, hf_token=token, where=where
            )
        elif target_rows is not None:
            rows = target_rows
        else:
            raise InvalidInputError(
                f"{where} has no dataset and the target (type {target.type!r}) provides no rows; give the "
                'task a dataset {"files_url": ...} or use a rows, dataset or cached_outputs target.'
            )
        plan = TaskPlan(name=task_name, rows=limited(rows, limit), metrics=metrics, limit=limit)
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
        compiled[task_name] = CompiledTask(task_name, metrics)

    groups = config.groups or {}
    _check_groups(groups, set(compiled), "config.groups")
    check_dataset_files(config, target, settings)

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
    config: Mapping[str, Any],
    target: NemoTarget,
    *,
    registry: ModelResolver | Any,
    clients: ClientSource | None,
    settings: Settings,
) -> EvalPlan:
    """An academic type (``engine.benchmarks``): its options are read there; the target is a model."""
    if target.type != "model" or target.model is None:
        raise InvalidInputError("Academic benchmarks need a target of type 'model'.")
    endpoint = await resolve_model_spec(target.model, registry, "target.model")
    return await compile_academic_plan(dict(config), endpoint, settings=settings, clients=clients)


def asks_for_lm_eval(config: Mapping[str, Any]) -> bool:
    """A config whose type is ``lm-eval`` or an lm-eval task or group that is not one of our own types.

    Blocking the first time (lm-eval indexes its task YAMLs): call it in a thread from async code.
    """
    config_type = config.get("type")
    if not isinstance(config_type, str) or config_type in CONFIG_TYPES:
        return False
    params = config.get("params")
    extra = params.get("extra") if isinstance(params, Mapping) else None
    include_path = extra.get("include_path") if isinstance(extra, Mapping) else None
    return is_lm_eval_config(config_type, include_path if isinstance(include_path, str) else None)


async def compile_nemo_plan(
    config: dict[str, Any],
    target: dict[str, Any],
    *,
    registry: ModelResolver | Any,
    clients: ClientSource | None,
    settings: Settings,
) -> EvalPlan:
    """Compile a NeMo Evaluator config and target into an EvalPlan (see the package docstring).

    Raises InvalidInputError for a malformed or unsupported config or target (naming the field and
    what is accepted) and NotFoundError for a model or dataset reference that names nothing.
    """
    if isinstance(config, Mapping) and is_academic(str(config.get("type", ""))):
        return await _compile_academic(
            config, parse_target(target), registry=registry, clients=clients, settings=settings
        )
    if isinstance(config, Mapping) and await asyncio.to_thread(asks_for_lm_eval, config):
        parsed_target = parse_target(target)
        if parsed_target.type != "model" or parsed_target.model is None:
            raise InvalidInputError("lm-eval tasks need a target of type 'model'.")
        endpoint = await resolve_model_spec(parsed_target.model, registry, "target.model")
        return await compile_lm_eval_plan(config, endpoint, settings=settings, clients=clients)
    parsed_config = parse_config(config)
    parsed_target = parse_target(target)
    if parsed_config.type != "custom":
        raise InvalidInputError(
            f"Config type {parsed_config.type!r} is not supported by the local engine; "
            f"supported: {', '.join(CONFIG_TYPES)}."
        )
    return await _compile_custom(
        parsed_config, parsed_target, registry=registry, clients=clients, settings=settings
    )
