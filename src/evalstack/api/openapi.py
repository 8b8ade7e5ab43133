"""``/openapi.json`` as the routes really answer: each API family's error statuses and bodies.

FastAPI documents a 422 with its own body on every route that takes input. The Llama Stack family
answers bad input with 400 and ``{"error": {"message", "detail"}}`` instead (``api/llama_stack/
errors.py``), and the NeMo family adds 404, 409 and upstream failures, each as ``{"detail": ...}``
(``api/nemo/errors.py``). :func:`install_openapi` makes the app publish exactly those.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

NEMO_PREFIX = "/v1/evaluation"
LLAMA_STACK_PREFIXES = ("/v1/", "/v1alpha/", "/v1beta/")

_LLAMA_STACK_ERROR = "LlamaStackError"
_NEMO_ERROR = "NemoError"  # also the framework's own {"detail": "..."} (unknown path, unparsable JSON)

_SCHEMAS: dict[str, dict[str, Any]] = {
    _LLAMA_STACK_ERROR: {
        "title": _LLAMA_STACK_ERROR,
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message"],
                "properties": {"message": {"type": "string"}, "detail": {}},
            }
        },
    },
    _NEMO_ERROR: {
        "title": _NEMO_ERROR,
        "type": "object",
        "required": ["detail"],
        "properties": {"detail": {"type": "string"}},
    },
}

# Status -> description, per family. "5XX": an upstream failure (502/504), a full database (507),
# or an internal error (500), all with the family's error body.
_ACCESS_STATUSES = {  # from the access middleware (api/access.py), in the family's body
    "401": "No credentials, or bad ones (only when the server has auth settings)",
    "403": "The credentials lack the scope this route needs",
    "413": "The request body is over the server's size limit",
}
_LLAMA_STACK_STATUSES = {
    "400": "Invalid input (the body, a parameter, or a reference to something that does not exist)",
    **_ACCESS_STATUSES,
    "404": "Not found",
    "5XX": "An upstream service or evalstack's own storage failed",
}
_NEMO_STATUSES = {
    "400": "The body is not valid JSON",
    **_ACCESS_STATUSES,
    "404": "Not found",
    "409": "Conflict with the current state (exists already, or not in a state that allows it)",
    "5XX": "An upstream service or evalstack's own storage failed",
}


def _error_response(status: str, description: str, schema: str) -> dict[str, Any]:
    body: dict[str, Any] = {"$ref": f"#/components/schemas/{schema}"}
    if status == "404" and schema != _NEMO_ERROR:  # a path no route matches: the framework's 404
        body = {"anyOf": [body, {"$ref": f"#/components/schemas/{_NEMO_ERROR}"}]}
        description += ' (a path that no route matches answers {"detail": "Not Found"})'
    return {"description": description, "content": {"application/json": {"schema": body}}}


def _family(path: str) -> tuple[dict[str, str], str, bool] | None:
    """(statuses, error body, whether 422 is never sent) of the family serving ``path``, if any.

    The families are mounted by prefix: NeMo under ``/v1/evaluation``; Llama Stack (with
    evalstack's own ``/v1/evalstack``, which uses its route class) under ``/v1``, ``/v1alpha`` and
    ``/v1beta``.
    """
    if path.startswith(NEMO_PREFIX + "/"):
        return _NEMO_STATUSES, _NEMO_ERROR, False
    if path.startswith(LLAMA_STACK_PREFIXES):
        return _LLAMA_STACK_STATUSES, _LLAMA_STACK_ERROR, True
    return None


def honest_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document with every route's error responses as its family sends them."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    schema.setdefault("components", {}).setdefault("schemas", {}).update(_SCHEMAS)
    for path, operations in schema.get("paths", {}).items():
        family = _family(path)
        if family is None:
            continue
        statuses, body, drop_422 = family
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if drop_422:
                responses.pop("422", None)  # never sent: validation errors are 400s here
            for status, description in statuses.items():
                responses.setdefault(status, _error_response(status, description, body))
    app.openapi_schema = schema
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`honest_openapi` at ``/openapi.json``."""

    def openapi() -> dict[str, Any]:
        return honest_openapi(app)

    app.openapi = openapi  # type: ignore[method-assign]
