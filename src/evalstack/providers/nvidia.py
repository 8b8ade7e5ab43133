"""The ``remote::nvidia`` eval provider: Llama Stack benchmarks run by a remote NVIDIA NeMo Evaluator.

A benchmark is an evaluation config on the service: its ``metadata`` is the whole NeMo config body.
``run_eval`` creates a NeMo job for ``<namespace>/<benchmark id>`` with the candidate model as target,
and status, cancel and results are read back from the job.

All HTTP goes through one shared ``httpx.AsyncClient`` with timeouts and retries (exponential backoff
with jitter on connection errors, 408, 429 and 5xx; ``Retry-After`` and ``x-should-retry`` honoured).
Failures surface as ``evalstack.errors`` types with messages that name the service URL.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import random
import zipfile
from collections.abc import Mapping
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evalstack.engine.types import (
    AgentCandidate,
    Benchmark,
    BenchmarkConfig,
    EvaluateResponse,
    ModelCandidate,
    ScoringResult,
)
from evalstack.errors import (
    ConflictError,
    EvalstackError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
    UpstreamError,
    UpstreamTimeoutError,
)
from evalstack.providers.base import Job, JobStatus
from evalstack.providers.nemo_shapes import STATUS_MAP, generation_row, score_row
from evalstack.retry_after import parse_retry_after

logger = logging.getLogger(__name__)

DEFAULT_EVALUATOR_URL = "http://0.0.0.0:7331"
DEFAULT_NAMESPACE = "nvidia"

NVIDIA_MODEL_ALIASES: dict[str, str] = {
    # Llama 3
    "Llama3-8B-Instruct": "meta/llama3-8b-instruct",
    "meta-llama/Llama-3-8B-Instruct": "meta/llama3-8b-instruct",
    "Llama3-70B-Instruct": "meta/llama3-70b-instruct",
    "meta-llama/Llama-3-70B-Instruct": "meta/llama3-70b-instruct",
    # Llama 3.1
    "Llama3.1-8B-Instruct": "meta/llama-3.1-8b-instruct",
    "meta-llama/Llama-3.1-8B-Instruct": "meta/llama-3.1-8b-instruct",
    "Llama3.1-70B-Instruct": "meta/llama-3.1-70b-instruct",
    "meta-llama/Llama-3.1-70B-Instruct": "meta/llama-3.1-70b-instruct",
    "Llama3.1-405B-Instruct": "meta/llama-3.1-405b-instruct",
    "meta-llama/Llama-3.1-405B-Instruct": "meta/llama-3.1-405b-instruct",
    "meta-llama/Llama-3.1-405B-Instruct-FP8": "meta/llama-3.1-405b-instruct",
    # Llama 3.2
    "Llama3.2-1B-Instruct": "meta/llama-3.2-1b-instruct",
    "meta-llama/Llama-3.2-1B-Instruct": "meta/llama-3.2-1b-instruct",
    "Llama3.2-3B-Instruct": "meta/llama-3.2-3b-instruct",
    "meta-llama/Llama-3.2-3B-Instruct": "meta/llama-3.2-3b-instruct",
    "Llama3.2-11B-Vision-Instruct": "meta/llama-3.2-11b-vision-instruct",
    "meta-llama/Llama-3.2-11B-Vision-Instruct": "meta/llama-3.2-11b-vision-instruct",
    "Llama3.2-90B-Vision-Instruct": "meta/llama-3.2-90b-vision-instruct",
    "meta-llama/Llama-3.2-90B-Vision-Instruct": "meta/llama-3.2-90b-vision-instruct",
    # Llama 3.3
    "Llama3.3-70B-Instruct": "meta/llama-3.3-70b-instruct",
    "meta-llama/Llama-3.3-70B-Instruct": "meta/llama-3.3-70b-instruct",
}
"""Llama model names -> NVIDIA model ids, as the original Llama Stack NVIDIA integration mapped them.

