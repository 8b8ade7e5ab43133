"""Errors of the NeMo Evaluator API family: domain errors to status codes and FastAPI-style bodies.

The mapping is scoped to the NeMo routers through ``NemoRoute`` (a route class), so the other API
families on the same app keep their own error format. Bodies are ``{"detail": "message"}``, and for
422 ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`` as FastAPI writes them. Client errors
carry ``x-should-retry: false``: the SDK would otherwise retry a 409 (duplicate name) twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import UnionType
from typing import Any, Union, get_args, get_origin

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from evalstack.errors import (
    ConflictError,
    EvalstackError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    StorageFullError,
    UnsupportedError,
    UpstreamError,
    UpstreamTimeoutError,
)
from evalstack.redaction import REDACTED, is_secret_key, redact

logger = logging.getLogger(__name__)

NO_RETRY = {"x-should-retry": "false"}


def status_for(exc: EvalstackError) -> int:
    """The HTTP status of a domain error."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ForbiddenError):
        return 403
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, InvalidInputError | UnsupportedError):
        return 422
    if isinstance(exc, StorageFullError):
        return 507
    if isinstance(exc, UpstreamTimeoutError):
        return 504
    if isinstance(exc, UpstreamError):
        return 502
    return 500


def _jsonable(value: Any) -> Any:
    """``value`` made JSON-safe (pydantic error contexts may hold exceptions)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


_SCALAR_TAGS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "dict[str,any]": "an object",
    "list[str]": "a list of strings",
    "list[any]": "a list",
    "list[dict[str,any]]": "a list of objects",
}
_REFERENCE_FIELDS = {
    "config": "a 'namespace/name' reference",
    "target": "a 'namespace/name' reference",
    "dataset": "a registered dataset name",
    "model": "a registered model name",
}
_MODEL_NAMES = {"NemoDataset": 'a Dataset object {"files_url": ...}'}


def _json_kind(value: Any) -> str:
    """The JSON name of ``value``'s type, for "got ..." in messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, bytes):
        return "content that is not JSON"
    return type(value).__name__


def _is_tag(segment: Any) -> bool:
    """Whether a location segment is the member tag pydantic adds under a union field."""
    if not isinstance(segment, str):
        return False
    return (
        segment in _SCALAR_TAGS
        or segment in _MODEL_NAMES
        or (segment[:1].isupper() and segment.isidentifier())
    )


def _union_at(err: Mapping[str, Any], errors: Sequence[Mapping[str, Any]]) -> int | None:
    """Where ``err``'s location holds a union member tag (another error of the union has another tag)."""
    loc = tuple(err.get("loc", ()))
    for i, segment in enumerate(loc):
        if not _is_tag(segment):
            continue
        for other in errors:
            other_loc = tuple(other.get("loc", ()))
            if (
                len(other_loc) > i
                and other_loc[:i] == loc[:i]
                and other_loc[i] != segment
                and _is_tag(other_loc[i])
            ):
                return i
    return None


def _describe_member(tag: str, field: Any) -> str:
    if tag == "str" and field in _REFERENCE_FIELDS:
        return _REFERENCE_FIELDS[field]
    return _SCALAR_TAGS.get(tag) or _MODEL_NAMES.get(tag) or f"a {tag} object"


