"""Server settings: a YAML or JSON config file, the environment, and command-line overrides.

Precedence, lowest to highest: built-in defaults, the config file, environment variables,
explicit overrides (command-line flags). Unknown keys are rejected with a message that names
the accepted ones.

Environment variables:

- ``EVALSTACK_DB_URL`` sets ``db_url``.
- ``EVALSTACK_DATA_HOME`` sets ``data_dir``.
- ``HF_ENDPOINT`` sets ``hf_endpoint``.
- ``NVIDIA_EVALUATOR_URL`` adds the provider ``nvidia`` (``remote::nvidia``, with that
  ``evaluator_url``) beside ``local``, unless the config file lists ``providers`` itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evalstack.egress import EgressPolicy
from evalstack.errors import InvalidInputError

DEFAULT_DATA_DIR = Path("~/.local/share/evalstack")
"""Where evalstack keeps its data when neither the config nor ``EVALSTACK_DATA_HOME`` says."""

DB_FILE_NAME = "evalstack.db"
"""The SQLite file created under ``data_dir`` when ``db_url`` is not set."""


class _Strict(BaseModel):
    """Our own formats: unknown keys are errors that name the accepted keys."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [str(key) for key in data if key not in cls.model_fields]
            if unknown:
                raise ValueError(
                    f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                    f"accepted keys: {', '.join(cls.model_fields)}"
                )
        return data


