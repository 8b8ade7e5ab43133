"""IFEval with lm-eval's instruction checkers (skipped when lm-eval is not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.model_server import FakeModelServer
from tests.unit.engine.benchmarks.helpers import need_data, run_config, score


@pytest.mark.slow
async def test_ifeval_scores_strict_and_loose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("lm_eval.tasks.ifeval.utils", reason="IFEval checkers come from the lm-eval package")
    need_data("ifeval/input_data.jsonl")
    with FakeModelServer(answer="echo") as server:
        samples, result = await run_config(
            {"type": "ifeval", "params": {"limit_samples": 5}}, server.base_url, tmp_path, monkeypatch
        )
    assert len(samples["ifeval"]) == 5 and all(s.error is None for s in samples["ifeval"])
    for name in (
        "prompt_level_strict_acc",
        "prompt_level_loose_acc",
        "inst_level_strict_acc",
        "inst_level_loose_acc",
    ):
        assert 0.0 <= score(result, "ifeval", name)["value"] <= 1.0
    total = sum(len(s.item["instruction_id_list"]) for s in samples["ifeval"])
    assert score(result, "ifeval", "inst_level_strict_acc")["stats"]["count"] == total
