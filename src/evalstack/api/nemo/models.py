"""Wire models of the NeMo Evaluator v1 API, with the field names of the ``nemo-microservices`` SDK types.

Configs and targets are validated in depth by the engine's own models (``engine.nemo_plan``); the
wire models here check the envelope: the common entity fields and the top-level keys. Bodies reject
unknown top-level keys and name the accepted ones.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from evalstack.store.records import new_job_id

# Job statuses as the SDK spells them (``shared.job_status.JobStatus``).
JobStatus = Literal[
    "created", "pending", "running", "cancelled", "cancelling", "failed", "completed", "ready", "unknown"
]
TaskStatus = Literal["pending", "running", "completed", "failed"]
TargetType = Literal["model", "cached_outputs", "retriever", "rag", "rows", "dataset"]
SortField = Literal["created_at", "-created_at"]

DEFAULT_NAMESPACE = "default"

# The entity keys themselves are ``evalstack.engine.nemo_plan.ENTITY_FIELDS`` (the engine owns them).
# Entity keys the server assigns; a client may echo them back (a GET body re-posted) but they are ignored.
SERVER_FIELDS: frozenset[str] = frozenset({"id", "created_at", "updated_at", "schema_version", "type_prefix"})

ID_PREFIXES: dict[str, str] = {
    "config": "eval-config-",
    "target": "eval-target-",
    "result": "evaluation_result-",
}


def new_entity_id(kind: Literal["config", "target", "result"]) -> str:
    """A new entity id: the kind's prefix plus a base58 uuid4 (the job id's suffix scheme)."""
    return ID_PREFIXES[kind] + new_job_id().removeprefix("eval-")


def result_id_for_job(job_id: str) -> str:
    """The id of the result entity a job produces: same base58 suffix, ``evaluation_result-`` prefix."""
    return ID_PREFIXES["result"] + job_id.removeprefix("eval-")


def job_id_for_result(result_id: str) -> str | None:
    """The job whose result ``result_id`` names, or None when it is not a job-derived result id."""
    prefix = ID_PREFIXES["result"]
    return "eval-" + result_id[len(prefix) :] if result_id.startswith(prefix) else None


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def isoformat(value: datetime | str | None) -> str | None:
    """An ISO 8601 string; naive datetimes are taken as UTC."""
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


class WireModel(BaseModel):
    """Base of the response models: unknown keys kept, ``model_`` field names allowed."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())


