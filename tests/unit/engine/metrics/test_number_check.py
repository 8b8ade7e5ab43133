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
        ("size e5, then -. and +", None),  # an exponent without a mantissa, a lone sign or dot
        ("1E3 or 2e-1", 0.2),
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


@pytest.mark.parametrize(
    ("params", "output", "expected"),
    [
        ({"tolerance": 0.5}, "10.5", 1.0),  # exactly at the absolute tolerance passes
        ({"tolerance": 0.5}, "10.75", 0.0),
        ({"relative_tolerance": 0.1}, "11", 1.0),  # exactly at the relative tolerance passes
        ({"relative_tolerance": 0.1}, "11.5", 0.0),
    ],
)
async def test_tolerances_include_their_bound(params: dict[str, float], output: str, expected: float) -> None:
    metric = await nemo_metric("n", {"type": "number-check", "params": {"ground_truth": "10", **params}})
    assert (await metric.score({}, SampleOutput(output)))["number-check"] == expected


@pytest.mark.parametrize("key", ["tolerance", "relative_tolerance"])
@pytest.mark.parametrize("value", [-1, True, "0.1", None])
async def test_a_tolerance_must_be_a_number_at_least_0(key: str, value: object) -> None:
    with pytest.raises(
        InvalidInputError, match=rf"^Metric 'n' \(number-check\): params\.{key} must be a number >= 0\.$"
    ):
        await nemo_metric("n", {"type": "number-check", "params": {"ground_truth": "1", key: value}})
