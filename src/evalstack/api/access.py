"""Which scope each route needs, and the middleware that enforces it and the body-size limit.

Every route the app serves has an explicit decision in :data:`ROUTE_DECISIONS`: ``open`` (no
credentials), ``read``, ``run`` or ``admin``. A request that matches no decision needs valid
credentials and gets the app's own 404 or 405. Errors use the error body of the route's API family:
``{"detail": ...}`` under ``/v1/evaluation`` (NeMo), ``{"error": {"message": ...}}`` elsewhere.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evalstack.auth import Authenticator, AuthError, current_principal

Decision = Literal["open", "read", "run", "admin"]

_LLAMA_STACK_BENCHMARKS = ("/v1", "/v1alpha")
_LLAMA_STACK_DATASETS = ("/v1", "/v1beta")


def _decisions() -> dict[tuple[str, str], Decision]:
    table: dict[tuple[str, str], Decision] = {
        ("GET", "/v1/health"): "open",
        ("GET", "/openapi.json"): "open",
        ("GET", "/docs"): "open",
        ("GET", "/docs/oauth2-redirect"): "open",
        ("GET", "/redoc"): "open",
        ("GET", "/ui/static/{path:path}"): "open",
        ("GET", "/v1/version"): "read",
        # Llama Stack: scoring, models, providers
        ("POST", "/v1/scoring/score"): "run",
        ("POST", "/v1/scoring/score-batch"): "run",
        ("GET", "/v1/scoring-functions"): "read",
        ("POST", "/v1/scoring-functions"): "run",
        ("GET", "/v1/scoring-functions/{scoring_fn_id:path}"): "read",
        ("DELETE", "/v1/scoring-functions/{scoring_fn_id:path}"): "run",
        ("GET", "/v1/models"): "read",
        ("POST", "/v1/models"): "run",
        ("GET", "/v1/models/{model_id:path}"): "read",
        ("DELETE", "/v1/models/{model_id:path}"): "run",
        ("GET", "/v1/providers"): "read",
        ("GET", "/v1/providers/{provider_id}"): "read",
        # evalstack's own listings
        ("GET", "/v1/evalstack/jobs"): "read",
        ("GET", "/v1/evalstack/jobs/{job_id}"): "read",
        ("GET", "/v1/evalstack/jobs/{job_id}/samples"): "read",
        ("GET", "/v1/evalstack/jobs/{job_id}/samples/count"): "read",
        ("POST", "/v1/evalstack/jobs/{job_id}/resume"): "run",
        ("POST", "/v1/evalstack/jobs/{job_id}/retry"): "run",
        ("POST", "/v1/evalstack/jobs/{job_id}/rescore"): "run",
        ("GET", "/v1/evalstack/jobs/{job_id}/report"): "read",
        ("GET", "/v1/evalstack/compare"): "read",
        ("GET", "/v1/evalstack/benchmarks"): "read",
        # NeMo Evaluator
        ("POST", "/v1/evaluation/live"): "run",
        ("POST", "/v1/evaluation/jobs/{job_id}/cancel"): "run",
        ("GET", "/v1/evaluation/jobs/{job_id}/status"): "read",
        ("GET", "/v1/evaluation/jobs/{job_id}/results"): "read",
        ("GET", "/v1/evaluation/jobs/{job_id}/download-results"): "read",
        ("GET", "/v1/evaluation/jobs/{job_id}/logs"): "read",
        # the web viewer
        ("GET", "/ui"): "read",
        ("GET", "/ui/"): "read",
        ("GET", "/ui/jobs/{job_id}"): "read",
        ("GET", "/ui/jobs/{job_id}/distribution.svg"): "read",
        ("GET", "/ui/jobs/{job_id}/samples"): "read",
        ("GET", "/ui/jobs/{job_id}/sample"): "read",
        ("GET", "/ui/compare"): "read",
        ("GET", "/ui/compare/flips"): "read",
    }
    for v in _LLAMA_STACK_BENCHMARKS:
        base = f"{v}/eval/benchmarks"
        table |= {
            ("GET", base): "read",
            ("POST", base): "run",
            ("GET", f"{base}/{{benchmark_id:path}}"): "read",
            ("DELETE", f"{base}/{{benchmark_id:path}}"): "run",
            ("POST", f"{base}/{{benchmark_id:path}}/jobs"): "run",
            ("POST", f"{base}/{{benchmark_id:path}}/evaluations"): "run",
            ("GET", f"{base}/{{benchmark_id:path}}/jobs/{{job_id}}"): "read",
            ("DELETE", f"{base}/{{benchmark_id:path}}/jobs/{{job_id}}"): "run",  # cancels the job
            ("GET", f"{base}/{{benchmark_id:path}}/jobs/{{job_id}}/result"): "read",
            # the original change's README aliases: cancel a job, the latest job's result
            ("POST", f"{base}/{{benchmark_id:path}}/jobs/{{job_id}}/cancel"): "run",
            ("GET", f"{base}/{{benchmark_id:path}}/results"): "read",
        }
    for v in _LLAMA_STACK_DATASETS:
        table |= {
            ("GET", f"{v}/datasets"): "read",
            ("POST", f"{v}/datasets"): "run",
            ("GET", f"{v}/datasets/{{dataset_id:path}}"): "read",
            ("DELETE", f"{v}/datasets/{{dataset_id:path}}"): "run",
            ("GET", f"{v}/datasetio/iterrows/{{dataset_id:path}}"): "read",
            ("POST", f"{v}/datasetio/append-rows/{{dataset_id:path}}"): "run",
        }
    for kind, item in (
        ("configs", "{namespace}/{name}"),
        ("targets", "{namespace}/{name}"),
        ("results", "{result_id}"),
        ("jobs", "{job_id}"),
    ):
        base = f"/v1/evaluation/{kind}"
        table |= {
            ("GET", base): "read",
            ("POST", base): "run",
            ("GET", f"{base}/{item}"): "read",
            ("DELETE", f"{base}/{item}"): "run",
        }
        if kind != "jobs":
            table[("PATCH", f"{base}/{item}")] = "run"
    return table


ROUTE_DECISIONS: dict[tuple[str, str], Decision] = _decisions()
"""(method, path template) -> the scope it needs; a route missing here is a test failure."""


def _compiled(decisions: dict[tuple[str, str], Decision]) -> list[tuple[str, re.Pattern[str], Decision]]:
    # Literal templates first, then the longest, so a {name:path} parameter never swallows a suffix.
    ordered = sorted(decisions.items(), key=lambda item: ("{" in item[0][1], -len(item[0][1])))
    return [(method, compile_path(path)[0], decision) for (method, path), decision in ordered]


_COMPILED = _compiled(ROUTE_DECISIONS)


def decision_for(method: str, path: str) -> Decision | None:
    """The decision for a request; ``None`` when no route decision matches."""
    method = "GET" if method == "HEAD" else method
    for route_method, pattern, decision in _COMPILED:
        if route_method == method and pattern.match(path):
            return decision
    return None


def _error_response(path: str, status: int, message: str) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and body of an error in the API family that serves ``path``.

    A 401 challenges with Basic on the viewer's pages (the browser's login prompt) and with Bearer
    elsewhere, and Basic too there: the viewer's pages fetch JSON from the API, and a browser resends
    the key its user gave the prompt only to a Basic challenge of the same realm.
    """
    headers = [("content-type", "application/json")]
    if status == 401:
        if not path.startswith("/ui"):
            headers.append(("www-authenticate", 'Bearer realm="evalstack"'))
        headers.append(("www-authenticate", 'Basic realm="evalstack"'))
    if path.startswith("/v1/evaluation"):
        body: object = {"detail": message}
    else:
        body = {"error": {"message": message}}
    return headers, json.dumps(body).encode("utf-8")


