"""Academic benchmarks on the local engine: prompting, answer extraction, data loading, results.

A NeMo Evaluator config whose ``type`` is one of :data:`ACADEMIC_TYPES` compiles through
:func:`compile_academic_plan`::

    {"type": "gsm8k", "params": {"limit_samples": 100, "max_tokens": 512,
                                 "extra": {"num_fewshot": 8, "endpoint_type": "completions"}}}

``tasks`` may be left out (one task named after the type) or name tasks whose ``type`` is an academic
type; task ``params`` override config ``params`` and a task ``dataset`` (``{"files_url": ...}``) points
it at other data. Each benchmark module documents its prompt format, defaults and scores; options
and data loading are described in :mod:`evalstack.engine.benchmarks.common`, results in
:mod:`evalstack.engine.benchmarks.results`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from evalstack.engine.benchmarks.arc import ARC_CHALLENGE, ARC_EASY
from evalstack.engine.benchmarks.base import Benchmark, Compiled, Context
from evalstack.engine.benchmarks.boolq import BOOLQ
from evalstack.engine.benchmarks.common import parse_options
from evalstack.engine.benchmarks.generation import WMT22_EN_DE, XSUM
from evalstack.engine.benchmarks.gsm8k import GSM8K
from evalstack.engine.benchmarks.hellaswag import HELLASWAG
from evalstack.engine.benchmarks.humaneval import HUMANEVAL
from evalstack.engine.benchmarks.ifeval import IFEVAL
from evalstack.engine.benchmarks.mmlu import MMLU
from evalstack.engine.benchmarks.results import summarize
from evalstack.engine.benchmarks.truthfulqa import TRUTHFULQA
from evalstack.engine.plan import EvalPlan
from evalstack.engine.ports import ClientSource
from evalstack.errors import InvalidInputError
from evalstack.inference.base import ModelEndpoint
from evalstack.store.records import SampleRecord

if TYPE_CHECKING:
    from evalstack.config import Settings

ACADEMIC_TYPES: Mapping[str, Benchmark] = {
    b.name: b
    for b in (
        MMLU,
        GSM8K,
        ARC_CHALLENGE,
        ARC_EASY,
        HELLASWAG,
        TRUTHFULQA,
        BOOLQ,
        IFEVAL,
        HUMANEVAL,
        XSUM,
        WMT22_EN_DE,
    )
}
"""Config type -> benchmark definition."""

_CONFIG_KEYS = (
    "type", "params", "tasks", "groups", "id", "name", "namespace", "description", "project",
    "custom_fields", "ownership", "created_at", "updated_at", "schema_version", "type_prefix",
)  # fmt: skip
_TASK_KEYS = ("type", "params", "dataset", "metrics")

__all__ = ["ACADEMIC_TYPES", "compile_academic_plan", "is_academic"]


def is_academic(config_type: str) -> bool:
    """Whether a config ``type`` names an academic benchmark that the local engine runs."""
    return isinstance(config_type, str) and config_type.strip().lower() in ACADEMIC_TYPES


def _benchmark(type_name: Any, where: str) -> Benchmark:
    key = str(type_name).strip().lower() if isinstance(type_name, str) else ""
    if key not in ACADEMIC_TYPES:
        raise InvalidInputError(
            f"{where} {type_name!r} is not an academic benchmark; supported: {', '.join(ACADEMIC_TYPES)}."
        )
    return ACADEMIC_TYPES[key]


def _tasks_of(config: Mapping[str, Any], default: str) -> dict[str, dict[str, Any]]:
    tasks = config.get("tasks")
    if tasks is None:
        return {default: {"type": default}}
    if not isinstance(tasks, Mapping) or not tasks:
        raise InvalidInputError("config.tasks must be an object of task name -> {type, params?, dataset?}")
    out: dict[str, dict[str, Any]] = {}
    for name, task in tasks.items():
        if not isinstance(task, Mapping):
            raise InvalidInputError(f"config.tasks.{name} must be an object")
        unknown = [k for k in task if k not in _TASK_KEYS]
        if unknown:
            raise InvalidInputError(
                f"config.tasks.{name}: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(_TASK_KEYS)}"
            )
        if task.get("metrics"):
            raise InvalidInputError(
                f"config.tasks.{name}.metrics: academic benchmarks have fixed metrics; remove 'metrics'"
            )
        out[str(name)] = dict(task)
    return out


async def compile_academic_plan(
    config: dict[str, Any],
    endpoint: ModelEndpoint,
    *,
    settings: Settings,
    clients: ClientSource | Any,
) -> EvalPlan:
    """Compile an academic NeMo config (``type`` in :data:`ACADEMIC_TYPES`) for ``endpoint``.

    Raises InvalidInputError for an unknown type, key or parameter (naming what is accepted). Data is
    loaded when the plan runs: a missing dataset fails the job with a NotFoundError naming where it looked.
    """
    if not isinstance(config, Mapping):
        raise InvalidInputError("an evaluation config must be an object")
    unknown = [k for k in config if k not in _CONFIG_KEYS]
    if unknown:
        raise InvalidInputError(
            f"config: unknown key(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(_CONFIG_KEYS)}"
        )
    config_type = config.get("type")
    _benchmark(config_type, "config type")
    default = str(config_type).strip().lower()
    config_params = config.get("params")
    compiled_all = Compiled()
    job: dict[str, list[Any]] = {"parallelism": [], "max_retries": [], "request_timeout": []}
    base = parse_options(endpoint, [config_params])
    for name, task in _tasks_of(config, default).items():
        bench = _benchmark(task.get("type") or default, f"config.tasks.{name}.type")
        opts = parse_options(endpoint, [config_params, task.get("params")], task.get("dataset"))
        for key in job:
            if getattr(opts, key) is not None:
                job[key].append(getattr(opts, key))
        ctx = Context(
            task_name=name,
            opts=opts,
            settings=settings,
            endpoint=endpoint,
            clients=clients,
            max_retries=base.max_retries if base.max_retries is not None else 5,
            request_timeout=base.request_timeout if base.request_timeout is not None else 600.0,
        )
        compiled = bench.compile(ctx)
        compiled_all.plans.extend(compiled.plans)
        compiled_all.summaries.extend(compiled.summaries)
        compiled_all.groups.extend(compiled.groups)
    names = [p.name for p in compiled_all.plans]
    if len(set(names)) != len(names):
        raise InvalidInputError("config.tasks: two tasks compile to the same task name; rename one")
    summaries, groups = compiled_all.summaries, compiled_all.groups

    def summarize_samples(samples: Mapping[str, Sequence[SampleRecord]]) -> dict[str, Any]:
        return summarize(summaries, groups, samples)

    def setting(key: str, fallback: Any) -> Any:
        value = getattr(base, key)
        if value is not None:
            return value
        return max(job[key]) if job[key] else fallback

    return EvalPlan(
        tasks=compiled_all.plans,
        summarize=summarize_samples,
        model=endpoint,
        parallelism=setting("parallelism", getattr(settings, "default_parallelism", 16)),
        max_retries=setting("max_retries", 5),
        request_timeout=setting("request_timeout", 600.0),
    )
