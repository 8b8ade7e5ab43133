"""Errors of the Llama Stack API family: one place mapping exceptions to a status code and a body.

Every error body is ``{"error": {"message": str}}``, plus ``"detail"`` where it helps (validation
errors carry ``{"errors": [{loc, msg, type}]}``, the shape 0.2.x servers sent).

==========================================  =====================================================
exception                                   status
==========================================  =====================================================
request validation (body, query, path)      400 (never 422, as the reference server)
``InvalidInputError``, ``ConflictError``,   400 (``ValueError`` is what the reference raises for
``ValueError``                              bad input; 409 is avoided because clients retry it)
``NotFoundError``                           chosen per route: 404 for models and datasets (0.7
                                            reference), 400 for benchmarks, jobs, scoring
                                            functions and dataset rows (reference behaviour)
``PermissionError``                         403
``UnsupportedError``, ``NotImplementedError``  501
``StorageFullError`` (the database is full)  507
``UpstreamError``, ``ConnectionError``,     502
``InferenceError``, ``httpx.ConnectError``
``UpstreamTimeoutError``, ``TimeoutError``, 504
``httpx.TimeoutException``
anything else                               500 "Internal server error: An unexpected error
                                            occurred." (the traceback is logged)
==========================================  =====================================================

The mapping is applied by :class:`LlamaStackRoute`, the route class of this family's routers, so
other API families mounted on the same app (the NeMo ``/v1/evaluation/*`` routes) keep their own
error format.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import unquote

import httpx
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

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
from evalstack.inference.base import InferenceError

logger = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = "Internal server error: An unexpected error occurred."
_NOT_FOUND_STATUS_ATTR = "__llama_stack_not_found_status__"

F = TypeVar("F", bound=Callable[..., Any])


def not_found_status(status: int) -> Callable[[F], F]:
    """Mark a route endpoint so that ``NotFoundError`` maps to ``status`` (default 400).

    Apply it below the router decorator::

        @router.get("/datasets/{dataset_id:path}")
        @not_found_status(404)
        async def get_dataset(...): ...
    """

    def mark(func: F) -> F:
        setattr(func, _NOT_FOUND_STATUS_ATTR, status)
        return func

    return mark


def error_body(message: str, detail: Any = None) -> dict[str, Any]:
    """The error body of this API family."""
    error: dict[str, Any] = {"message": message}
    if detail is not None:
        error["detail"] = detail
    return {"error": error}


def _loc_text(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_errors(errors: Iterable[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Turn pydantic/FastAPI error dicts into ``(message, [{loc, msg, type}])``."""
    items = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in errors
    ]
    message = "; ".join(f"{_loc_text(e['loc'])}: {e['msg']}" for e in items) or "Invalid request"
    return message, items


def _status_and_body(exc: BaseException, not_found: int) -> tuple[int, dict[str, Any]]:
    if isinstance(exc, RequestValidationError | ValidationError):
        message, items = validation_errors(exc.errors())
        return 400, error_body(message, {"errors": items})
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, error_body(str(exc.detail))
    if isinstance(exc, EvalstackError):
        detail = exc.detail
        if isinstance(exc, NotFoundError):
            return not_found, error_body(exc.message, detail)
        if isinstance(exc, ForbiddenError):
            return 403, error_body(exc.message, detail)
        if isinstance(exc, InvalidInputError | ConflictError):
            return 400, error_body(exc.message, detail)
        if isinstance(exc, UnsupportedError):
            return 501, error_body(exc.message, detail)
        if isinstance(exc, StorageFullError):
            return 507, error_body(exc.message, detail)
        if isinstance(exc, UpstreamTimeoutError):
            return 504, error_body(exc.message, detail)
        if isinstance(exc, UpstreamError):
            return 502, error_body(exc.message, detail)
        return 400, error_body(exc.message, detail)
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return 504, error_body(f"Upstream request timed out: {exc}" if str(exc) else "Request timed out")
    if isinstance(exc, InferenceError | httpx.ConnectError | ConnectionError):
        return 502, error_body(f"Upstream service failed: {exc}")
    if isinstance(exc, NotImplementedError):
        return 501, error_body(str(exc) or "Not implemented")
    if isinstance(exc, PermissionError):
        return 403, error_body(str(exc) or "Permission denied")
    if isinstance(exc, ValueError):
        return 400, error_body(str(exc) or "Invalid value")
    return 500, error_body(INTERNAL_ERROR_MESSAGE)


def error_response(exc: BaseException, *, not_found: int = 400, request: Request | None = None) -> Response:
    """The JSON response for ``exc``; unexpected errors are logged with their traceback."""
    status, body = _status_and_body(exc, not_found)
    where = f"{request.method} {request.url.path}" if request is not None else "request"
    if status >= 500:
        logger.error("%s failed with %s", where, status, exc_info=exc)
    else:
        logger.info("%s answered %s: %s", where, status, body["error"]["message"])
    return JSONResponse(body, status_code=status)


# ---- routing ------------------------------------------------------------------------------------

_ENCODED_SLASH = re.compile(rb"%2[fF]")


def _keep_encoded_slashes(raw_path: bytes) -> str:
    """Percent-decode a raw path except ``%2F``, which stays as the text ``%2F``."""
    parts = _ENCODED_SLASH.split(raw_path)
    return "%2F".join(unquote(p.decode("latin-1"), encoding="utf-8", errors="replace") for p in parts)


class LlamaStackRoute(APIRoute):
    """Route class of the Llama Stack routers.

    - Maps every exception to this family's status code and error body (see module docstring).
    - Routes by the raw path when the client percent-encoded a ``/`` inside an id (0.7.x clients
      send ``a%2Fb``), so an encoded id can never be split into path segments: ``GET
      /eval/benchmarks/x%2Fjobs%2Fy`` is the benchmark ``x/jobs/y``, not a job. Raw slashes (0.2.x
      clients) still work through ``{id:path}`` parameters, with the more specific routes first.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        not_found = int(getattr(self.endpoint, _NOT_FOUND_STATUS_ATTR, 400))

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return error_response(exc, not_found=not_found, request=request)

        return handle

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        raw_path = scope.get("raw_path")
        if match == Match.NONE or not raw_path or not _ENCODED_SLASH.search(raw_path):
            return match, child_scope
        raw_scope = dict(scope)
        raw_scope["path"] = _keep_encoded_slashes(raw_path.split(b"?", 1)[0])
        raw_match, _ = super().matches(raw_scope)
        if raw_match == Match.NONE:
            return Match.NONE, {}
        return match, child_scope
