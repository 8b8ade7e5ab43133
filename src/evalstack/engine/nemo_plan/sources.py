"""Where a NeMo job's rows come from: a task's dataset (a Dataset object or a dataset registered in
evalstack), the target's rows (``rows``, ``dataset``, ``cached_outputs``), and the outputs rows
already hold (``data`` tasks, ``cached_outputs`` targets)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from evalstack.engine import datasets
from evalstack.engine.datasets import load_rows
from evalstack.engine.nemo_plan.config import NemoConfig, NemoDataset, NemoTarget
from evalstack.engine.plan import SampleOutput
from evalstack.engine.ports import RowSource
from evalstack.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from evalstack.config import Settings

OUTPUT_FIELDS = (
    "output_text",
    "some_output",
    "output",
    "generated_output",
    "generated_text",
    "generation",
    "prediction",
    "completion",
    "model_output",
)


def min_limit(*limits: int | None) -> int | None:
    given = [limit for limit in limits if limit is not None]
    return min(given) if given else None


def _text_of_response(response: Mapping[str, Any]) -> str | None:
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
        choice = choices[0]
        message = choice.get("message")
        if isinstance(message, Mapping) and isinstance(message.get("content"), str):
            return str(message["content"])
        if isinstance(choice.get("text"), str):
            return str(choice["text"])
    return None


def read_output(row: Mapping[str, Any]) -> SampleOutput:
    """The output a row already holds: a NeMo per-sample ``sample`` object, else the first of
    :data:`OUTPUT_FIELDS`, else the text of an OpenAI ``response`` object. Metrics may reference
    any field of the row directly."""
    sample = row.get("sample")
    if isinstance(sample, Mapping) and ("output_text" in sample or "response" in sample):
        response = sample.get("response")
        text = sample.get("output_text")
        return SampleOutput(
            text if isinstance(text, str) else None, dict(response) if isinstance(response, Mapping) else None
        )
    raw_response = row.get("response")
    response_dict = dict(raw_response) if isinstance(raw_response, Mapping) else None
    for field in OUTPUT_FIELDS:
        value = row.get(field)
        if isinstance(value, str):
            return SampleOutput(value, response_dict)
    text = _text_of_response(response_dict) if response_dict is not None else None
    return SampleOutput(text, response_dict)


def check_files_url(files_url: str, settings: Settings, where: str) -> None:
    """Check a dataset location without reading it, so a bad one fails the job's creation, not its run.

    Local paths and ``file://`` URLs must lie under the data roots and exist; ``hf://`` style URLs must
    parse; other schemes than those :func:`load_rows` reads are rejected. Errors are prefixed with ``where``.
    """
    try:
        datasets.check_dataset_uri(files_url, settings=settings)
    except (InvalidInputError, NotFoundError) as exc:
        raise type(exc)(f"{where}: {exc.message}", detail=exc.detail) from None


async def dataset_source(
    dataset: str | NemoDataset,
    *,
    limit: int | None,
    settings: Settings,
    registry: Any,
    hf_token: str | None,
    where: str,
) -> RowSource:
    """Rows of a Dataset object (by its files_url) or of a dataset registered in evalstack."""
    if isinstance(dataset, NemoDataset):
        files_url = dataset.files_url
        effective = min_limit(limit, dataset.limit)
        hf_endpoint = dataset.hf_endpoint

        async def from_files() -> list[dict[str, Any]]:
            return await load_rows(
                files_url, settings=settings, limit=effective, hf_endpoint=hf_endpoint, hf_token=hf_token
            )

        return from_files
    if registry is None:
        raise InvalidInputError(
            f"{where}: dataset {dataset!r} names a registered dataset, but no registry is set."
        )
    dataset_id = await registered_dataset_id(registry, dataset, where)

    async def from_registry() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await registry.dataset_rows(dataset_id, limit=limit)
        return rows

    return from_registry


async def registered_dataset_id(registry: Any, ref: str, where: str) -> str:
    """The registered dataset a ``namespace/name`` (or plain id) reference means."""
    candidates = [ref]
    namespace, _, name = ref.partition("/")
    if name and namespace == "default":
        candidates.append(name)
    for candidate in candidates:
        try:
            await registry.get_dataset(candidate)
        except NotFoundError:
            continue
        return candidate
    raise NotFoundError(
        f"{where}: dataset {ref!r} is not registered in evalstack; register it first, or give a "
        'Dataset object {"files_url": ...} instead.'
    )


async def target_source(
    target: NemoTarget, settings: Settings, registry: Any, hf_token: str | None
) -> RowSource | None:
    """The rows a rows / dataset / cached_outputs target provides (None for a model target).

    File-backed rows are loaded once and shared by every task that reads them.
    """
    if target.type == "rows":
        rows = list(target.rows or [])

        async def inline() -> list[dict[str, Any]]:
            return rows

        return inline
    if target.type == "cached_outputs":
        files_url = str((target.cached_outputs or {})["files_url"])

        async def cached() -> list[dict[str, Any]]:
            return await load_rows(files_url, settings=settings, hf_token=hf_token)

        inner: RowSource = cached
    elif target.type == "dataset" and target.dataset is not None:
        inner = await dataset_source(
            target.dataset,
            limit=None,
            settings=settings,
            registry=registry,
            hf_token=hf_token,
            where="target",
        )
    else:
        return None
    loaded: list[dict[str, Any]] | None = None
    lock = asyncio.Lock()

    async def shared() -> list[dict[str, Any]]:
        nonlocal loaded
        async with lock:
            if loaded is None:
                loaded = await inner()
        return loaded

    return shared


def limited(source: RowSource, limit: int | None) -> RowSource:
    if limit is None:
        return source

    async def rows() -> list[dict[str, Any]]:
        return (await source())[:limit]

    return rows


def check_dataset_files(config: NemoConfig, target: NemoTarget, settings: Settings) -> None:
    """Locate every dataset file the plan will read (see :func:`check_files_url`), after the other checks."""
    if target.type == "cached_outputs":
        url = str((target.cached_outputs or {})["files_url"])
        check_files_url(url, settings, "target.cached_outputs.files_url")
    elif target.type == "dataset" and isinstance(target.dataset, NemoDataset):
        check_files_url(target.dataset.files_url, settings, "target.dataset.files_url")
    for name, task in (config.tasks or {}).items():
        if isinstance(task.dataset, NemoDataset):
            check_files_url(task.dataset.files_url, settings, f"Task {name!r} dataset.files_url")