Each Llama model is known by its Llama Stack descriptor (``Llama3.1-8B-Instruct``) and by its
Hugging Face repository (``meta-llama/Llama-3.1-8B-Instruct``); both become the id NVIDIA's
services use (``meta/llama-3.1-8b-instruct``). Matching is exact and case-sensitive. Any other
model id, an NVIDIA id included, is sent to the evaluator unchanged.
"""

_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_IDEMPOTENT_METHODS = frozenset({"GET", "DELETE", "PATCH", "PUT"})
_MAX_BACKOFF_S = 30.0
_MAX_ERROR_BODY = 500


def map_model_id(model: str) -> str:
    """The NVIDIA model id for ``model``: its entry in ``NVIDIA_MODEL_ALIASES``, else ``model`` itself."""
    return NVIDIA_MODEL_ALIASES.get(model, model)


def _env_url() -> str:
    return os.environ.get("NVIDIA_EVALUATOR_URL") or DEFAULT_EVALUATOR_URL


def _env_api_key() -> str | None:
    return os.environ.get("NVIDIA_EVALUATOR_API_KEY") or None


class NVIDIAEvalConfig(BaseModel):
    """Settings of the ``remote::nvidia`` eval provider (the ``config`` of its provider entry)."""

    model_config = ConfigDict(extra="forbid")

    evaluator_url: str = Field(
        default_factory=_env_url,
        description="Root URL of the NeMo Evaluator service (env NVIDIA_EVALUATOR_URL).",
    )
    api_key: str | None = Field(
        default_factory=_env_api_key,
        repr=False,
        description="Sent as 'Authorization: Bearer <api_key>' (env NVIDIA_EVALUATOR_API_KEY).",
    )
    namespace: str = Field(
        default=DEFAULT_NAMESPACE,
        min_length=1,
        pattern=r"^[^/\s]+$",
        description="Namespace of the evaluation configs this provider creates.",
    )
    timeout: float = Field(default=60.0, gt=0, description="Seconds to wait for one HTTP request.")
    max_retries: int = Field(
        default=3, ge=0, le=20, description="Retries on connection errors, 408, 429 and 5xx."
    )
    retry_backoff: float = Field(
        default=0.5, ge=0, description="First retry delay in seconds; doubles on each retry (with jitter)."
    )
    map_model_ids: bool = Field(
        default=True,
        description="Send Llama model names as NVIDIA model ids (NVIDIA_MODEL_ALIASES), as the original "
        "provider did; false sends the candidate's model id unchanged, as Llama Stack 0.2.23 and later do.",
    )

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                accepted = ", ".join(cls.model_fields)
                raise ValueError(
                    f"unknown nvidia provider setting(s) {', '.join(unknown)}; accepted keys: {accepted}"
                )
        return data

    @model_validator(mode="after")
    def _check_url(self) -> NVIDIAEvalConfig:
        url = self.evaluator_url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(
                f"evaluator_url must be an http:// or https:// URL of the NeMo Evaluator service, "
                f"got {self.evaluator_url!r}"
            )
        self.evaluator_url = url
        return self


def _service_message(response: httpx.Response) -> str:
    """The message a service put in its body (``detail``, ``message`` or ``error``), else its text."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:_MAX_ERROR_BODY] if text else response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail") or value
            if value:
                return value if isinstance(value, str) else json.dumps(value)[:_MAX_ERROR_BODY]
    return json.dumps(body)[:_MAX_ERROR_BODY]


