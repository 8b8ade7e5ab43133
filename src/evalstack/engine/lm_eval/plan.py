"""An lm-eval config -> EvalPlan: one engine task per lm-eval task, one sample per document.

A sample's first request is the pipeline's own; the document's other requests (the other choices of a
multiple-choice question, the other windows of a perplexity document, ``repeats``) are sent by
:class:`DocumentScorer` through the same client.
The scorer then applies the task's filters and ``process_results`` to that document, as lm-eval's
evaluator does, and records lm-eval's per-document metrics. The summary feeds those metrics, in
document order, to lm-eval's own aggregation (tasks, then groups: size-weighted means and pooled
stderr where the group asks for them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from evalstack.engine.aggregate import score_entry
from evalstack.engine.lm_eval.model import LmEvalModel, PreparedRequest
from evalstack.engine.lm_eval.options import LmEvalOptions, parse_options
from evalstack.engine.lm_eval.tasks import LoadedTasks, load_tasks
from evalstack.engine.lm_eval.unsafe import SandboxedResults, is_unsafe
from evalstack.engine.plan import EvalPlan, SampleOutput, TaskPlan
from evalstack.engine.ports import ClientSource
from evalstack.errors import InvalidInputError
from evalstack.inference.base import InferenceRequest, InferenceResult, ModelClient, ModelEndpoint
from evalstack.store.records import SampleRecord

if TYPE_CHECKING:
    from evalstack.config import Settings

LM_EVAL_TYPE = "lm-eval"
"""The explicit config type: ``{"type": "lm-eval", "tasks": {name: {"type": <lm-eval task>}}}``."""

SCORES_KEY = "lm_eval"
"""``SampleRecord.scores`` key of the numeric per-document metrics; the full ones are in ``extra``."""

BOOTSTRAP_ITERS = 100000
"""lm-eval's default ``bootstrap_iters`` (its stderr of non-mean metrics)."""

_CONFIG_KEYS = ("type", "params", "tasks", "id", "name", "namespace", "description", "project",
                "custom_fields", "ownership", "created_at", "updated_at", "schema_version", "type_prefix",
                "groups")  # fmt: skip
_TASK_KEYS = ("type", "params")


def score_name(metric: str, filter_key: str) -> str:
    """lm-eval's ``metric,filter`` as our benchmarks name scores: ``acc``, ``exact_match__strict-match``."""
    return metric if filter_key == "none" else f"{metric}__{filter_key}"


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars, tuples and other non-JSON values made JSON-ready."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return jsonable(item())
        except (TypeError, ValueError):
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return jsonable(tolist())
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


class DocumentScorer:
    """Sends a document's remaining requests, filters its responses and scores it as lm-eval does."""

    name = SCORES_KEY

    def __init__(self, task_name: str, loaded: LoadedTasks, model: LmEvalModel, client: ClientSource,
                 endpoint: ModelEndpoint, client_args: dict[str, Any]) -> None:  # fmt: skip
        self.task_name = task_name
        self.task = loaded.tasks[task_name]
        self.instances = loaded.instances[task_name]
        self.docs = loaded.docs[task_name]
        self.model = model
        self.clients = client
        self.endpoint = endpoint
        self.client_args = client_args
        self._first: dict[int, list[PreparedRequest]] = {}
        self._sandboxed = SandboxedResults(self.task) if is_unsafe(self.task) else None

    def _client(self) -> ModelClient:
        return self.clients.get(self.endpoint, **self.client_args)

    def first_request(self, row: Mapping[str, Any]) -> InferenceRequest:
        """The request the pipeline sends for a document (kept until :meth:`score` reads its answer)."""
        doc_id = int(row["doc_id"])
        instance = self.instances[doc_id][0]
        prepared = self.model.prepare(instance.request_type, instance.args)
        self._first[doc_id] = prepared
        return prepared[0].inference

    def requests(self, doc_id: int) -> list[tuple[Any, list[PreparedRequest]]]:
        """Every instance of a document, ``repeats`` times each, in lm-eval's order, with its requests."""
        out: list[tuple[Any, list[PreparedRequest]]] = []
        first = self._first.pop(doc_id, None)
        for instance in self.instances[doc_id]:
            if first is not None:
                prepared, first = first, None
            else:
                prepared = self.model.prepare(instance.request_type, instance.args)
            out.extend((instance, prepared) for _ in range(instance.repeats or 1))
        return out

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        doc_id = int(item["doc_id"])
        requests = self.requests(doc_id)
        flat = [prepared for _, parts in requests for prepared in parts]
        results = [InferenceResult(text=output.text or "", raw=output.response or {})]
        if len(flat) > 1:
            client = self._client()
            results += await asyncio.gather(*(client.generate(p.inference) for p in flat[1:]))
        answers = iter(results)
        copies: dict[int, Any] = {}
        for instance, parts in requests:
            copy = copies.get(id(instance))
            if copy is None:
                copy = copies[id(instance)] = dataclasses.replace(instance, resps=[], filtered_resps={})
            values = [self.model.read(prepared, next(answers)) for prepared in parts]
            copy.resps.append(self.model.combine(instance.request_type, values))
        ordered = list(copies.values())
        for ensemble in getattr(self.task, "_filters", []):
            ensemble.apply(ordered)
        doc = self.docs[doc_id]
        per_filter: dict[str, dict[str, Any]] = {}
        filtered: dict[str, Any] = {}
        for filter_key in ordered[0].filtered_resps:
            responses = [inst.filtered_resps[filter_key] for inst in ordered]
            per_filter[filter_key] = jsonable(await self._process_results(doc, responses))
            filtered[filter_key] = jsonable(responses)
        output.extra["lm_eval"] = {
            "doc_id": doc_id,
            "arguments": [_without_prompt(jsonable(inst.args), item.get("prompt")) for inst in ordered],
            "resps": jsonable([inst.resps for inst in ordered]),
            "filtered_resps": filtered,
            "metrics": per_filter,
        }
        return {
            score_name(metric, key): _number(value)
            for key, metrics in per_filter.items()
            for metric, value in metrics.items()
            if _number(value) is not None
        }

    async def _process_results(self, doc: Any, responses: list[Any]) -> Any:
        """The task's ``process_results``: here, or in the sandbox for a task that runs model code."""
        if self._sandboxed is None:
            return self.task.process_results(doc, responses)
        return await self._sandboxed(doc, responses)


