"""NeMo Evaluator v1 config and target shapes, and their validation (:func:`parse_config`,
:func:`parse_target`). The entity fields (``id``, ``name``, ``namespace``...) pass through; the rest
is checked against what the local engine runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evalstack.engine.benchmarks import ACADEMIC_TYPES
from evalstack.errors import InvalidInputError
from evalstack.limits import MAX_INLINE_ROWS, MAX_LIMIT_SAMPLES

TASK_TYPES = ("completion", "chat-completion", "data")
TARGET_TYPES = ("model", "rows", "dataset", "cached_outputs")
CONFIG_TYPES: tuple[str, ...] = ("custom", *ACADEMIC_TYPES)
"""Config types the local engine runs: ``custom`` tasks and the academic benchmarks."""


class _Public(BaseModel):
    """Public NeMo shapes: the fields the spec documents, nothing else."""

    model_config = ConfigDict(extra="forbid")


class NemoParams(_Public):
    """``params`` of a config (EvaluationParams); task params may hold the same keys plus ``template``."""

    parallelism: int | None = Field(default=None, ge=1)
    limit_samples: int | None = Field(default=None, ge=0, le=MAX_LIMIT_SAMPLES)
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
    rows: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_INLINE_ROWS)
    dataset: str | NemoDataset | None = None
    cached_outputs: dict[str, Any] | None = None
    retriever: dict[str, Any] | None = None
    rag: dict[str, Any] | None = None


def validation_message(exc: ValidationError, what: str) -> str:
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
            f"A NeMo config needs a 'type'; supported by the local engine: {', '.join(CONFIG_TYPES)}."
        )
    if isinstance(config.get("tasks"), list):
        raise InvalidInputError(
            "config.tasks is a list (the early-access format); current configs map task names to tasks: "
            '{"tasks": {"my-task": {"type": "completion", ...}}}.'
        )
    try:
        return NemoConfig.model_validate(dict(config))
    except ValidationError as exc:
        raise InvalidInputError(validation_message(exc, "config")) from exc


def parse_target(target: Mapping[str, Any]) -> NemoTarget:
    """Validate a target; InvalidInputError names each bad field."""
    if not isinstance(target, Mapping):
        raise InvalidInputError(f"A NeMo target must be an object, got {type(target).__name__}.")
    try:
        parsed = NemoTarget.model_validate(dict(target))
    except ValidationError as exc:
        raise InvalidInputError(validation_message(exc, "target")) from exc
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