class BodyModel(BaseModel):
    """Base of request bodies: unknown keys are rejected (the error lists the accepted ones)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


# ---- common entity fields ---------------------------------------------------------------------

_NAME_PATTERN = r"^[^/\s]+$"


class Ownership(WireModel):
    created_by: str | None = None
    updated_by: str | None = None
    access_policies: dict[str, str] | None = None


class EntityFieldsBody(BodyModel):
    """The entity fields a client may send when creating or updating a config or target."""

    name: str | None = Field(default=None, min_length=1, max_length=255, pattern=_NAME_PATTERN)
    namespace: str | None = Field(default=None, min_length=1, max_length=255, pattern=_NAME_PATTERN)
    description: str | None = None
    project: str | None = None
    custom_fields: dict[str, Any] | None = None
    ownership: Ownership | None = None
    # Server-assigned; accepted so that a fetched entity can be posted back, then ignored.
    id: str | None = None
    created_at: str | datetime | None = None
    updated_at: str | datetime | None = None
    schema_version: str | None = None
    type_prefix: str | None = None


# ---- configs and targets ----------------------------------------------------------------------


def _type_is_required(schema: dict[str, Any]) -> None:
    """The published schema requires ``type``, as the route does (the model lets it be absent only so
    that the route can answer with the supported types)."""
    required = schema.setdefault("required", [])
    if "type" not in required:
        required.append("type")


class EvaluationConfigBody(EntityFieldsBody):
    """``POST /v1/evaluation/configs``; ``params``, ``tasks`` and ``groups`` are checked by the engine."""

    model_config = ConfigDict(json_schema_extra=_type_is_required)

    # Required; optional here so that its absence gets a message listing the supported types.
    type: str | None = Field(default=None, min_length=1)
    params: dict[str, Any] | None = None
    # A list is the early-access format: accepted here so that the engine check can explain it.
    tasks: dict[str, Any] | list[Any] | None = None
    groups: dict[str, Any] | None = None


class EvaluationConfigPatch(EvaluationConfigBody):
    """``PATCH /v1/evaluation/configs/{namespace}/{name}``: the fields given replace the stored ones."""

    model_config = ConfigDict(json_schema_extra=None)


class EvaluationTargetBody(EntityFieldsBody):
    """``POST /v1/evaluation/targets``; the type-specific parts are checked by the engine."""

    model_config = ConfigDict(json_schema_extra=_type_is_required)

    # Required; optional here so that its absence gets a message listing the supported types.
    type: str | None = Field(default=None, min_length=1)
    model: str | dict[str, Any] | None = None
    rows: list[dict[str, Any]] | None = None
    dataset: str | dict[str, Any] | None = None
    cached_outputs: dict[str, Any] | None = None
    retriever: dict[str, Any] | None = None
    rag: dict[str, Any] | None = None


class EvaluationTargetPatch(EvaluationTargetBody):
    """``PATCH /v1/evaluation/targets/{namespace}/{name}``: the fields given replace the stored ones."""

    model_config = ConfigDict(json_schema_extra=None)


class Entity(WireModel):
    """The fields every stored NeMo entity (config, target) carries."""

    id: str | None = None
    name: str | None = None
    namespace: str | None = None
    description: str | None = None
    project: str | None = None
    custom_fields: dict[str, Any] | None = None
    ownership: Ownership | None = None
    schema_version: str | None = None
    type_prefix: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class EvaluationConfig(Entity):
    """An evaluation config entity (SDK ``EvaluationConfig``)."""

    type: str
    params: dict[str, Any] | None = None
    tasks: dict[str, Any] | None = None
    groups: dict[str, Any] | None = None


class EvaluationTarget(Entity):
    """An evaluation target entity (SDK ``EvaluationTarget``)."""

    type: str
    model: str | dict[str, Any] | None = None
    rows: list[dict[str, Any]] | None = None
    dataset: str | dict[str, Any] | None = None
    cached_outputs: dict[str, Any] | None = None
    retriever: dict[str, Any] | None = None
    rag: dict[str, Any] | None = None


# ---- jobs -------------------------------------------------------------------------------------


class EvaluationStatusDetails(WireModel):
    """``GET /v1/evaluation/jobs/{id}/status`` and ``job.status_details``.

    ``progress`` (0 to 100) is set only when the config has ``params.limit_samples``.
    """

    message: str | None = None
    progress: float | None = None
    samples_processed: int | None = None
    task_status: dict[str, str] | None = None


class JobCreateBody(BodyModel):
    """``POST /v1/evaluation/jobs`` and ``POST /v1/evaluation/live``.

    ``config`` and ``target`` are ``"namespace/name"`` references or inline objects. ``result``,
    ``status`` and ``status_details`` are server-managed: accepted (the SDK may send them) and ignored.
    """

    config: str | dict[str, Any]
    target: str | dict[str, Any]
    namespace: str | None = Field(default=None, min_length=1, max_length=255, pattern=_NAME_PATTERN)
    project: str | None = None
    description: str | None = None
    custom_fields: dict[str, Any] | None = None
    ownership: Ownership | None = None
    output_files_url: str | None = None
    result: str | None = None
    status: str | None = None
    status_details: dict[str, Any] | None = None


class EvaluationJob(WireModel):
    """An evaluation job (SDK ``EvaluationJob``); ``config`` and ``target`` are full objects."""

    id: str
    namespace: str | None = None
    project: str | None = None
    description: str | None = None
    custom_fields: dict[str, Any] | None = None
    ownership: Ownership | None = None
    config: EvaluationConfig
    target: EvaluationTarget
    status: JobStatus
    status_details: EvaluationStatusDetails
    result: str | None = None
    output_files_url: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


# ---- results ----------------------------------------------------------------------------------


class EvaluationResult(WireModel):
    """Aggregate results of a job (SDK ``EvaluationResult``); ``tasks``, ``groups`` come from the engine."""

    job: str
    id: str | None = None
    namespace: str | None = None
    project: str | None = None
    description: str | None = None
    custom_fields: dict[str, Any] | None = None
    ownership: Ownership | None = None
    files_url: str | None = None
    tasks: dict[str, Any] | None = None
    groups: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class EvaluationResultBody(BodyModel):
    """``POST /v1/evaluation/results``: a result entity stored as given."""

    job: str = Field(min_length=1)
    namespace: str | None = Field(default=None, min_length=1, max_length=255, pattern=_NAME_PATTERN)
    project: str | None = None
    description: str | None = None
    custom_fields: dict[str, Any] | None = None
    ownership: Ownership | None = None
    files_url: str | None = None
    tasks: dict[str, Any] | None = None
    groups: dict[str, Any] | None = None
    id: str | None = None
    created_at: str | datetime | None = None
    updated_at: str | datetime | None = None


class EvaluationResultPatch(BodyModel):
    """``PATCH /v1/evaluation/results/{id}``."""

    job: str | None = Field(default=None, min_length=1)
    namespace: str | None = Field(default=None, min_length=1, max_length=255, pattern=_NAME_PATTERN)
    project: str | None = None
    description: str | None = None
    custom_fields: dict[str, Any] | None = None
    ownership: Ownership | None = None
    files_url: str | None = None
    tasks: dict[str, Any] | None = None
    groups: dict[str, Any] | None = None


class LiveEvaluation(WireModel):
    """``POST /v1/evaluation/live``: the outcome of a synchronous, in-memory run."""

    status: JobStatus
    status_details: EvaluationStatusDetails
    result: EvaluationResult | None = None
    logs: dict[str, Any] | None = None


# ---- lists and deletes ------------------------------------------------------------------------


class PaginationData(WireModel):
    page: int
    page_size: int
    current_page_size: int
    total_pages: int
    total_results: int


class ListEnvelope(WireModel):
    """Every v1 list: ``data`` plus how it was paged, sorted, filtered and searched."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    pagination: PaginationData
    sort: SortField
    filter: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, Any] = Field(default_factory=dict)


class DeleteResponse(WireModel):
    """``DELETE`` of a config, target or result."""

    id: str | None = None
    deleted_at: str | None = None
    message: str | None = None