def _without_prompt(arguments: list[Any], prompt: Any) -> list[Any]:
    """An instance's arguments as a record keeps them: a context equal to the document's prompt (the
    record's ``item.prompt``, often most of the record) as None, or ``[None]`` for a chat context."""
    if prompt is None or not arguments:
        return arguments
    context = arguments[0]
    if context == prompt:
        return [None, *arguments[1:]]
    if context == [prompt]:
        return [[None], *arguments[1:]]
    return arguments


def lm_eval_arguments(record: SampleRecord) -> list[Any]:
    """lm-eval's arguments of each of a record's instances (JSON-ready), the prompt put back."""
    prompt = record.item.get("prompt")
    out = []
    for arguments in record.extra["lm_eval"]["arguments"]:
        if arguments and arguments[0] is None:
            arguments = [prompt, *arguments[1:]]
        elif arguments and arguments[0] == [None]:
            arguments = [[prompt], *arguments[1:]]
        out.append(arguments)
    return out


def _row(task: Any, doc_id: int, doc: Any, instances: Sequence[Any]) -> dict[str, Any]:
    first = instances[0].args[0]
    prompt = getattr(first, "prompt", first)
    return {
        "doc_id": doc_id,
        "prompt": prompt if isinstance(prompt, str) else jsonable(prompt),
        "target": jsonable(task.doc_to_target(doc)),
        "doc": jsonable(doc),
    }


