"""``/openapi.json`` as the routes really answer: each API family's error statuses and bodies.

FastAPI documents a 422 with its own body on every route that takes input. The Llama Stack family
answers bad input with 400 and ``{"error": {"message", "detail"}}`` instead (``api/llama_stack/
errors.py``), and the NeMo family adds 404, 409 and upstream failures, each as ``{"detail": ...}``
(``api/nemo/errors.py``). :func:`install_openapi` makes the app publish exactly those, and the
OpenAPI ``links`` from each create operation to the operations that read, change or delete what it
made (:data:`RESOURCE_LINKS`), which a stateful fuzzer follows.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class ResourceLinks:
    """An operation (a create, or a delete) and the operations that take what it made (or removed)."""

    source: tuple[str, str]
    """(method, path) of the operation whose success responses carry the links."""
    parameters: dict[str, str]
    """Path parameter of the targets -> OpenAPI runtime expression on the source call
    (``$response.body#/identifier``, ``$request.body#/benchmark_id``, ``$request.path.benchmark_id``)."""
    targets: tuple[tuple[str, str], ...]
    """(method, path) of each operation the result links to; each takes exactly ``parameters``."""


def _after_delete(item: str, *parameters: str) -> ResourceLinks:
    """From deleting ``item`` to reading it again (which must then answer 404)."""
    return ResourceLinks(("DELETE", item), {p: f"$request.path.{p}" for p in parameters}, (("GET", item),))


def _resource_links() -> tuple[ResourceLinks, ...]:
    links: list[ResourceLinks] = []
    for v in ("/v1", "/v1alpha"):
        benchmark = f"{v}/eval/benchmarks/{{benchmark_id}}"
        job = f"{benchmark}/jobs/{{job_id}}"
        links += [
            ResourceLinks(
                ("POST", f"{v}/eval/benchmarks"),
                {"benchmark_id": "$request.body#/benchmark_id"},
                (("GET", benchmark), ("DELETE", benchmark), ("POST", f"{benchmark}/jobs")),
            ),
            ResourceLinks(
                ("POST", f"{benchmark}/jobs"),
                {"benchmark_id": "$request.path.benchmark_id", "job_id": "$response.body#/job_id"},
                (("GET", job), ("GET", f"{job}/result"), ("POST", f"{job}/cancel"), ("DELETE", job)),
            ),
            _after_delete(benchmark, "benchmark_id"),
        ]
    for v in ("/v1", "/v1beta"):
        links.append(
            ResourceLinks(
                ("POST", f"{v}/datasets"),
                {"dataset_id": "$response.body#/identifier"},
                (
                    ("GET", f"{v}/datasets/{{dataset_id}}"),
                    ("GET", f"{v}/datasetio/iterrows/{{dataset_id}}"),
                    ("POST", f"{v}/datasetio/append-rows/{{dataset_id}}"),
                    ("DELETE", f"{v}/datasets/{{dataset_id}}"),
                ),
            )
        )
        links.append(_after_delete(f"{v}/datasets/{{dataset_id}}", "dataset_id"))
    scoring_fn, model = "/v1/scoring-functions/{scoring_fn_id}", "/v1/models/{model_id}"
    links += [
        ResourceLinks(
            ("POST", "/v1/scoring-functions"),
            {"scoring_fn_id": "$request.body#/scoring_fn_id"},
            (("GET", scoring_fn), ("DELETE", scoring_fn)),
        ),
        ResourceLinks(
            ("POST", "/v1/models"),
            {"model_id": "$response.body#/identifier"},
            (("GET", model), ("DELETE", model)),
        ),
        _after_delete(scoring_fn, "scoring_fn_id"),
        _after_delete(model, "model_id"),
    ]
    for kind in ("configs", "targets"):
        item = f"{NEMO_PREFIX}/{kind}/{{namespace}}/{{name}}"
        links.append(
            ResourceLinks(
                ("POST", f"{NEMO_PREFIX}/{kind}"),
                {"namespace": "$response.body#/namespace", "name": "$response.body#/name"},
                (("GET", item), ("PATCH", item), ("DELETE", item)),
            )
        )
        links.append(_after_delete(item, "namespace", "name"))
    result, job = f"{NEMO_PREFIX}/results/{{result_id}}", f"{NEMO_PREFIX}/jobs/{{job_id}}"
    links += [
        ResourceLinks(
            ("POST", f"{NEMO_PREFIX}/results"),
            {"result_id": "$response.body#/id"},
            (("GET", result), ("PATCH", result), ("DELETE", result)),
        ),
        ResourceLinks(
            ("POST", f"{NEMO_PREFIX}/jobs"),
            {"job_id": "$response.body#/id"},
            (
                ("GET", job),
                ("GET", f"{job}/status"),
                ("GET", f"{job}/results"),
                ("GET", f"{job}/download-results"),
                ("GET", f"{job}/logs"),
                ("POST", f"{job}/cancel"),
                ("DELETE", job),
                ("GET", "/v1/evalstack/jobs/{job_id}"),
            ),
        ),
        _after_delete(result, "result_id"),
        _after_delete(job, "job_id"),
    ]
    return tuple(links)


RESOURCE_LINKS: tuple[ResourceLinks, ...] = _resource_links()
"""Every create operation of both API families and what its result links to; every delete links to
the read of what it deleted."""


def _operation(schema: dict[str, Any], method: str, path: str, role: str) -> dict[str, Any]:
    operation = schema.get("paths", {}).get(path, {}).get(method.lower())
    if operation is None:
        raise ValueError(f"OpenAPI link {role} {method} {path}: the schema has no such operation")
    return dict(operation)


def _path_parameters(operation: dict[str, Any]) -> set[str]:
    return {p["name"] for p in operation.get("parameters", []) if p.get("in") == "path"}


def add_links(schema: dict[str, Any], table: tuple[ResourceLinks, ...] = RESOURCE_LINKS) -> None:
    """Add each entry's links to its create operation's success responses; ValueError for an entry
    naming an operation or a parameter the schema does not have."""
    for entry in table:
        method, path = entry.source
        create = _operation(schema, method, path, "from")
        for name, expression in entry.parameters.items():
            source = expression.removeprefix("$request.path.")
            if source != expression and source not in _path_parameters(create):
                raise ValueError(f"OpenAPI link from {method} {path}: it has no path parameter {source!r}")
            if expression.startswith("$request.body") and "requestBody" not in create:
                raise ValueError(
                    f"OpenAPI link from {method} {path}: it takes no body ({name}: {expression})"
                )
        links: dict[str, Any] = {}
        for target_method, target_path in entry.targets:
            target = _operation(schema, target_method, target_path, f"from {method} {path} to")
            if set(entry.parameters) != _path_parameters(target):
                raise ValueError(
                    f"OpenAPI link from {method} {path} to {target_method} {target_path}: it sets "
                    f"{sorted(entry.parameters)}, the operation takes {sorted(_path_parameters(target))}"
                )
            links[target["operationId"]] = {
                "operationId": target["operationId"],
                "parameters": entry.parameters,
            }
        success = [s for s in create["responses"] if s.startswith("2")]
        for status in success:
            schema["paths"][path][method.lower()]["responses"][status]["links"] = links


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
    add_links(schema)
    app.openapi_schema = schema
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`honest_openapi` at ``/openapi.json``."""

    def openapi() -> dict[str, Any]:
        return honest_openapi(app)

    app.openapi = openapi  # type: ignore[method-assign]
