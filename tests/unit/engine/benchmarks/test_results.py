"""Summaries: counts of unparsed and truncated answers, failed samples, CI, the compile hook."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalstack.config import Settings
from evalstack.engine.benchmarks import ACADEMIC_TYPES, compile_academic_plan, is_academic
from evalstack.engine.benchmarks.results import GroupSummary, TaskSummary, summarize
from evalstack.errors import InvalidInputError
from evalstack.inference.base import ModelEndpoint
from evalstack.store.records import SampleRecord


def _sample(
    index: int, correct: float, parsed: float, finish: str = "stop", error: str | None = None
) -> SampleRecord:
    scores: dict[str, dict[str, float | None]] = (
        {} if error else {"exact_match": {"em": correct}, "parsed": {"flexible-extract": parsed}}
    )
    return SampleRecord(task="t", index=index, item={}, finish_reason=finish, scores=scores, error=error)


def test_counts_unparsed_truncated_and_failed() -> None:
    samples = [
        _sample(0, 1.0, 1.0),
        _sample(1, 0.0, 0.0, finish="length"),
        _sample(2, 0.0, 0.0),
        _sample(3, 0.0, 0.0, error="endpoint down"),
    ]
    result = summarize([TaskSummary("t")], [GroupSummary("g", ["t"])], {"t": samples})
    data = result["tasks"]["t"]["data"]
    assert data == {"samples": 4, "samples_failed": 1, "unparsed": {"flexible-extract": 2}, "truncated": 1}
    entry = result["tasks"]["t"]["metrics"]["em"]["scores"]["em"]
    assert entry["value"] == pytest.approx(1 / 3) and entry["stats"]["count"] == 3
    assert 0.0 <= entry["ci"]["lower"] <= entry["value"] <= entry["ci"]["upper"] <= 1.0
    assert "parsed" not in result["tasks"]["t"]["metrics"]
    assert result["groups"]["g"]["metrics"]["em"]["scores"]["em_macro"]["value"] == pytest.approx(1 / 3)


def test_the_eleven_types_are_academic() -> None:
    assert set(ACADEMIC_TYPES) == {
        "mmlu",
        "gsm8k",
        "arc_challenge",
        "arc_easy",
        "hellaswag",
        "truthfulqa",
        "boolq",
        "ifeval",
        "humaneval",
        "xsum",
        "wmt22_en_de",
    }
    assert is_academic("MMLU") and not is_academic("custom")


async def test_bad_configs_are_rejected_with_what_is_accepted(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, data_roots=[tmp_path])
    endpoint = ModelEndpoint(kind="openai", model="m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InvalidInputError, match="accepted: parallelism"):
        await compile_academic_plan(
            {"type": "mmlu", "params": {"shots": 5}}, endpoint, settings=settings, clients=None
        )
    with pytest.raises(InvalidInputError, match="supported: mmlu"):
        await compile_academic_plan(
            {"type": "mmlu", "tasks": {"x": {"type": "nope"}}}, endpoint, settings=settings, clients=None
        )
    with pytest.raises(InvalidInputError, match="loglikelihood"):
        await compile_academic_plan(
            {"type": "arc_easy", "params": {"extra": {"mc_method": "loglikelihood"}}},
            endpoint,
            settings=settings,
            clients=None,
        )
    plan = await compile_academic_plan(
        {"type": "mmlu", "params": {"parallelism": 3}}, endpoint, settings=settings, clients=None
    )
    assert len(plan.tasks) == 57 and plan.parallelism == 3
