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


# Every operator and each of its spellings, with a pair that passes and a pair that fails; the left
# side is the model's output, the right the expected answer, so swapped sides fail too.
SPELLINGS = {
    "equals": ["equals", "==", "EQUALS", " Equals "],
    "not equals": ["not equals", "!=", "not_equals", "not-equals", "NOT  EQUALS"],
    "contains": ["contains", "Contains"],
    "not contains": ["not contains", "not_contains", "not-contains"],
    "startswith": ["startswith", "StartsWith"],
    "endswith": ["endswith", "ENDSWITH"],
}
CASES = {  # operator -> (output that passes, output that fails) against the answer "Paris"
    "equals": ("Paris", "Paris!"),
    "not equals": ("Lyon", "Paris"),
    "contains": ("In Paris, yes", "Pari"),
    "not contains": ("Pari", "In Paris, yes"),
    "startswith": ("Paris is it", "It is Paris"),
    "endswith": ("It is Paris", "Paris is it"),
}


@pytest.mark.parametrize(
    ("op", "passing", "failing"),
    [(spelling, *CASES[name]) for name, spellings in SPELLINGS.items() for spelling in spellings],
)
async def test_each_operator_spelling_passes_and_fails(op: str, passing: str, failing: str) -> None:
    row = {"answer": "Paris"}
    assert await check("{{ sample.output_text }}", op, "{{ item.answer }}", row, passing) == 1.0
    assert await check("{{ sample.output_text }}", op, "{{ item.answer }}", row, failing) == 0.0


@pytest.mark.parametrize(
    ("op", "left", "right", "expected"),
    [
        ("contains", "abc", "b", 1.0),  # the left side contains the right, not the other way
        ("contains", "b", "abc", 0.0),
        ("not contains", "b", "abc", 1.0),
        ("not contains", "abc", "b", 0.0),
        ("startswith", "abc", "a", 1.0),
        ("startswith", "a", "abc", 0.0),
        ("endswith", "abc", "c", 1.0),
        ("endswith", "c", "abc", 0.0),
    ],
)
async def test_operators_are_not_symmetric(op: str, left: str, right: str, expected: float) -> None:
    assert await check(left, op, right, {}, None) == expected


async def test_comparison_is_case_sensitive_and_untrimmed() -> None:
    row = {"answer": "Paris"}
    assert await check("{{ sample.output_text }}", "equals", "{{ item.answer }}", row, "paris") == 0.0
    assert await check("{{ sample.output_text }}", "equals", "{{ item.answer }}", row, "Paris ") == 0.0
    assert await check("{{ sample.output_text }}", "contains", "{{ item.answer }}", row, "PARIS") == 0.0


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
    with pytest.raises(
        InvalidInputError,
        match=r"unknown operator 'matches'; accepted: equals, ==, not equals, !=, contains, not contains, "
        r"startswith, endswith",
    ):
        await nemo_metric("c", {"type": "string-check", "params": {"check": ["a", "matches", "b"]}})


async def test_check_must_have_three_parts() -> None:
    for bad in (["a", "equals"], "a == b", ["a", "equals", 3], None):
        with pytest.raises(
            InvalidInputError,
            match=r"^Metric 'c' \(string-check\): params.check must be a list "
            r"\[left_template, operator, right_template\]\.$",
        ):
            await nemo_metric("c", {"type": "string-check", "params": {"check": bad}})


async def test_a_broken_template_is_rejected_when_the_metric_is_built() -> None:
    with pytest.raises(InvalidInputError, match="is not valid Jinja"):
        await nemo_metric("c", {"type": "string-check", "params": {"check": ["{{ a", "equals", "b"]}})
    with pytest.raises(InvalidInputError, match="is not valid Jinja"):
        await nemo_metric("c", {"type": "string-check", "params": {"check": ["a", "equals", "{% if %}"]}})


async def test_unknown_metric_type_lists_the_supported_ones() -> None:
    with pytest.raises(InvalidInputError, match="supported types: string-check, bleu, rouge"):
        await nemo_metric("m", {"type": "bert"})
    with pytest.raises(InvalidInputError, match="unknown param 'ground_truth'"):
        await nemo_metric(
            "m", {"type": "string-check", "params": {"check": ["a", "==", "b"], "ground_truth": "x"}}
        )