def _entries(config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(lm-eval task or group name, task params) of each entry of the config."""
    config_type = str(config.get("type", "")).strip()
    tasks = config.get("tasks")
    if config_type != LM_EVAL_TYPE:
        if tasks:
            raise InvalidInputError(
                f"config.tasks: a config of lm-eval type {config_type!r} runs that task; to run several, "
                f'use {{"type": "{LM_EVAL_TYPE}", "tasks": {{name: {{"type": <lm-eval task>}}}}}}'
            )
        return [(config_type, None)]
    if not isinstance(tasks, Mapping) or not tasks:
        raise InvalidInputError(
            f'an "{LM_EVAL_TYPE}" config needs tasks: {{name: {{"type": <lm-eval task or group>, '
            '"params"?}}}}'
        )
    out = []
    for name, task in tasks.items():
        if not isinstance(task, Mapping) or not isinstance(task.get("type"), str):
            raise InvalidInputError(f"config.tasks.{name} must be an object with a 'type' (an lm-eval task)")
        unknown = [k for k in task if k not in _TASK_KEYS]
        if unknown:
            raise InvalidInputError(
                f"config.tasks.{name}: unknown key(s) {', '.join(map(repr, unknown))}; accepted: "
                f"{', '.join(_TASK_KEYS)}"
            )
        out.append((task["type"].strip(), task.get("params")))
    return out


def summarize_lm_eval(
    loaded: Sequence[LoadedTasks], samples: Mapping[str, Sequence[SampleRecord]]
) -> dict[str, Any]:
    """The NeMo results object, aggregated by lm-eval from the recorded per-document metrics.

    ``tasks`` and ``groups`` hold every ``metric,filter`` of lm-eval's results, named by
    :func:`score_name`: ``value`` is lm-eval's aggregate, ``stats.stderr`` its stderr, and a 95%
    bootstrap ``ci`` of the mean is added where the per-document values are numbers. ``lm_eval`` holds
    lm-eval's own ``results``, ``groups``, ``group_subtasks``, ``n-shot`` and ``n-samples``.
    """
    from lm_eval.evaluator_utils import _process_results

    accumulators: dict[str, Any] = {}
    groups: dict[str, Any] = {}
    numeric: dict[str, dict[str, list[float | None]]] = {}
    counts: dict[str, dict[str, int]] = {}
    for part in loaded:
        groups.update(part.groups)
        for name, task in part.tasks.items():
            records = sorted(samples.get(name, ()), key=lambda r: r.index)
            raw: dict[tuple[str, str], list[Any]] = defaultdict(list)
            for record in records:
                if record.error is not None:
                    continue
                for filter_key, metrics in record.extra.get("lm_eval", {}).get("metrics", {}).items():
                    for metric, value in metrics.items():
                        raw[(metric, filter_key)].append(value)
                        numeric.setdefault(name, {}).setdefault(score_name(metric, filter_key), []).append(
                            _number(value)
                        )
            accumulators[name] = {"task": task, "raw_metrics": raw, "logged_samples": []}
            failed = sum(1 for r in records if r.error is not None)
            counts[name] = {"samples": len(records), "samples_failed": failed}
    evaluated = _process_results(accumulators, groups, BOOTSTRAP_ITERS)._to_eval_results()

    def metrics_of(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filter_key = key.split(",", 1)
            label = score_name(metric, filter_key)
            per_doc = numeric.get(name, {}).get(label)
            numbers = per_doc is not None and any(v is not None for v in per_doc)
            entry: dict[str, Any] = score_entry(per_doc) if per_doc and numbers else {"stats": {}}
            entry["value"] = jsonable(value)
            stderr = values.get(f"{metric}_stderr,{filter_key}")
            entry["stats"]["stderr"] = stderr if isinstance(stderr, int | float) else None
            out[label] = {"scores": {label: entry}}
        return out

    results = evaluated["results"]
    tasks_out = {
        name: {"metrics": metrics_of(name, results[name]), "data": counts[name]}
        for name in accumulators
        if name in results
    }
    groups_out = {
        name: {
            "metrics": metrics_of(name, values),
            "data": {"tasks": evaluated["group_subtasks"].get(name, [])},
        }
        for name, values in evaluated.get("groups", {}).items()
    }
    kept = ("results", "groups", "group_subtasks", "n-shot", "n-samples", "versions")
    raw_view = {key: jsonable(evaluated.get(key, {})) for key in kept}
    return {"tasks": tasks_out, "groups": groups_out, "lm_eval": raw_view}


async def compile_lm_eval_plan(
    config: Mapping[str, Any],
    endpoint: ModelEndpoint,
    *,
    settings: Settings,
    clients: ClientSource | None,
) -> EvalPlan:
    """Compile an lm-eval config (a task or group name as ``type``, or ``type: "lm-eval"``) for ``endpoint``.

    Loads the tasks and builds every request now (lm-eval loads the dataset when it builds a task), in
    a thread; a missing dataset is a NotFoundError that says how to point at local files.
    """
    unknown = [k for k in config if k not in _CONFIG_KEYS]
    if unknown:
        raise InvalidInputError(
            f"config: unknown key(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(_CONFIG_KEYS)}"
        )
    if clients is None:
        raise InvalidInputError("lm-eval tasks need a model client pool")
    if config.get("groups"):
        raise InvalidInputError("config.groups: lm-eval tasks are grouped by lm-eval's own group definitions")
    entries = _entries(config)
    options = [parse_options([name], endpoint, [config.get("params"), params]) for name, params in entries]
    requested = [o.parallelism for o in options if o.parallelism is not None]
    parallelism = max(requested) if requested else int(getattr(settings, "default_parallelism", 16))
    max_retries = max((o.max_retries for o in options if o.max_retries is not None), default=5)
    timeout = max((o.request_timeout for o in options if o.request_timeout is not None), default=600.0)
    client_args = {"max_retries": max_retries, "timeout": timeout, "max_connections": max(parallelism, 1)}

    def load(option: LmEvalOptions) -> tuple[LoadedTasks, LmEvalModel]:
        model = LmEvalModel(option.model)
        return load_tasks(option.tasks, model), model

    loaded_models = [await asyncio.to_thread(load, option) for option in options]
    plans: list[TaskPlan] = []
    for loaded, model in loaded_models:
        for name, task in loaded.tasks.items():
            if any(p.name == name for p in plans):
                raise InvalidInputError(f"config.tasks: lm-eval task {name!r} is named twice")
            scorer = DocumentScorer(name, loaded, model, clients, endpoint, client_args)
            rows = [
                _row(task, d, loaded.docs[name][d], loaded.instances[name][d]) for d in loaded.instances[name]
            ]

            async def row_source(rows: list[dict[str, Any]] = rows) -> list[dict[str, Any]]:
                return rows

            plans.append(
                TaskPlan(name=name, rows=row_source, metrics=[scorer], build_request=scorer.first_request)
            )
    parts = [loaded for loaded, _ in loaded_models]

    def summarize(samples: Mapping[str, Sequence[SampleRecord]]) -> dict[str, Any]:
        return summarize_lm_eval(parts, samples)

    return EvalPlan(
        tasks=plans,
        summarize=summarize,
        summary_fields=("extra",),
        model=endpoint,
        parallelism=parallelism,
        max_retries=max_retries,
        request_timeout=timeout,
    )
