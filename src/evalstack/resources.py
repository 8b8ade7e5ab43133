"""What the registry keeps besides benchmarks and scoring functions (``engine.types``): models and
datasets, as the registry hands them out, and a page of a dataset's rows.

The Llama Stack wire module reuses these while the public shape is the same.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from evalstack.engine.types import EngineModel, Resource

DatasetPurpose = Literal["post-training/messages", "eval/question-answer", "eval/messages-answer"]


class URIDataSource(EngineModel):
    type: Literal["uri"] = "uri"
    uri: str


class RowsDataSource(EngineModel):
    type: Literal["rows"] = "rows"
    rows: list[dict[str, Any]]


DataSource = Annotated[URIDataSource | RowsDataSource, Field(discriminator="type")]


class Dataset(Resource):
    type: Literal["dataset"] = "dataset"
    purpose: DatasetPurpose
    source: DataSource
    metadata: dict[str, Any] = Field(default_factory=dict)


class DatasetRegistration(EngineModel):
    """A dataset to register: its purpose, where its rows are, and an optional id."""

    purpose: DatasetPurpose
    source: DataSource
    metadata: dict[str, Any] | None = None
    dataset_id: str | None = None


class PaginatedResponse(EngineModel):
    """A page of a dataset's rows; ``has_more`` says whether rows follow it."""

    data: list[dict[str, Any]]
    has_more: bool
    url: str | None = None


class Model(EngineModel):
    """A registered model as both Llama Stack client generations read it (0.2.x fields plus 0.7.x
    OpenAI-style fields)."""

    identifier: str
    provider_resource_id: str | None = None
    provider_id: str
    type: Literal["model"] = "model"
    metadata: dict[str, Any] = Field(default_factory=dict)
    model_type: Literal["llm", "embedding"] = "llm"
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "evalstack"
    custom_metadata: dict[str, Any] = Field(default_factory=dict)
