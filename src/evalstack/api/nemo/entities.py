"""NeMo evaluation configs and targets (``/v1/evaluation/{configs,targets}``): entities addressed by
``namespace/name``, checked against the engine's config and target shapes (422 naming the field and
what is accepted) and kept by the registry; and the config or target of a job body, by reference or
inline."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from evalstack.api.nemo.convert import entity_view
from evalstack.api.nemo.errors import from_validation_error, invalid
from evalstack.api.nemo.listing import ListQuery, entity_getter, paginate, target_getter
from evalstack.api.nemo.models import (
    DEFAULT_NAMESPACE,
    SERVER_FIELDS,
    DeleteResponse,
    EvaluationConfigBody,
    EvaluationTargetBody,
    isoformat,
    new_entity_id,
    utc_now,
)
from evalstack.engine import nemo_plan
from evalstack.engine.metrics.nemo import nemo_metric
from evalstack.engine.metrics.nemo_base import MetricDeps, resolve_model_spec
from evalstack.engine.templates import check_templates
from evalstack.errors import ConflictError, InvalidInputError, NotFoundError
from evalstack.redaction import restore_redacted

if TYPE_CHECKING:
    from evalstack.inference.clients import ModelClientPool
    from evalstack.registry import Registry

logger = logging.getLogger(__name__)

Kind = Literal["config", "target"]

_LABEL: dict[Kind, str] = {"config": "Evaluation config", "target": "Evaluation target"}
_BODY_MODELS: dict[Kind, type[BaseModel]] = {"config": EvaluationConfigBody, "target": EvaluationTargetBody}
_ENGINE_MODELS: dict[Kind, type[BaseModel]] = {"config": nemo_plan.NemoConfig, "target": nemo_plan.NemoTarget}


def _ref(value: str, default_namespace: str) -> str:
    """``"ns/name"`` from a reference; a bare name is looked up in ``default_namespace``."""
    ref = value.strip()
    if not ref:
        raise invalid("a reference must be 'namespace/name'")
    return ref if "/" in ref else f"{default_namespace}/{ref}"


class NemoEntities:
    """Configs and targets: validated against the engine's shapes, kept by the registry."""

    def __init__(self, registry: Registry, clients: ModelClientPool) -> None:
        self.registry = registry
        self.clients = clients
        self._entity_lock = asyncio.Lock()

    # ---- validation ---------------------------------------------------------------------------

    async def check_engine_model(self, kind: Kind, body: Mapping[str, Any], loc: list[str | int]) -> None:
        """Validate a config or target with the engine's models: 422 naming the field and what is accepted.

        Checks the shape, the config ``type`` (against the types the engine runs), each task's ``params``,
        template syntax and metrics, and the target's type-specific fields (an ``api_endpoint`` model
        included). Model and dataset references are resolved, and dataset files located, when a job
        compiles: a stored config or target may name what is registered later.
        """
        part = {k: v for k, v in body.items() if k not in nemo_plan.ENTITY_FIELDS and v is not None}
        if "type" not in part:
            supported = nemo_plan.CONFIG_TYPES if kind == "config" else nemo_plan.TARGET_TYPES
            raise invalid(f"type is required; supported {kind} types: {', '.join(supported)}", [*loc, "type"])
        if kind == "config" and await asyncio.to_thread(nemo_plan.asks_for_lm_eval, part):
            return  # an lm-eval task or group: lm-eval checks it when the job compiles
        if kind == "config" and isinstance(part.get("tasks"), list):
            raise invalid(
                "tasks is a list (the early-access format); map task names to tasks: "
                '{"tasks": {"my-task": {"type": "completion", ...}}}',
                [*loc, "tasks"],
            )
        try:
            _ENGINE_MODELS[kind].model_validate(part)
        except ValidationError as exc:
            raise from_validation_error(exc, loc, model=_ENGINE_MODELS[kind]) from None
        if kind == "config":
            await self._check_config_parts(part, loc)
        else:
            try:
                parsed = nemo_plan.parse_target(part)
                if parsed.type == "model" and isinstance(parsed.model, Mapping):
                    await resolve_model_spec(parsed.model, None, "target.model")
            except InvalidInputError as exc:
                raise invalid(
                    exc.message, [*loc, "model"] if "target.model" in exc.message else loc
                ) from None

    async def _check_config_parts(self, part: Mapping[str, Any], loc: list[str | int]) -> None:
        """The config ``type``, and each task's params, template syntax and metrics."""
        supported = list(nemo_plan.CONFIG_TYPES)
        if part["type"] not in supported:
            raise invalid(
                f"config type {part['type']!r} is not supported by the local engine; "
                f"supported: {', '.join(supported)}",
                [*loc, "type"],
            )
        deps = MetricDeps(registry=self.registry, clients=self.clients)
        for name, task in (part.get("tasks") or {}).items():
            where = [*loc, "tasks", name]
            try:
                params = nemo_plan.NemoTaskParams.model_validate(task.get("params") or {})
            except ValidationError as exc:
                raise from_validation_error(exc, [*where, "params"], model=nemo_plan.NemoTaskParams) from None
            try:
                check_templates(params.template)
            except InvalidInputError as exc:
                raise invalid(f"task {name!r}: {exc.message}", [*where, "params", "template"]) from None
            if part["type"] != "custom":
                continue
            for metric_name, spec in (task.get("metrics") or {}).items():
                try:
                    await nemo_metric(metric_name, spec, deps)
                except NotFoundError:
                    pass  # a judge model registered later; the job's compile resolves it
                except InvalidInputError as exc:
                    raise invalid(f"task {name!r}: {exc.message}", [*where, "metrics", metric_name]) from None

    async def parse_inline(self, kind: Kind, body: Mapping[str, Any], loc: list[str | int]) -> dict[str, Any]:
        """An inline config or target of a job body, checked like a created entity (not stored)."""
        model = _BODY_MODELS[kind]
        try:
            parsed = model.model_validate(body)
        except ValidationError as exc:
            raise from_validation_error(exc, loc, accepted=list(model.model_fields), model=model) from None
        entity = {
            k: v for k, v in parsed.model_dump(mode="json", exclude_unset=True).items() if v is not None
        }
        await self.check_engine_model(kind, entity, loc)
        return {k: v for k, v in entity.items() if k not in SERVER_FIELDS}

    async def resolve(self, kind: Kind, value: str | dict[str, Any], namespace: str) -> dict[str, Any]:
        """A job's config or target as a full object: a stored entity by reference, or an inline one."""
        if isinstance(value, str):
            ref = _ref(value, namespace)
            try:
                return await self.registry.get_nemo(kind, ref)
            except NotFoundError:
                raise NotFoundError(
                    f"{_LABEL[kind]} '{ref}' not found; create it with POST /v1/evaluation/{kind}s "
                    f"or pass the {kind} inline"
                ) from None
        return await self.parse_inline(kind, value, ["body", kind])

    # ---- configs and targets ------------------------------------------------------------------

    async def get_entity(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        ref = f"{namespace}/{name}"
        try:
            return await self.registry.get_nemo(kind, ref)
        except NotFoundError:
            raise NotFoundError(f"{_LABEL[kind]} '{ref}' not found") from None

    async def create_entity(self, kind: Kind, body: BaseModel) -> dict[str, Any]:
        given = {k: v for k, v in body.model_dump(mode="json", exclude_unset=True).items() if v is not None}
        await self.check_engine_model(kind, given, ["body"])
        entity_id = new_entity_id(kind)
        now = isoformat(utc_now())
        entity = {k: v for k, v in given.items() if k not in SERVER_FIELDS}
        entity.update(
            id=entity_id,
            name=given.get("name") or entity_id,
            namespace=given.get("namespace") or DEFAULT_NAMESPACE,
            created_at=now,
            updated_at=now,
        )
        ref = f"{entity['namespace']}/{entity['name']}"
        try:
            await self.registry.put_nemo(kind, entity)
        except ConflictError:
            raise ConflictError(
                f"{_LABEL[kind]} '{ref}' already exists; choose another name or update it with "
                f"PATCH /v1/evaluation/{kind}s/{ref}"
            ) from None
        logger.info("Created %s %s (%s)", kind, ref, entity_id)
        return entity_view(kind, entity)

    async def update_entity(self, kind: Kind, namespace: str, name: str, body: BaseModel) -> dict[str, Any]:
        changes = {k: v for k, v in body.model_dump(mode="json", exclude_unset=True).items() if v is not None}
        changes = {k: v for k, v in changes.items() if k not in SERVER_FIELDS}
        async with self._entity_lock:
            current = await self.get_entity(kind, namespace, name)
            changes = restore_redacted(changes, current)  # a masked key sent back keeps its value
            updated = {**current, **changes, "updated_at": isoformat(utc_now())}
            await self.check_engine_model(kind, updated, ["body"])
            old_ref, new_ref = f"{namespace}/{name}", f"{updated['namespace']}/{updated['name']}"
            if new_ref == old_ref:
                await self.registry.put_nemo(kind, updated, replace=True)
            else:
                try:
                    await self.registry.put_nemo(kind, updated)
                except ConflictError:
                    raise ConflictError(
                        f"{_LABEL[kind]} '{new_ref}' already exists; cannot rename '{old_ref}' to it"
                    ) from None
                await self.registry.delete_nemo(kind, old_ref)
        return entity_view(kind, updated)

    async def delete_entity(self, kind: Kind, namespace: str, name: str) -> dict[str, Any]:
        async with self._entity_lock:
            entity = await self.get_entity(kind, namespace, name)
            await self.registry.delete_nemo(kind, f"{namespace}/{name}")
        return DeleteResponse(
            id=entity.get("id"),
            deleted_at=isoformat(utc_now()),
            message=f"{_LABEL[kind]} '{namespace}/{name}' deleted",
        ).model_dump(mode="json")

    async def list_entities(self, kind: Kind, query: ListQuery) -> dict[str, Any]:
        entities = [entity_view(kind, e) for e in await self.registry.list_nemo(kind)]
        return paginate(entities, query, target_getter if kind == "target" else entity_getter)
