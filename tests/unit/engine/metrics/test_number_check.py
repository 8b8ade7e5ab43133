"""number-check: last number of the output against the ground truth, with tolerances."""

from __future__ import annotations

import pytest

from evalstack.engine.metrics.nemo import nemo_metric
from evalstack.engine.metrics.number_check import last_number
from evalstack.engine.plan import SampleOutput
from evalstack.errors import InvalidInputError


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("The answer is 1,234.5.", 1234.5),
        ("3 apples and -2.5e1 pears", -25.0),
        ("costs $18", 18.0),
        ("no digits here", None),
        ("x = .5", 0.5),
    ],
)
def test_last_number(text: str, number: float | None) -> None:
    assert last_number(text) == number


@pytest.mark.parametrize(
    ("output", "truth", "params", "expected"),
    [
        ("First 12, then the answer: 42", "42", {}, 1.0),
        ("So it is 42.", "#### 42", {}, 1.0),
        ("It is 41.", "42", {}, 0.0),
        ("It is 41.9", "42", {"tolerance": 0.2}, 1.0),
        ("It is 99", "100", {"relative_tolerance": 0.02}, 1.0),
        ("It is 97", "100", {"relative_tolerance": 0.02}, 0.0),
        ("I do not know", "42", {}, 0.0),
        ("1,000,000 dollars", "1000000", {}, 1.0),
    ],
)
async def test_scores(output: str, truth: str, params: dict[str, float], expected: float) -> None:
    spec = {"type": "number-check", "params": {"ground_truth": "{{ item.answer }}", **params}}
    metric = await nemo_metric("n", spec)
    assert await metric.score({"answer": truth}, SampleOutput(output)) == {"number-check": expected}


async def test_candidate_template_and_bad_ground_truth() -> None:
    spec = {"type": "number-check", "params": {"ground_truth": "{{ answer }}", "candidate": "{{ guess }}"}}
    metric = await nemo_metric("n", spec)
    assert await metric.score({"answer": "7", "guess": "7.0"}, SampleOutput("unrelated 3")) == {
        "number-check": 1.0
    }
    with pytest.raises(InvalidInputError, match="holds no number"):
        await metric.score({"answer": "seven", "guess": "7"}, SampleOutput(None))
    with pytest.raises(InvalidInputError, match="tolerance must be a number"):
        await nemo_metric("n", {"type": "number-check", "params": {"ground_truth": "{{a}}", "tolerance": -1}})