async def _send_error(send: Send, path: str, status: int, message: str) -> None:
    headers, body = _error_response(path, status, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.encode(), v.encode()) for k, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


class AccessMiddleware:
    """Authenticates each HTTP request, checks its route's scope and bounds its body size."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, max_body_bytes: int) -> None:
        self.app = app
        self.authenticator = authenticator
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope.get("raw_path")
        path = raw.decode("latin-1").split("?", 1)[0] if raw else scope["path"]
        decision = decision_for(scope["method"], path)
        principal = None
        if decision != "open":
            try:
                principal = await self.authenticator.authenticate(_header(scope, b"authorization"))
            except AuthError as exc:
                await _send_error(send, path, 401, str(exc))
                return
            if decision is not None and not principal.has(decision):
                await _send_error(
                    send,
                    path,
                    403,
                    f"{principal.name!r} lacks the '{decision}' scope that {scope['method']} {path} needs "
                    f"(it has: {', '.join(sorted(principal.scopes)) or 'none'})",
                )
                return
        bounded = await self._bounded_body(scope, receive, send, path)
        if bounded is None:
            return
        token = current_principal.set(principal)
        try:
            await self.app(scope, bounded, send)
        finally:
            current_principal.reset(token)

    async def _bounded_body(self, scope: Scope, receive: Receive, send: Send, path: str) -> Receive | None:
        """A receive that replays the body read so far; ``None`` after answering 413."""
        limit = self.max_body_bytes
        too_large = f"The request body is larger than the limit of {limit} bytes"
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_error(send, path, 413, too_large)
            return None
        if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS") and length is None:
            return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_error(send, path, 413, too_large)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replaying_receive() -> Message:
            return replay.pop() if replay else await receive()

        return replaying_receive