def _collapse_unions(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Union errors (one per member, tagged locations) as one error per union field.

    When the value is an object and an object member found errors inside it, those errors are kept
    (tags removed): they say what is wrong with the object. Otherwise one error says which kinds of
    value the field accepts and which it got.
    """
    out: list[dict[str, Any]] = []
    groups: dict[tuple[Any, ...], list[tuple[int, Mapping[str, Any]]]] = {}
    order: list[tuple[Any, ...] | int] = []
    for n, err in enumerate(errors):
        at = _union_at(err, errors)
        if at is None:
            order.append(n)
            continue
        prefix = tuple(err.get("loc", ()))[:at]
        if prefix not in groups:
            groups[prefix] = []
            order.append(prefix)
        groups[prefix].append((at, err))
    for key in order:
        if isinstance(key, int):
            out.append(dict(errors[key]))
            continue
        members = groups[key]
        nested = [(at, e) for at, e in members if len(e.get("loc", ())) > at + 1]
        value = members[0][1].get("input")
        if nested and isinstance(value, dict):
            for at, e in nested:
                loc = tuple(e.get("loc", ()))
                out.append({**e, "loc": (*loc[:at], *loc[at + 1 :])})
            continue
        field = key[-1] if key else None
        kinds: list[str] = []
        for at, e in members:
            text = _describe_member(str(e["loc"][at]), field)
            if text not in kinds:
                kinds.append(text)
        name = ".".join(str(p) for p in key) or "value"
        out.append(
            {
                "loc": key,
                "msg": f"{name} must be {' or '.join(kinds)}, got {_json_kind(value)}",
                "type": "union_type",
                "input": value,
            }
        )
    return out


def _plain_message(err: Mapping[str, Any], at_root: bool, accepted: Sequence[str] | None) -> str:
    """A message that says what is wrong and, where pydantic leaves it out, what is accepted."""
    kind = err.get("type")
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    keys = f" with the keys: {', '.join(sorted(accepted))}" if accepted else ""
    if kind == "json_invalid":
        reason = (err.get("ctx") or {}).get("error")
        where = f" ({reason})" if reason else ""
        return f"the request body is not valid JSON{where}; send a JSON object{keys}"
    if at_root and kind == "missing":
        return f"the request body is missing; send a JSON object{keys}"
    if at_root and kind in ("model_attributes_type", "dict_type", "model_type"):
        return f"the request body must be a JSON object{keys}, got {_json_kind(err.get('input'))}"
    expected = {
        "model_type": "an object",
        "dict_type": "an object",
        "list_type": "a list",
        "string_type": "a string",
    }
    if kind in expected:
        return f"must be {expected[str(kind)]}, got {_json_kind(err.get('input'))}"
    if kind == "string_pattern_mismatch" and (err.get("ctx") or {}).get("pattern") == r"^[^/\s]+$":
        return f"{msg}: a name without '/' or whitespace"
    if kind == "extra_forbidden" and accepted:
        return f"{msg}; accepted keys: {', '.join(sorted(accepted))}"
    return msg


def validation_items(
    errors: Sequence[Any],
    prefix: Sequence[str | int] = (),
    *,
    accepted: Sequence[str] | None = None,
    model: type[BaseModel] | None = None,
) -> list[dict[str, Any]]:
    """Pydantic errors as FastAPI ``detail`` items, locations under ``prefix``.

    Messages name what is accepted: the body's keys for an ``extra_forbidden`` error at the top level
    (``accepted``) or, given ``model``, the keys of the nested object that holds the unknown one; the
    kinds of value a union field takes. A body that is not JSON, or not an object, says so.
    """
    items: list[dict[str, Any]] = []
    for err in _collapse_unions(errors):
        raw_loc = list(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            raw_loc = raw_loc[:1]
        loc = [*prefix, *raw_loc]
        at_root = loc in (["body"], [])
        keys = accepted
        if err.get("type") == "extra_forbidden":
            inner = raw_loc[1:] if raw_loc[:1] == ["body"] and not prefix else raw_loc
            nested = accepted_keys(model, inner[:-1]) if model is not None else None
            keys = nested if nested is not None else (accepted if len(inner) <= 1 else None)
        item: dict[str, Any] = {
            "loc": loc,
            "msg": _plain_message(
                err, at_root, keys if at_root or err.get("type") == "extra_forbidden" else None
            ),
            "type": err.get("type", "value_error"),
        }
        if "input" in err and err.get("type") != "json_invalid":
            secret = bool(loc) and is_secret_key(loc[-1]) and err["input"]
            item["input"] = REDACTED if secret else redact(_jsonable(err["input"]))
        items.append(item)
    return items


def _model_in(annotation: Any) -> Any:
    """The annotation with ``X | None`` unwrapped to X when it is the only non-None member."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(args) == 1:
        return args[0]
    return annotation


def accepted_keys(model: type[BaseModel] | None, loc: Sequence[Any]) -> list[str] | None:
    """The field names of the object ``model`` holds at ``loc`` (dict keys skipped), or None."""
    current: Any = model
    rest = list(loc)
    while True:
        current = _model_in(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if not rest:
                return list(current.model_fields)
            field = current.model_fields.get(str(rest.pop(0)))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) is dict and rest:
            rest.pop(0)
            current = get_args(current)[1]
        elif get_origin(current) in (Union, UnionType):
            models = [a for a in get_args(current) if isinstance(a, type) and issubclass(a, BaseModel)]
            if len(models) != 1:
                return None
            current = models[0]
        else:
            return None


def invalid(msg: str, loc: Sequence[str | int] = ("body",)) -> InvalidInputError:
    """An InvalidInputError that renders as one 422 detail item at ``loc``."""
    return InvalidInputError(msg, detail=[{"loc": list(loc), "msg": msg, "type": "value_error"}])


def from_validation_error(
    exc: ValidationError,
    prefix: Sequence[str | int] = ("body",),
    *,
    accepted: Sequence[str] | None = None,
    model: type[BaseModel] | None = None,
) -> InvalidInputError:
    """A pydantic ValidationError as an InvalidInputError with FastAPI ``detail`` items."""
    items = validation_items(exc.errors(), prefix, accepted=accepted, model=model)
    first = items[0] if items else {"loc": list(prefix), "msg": str(exc)}
    where = ".".join(str(p) for p in first["loc"])
    return InvalidInputError(f"{where}: {first['msg']}", detail=items)


def error_response(exc: EvalstackError) -> JSONResponse:
    """The response for a domain error."""
    status = status_for(exc)
    if status == 422:
        detail: Any = exc.detail
        if isinstance(detail, list) and all(isinstance(d, dict) for d in detail):
            items = [_jsonable(d) for d in detail]
        else:
            loc = ["body"]
            if isinstance(detail, str):
                loc.append(detail)
            elif isinstance(detail, dict) and detail.get("field"):
                loc.extend(str(detail["field"]).split("."))
            items = [{"loc": loc, "msg": exc.message, "type": "value_error"}]
        return JSONResponse({"detail": items}, status_code=422, headers=NO_RETRY)
    headers = NO_RETRY if status < 500 else {}
    if status >= 500:
        logger.warning("NeMo API request failed upstream: %s", exc.message)
    return JSONResponse({"detail": exc.message}, status_code=status, headers=headers)


def _body_model(route: APIRoute) -> type[BaseModel] | None:
    """A route's body model, for messages that list the accepted keys."""
    params = route.dependant.body_params
    if len(params) != 1:
        return None
    annotation = params[0].field_info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


class NemoRoute(APIRoute):
    """A route whose domain and validation errors become NeMo-style responses, whatever the app installs."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        model = _body_model(self)
        accepted = list(model.model_fields) if model is not None else None

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                items = validation_items(exc.errors(), accepted=accepted, model=model)
                return JSONResponse({"detail": items}, status_code=422, headers=NO_RETRY)
            except EvalstackError as exc:
                return error_response(exc)

        return handle
