"""``tool-calling``: did the model call the expected functions (with the expected arguments)?

``params.tool_calls_ground_truth`` is a template rendering to the expected calls, normally
``"{{ item.tool_calls | tojson }}"``: a list of ``{"function": {"name", "arguments"}}`` (OpenAI shape)
or ``{"name", "arguments"}``; ``arguments`` may be an object or JSON text. The predicted calls are
``sample.response.choices[0].message.tool_calls`` (none when the model answered with text).

Per sample, 1.0 or 0.0:

- ``function_name_accuracy``: the predicted function names equal the expected ones as multisets
  (order does not matter, parallel calls allowed, names are case-sensitive);
- ``function_name_and_args_accuracy``: the same with each call's arguments compared as parsed JSON.

``params.model`` is accepted for compatibility and not used.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from evalstack.engine.metrics.nemo_base import NemoMetric, Scores
from evalstack.engine.plan import SampleOutput
from evalstack.engine.templates import render_value
from evalstack.errors import InvalidInputError

Call = tuple[str, str]  # (function name, canonical JSON of the arguments)


def _canonical_arguments(arguments: Any) -> str:
    if isinstance(arguments, str):
        text = arguments.strip()
        if not text:
            return "{}"
        try:
            arguments = json.loads(text)
        except ValueError:
            return text
    if arguments is None:
        arguments = {}
    return json.dumps(arguments, sort_keys=True, ensure_ascii=False)


def normalise_calls(calls: Any, where: str) -> list[Call]:
    """Tool calls in either shape as ``(name, canonical arguments)`` pairs."""
    if calls is None:
        return []
    if isinstance(calls, str):
        text = calls.strip()
        if not text:
            return []
        try:
            calls = json.loads(text)
        except ValueError as exc:
            raise InvalidInputError(f"{where}: tool calls {text[:120]!r} are not valid JSON.") from exc
    if isinstance(calls, Mapping):
        calls = [calls]
    if not isinstance(calls, list):
        raise InvalidInputError(f"{where}: tool calls must be a list, got {type(calls).__name__}.")
    result: list[Call] = []
    for call in calls:
        if not isinstance(call, Mapping):
            raise InvalidInputError(f"{where}: a tool call must be an object, got {type(call).__name__}.")
        function = call.get("function", call)
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise InvalidInputError(f"{where}: a tool call needs a function name: {json.dumps(call)[:200]}.")
        result.append((function["name"], _canonical_arguments(function.get("arguments"))))
    return result


def predicted_calls(response: Mapping[str, Any] | None) -> Any:
    """``choices[0].message.tool_calls`` of an OpenAI chat response, or None."""
    if not isinstance(response, Mapping):
        return None
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    message = choices[0].get("message")
    return message.get("tool_calls") if isinstance(message, Mapping) else None


class ToolCallingMetric(NemoMetric):
    """Compare the model's tool calls with the expected ones, ignoring order."""

    type = "tool-calling"
    params_accepted = ("tool_calls_ground_truth", "model")
    score_names = ("function_name_accuracy", "function_name_and_args_accuracy")

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        self.ground_truth = self.template_param(params, "tool_calls_ground_truth")

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> Scores:
        where = f"Metric {self.name!r} (tool-calling)"
        expected = normalise_calls(render_value(self.ground_truth, self.context(item, output)), where)
        try:
            got = normalise_calls(predicted_calls(output.response), where)
        except InvalidInputError:  # malformed calls from the model are a wrong answer, not an error
            return {"function_name_accuracy": 0.0, "function_name_and_args_accuracy": 0.0}
        names_equal = Counter(name for name, _ in got) == Counter(name for name, _ in expected)
        calls_equal = Counter(got) == Counter(expected)
        return {
            "function_name_accuracy": 1.0 if names_equal else 0.0,
            "function_name_and_args_accuracy": 1.0 if calls_equal else 0.0,
        }
