"""Academic benchmarks record the answer they extracted with each sample, for the viewer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.model_server import FakeModelServer
from tests.unit.engine.benchmarks.helpers import need_data, run_config


@pytest.fixture(scope="module")
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer(answer="x") as fake:
        yield fake


async def test_gsm8k_records_strict_and_flexible_answers(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_data("gsm8k/test.jsonl")
    server.set_answer("Half of 10 is 5, plus 2 makes 7.\n#### 7")
    samples, _ = await run_config(
        {"type": "gsm8k", "params": {"limit_samples": 2}}, server.base_url, tmp_path, monkeypatch
    )
    for sample in samples["gsm8k"]:
        assert sample.extra["extracted"] == {"exact_match": {"strict-match": "7", "flexible-extract": "7"}}

    server.set_answer("I think about 12 apples")  # no '####': only the flexible extraction finds one
    samples, _ = await run_config(
        {"type": "gsm8k", "params": {"limit_samples": 1}}, server.base_url, tmp_path, monkeypatch
    )
    assert samples["gsm8k"][0].extra["extracted"] == {
        "exact_match": {"strict-match": None, "flexible-extract": "12"}
    }


async def test_multiple_choice_records_the_letter_and_keeps_scores(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_data("arc/arc_challenge_test.jsonl")
    server.set_answer("Let me see.\nThe answer is (B).")
    samples, _ = await run_config(
        {"type": "arc_challenge", "params": {"limit_samples": 3}}, server.base_url, tmp_path, monkeypatch
    )
    for sample in samples["arc_challenge"]:
        assert sample.extra["extracted"] == {"exact_match": {"strict-match": None, "flexible-extract": "B"}}
        assert sample.scores["exact_match"]["exact_match__strict-match"] == 0.0
        assert sample.scores["parsed"] == {"strict-match": 0.0, "flexible-extract": 1.0}
