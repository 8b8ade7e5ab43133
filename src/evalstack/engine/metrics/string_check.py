"""``string-check``: compare two rendered templates with a string operator; scores 1.0 or 0.0.

``params.check`` is ``[left_template, operator, right_template]``. Operators: ``equals`` (also
``==``), ``not equals`` (also ``!=``), ``contains`` (left contains right), ``not contains``,
``startswith``, ``endswith``; case-sensitive, no trimming (use ``| trim``, ``| lower`` in the
templates). Score key: ``string-check``. A left template that reads the model's output is the
answer the metric extracted: its rendering is recorded with the sample.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from evalstack.engine.metrics.nemo_base import NemoMetric, Scores
from evalstack.engine.plan import SampleOutput
from evalstack.engine.templates import check_templates

OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "equals": operator.eq,
    "==": operator.eq,
    "not equals": operator.ne,
    "!=": operator.ne,
    "contains": lambda left, right: right in left,
    "not contains": lambda left, right: right not in left,
    "startswith": lambda left, right: left.startswith(right),
    "endswith": lambda left, right: left.endswith(right),
}


def _normalise_op(op: str) -> str:
    return " ".join(op.strip().lower().replace("_", " ").replace("-", " ").split())


class StringCheckMetric(NemoMetric):
    """Compare ``check[0]`` and ``check[2]`` (rendered) with the operator ``check[1]``."""

    type = "string-check"
    params_accepted = ("check",)
    score_names = ("string-check",)

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        check = params.get("check")
        if not (
            isinstance(check, list | tuple) and len(check) == 3 and all(isinstance(c, str) for c in check)
        ):
            raise self.invalid("params.check must be a list [left_template, operator, right_template]")
        left, op, right = check
        self.op_name = _normalise_op(op)
        if self.op_name not in OPERATORS:
            raise self.invalid(f"unknown operator {op!r}; accepted: {', '.join(OPERATORS)}")
        check_templates([left, right])
        self.left, self.right = left, right
        self._left_is_answer = "output_text" in left
        self._compare = OPERATORS[self.op_name]

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> Scores:
        context = self.context(item, output)
        left = self.text(self.left, context)
        right = self.text(self.right, context)
        if self._left_is_answer:
            output.note_extracted(self.name, left)
        return {"string-check": 1.0 if self._compare(left, right) else 0.0}
