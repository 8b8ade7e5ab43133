"""tool-calling: function names and arguments against the ground truth, order-insensitive."""

from __future__ import annotations

import json
from typing import Any

import pytest

from evalstack.engine.metrics.nemo import nemo_metric
from evalstack.engine.plan import SampleOutput

GROUND_TRUTH = [
    {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}},
    {"function": {"name": "get_time", "arguments": {"tz": "CET"}}},
]


def response(*calls: tuple[str, Any]) -> dict[str, Any]:
    tool_calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": args}}
        for i, (name, args) in enumerate(calls)
    ]
    return {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": tool_calls}}]}


async def score(resp: dict[str, Any] | None, truth: Any = GROUND_TRUTH) -> dict[str, float | None]:
    spec = {"type": "tool-calling", "params": {"tool_calls_ground_truth": "{{ item.tool_calls | tojson }}"}}
    metric = await nemo_metric("tools", spec)
    return await metric.score({"tool_calls": truth}, SampleOutput("", resp))


async def test_same_calls_in_another_order_with_arguments_as_json_text() -> None:
    resp = response(("get_time", '{"tz": "CET"}'), ("get_weather", '{"unit": "C", "city": "Paris"}'))
    assert await score(resp) == {"function_name_accuracy": 1.0, "function_name_and_args_accuracy": 1.0}


async def test_right_names_wrong_arguments() -> None:
    resp = response(("get_weather", '{"city": "Lyon", "unit": "C"}'), ("get_time", '{"tz": "CET"}'))
    assert await score(resp) == {"function_name_accuracy": 1.0, "function_name_and_args_accuracy": 0.0}


@pytest.mark.parametrize(
    "resp",
    [
        response(("get_weather", '{"city": "Paris", "unit": "C"}')),  # a call missing
        response(("get_weather", "{}"), ("get_time", "{}"), ("get_time", "{}")),  # one call too many
        response(("Get_Weather", '{"city": "Paris", "unit": "C"}'), ("get_time", '{"tz": "CET"}')),  # case
        {"choices": [{"message": {"role": "assistant", "content": "It is sunny."}}]},  # text, no calls
        None,
    ],
)
async def test_wrong_or_missing_calls(resp: dict[str, Any] | None) -> None:
    assert (await score(resp))["function_name_accuracy"] == 0.0


async def test_ground_truth_in_the_flat_shape_and_no_calls_expected() -> None:
    flat = [{"name": "get_time", "arguments": json.dumps({"tz": "CET"})}]
    assert (await score(response(("get_time", '{"tz":"CET"}')), flat))[
        "function_name_and_args_accuracy"
    ] == 1.0
    assert await score({"choices": [{"message": {"content": "hi"}}]}, []) == {
        "function_name_accuracy": 1.0,
        "function_name_and_args_accuracy": 1.0,
    }


async def test_malformed_model_calls_are_wrong_not_errors() -> None:
    bad = {"choices": [{"message": {"tool_calls": [{"function": {"arguments": "{}"}}]}}]}
    assert (await score(bad))["function_name_accuracy"] == 0.0
