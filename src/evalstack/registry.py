"""What is registered: models, datasets, benchmarks, scoring functions, NeMo configs and targets.

Everything is kept through the store, so it survives restarts. Routers and providers ask the
registry, never the tables. Results are wire models (or plain dicts for NeMo entities); errors
are ``evalstack.errors`` types.

Datasets come in two kinds. A ``rows`` dataset keeps its rows in the store. A ``uri`` dataset
keeps only its URI and loads its rows when they are read, through
``evalstack.engine.datasets.load_rows``: a local path or ``file://`` URL (only inside
``settings.data_roots``; checked when the dataset is registered), an ``http(s)://`` URL of a
JSON, JSONL, CSV or Parquet file, a ``data:`` URL holding such a file (base64 or percent-encoded,
at most ``DATA_URL_MAX_CHARS`` long), ``hf://datasets/<org>/<name>[/<path>]``, or Llama Stack's
``huggingface://datasets/<org>/<name>?split=<split>[&name=<config>][&revision=<rev>]``.
Remote rows are cached in memory (a few datasets); local files are read again each time.

Rows appended to either kind are stored and come after the source's rows. Registering an
existing dataset id again replaces it cleanly: its old rows, appended ones included, are gone
(Llama Stack 0.2.x answers 200). With ``replace=False`` (0.7.x) a registration that matches the
existing one is a no-op and one that differs is refused (ConflictError), as a 0.7 server does;
benchmarks likewise (:meth:`Registry.check_benchmark_replacement`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from typing import Any, Literal

from evalstack.config import Settings
from evalstack.engine.datasets import DatasetUriKind, check_dataset_uri, load_rows
from evalstack.engine.types import Benchmark, ScoringFn
from evalstack.errors import ConflictError, InvalidInputError, NotFoundError
from evalstack.inference.base import ModelEndpoint
from evalstack.limits import check_inline_rows
from evalstack.redaction import drop_secrets
from evalstack.resources import (
    Dataset,
    DatasetRegistration,
    Model,
    PaginatedResponse,
    RowsDataSource,
    URIDataSource,
)
from evalstack.store.repository import Store

logger = logging.getLogger(__name__)

EMBEDDED_MODEL_ID = "SmolLM2-135M-Instruct"
"""The embedded model's id."""

EMBEDDED_ALIAS = "embedded"
"""A second name for the embedded model (``evalstack run --model embedded``)."""

HTTP_PROVIDER_ID = "openai"
"""``provider_id`` of models served by an OpenAI-compatible HTTP endpoint."""

EMBEDDED_PROVIDER_ID = "embedded"
"""``provider_id`` of the in-process embedded model."""

NemoKind = Literal["config", "target"]

REGISTRABLE_URI_KINDS: tuple[DatasetUriKind, ...] = ("hub", "http", "data", "local")
"""The dataset URI kinds registration accepts (``engine.datasets.check_dataset_uri`` names their forms)."""

_ROWS_CACHE_SIZE = 8


def _model_not_found(model_id: str) -> NotFoundError:
    return NotFoundError(
        f"Model '{model_id}' not found. Use 'client.models.list()' to list available Models."
    )


def _dataset_not_found(dataset_id: str) -> NotFoundError:
    return NotFoundError(
        f"Dataset '{dataset_id}' not found. Use 'client.datasets.list()' to list available Datasets."
    )


def _already_exists(kind: str, identifier: str, differing: list[str]) -> ConflictError:
    return ConflictError(
        f"{kind} '{identifier}' already exists with other {', '.join(differing)}. "
        "Unregister it first if you want to replace it."
    )


# ---- the registry -----------------------------------------------------------------------------