def _check_http_url(value: str, what: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{what} must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


class ModelEntry(_Strict):
    """A model served by an OpenAI-compatible endpoint, registered when the server starts."""

    model_id: str = Field(min_length=1)
    """The name clients use for the model (``eval_candidate.model``, ``evalstack run --model``)."""

    base_url: str
    """The endpoint's OpenAI-compatible base URL, e.g. ``http://localhost:8000/v1``."""

    provider_model_id: str | None = None
    """The name the endpoint knows the model by (sent as ``model`` in requests); defaults to ``model_id``."""

    api_key: str | None = None
    """Sent as ``Authorization: Bearer <api_key>``; never shown by any API."""

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        return _check_http_url(value, "base_url")


class LocalExecutorSettings(_Strict):
    """Run every job in the process that holds its lease (the default)."""

    type: Literal["local"] = "local"
    """``local``: this process runs the job's samples."""


class RayExecutorSettings(_Strict):
    """Shard each job's samples over a Ray cluster; the process holding the job's lease coordinates
    and is still the only writer of its samples. Needs the ``ray`` extra (``evalstack[ray]``)."""

    type: Literal["ray"] = "ray"
    """``ray``: Ray actors run the job's samples, this process coordinates."""

    address: str | None = None
    """The cluster: ``auto``, ``host:6379`` or ``ray://host:10001``. Default: ``RAY_ADDRESS`` if set, else a
    new local Ray instance."""

    shard_size: int = Field(default=1000, ge=1)
    """Samples per shard; a shard is what one actor runs at a time and runs again if its actor dies."""

    max_actors: int | None = Field(default=None, ge=1)
    """Shard actors running at once per job (the job's ``parallelism`` is split among them). Default: one
    per alive node."""

    num_cpus: int | None = Field(default=None, ge=1)
    """CPUs of a new local Ray instance (ignored when connecting to a cluster)."""

    object_store_memory: int | None = Field(default=None, ge=78643200)
    """Object store size in bytes of a new local Ray instance (ignored when connecting to a cluster)."""

    model_replicas: int = Field(default=1, ge=1)
    """Copies of the embedded model per job on the embedded model, each a Ray actor that loads it once and
    takes one GPU where the cluster has GPUs, else one CPU; the shard actors share them."""


def _executor_from_name(value: Any) -> Any:
    """``"local"`` and ``"ray"`` stand for ``{type: local}`` and ``{type: ray}``."""
    return {"type": value} if isinstance(value, str) else value


class ProviderEntry(_Strict):
    """An eval provider the Llama Stack Eval API routes benchmarks to."""

    provider_id: str = Field(min_length=1)
    """The id clients pass as ``provider_id`` (e.g. ``local``, ``nvidia``)."""

    provider_type: Literal["inline::local", "remote::nvidia"]
    """``inline::local`` runs evaluations on evalstack's own engine; ``remote::nvidia`` forwards them to a
    NeMo Evaluator service."""

    config: dict[str, Any] = Field(default_factory=dict)
    """Provider options; for ``remote::nvidia``: ``evaluator_url`` (the NeMo Evaluator base URL)."""


class ApiKeyEntry(_Strict):
    """An API key: its name (recorded as the creator of what it makes), its hash and its scopes."""

    name: str = Field(min_length=1)
    """Who holds the key; recorded on every job and entity it creates."""

    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    """The hex SHA-256 digest of the key (``evalstack keys new`` prints it); the key is never stored."""

    scopes: list[Literal["read", "run", "admin"]] = Field(min_length=1)
    """``read`` (every GET), ``run`` (create and cancel jobs, evaluate, score, register), ``admin``
    (delete what others created, manage providers)."""


class JwtSettings(_Strict):
    """OIDC bearer tokens, verified against the issuer's JWKS."""

    jwks_url: str
    """Where the issuer publishes its signing keys."""

    issuer: str = Field(min_length=1)
    """The required ``iss`` claim."""

    audience: str = Field(min_length=1)
    """The required ``aud`` claim."""

    scopes_claim: str = "scope"
    """The claim holding the scopes: a space-separated string or a list."""

    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    """Accepted signing algorithms."""

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url_is_http(cls, value: str) -> str:
        return _check_http_url(value, "jwks_url")


class AuthSettings(_Strict):
    """Who may call the server: API keys and, optionally, JWTs from an OIDC issuer."""

    api_keys: list[ApiKeyEntry] = Field(default_factory=list)
    """Accepted API keys, sent as ``Authorization: Bearer <key>``."""

    jwt: JwtSettings | None = None
    """Accept bearer JWTs signed by this issuer."""


class EgressSettings(_Strict):
    """Which hosts dataset URLs, ``hf://`` endpoints, judge URLs and model base URLs may reach."""

    allow: list[str] = Field(default_factory=list)
    """Hosts (``example.com``; ``.example.com`` for subdomains) or CIDRs; if set, only these are reachable."""

    deny: list[str] = Field(default_factory=list)
    """Hosts or CIDRs that are never reachable. Link-local and cloud-metadata addresses are always
    refused for downloads."""

    def policy(self) -> EgressPolicy:
        """The policy these lists describe."""
        return EgressPolicy(self.allow, self.deny)


class CircuitBreakerEntry(_Strict):
    """When a model endpoint counts as unreachable and how often it is probed (one breaker per endpoint)."""

    enabled: bool = True
    """``false``: never pause; requests to an unreachable endpoint fail after their retries."""

    failure_threshold: int = Field(default=10, ge=1)
    """Opens after this many requests in a row failed on connection errors, timeouts or 502/503/504."""

    failure_window: float = Field(default=5.0, gt=0)
    """Or after such failures went on for this many seconds without one answer between them."""

    probe_interval: float = Field(default=0.5, gt=0)
    """While open, seconds before the first probe request; doubled after each failed probe."""

    probe_interval_max: float = Field(default=15.0, gt=0)
    """The longest wait between two probes."""


def _default_providers() -> list[ProviderEntry]:
    return [ProviderEntry(provider_id="local", provider_type="inline::local")]


class Settings(_Strict):
    """Everything the server needs to know at start-up."""

    db_url: str = ""
    """SQLAlchemy database URL. Default: ``sqlite:///<data_dir>/evalstack.db``. Any SQLAlchemy URL works,
    e.g. ``postgresql+psycopg://user:pass@host/db``. Environment: ``EVALSTACK_DB_URL``."""

    data_dir: Path = DEFAULT_DATA_DIR
    """Folder for evalstack's data (the default SQLite database, downloaded files). Default:
    ``~/.local/share/evalstack``. Environment: ``EVALSTACK_DATA_HOME``."""

    host: str = Field(default="127.0.0.1", min_length=1)
    """Interface the server listens on."""

    port: int = Field(default=8321, ge=0, le=65535)
    """TCP port the server listens on (``0`` picks a free one)."""

    models: list[ModelEntry] = Field(default_factory=list)
    """Models registered at start-up (each: ``model_id``, ``base_url``, ``provider_model_id``, ``api_key``).
    An entry replaces a model of the same id registered earlier."""

    providers: list[ProviderEntry] = Field(default_factory=_default_providers)
    """Eval providers. Default: ``local`` (``inline::local``), plus ``nvidia`` (``remote::nvidia``) when
    ``NVIDIA_EVALUATOR_URL`` is set."""

    default_parallelism: int = Field(default=16, ge=1)
    """How many model requests a job keeps in flight unless it asks for another number."""

    adaptive_concurrency: bool = False
    """Adapt each job's concurrency to the endpoint (AIMD): halve on 429/503 or when latency doubles, grow
    by one per round trip while it keeps up, never above the job's parallelism. The history is kept in
    the job's ``progress.concurrency``. ``evalstack run --adaptive-concurrency`` turns it on for one run."""

    response_cache: bool = False
    """Serve every job's model answers from the response cache and keep new ones there. Off by default;
    a job can ask for it on its own (``cache: true`` in a benchmark file, NeMo ``params.extra.cache``,
    ``evalstack run --cache``)."""

    cache_ttl: float | None = Field(default=None, gt=0)
    """Seconds a cached answer is served; older ones are asked again (and ``evalstack cache clear
    --expired`` deletes them). Default: no expiry."""
    max_outage: float = Field(default=900.0, gt=0)
    """Seconds a job waits for its unreachable model endpoint before it fails, keeping its finished samples
    (a resume finishes it). Default 15 minutes. A job may set its own (``params.extra.max_outage`` in a
    NeMo config, ``max_outage`` in a benchmark file, ``evalstack run --max-outage``)."""

    circuit_breaker: CircuitBreakerEntry = Field(default_factory=CircuitBreakerEntry)
    """How model endpoint outages are detected and probed (``failure_threshold``, ``failure_window``,
    ``probe_interval``, ``probe_interval_max``, ``enabled``)."""

    executor: LocalExecutorSettings | RayExecutorSettings = Field(
        default_factory=LocalExecutorSettings, discriminator="type"
    )
    """Where jobs run: ``local`` (default) or ``ray`` / ``{type: ray, address, shard_size, max_actors}``.
    ``evalstack serve --executor ray`` and ``evalstack run --executor ray`` choose Ray for one process."""

    data_roots: list[Path] = Field(default_factory=list)
    """Folders whose files may be registered as datasets by path or ``file://`` URL; nothing outside
    them can be read. Default: the working directory and ``data_dir``."""

    hf_endpoint: str | None = None
    """Hugging Face Hub endpoint for ``hf://`` and ``huggingface://`` datasets. Default: the public Hub.
    Environment: ``HF_ENDPOINT``."""

    auth: AuthSettings | None = None
    """API keys and JWT settings. Without them the server is open, and only binds to loopback unless
    started with ``--insecure-no-auth``."""

    egress: EgressSettings = Field(default_factory=EgressSettings)
    """The egress policy for dataset URLs, ``hf://`` endpoints, judge URLs and model base URLs."""

    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger ones are answered with 413. Default: 32 MiB."""

    embedded_model: bool = True
    """Register the embedded model (SmolLM2-135M-Instruct, alias ``embedded``) as the default model.
    Running it needs the ``embedded`` extra (torch, transformers)."""

    @field_validator("executor", mode="before")
    @classmethod
    def _executor_name(cls, value: Any) -> Any:
        return _executor_from_name(value)

    @field_validator("hf_endpoint")
    @classmethod
    def _hf_endpoint_is_http(cls, value: str | None) -> str | None:
        return None if not value else _check_http_url(value, "hf_endpoint")

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.db_url:
            self.db_url = f"sqlite:///{self.data_dir / DB_FILE_NAME}"
        if "data_roots" not in self.model_fields_set:
            self.data_roots = [Path.cwd(), self.data_dir]
        self.data_roots = [root.expanduser().resolve() for root in self.data_roots]
        for what, ids in (
            ("model_id", [m.model_id for m in self.models]),
            ("provider_id", [p.provider_id for p in self.providers]),
        ):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            if repeated:
                raise ValueError(f"{what} listed more than once: {', '.join(repeated)}")
        return self


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"Config file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise InvalidInputError(f"Config file {str(path)!r} cannot be read: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise InvalidInputError(f"Config file {str(path)!r} is not valid {kind}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"Config file {str(path)!r} must hold a mapping of settings "
            f"(accepted keys: {', '.join(Settings.model_fields)}), got {type(data).__name__}"
        )
    # Relative folders in a file are relative to the file, wherever the server is started.
    base = path.parent
    if isinstance(data.get("data_dir"), str):
        data["data_dir"] = str(base / Path(data["data_dir"]).expanduser())
    if isinstance(data.get("data_roots"), list):
        data["data_roots"] = [
            str(base / Path(root).expanduser()) if isinstance(root, str) else root
            for root in data["data_roots"]
        ]
    return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the config file (YAML, or JSON for ``*.json``), the environment and overrides.

    Overrides whose value is None are ignored, so command-line options that were not given can be
    passed as they are. ``executor="ray"`` keeps the file's Ray settings, if it has any. Raises
    InvalidInputError with every problem found.
    """
    data: dict[str, Any] = _read_config_file(Path(config_file)) if config_file is not None else {}
    env = os.environ
    if env.get("EVALSTACK_DB_URL"):
        data["db_url"] = env["EVALSTACK_DB_URL"]
    if env.get("EVALSTACK_DATA_HOME"):
        data["data_dir"] = env["EVALSTACK_DATA_HOME"]
    if env.get("HF_ENDPOINT"):
        data["hf_endpoint"] = env["HF_ENDPOINT"]
    nvidia_url = env.get("NVIDIA_EVALUATOR_URL")
    if nvidia_url and "providers" not in data and overrides.get("providers") is None:
        data["providers"] = [
            {"provider_id": "local", "provider_type": "inline::local", "config": {}},
            {
                "provider_id": "nvidia",
                "provider_type": "remote::nvidia",
                "config": {"evaluator_url": nvidia_url},
            },
        ]
    executor = overrides.pop("executor", None)
    current = _executor_from_name(data.get("executor", "local"))
    if executor is not None and (not isinstance(current, dict) or current.get("type") != executor):
        data["executor"] = executor  # else the file's own settings for that executor are kept
    data.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        source = f" in {str(config_file)!r}" if config_file is not None else ""
        raise InvalidInputError(f"Invalid settings{source}: {_format_validation_error(exc)}") from exc
