"""Errors of the NeMo Evaluator API family: domain errors to status codes and FastAPI-style bodies.

The mapping is scoped to the NeMo routers through ``NemoRoute`` (a route class), so the other API
families on the same app keep their own error format. Bodies are ``{"detail": "message"}``, and for
422 ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`` as FastAPI writes them. Client errors
carry ``x-should-retry: false``: the SDK would otherwise retry a 409 (duplicate name) twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from evalstack.errors import (
    ConflictError,
    EvalstackError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
    UpstreamError,
    UpstreamTimeoutError,
)

logger = logging.getLogger(__name__)

NO_RETRY = {"x-should-retry": "false"}


def status_for(exc: EvalstackError) -> int:
    """The HTTP status of a domain error."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, InvalidInputError | UnsupportedError):
        return 422
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


def validation_items(
    errors: Sequence[Any], prefix: Sequence[str | int] = (), *, accepted: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Pydantic errors as FastAPI ``detail`` items, locations under ``prefix``.

    An ``extra_forbidden`` error names the accepted keys, when given, in its message.
    """
    items: list[dict[str, Any]] = []
    for err in errors:
        loc = [*prefix, *err.get("loc", ())]
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden" and accepted:
            msg = f"{msg}; accepted keys: {', '.join(sorted(accepted))}"
        item: dict[str, Any] = {"loc": loc, "msg": msg, "type": err.get("type", "value_error")}
        if "input" in err:
            item["input"] = _jsonable(err["input"])
        items.append(item)
    return items


def invalid(msg: str, loc: Sequence[str | int] = ("body",)) -> InvalidInputError:
    """An InvalidInputError that renders as one 422 detail item at ``loc``."""
    return InvalidInputError(msg, detail=[{"loc": list(loc), "msg": msg, "type": "value_error"}])


def from_validation_error(
    exc: ValidationError, prefix: Sequence[str | int] = ("body",), *, accepted: Sequence[str] | None = None
) -> InvalidInputError:
    """A pydantic ValidationError as an InvalidInputError with FastAPI ``detail`` items."""
    items = validation_items(exc.errors(), prefix, accepted=accepted)
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


def _body_keys(route: APIRoute) -> list[str] | None:
    """The top-level keys a route's body model accepts, for ``extra_forbidden`` messages."""
    params = route.dependant.body_params
    if len(params) != 1:
        return None
    annotation = params[0].field_info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return None


class NemoRoute(APIRoute):
    """A route whose domain and validation errors become NeMo-style responses, whatever the app installs."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        accepted = _body_keys(self)

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                items = validation_items(exc.errors(), accepted=accepted)
                return JSONResponse({"detail": items}, status_code=422, headers=NO_RETRY)
            except EvalstackError as exc:
                return error_response(exc)

        return handle