def parse_per_sample_results(archive: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Generations and score rows from a NeMo ``download-results`` ZIP.

    Every ``results.json`` in the archive that maps task names to lists of per-sample records
    (``{item, sample: {output_text, response}, metrics: {m: {scores: {s: {value}}}}}``) contributes,
    in archive order. A generation is ``{task, item, generated_answer}``; a score row is
    ``{task, metrics: {m: {s: value}}}`` plus ``score`` when the sample has exactly one score.
    Aggregate ``results.json`` files (``{tasks, groups}``) are skipped. Raises ``ValueError`` on a
    file that is not a ZIP.
    """
    generations: list[dict[str, Any]] = []
    score_rows: list[dict[str, Any]] = []
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        names = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "results.json"]
        for name in names:
            try:
                content = json.loads(zf.read(name))
            except (ValueError, KeyError):
                logger.debug("skipping unreadable %s in the results archive", name)
                continue
            if not _is_per_sample(content):
                continue
            for task, samples in content.items():
                for record in samples:
                    gen, row = _sample_to_rows(str(task), record)
                    generations.append(gen)
                    score_rows.append(row)
    return generations, score_rows


def _is_per_sample(content: Any) -> bool:
    if not isinstance(content, dict) or not content:
        return False
    for samples in content.values():
        if not isinstance(samples, list):
            return False
        if samples and not all(isinstance(s, dict) and ("sample" in s or "metrics" in s) for s in samples):
            return False
    return True


def _sample_to_rows(task: str, record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    sample = record.get("sample") if isinstance(record.get("sample"), dict) else {}
    output_text = sample.get("output_text") if sample else None
    metrics: dict[str, dict[str, Any]] = {}
    raw_metrics = record.get("metrics")
    if isinstance(raw_metrics, dict):
        for metric, body in raw_metrics.items():
            scores = body.get("scores") if isinstance(body, dict) else None
            if not isinstance(scores, dict):
                continue
            metrics[str(metric)] = {
                str(name): (score.get("value") if isinstance(score, dict) else score)
                for name, score in scores.items()
            }
    error = record.get("error") or None
    return generation_row(task, record.get("item"), output_text, error), score_row(task, metrics, error)


class NVIDIAEvalImpl:
    """Eval provider backed by a remote NeMo Evaluator (``remote::nvidia``).

    Built from its config alone. The extra keyword arguments of the original Llama Stack
    provider (``datasetio_api``, ``datasets_api``, ``scoring_api``, ``inference_api``,
    ``agents_api``, ``responses_api``) are accepted and ignored.
    """

    provider_type = "remote::nvidia"

    def __init__(
        self,
        config: NVIDIAEvalConfig | None = None,
        datasetio_api: Any = None,
        datasets_api: Any = None,
        scoring_api: Any = None,
        inference_api: Any = None,
        agents_api: Any = None,
        *,
        responses_api: Any = None,
        provider_id: str = "nvidia",
        **_ignored: Any,
    ) -> None:
        self.config = config if config is not None else NVIDIAEvalConfig()
        self.provider_id = provider_id
        self._client: httpx.AsyncClient | None = None
        self._failure_reasons: dict[str, str] = {}

    # ---- lifecycle --------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Create the shared HTTP client (the helpers also create it on first use)."""
        self._get_client()

    async def shutdown(self) -> None:
        """Close the shared HTTP client."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            headers = {"Accept": "application/json", "User-Agent": "evalstack-nvidia-eval"}
            if self.config.api_key:
                headers["Authorization"] = f"Bearer {self.config.api_key}"
            timeout = httpx.Timeout(self.config.timeout, connect=min(10.0, self.config.timeout))
            self._client = httpx.AsyncClient(
                timeout=timeout, headers=headers, limits=httpx.Limits(max_connections=64)
            )
        return self._client

    # ---- HTTP helpers (names and positional signatures kept from the original) ---------------

    async def _evaluator_get(self, path: str) -> Any:
        """GET ``{evaluator_url}{path}`` and return its JSON."""
        return _json(await self._request("GET", path), self.config.evaluator_url, "GET", path)

    async def _evaluator_post(self, path: str, data: dict[str, Any]) -> Any:
        """POST ``data`` as JSON to ``{evaluator_url}{path}`` and return the response JSON."""
        return _json(await self._request("POST", path, data), self.config.evaluator_url, "POST", path)

    async def _evaluator_patch(self, path: str, data: dict[str, Any]) -> Any:
        """PATCH ``data`` as JSON to ``{evaluator_url}{path}`` and return the response JSON."""
        return _json(await self._request("PATCH", path, data), self.config.evaluator_url, "PATCH", path)

    async def _evaluator_delete(self, path: str) -> None:
        """DELETE ``{evaluator_url}{path}``."""
        await self._request("DELETE", path)

    async def _evaluator_download(self, path: str) -> bytes:
        """GET a binary body (a ZIP); a single attempt, since callers treat it as optional."""
        response = await self._request("GET", path, accept="application/zip", retries=0)
        return response.content

    async def _request(
        self,
        method: str,
        path: str,
        data: dict[str, Any] | None = None,
        *,
        accept: str | None = None,
        retries: int | None = None,
    ) -> httpx.Response:
        """Send one request with retries; map every failure to an ``evalstack.errors`` type."""
        base = self.config.evaluator_url
        url = f"{base}{path}"
        max_retries = self.config.max_retries if retries is None else retries
        headers = {"Accept": accept} if accept else None
        client = self._get_client()
        attempt = 0
        while True:
            attempt += 1
            delay: float | None = None
            try:
                response = await client.request(method, url, json=data, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                if attempt > max_retries:
                    raise UpstreamError(
                        f"NeMo Evaluator at {base} is unreachable "
                        f"({type(exc).__name__}: {exc or 'no answer'}) after {attempt} attempt(s); "
                        f"check the nvidia provider's evaluator_url (env NVIDIA_EVALUATOR_URL).",
                        detail={"url": url, "method": method},
                    ) from exc
                logger.warning("NeMo Evaluator %s %s: %s; retrying", method, url, type(exc).__name__)
            except httpx.TimeoutException as exc:
                if method not in _IDEMPOTENT_METHODS or attempt > max_retries:
                    raise UpstreamTimeoutError(
                        f"NeMo Evaluator at {base} did not answer {method} {path} within "
                        f"{self.config.timeout:g}s ({type(exc).__name__}).",
                        detail={"url": url, "method": method},
                    ) from exc
                logger.warning("NeMo Evaluator %s %s timed out; retrying", method, url)
            except httpx.TransportError as exc:
                if attempt > max_retries:
                    raise UpstreamError(
                        f"NeMo Evaluator at {base} broke off {method} {path} "
                        f"({type(exc).__name__}: {exc}) after {attempt} attempt(s).",
                        detail={"url": url, "method": method},
                    ) from exc
                logger.warning("NeMo Evaluator %s %s: %s; retrying", method, url, type(exc).__name__)
            else:
                if response.is_success:
                    return response
                should_retry = response.headers.get("x-should-retry", "").lower()
                retryable = response.status_code in _RETRY_STATUSES or response.status_code > 504
                if should_retry == "true":
                    retryable = True
                elif should_retry == "false":
                    retryable = False
                if not retryable or attempt > max_retries:
                    raise self._status_error(response, method, path, attempt)
                delay = parse_retry_after(response.headers.get("retry-after"))
                if delay is not None:
                    delay = min(delay, _MAX_BACKOFF_S)
                logger.warning(
                    "NeMo Evaluator %s %s answered %d; retrying", method, url, response.status_code
                )
            if delay is None:
                delay = min(_MAX_BACKOFF_S, self.config.retry_backoff * 2 ** (attempt - 1))
                delay *= 0.5 + random.random() / 2
            await asyncio.sleep(delay)

    def _status_error(
        self, response: httpx.Response, method: str, path: str, attempts: int
    ) -> EvalstackError:
        """The domain error for an unsuccessful answer of the service."""
        status = response.status_code
        message = _service_message(response)
        base = self.config.evaluator_url
        detail = {"url": f"{base}{path}", "method": method, "status_code": status, "body": message}
        where = f"NeMo Evaluator at {base}: {method} {path}"
        if status == 404:
            return NotFoundError(f"{where} found nothing (404): {message}", detail=detail)
        if status == 409:
            return ConflictError(f"{where} conflicts with an existing entity (409): {message}", detail=detail)
        if status in (400, 422):
            return InvalidInputError(f"{where} was rejected ({status}): {message}", detail=detail)
        if status in (401, 403):
            return UpstreamError(
                f"{where} was refused ({status}): {message}. Check the nvidia provider's api_key "
                f"(env NVIDIA_EVALUATOR_API_KEY).",
                detail=detail,
            )
        if status in (405, 501):
            return UnsupportedError(
                f"{where} is not supported by the service ({status}): {message}", detail=detail
            )
        if status == 429:
            return UpstreamError(
                f"{where} was still rate limited (429) after {attempts} attempt(s): {message}", detail=detail
            )
        if status >= 500:
            return UpstreamError(
                f"{where} failed with {status} after {attempts} attempt(s): {message}", detail=detail
            )
        return UpstreamError(f"{where} answered {status}: {message}", detail=detail)

    # ---- benchmarks -------------------------------------------------------------------------

    async def register_benchmark(self, task_def: Benchmark) -> None:
        """Create the evaluation config ``{namespace, name: identifier, **metadata}``, or update it."""
        body: dict[str, Any] = {"namespace": self.config.namespace, "name": task_def.identifier}
        body.update(task_def.metadata or {})
        try:
            await self._evaluator_post("/v1/evaluation/configs", body)
            return
        except ConflictError:
            pass
        ref = f"{body.get('namespace')}/{body.get('name')}"
        logger.info("evaluation config %s exists on the NeMo Evaluator; updating it", ref)
        try:
            await self._evaluator_patch(f"/v1/evaluation/configs/{ref}", body)
        except (UnsupportedError, NotFoundError):
            logger.info("updating %s is not possible; deleting and creating it again", ref)
            await self._evaluator_delete(f"/v1/evaluation/configs/{ref}")
            await self._evaluator_post("/v1/evaluation/configs", body)

    async def unregister_benchmark(self, benchmark_id: str) -> None:
        """Delete the benchmark's evaluation config; one already gone on the service is not an error."""
        path = f"/v1/evaluation/configs/{self.config.namespace}/{benchmark_id}"
        try:
            await self._evaluator_delete(path)
        except NotFoundError:
            logger.warning("evaluation config %s/%s was already gone", self.config.namespace, benchmark_id)

    # ---- jobs -------------------------------------------------------------------------------

    async def run_eval(self, benchmark_id: str, benchmark_config: BenchmarkConfig) -> Job:
        """Create a NeMo job for ``<namespace>/<benchmark_id>`` with the candidate model as target."""
        config = _as_benchmark_config(benchmark_config)
        candidate = config.eval_candidate
        model: Any
        if isinstance(candidate, ModelCandidate):
            model = candidate.model
        elif isinstance(candidate, AgentCandidate):
            model = candidate.config.get("model")
        else:  # pragma: no cover - the union is closed
            model = None
        if not isinstance(model, str) or not model:
            raise InvalidInputError(
                "benchmark_config.eval_candidate must name a model: a model candidate's 'model', "
                "or an agent candidate's 'config.model'."
            )
        body = {
            "config": f"{self.config.namespace}/{benchmark_id}",
            "target": {"type": "model", "model": map_model_id(model) if self.config.map_model_ids else model},
        }
        response = await self._evaluator_post("/v1/evaluation/jobs", body)
        job_id = response.get("id") if isinstance(response, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise UpstreamError(
                f"NeMo Evaluator at {self.config.evaluator_url} created a job without an id: "
                f"{json.dumps(response)[:_MAX_ERROR_BODY]}"
            )
        return Job(job_id=job_id, status=JobStatus.in_progress)

    async def job_status(self, benchmark_id: str, job_id: str) -> Job:
        """The job's status in Llama Stack terms; ``cancelling`` is in progress, unknown ones failed."""
        with self._job_not_found(job_id):
            job = await self._evaluator_get(f"/v1/evaluation/jobs/{job_id}")
        raw = job.get("status") if isinstance(job, dict) else None
        # A status STATUS_MAP does not know is reported as failed, with the reason kept.
        status = STATUS_MAP.get(str(raw).lower()) if raw is not None else None
        if status is None:
            reason = f"NeMo Evaluator reported status {raw!r}, which evalstack does not know"
            logger.warning("job %s: %s; reporting it as failed", job_id, reason)
            self._failure_reasons[job_id] = reason
            return Job(job_id=job_id, status=JobStatus.failed)
        if status is JobStatus.failed:
            details = job.get("status_details") if isinstance(job, dict) else None
            message = details.get("message") if isinstance(details, dict) else None
            self._failure_reasons[job_id] = f"NeMo Evaluator job failed: {message or 'no reason given'}"
        else:
            self._failure_reasons.pop(job_id, None)
        return Job(job_id=job_id, status=status)

    def job_failure_reason(self, job_id: str) -> str | None:
        """Why the last ``job_status`` call reported ``job_id`` as failed, or None."""
        return self._failure_reasons.get(job_id)

    async def job_cancel(self, benchmark_id: str, job_id: str) -> None:
        """Ask the service to cancel the job."""
        with self._job_not_found(job_id):
            await self._evaluator_post(f"/v1/evaluation/jobs/{job_id}/cancel", {})

    async def job_result(self, benchmark_id: str, job_id: str) -> EvaluateResponse:
        """A completed job's results under ``scores[benchmark_id]``, with per-sample rows when available."""
        job = await self.job_status(benchmark_id, job_id)
        if job.status is not JobStatus.completed:
            message = f"Job {job_id} not completed. Status: {job.status.value}"
            reason = self.job_failure_reason(job_id)
            if reason:
                message += f" ({reason})"
            raise InvalidInputError(message)
        where = self.config.evaluator_url
        with _RenameNotFound(f"The results of job '{job_id}' are not on the NeMo Evaluator at {where}"):
            results = await self._evaluator_get(f"/v1/evaluation/jobs/{job_id}/results")
        generations: list[dict[str, Any]] = []
        score_rows: list[dict[str, Any]] = []
        try:
            archive = await self._evaluator_download(f"/v1/evaluation/jobs/{job_id}/download-results")
            generations, score_rows = parse_per_sample_results(archive)
        except (EvalstackError, ValueError, zipfile.BadZipFile) as exc:
            logger.info("job %s: no per-sample results (%s)", job_id, exc)
        return EvaluateResponse(
            generations=generations,
            scores={benchmark_id: ScoringResult(score_rows=score_rows, aggregated_results=results)},
        )

    async def evaluate_rows(
        self,
        benchmark_id: str,
        input_rows: list[dict[str, Any]],
        scoring_functions: list[str],
        benchmark_config: BenchmarkConfig,
    ) -> EvaluateResponse:
        """Not supported: the NeMo Evaluator runs whole evaluation configs as jobs."""
        raise UnsupportedError(
            "evaluate_rows is not supported by the nvidia eval provider: a NeMo Evaluator runs whole "
            "evaluation configs as jobs. Use run_eval with a registered benchmark, or a provider that "
            "supports evaluate_rows (such as 'local')."
        )

    def _job_not_found(self, job_id: str) -> _RenameNotFound:
        return _RenameNotFound(
            f"Job '{job_id}' not found on the NeMo Evaluator at {self.config.evaluator_url}"
        )


class _RenameNotFound:
    """Context manager that re-raises a NotFoundError with a clearer message."""

    def __init__(self, message: str) -> None:
        self._message = message

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if isinstance(exc, NotFoundError):
            raise NotFoundError(f"{self._message}: {exc.message}", detail=exc.detail) from exc
        return False


def _as_benchmark_config(value: BenchmarkConfig | Mapping[str, Any]) -> BenchmarkConfig:
    if isinstance(value, BenchmarkConfig):
        return value
    try:
        return BenchmarkConfig.model_validate(value)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid benchmark_config: {exc}") from exc


def _json(response: httpx.Response, base: str, method: str, path: str) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise UpstreamError(
            f"NeMo Evaluator at {base}: {method} {path} answered {response.status_code} with a body "
            f"that is not JSON: {response.text[:200]!r}"
        ) from exc
