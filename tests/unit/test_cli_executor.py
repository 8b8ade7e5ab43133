"""`--executor` on `evalstack run` and `evalstack serve`: a wrong name is refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalstack.cli import app


@pytest.mark.parametrize("command", ["run", "serve"])
def test_an_unknown_executor_is_refused_naming_the_accepted_ones(tmp_path: Path, command: str) -> None:
    benchmark = tmp_path / "bench.yaml"
    benchmark.write_text("dataset: {rows: [{input_query: q, expected_answer: a}]}\n")
    args = ["run", str(benchmark)] if command == "run" else ["serve"]
    result = CliRunner().invoke(app, [*args, "--executor", "spark"], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "'spark' is not an executor; accepted: local, ray" in result.output