class Registry:
    """Registered models, datasets, benchmarks, scoring functions and NeMo entities, kept in ``store``."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.egress = settings.egress.policy()
        # dataset id -> (uri, rows) of remote uri datasets, least recently used first
        self._uri_rows: OrderedDict[str, tuple[str, list[dict[str, Any]]]] = OrderedDict()

    async def initialize(self) -> None:
        """Register the models of ``settings.models`` and, when enabled, the embedded model."""
        for entry in self.settings.models:
            metadata: dict[str, Any] = {"base_url": entry.base_url}
            if entry.api_key:
                metadata["api_key"] = entry.api_key
            await self.register_model(entry.model_id, entry.provider_model_id, metadata)
        stored = await self.store.get_resource("model", EMBEDDED_MODEL_ID)
        is_embedded = stored is None or stored.get("provider_id") == EMBEDDED_PROVIDER_ID
        if self.settings.embedded_model and is_embedded:
            await self.register_model(
                EMBEDDED_MODEL_ID, EMBEDDED_MODEL_ID, {}, provider_id=EMBEDDED_PROVIDER_ID
            )
        elif not self.settings.embedded_model and stored is not None and is_embedded:
            await self.store.delete_resource("model", EMBEDDED_MODEL_ID)

    # ---- models ---------------------------------------------------------------------------------

    async def register_model(
        self,
        model_id: str,
        provider_model_id: str | None,
        metadata: dict[str, Any],
        *,
        provider_id: str | None = None,
        model_type: Literal["llm", "embedding"] | None = None,
    ) -> Model:
        """Register (or replace) a model and return it as clients see it.

        HTTP models (``provider_id`` None or ``"openai"``) need ``metadata.base_url``, an
        OpenAI-compatible base URL; ``metadata.api_key`` is optional and never returned.
        ``provider_id="embedded"`` names the in-process model under another id.
        """
        if not model_id:
            raise InvalidInputError("model_id must not be empty")
        provider = provider_id or HTTP_PROVIDER_ID
        metadata = dict(metadata or {})
        if provider == HTTP_PROVIDER_ID:
            base_url = metadata.get("base_url")
            if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
                raise InvalidInputError(
                    f"Model '{model_id}' needs metadata.base_url, the http(s) base URL of an "
                    "OpenAI-compatible endpoint such as 'http://localhost:8000/v1'"
                    + (f"; got {base_url!r}" if base_url is not None else "")
                )
            metadata["base_url"] = base_url.rstrip("/")
            await self.egress.check_url(metadata["base_url"], "model")
        elif provider != EMBEDDED_PROVIDER_ID:
            raise InvalidInputError(
                f"Unknown provider_id '{provider}' for model '{model_id}'; accepted: "
                f"'{HTTP_PROVIDER_ID}' (any OpenAI-compatible endpoint, given by metadata.base_url) "
                f"or '{EMBEDDED_PROVIDER_ID}'"
            )
        previous = await self.store.get_resource("model", model_id)
        record = {
            "model_id": model_id,
            "provider_model_id": provider_model_id or model_id,
            "provider_id": provider,
            "model_type": model_type or "llm",
            "metadata": metadata,
            "created": previous["created"] if previous else int(time.time()),
        }
        await self.store.put_resource("model", model_id, record)
        return self._model(record)

    @staticmethod
    def _model(record: dict[str, Any]) -> Model:
        metadata = drop_secrets(record["metadata"])
        return Model(
            identifier=record["model_id"],
            provider_resource_id=record["provider_model_id"],
            provider_id=record["provider_id"],
            metadata=metadata,
            model_type=record["model_type"],
            id=record["model_id"],
            created=record["created"],
            custom_metadata={
                **metadata,
                "model_type": record["model_type"],
                "provider_id": record["provider_id"],
                "provider_resource_id": record["provider_model_id"],
            },
        )

    async def _model_record(self, model_id: str) -> dict[str, Any]:
        record = await self.store.get_resource("model", model_id)
        if record is None and model_id == EMBEDDED_ALIAS:
            record = await self.store.get_resource("model", EMBEDDED_MODEL_ID)
        if record is None:
            raise _model_not_found(model_id)
        return record

    async def get_model(self, model_id: str) -> Model:
        """The model; the alias ``embedded`` names the embedded model."""
        return self._model(await self._model_record(model_id))

    async def list_models(self) -> list[Model]:
        """Every registered model, oldest first."""
        return [self._model(record) for record in await self.store.list_resources("model")]

    async def unregister_model(self, model_id: str) -> None:
        """Forget a model (the embedded one comes back at the next start while it is enabled)."""
        if not await self.store.delete_resource("model", model_id):
            raise _model_not_found(model_id)

    async def resolve_model(self, name_or_url: str) -> ModelEndpoint:
        """Where to send requests for a registered model id, ``embedded``, or a base URL.

        ``http(s)://host/v1`` gives an endpoint with an empty model name (the client asks the
        server for its first model); ``http(s)://host/v1#name`` names the model.
        """
        if name_or_url.startswith(("http://", "https://")):
            base_url, _, model = name_or_url.partition("#")
            await self.egress.check_url(base_url, "model")
            return ModelEndpoint(kind="openai", model=model, base_url=base_url.rstrip("/"))
        record = await self.store.get_resource("model", name_or_url)
        if record is None and name_or_url == EMBEDDED_ALIAS:
            return ModelEndpoint(kind="embedded", model=EMBEDDED_MODEL_ID)
        if record is None:
            raise _model_not_found(name_or_url)
        if record["provider_id"] == EMBEDDED_PROVIDER_ID:
            return ModelEndpoint(kind="embedded", model=EMBEDDED_MODEL_ID)
        metadata = record["metadata"]
        await self.egress.check_url(metadata["base_url"], "model")
        return ModelEndpoint(
            kind="openai",
            model=record["provider_model_id"],
            base_url=metadata["base_url"],
            api_key=metadata.get("api_key"),
        )

    # ---- datasets -------------------------------------------------------------------------------

    async def register_dataset(self, req: DatasetRegistration, *, replace: bool = True) -> Dataset:
        """Register a dataset; a missing id becomes ``dataset-<uuid4 hex>``.

        An existing id is cleanly replaced, or with ``replace=False`` kept when the registration
        matches it and refused (ConflictError naming the fields that differ) when it does not.
        """
        dataset_id = req.dataset_id or f"dataset-{uuid.uuid4().hex}"
        metadata = dict(req.metadata or {})
        source = req.source
        default_provider = "localfs"
        if isinstance(source, URIDataSource):
            kind = check_dataset_uri(source.uri, kinds=REGISTRABLE_URI_KINDS)
            if kind in ("local", "data"):
                # Fail now, not at the first read, for a path outside data_roots, missing or unreadable,
                # or a data: URL too long, of another format or not decodable.
                try:
                    await load_rows(source.uri, settings=self.settings, limit=1)
                except NotFoundError as exc:
                    raise InvalidInputError(exc.message, detail=exc.detail) from exc
            elif kind == "hub":
                default_provider = "huggingface"
        record = {
            "identifier": dataset_id,
            "provider_resource_id": dataset_id,
            "provider_id": str(metadata.get("provider_id") or default_provider),
            "purpose": req.purpose,
            "source": {"type": "uri", "uri": source.uri}
            if isinstance(source, URIDataSource)
            else {"type": "rows"},
            "metadata": metadata,
        }
        if not replace:
            existing = await self.store.get_resource("dataset", dataset_id)
            if existing is not None:
                differing = [
                    key
                    for key in ("provider_id", "purpose", "source", "metadata")
                    if existing[key] != record[key]
                ]
                if (
                    isinstance(source, RowsDataSource)
                    and await self.store.read_rows(dataset_id) != source.rows
                ):
                    differing.append("rows")
                if differing:
                    raise _already_exists("Dataset", dataset_id, differing)
                return await self._dataset(existing)
        self._uri_rows.pop(dataset_id, None)
        if isinstance(source, RowsDataSource):
            check_inline_rows(len(source.rows), f"Dataset '{dataset_id}'")
            await self.store.replace_rows(dataset_id, source.rows)
        else:
            await self.store.delete_rows(dataset_id)
        await self.store.put_resource("dataset", dataset_id, record)
        return await self._dataset(record)

    async def _dataset(self, record: dict[str, Any]) -> Dataset:
        data = dict(record)
        if data["source"]["type"] == "rows":
            data["source"] = {"type": "rows", "rows": await self.store.read_rows(record["identifier"])}
        return Dataset.model_validate(data)

    async def _dataset_record(self, dataset_id: str) -> dict[str, Any]:
        record = await self.store.get_resource("dataset", dataset_id)
        if record is None:
            raise _dataset_not_found(dataset_id)
        return record

    async def get_dataset(self, dataset_id: str) -> Dataset:
        """The dataset; a ``rows`` dataset shows its current rows, appended ones included."""
        return await self._dataset(await self._dataset_record(dataset_id))

    async def list_datasets(self) -> list[Dataset]:
        """Every registered dataset, oldest first."""
        return [await self._dataset(record) for record in await self.store.list_resources("dataset")]

    async def unregister_dataset(self, dataset_id: str) -> None:
        """Forget a dataset and its stored rows."""
        if not await self.store.delete_resource("dataset", dataset_id):
            raise _dataset_not_found(dataset_id)
        self._uri_rows.pop(dataset_id, None)
        await self.store.delete_rows(dataset_id)

    async def _source_rows(self, record: dict[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
        """The rows a ``uri`` dataset's source holds: local files are read each time, remote ones cached."""
        dataset_id, uri = record["identifier"], record["source"]["uri"]
        if check_dataset_uri(uri) == "local":
            return await load_rows(uri, settings=self.settings, limit=limit)
        cached = self._uri_rows.get(dataset_id)
        if cached is not None and cached[0] == uri:
            self._uri_rows.move_to_end(dataset_id)
            rows = cached[1]
        else:
            rows = await load_rows(uri, settings=self.settings)
            logger.info("loaded %d rows of dataset %s from %s", len(rows), dataset_id, uri)
            self._uri_rows[dataset_id] = (uri, rows)
            while len(self._uri_rows) > _ROWS_CACHE_SIZE:
                self._uri_rows.popitem(last=False)
        # Shallow copies, so a caller that edits a row never changes the cached ones.
        return [dict(row) for row in (rows if limit is None else rows[:limit])]

    async def iterrows(
        self, dataset_id: str, start_index: int | None, limit: int | None
    ) -> PaginatedResponse:
        """One page of rows, as Llama Stack pages them.

        ``limit`` None or -1 returns every row (``start_index`` ignored) with ``has_more`` false;
        otherwise rows ``[start, start + limit)`` with ``has_more = start + limit < total``.
        """
        start = start_index or 0
        if start < 0:
            raise InvalidInputError(f"start_index must be >= 0, got {start}")
        if limit is not None and limit < -1:
            raise InvalidInputError(f"limit must be >= 0, or -1 for every row; got {limit}")
        record = await self._dataset_record(dataset_id)
        if limit is None or limit == -1:
            return PaginatedResponse(data=await self._all_rows(record), has_more=False, url=None)
        if record["source"]["type"] == "rows":
            total = await self.store.count_rows(dataset_id)
            page = await self.store.read_rows(dataset_id, start, limit)
        else:
            rows = await self._all_rows(record)
            total, page = len(rows), rows[start : start + limit]
        return PaginatedResponse(data=page, has_more=start + limit < total, url=None)

    async def _all_rows(self, record: dict[str, Any], limit: int | None = None) -> list[dict[str, Any]]:
        dataset_id = record["identifier"]
        if record["source"]["type"] == "rows":
            return await self.store.read_rows(dataset_id, 0, limit)
        rows = await self._source_rows(record, limit)
        if limit is not None and len(rows) >= limit:
            return rows
        more = None if limit is None else limit - len(rows)
        return rows + await self.store.read_rows(dataset_id, 0, more)

    async def append_rows(self, dataset_id: str, rows: list[dict[str, Any]]) -> None:
        """Store ``rows`` after the dataset's rows (for a ``uri`` dataset, after the source's rows)."""
        check_inline_rows(len(rows), f"The rows appended to dataset '{dataset_id}'")
        await self._dataset_record(dataset_id)
        await self.store.append_rows(dataset_id, rows)

    async def dataset_rows(self, dataset_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The dataset's rows in order, the first ``limit`` of them when given."""
        if limit is not None and limit < 0:
            raise InvalidInputError(f"limit must be >= 0, got {limit}")
        return await self._all_rows(await self._dataset_record(dataset_id), limit)

    # ---- benchmarks -----------------------------------------------------------------------------

    async def check_benchmark_replacement(self, b: Benchmark) -> None:
        """ConflictError when another benchmark is registered under ``b``'s id (0.7.x servers refuse it)."""
        data = await self.store.get_resource("benchmark", b.identifier)
        if data is None:
            return
        existing, new = Benchmark.model_validate(data).model_dump(), b.model_dump()
        differing = [key for key in new if existing[key] != new[key]]
        if differing:
            raise _already_exists("Benchmark", b.identifier, differing)

    async def put_benchmark(self, b: Benchmark) -> None:
        """Register (or replace) a benchmark."""
        await self.store.put_resource("benchmark", b.identifier, b.model_dump(mode="json"))

    async def get_benchmark(self, benchmark_id: str) -> Benchmark:
        """The benchmark; NotFoundError "Benchmark 'x' not found" otherwise."""
        data = await self.store.get_resource("benchmark", benchmark_id)
        if data is None:
            raise NotFoundError(f"Benchmark '{benchmark_id}' not found")
        return Benchmark.model_validate(data)

    async def list_benchmarks(self) -> list[Benchmark]:
        """Every registered benchmark, oldest first."""
        return [Benchmark.model_validate(data) for data in await self.store.list_resources("benchmark")]

    async def delete_benchmark(self, benchmark_id: str) -> None:
        """Forget a benchmark (its jobs stay)."""
        if not await self.store.delete_resource("benchmark", benchmark_id):
            raise NotFoundError(f"Benchmark '{benchmark_id}' not found")

    # ---- scoring functions ----------------------------------------------------------------------

    async def put_scoring_fn(self, fn: ScoringFn) -> None:
        """Register (or replace) a user scoring function."""
        await self.store.put_resource("scoring_fn", fn.identifier, fn.model_dump(mode="json"))

    async def get_scoring_fn(self, fn_id: str) -> ScoringFn | None:
        """The user scoring function, or None (built-ins live in the scoring service)."""
        data = await self.store.get_resource("scoring_fn", fn_id)
        return None if data is None else ScoringFn.model_validate(data)

    async def list_scoring_fns(self) -> list[ScoringFn]:
        """Every registered user scoring function, oldest first."""
        return [ScoringFn.model_validate(data) for data in await self.store.list_resources("scoring_fn")]

    async def delete_scoring_fn(self, fn_id: str) -> None:
        """Forget a user scoring function."""
        if not await self.store.delete_resource("scoring_fn", fn_id):
            raise NotFoundError(f"Scoring function '{fn_id}' not found")

    # ---- NeMo configs and targets ---------------------------------------------------------------

    @staticmethod
    def _nemo_kind(kind: NemoKind) -> str:
        if kind not in ("config", "target"):
            raise ValueError(f"Unknown NeMo entity kind {kind!r}; accepted: 'config', 'target'")
        return f"nemo_{kind}"

    async def put_nemo(self, kind: NemoKind, entity: dict[str, Any], *, replace: bool = False) -> None:
        """Store a NeMo config or target under ``"<namespace>/<name>"``.

        Raises ConflictError when that key exists, unless ``replace`` is true.
        """
        resource_kind = self._nemo_kind(kind)
        namespace, name = entity.get("namespace"), entity.get("name")
        if not isinstance(namespace, str) or not namespace or not isinstance(name, str) or not name:
            raise InvalidInputError(f"An evaluation {kind} needs a non-empty 'namespace' and 'name'")
        key = f"{namespace}/{name}"
        if replace:
            await self.store.put_resource(resource_kind, key, entity)
        elif not await self.store.add_resource(resource_kind, key, entity):
            raise ConflictError(f"Evaluation {kind} '{key}' already exists")

    async def get_nemo(self, kind: NemoKind, ref: str) -> dict[str, Any]:
        """The config or target ``ref`` (``"namespace/name"``)."""
        data = await self.store.get_resource(self._nemo_kind(kind), ref)
        if data is None:
            raise NotFoundError(f"Evaluation {kind} '{ref}' not found")
        return data

    async def list_nemo(self, kind: NemoKind) -> list[dict[str, Any]]:
        """Every stored config or target, oldest first."""
        return await self.store.list_resources(self._nemo_kind(kind))

    async def delete_nemo(self, kind: NemoKind, ref: str) -> None:
        """Forget the config or target ``ref``."""
        if not await self.store.delete_resource(self._nemo_kind(kind), ref):
            raise NotFoundError(f"Evaluation {kind} '{ref}' not found")
