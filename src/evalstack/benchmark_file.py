"""The benchmark file that `evalstack run` takes: our own small format, or a NeMo Evaluator config.

Our format (YAML or JSON; unknown keys are rejected):

    benchmark_id: demo-qa                 # optional; defaults to the file name
    dataset:                              # exactly one of rows / path / uri
      rows: [{input_query: ..., expected_answer: ...}, ...]
      path: qa.jsonl                      # JSON, JSONL, CSV or Parquet, relative to this file
    scoring_functions: [basic::subset_of, basic::equality]   # or {fn_id: params or null}
    sampling_params: {strategy: {type: greedy}, max_tokens: 32, stop: ["\\n"]}
    system_message: Answer briefly.       # optional
    num_examples: 100                     # optional: only the first N rows
    parallelism: 16                       # optional: requests in flight
    max_outage: 900                       # optional: seconds to wait for an unreachable model

A file whose top level has a ``type`` key (``custom``, ``mmlu``...) is a NeMo Evaluator config
and runs as one, with ``--model`` as its target.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evalstack.engine.types import (
    GreedySamplingStrategy,
    SamplingParams,
    ScoringFnParams,
    TopKSamplingStrategy,
    TopPSamplingStrategy,
)
from evalstack.errors import InvalidInputError

_STRATEGIES: dict[Any, type[BaseModel]] = {
    "greedy": GreedySamplingStrategy,
    "top_p": TopPSamplingStrategy,
    "top_k": TopKSamplingStrategy,
}


def _reject_unknown(given: dict[str, Any], accepted: tuple[str, ...], where: str) -> None:
    unknown = [key for key in given if key not in accepted]
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in {where}; accepted: {', '.join(accepted)}"
        )


class StrictModel(BaseModel):
    """Our own formats forbid unknown keys."""

    model_config = ConfigDict(extra="forbid")


class DatasetSpec(StrictModel):
    """Where the rows come from: inline ``rows``, a file ``path`` or a ``uri``."""

    rows: list[dict[str, Any]] | None = None
    path: str | None = None
    uri: str | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> DatasetSpec:
        given = [name for name in ("rows", "path", "uri") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of 'rows', 'path' or 'uri' (got {given or 'none'})")
        return self


class BenchmarkFile(StrictModel):
    """A Llama Stack style benchmark: a dataset, scoring functions and sampling parameters."""

    benchmark_id: str | None = None
    dataset: DatasetSpec
    scoring_functions: list[str] | dict[str, ScoringFnParams | None] = Field(min_length=1)
    sampling_params: SamplingParams = Field(default_factory=SamplingParams)
    system_message: str | None = None
    num_examples: int | None = Field(default=None, ge=1)
    parallelism: int | None = Field(default=None, ge=1, le=4096)
    max_outage: float | None = Field(default=None, gt=0)

    @field_validator("sampling_params", mode="before")
    @classmethod
    def _known_sampling_keys(cls, value: Any) -> Any:
        """The wire model ignores unknown keys; in our own file a typo must not pass silently."""
        if not isinstance(value, dict):
            return value
        _reject_unknown(value, tuple(SamplingParams.model_fields), "sampling_params")
        strategy = value.get("strategy")
        if isinstance(strategy, dict):
            model = _STRATEGIES.get(strategy.get("type", "greedy"))
            if model is not None:
                _reject_unknown(strategy, tuple(model.model_fields), "sampling_params.strategy")
        return value

    def scoring_params(self) -> dict[str, ScoringFnParams | None]:
        """Scoring functions as ``{fn_id: params or None}``."""
        if isinstance(self.scoring_functions, dict):
            return dict(self.scoring_functions)
        return {fn_id: None for fn_id in self.scoring_functions}


def read_document(path: Path) -> dict[str, Any]:
    """Parse a YAML or JSON file into a mapping, with an error that names the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidInputError(
            f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} must hold a mapping at the top level, not {type(data).__name__}")
    return data


def is_nemo_config(document: dict[str, Any]) -> bool:
    """NeMo Evaluator configs carry a ``type``; our benchmark files never do."""
    return "type" in document


def parse_benchmark_file(document: dict[str, Any], source: Path) -> BenchmarkFile:
    """Validate our format, naming each wrong field and what is accepted."""
    try:
        spec = BenchmarkFile.model_validate(document)
    except ValidationError as exc:
        problems: list[str] = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"]) or "(top level)"
            problem = f"{where}: {err['msg']}"
            # An unknown key inside `dataset` is named with the keys accepted there.
            if err["type"] == "extra_forbidden" and tuple(err["loc"][:-1]) == ("dataset",):
                problem += f" (accepted in dataset: {', '.join(DatasetSpec.model_fields)})"
            problems.append(problem)
        accepted = ", ".join(BenchmarkFile.model_fields)
        raise InvalidInputError(f"{source}: {'; '.join(problems)}. Accepted keys: {accepted}") from exc
    if spec.benchmark_id is None:
        spec.benchmark_id = source.stem
    return spec
