"""string-check: every documented operator, both template conventions, bad configs."""

from __future__ import annotations

import pytest

from evalstack.engine.metrics.nemo import nemo_metric
from evalstack.engine.plan import SampleOutput
from evalstack.errors import InvalidInputError


async def check(left: str, op: str, right: str, row: dict[str, str], output: str | None) -> float | None:
    metric = await nemo_metric("check", {"type": "string-check", "params": {"check": [left, op, right]}})
    return (await metric.score(row, SampleOutput(output)))["string-check"]


@pytest.mark.parametrize(
    ("op", "output", "expected"),
    [
        ("equals", "Paris", 1.0),
        ("equals", "paris", 0.0),
        ("==", "Paris", 1.0),
        ("not equals", "Lyon", 1.0),
        ("!=", "Paris", 0.0),
        ("contains", "It is Paris.", 1.0),
        ("contains", "It is Lyon.", 0.0),
        ("not contains", "It is Lyon.", 1.0),
        ("startswith", "Paris, France", 1.0),
        ("startswith", "In Paris", 0.0),
        ("endswith", "It is Paris", 1.0),
        ("endswith", "Paris!", 0.0),
    ],
)
async def test_operators(op: str, output: str, expected: float) -> None:
    assert (
        await check("{{ sample.output_text }}", op, "{{ item.answer }}", {"answer": "Paris"}, output)
        == expected
    )


async def test_flat_convention_and_filters() -> None:
    row = {"ideal_response": "  Paris "}
    assert (
        await check("{{ideal_response | trim}}", "equals", "{{output_text | trim | title}}", row, "paris\n")
        == 1.0
    )


async def test_data_rows_compare_their_own_fields() -> None:
    row = {"some_output": "yes, it is", "expected": "yes"}
    assert await check("{{some_output}}", "contains", "{{expected}}", row, None) == 1.0


async def test_unknown_operator_lists_the_accepted_ones() -> None:
    with pytest.raises(InvalidInputError, match=r"unknown operator 'matches'.*equals.*endswith"):
        await nemo_metric("c", {"type": "string-check", "params": {"check": ["a", "matches", "b"]}})


async def test_check_must_have_three_parts() -> None:
    with pytest.raises(InvalidInputError, match=r"\[left_template, operator, right_template\]"):
        await nemo_metric("c", {"type": "string-check", "params": {"check": ["a", "equals"]}})


async def test_unknown_metric_type_lists_the_supported_ones() -> None:
    with pytest.raises(InvalidInputError, match="supported types: string-check, bleu, rouge"):
        await nemo_metric("m", {"type": "bert"})
    with pytest.raises(InvalidInputError, match="unknown param 'ground_truth'"):
        await nemo_metric(
            "m", {"type": "string-check", "params": {"check": ["a", "==", "b"], "ground_truth": "x"}}
        )
