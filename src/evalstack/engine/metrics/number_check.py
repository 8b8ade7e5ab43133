"""``number-check``: is the last number in the output the expected number? Scores 1.0 or 0.0.

Params:

- ``ground_truth`` (required): a template rendering to the expected number (``"42"``, ``"1,234.5"``,
  ``"$3"``; when it holds other text, its last number is taken). A ground truth without a number fails
  the sample with a clear reason.
- ``candidate`` (default ``"{{ output_text }}"``): the template whose last number is checked.
- ``tolerance`` (default ``1e-6``): largest accepted absolute difference.
- ``relative_tolerance`` (default ``0``): largest accepted difference relative to the expected value;
  a number passes when it is within either tolerance.

Numbers may carry a sign, thousands separators (``1,234``), decimals and an exponent; a trailing
full stop is ignored. An output without a number scores 0.0 (a wrong answer, not a NaN).
Score key: ``number-check``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from evalstack.engine.metrics.nemo_base import NemoMetric, Scores
from evalstack.engine.plan import SampleOutput
from evalstack.errors import InvalidInputError

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")


def numbers_in(text: str) -> list[float]:
    """Every number in ``text``, in order."""
    found: list[float] = []
    for match in _NUMBER.finditer(text):
        try:
            found.append(float(match.group(0).replace(",", "")))
        except ValueError:  # an empty match, a lone sign or dot, an exponent without a mantissa
            continue
    return found


def last_number(text: str) -> float | None:
    """The last number in ``text``, or None."""
    found = numbers_in(text)
    return found[-1] if found else None


def _non_negative(value: Any, what: str, metric: NemoMetric) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise metric.invalid(f"params.{what} must be a number >= 0")
    return float(value)


class NumberCheckMetric(NemoMetric):
    """Compare the last number of the candidate with the ground truth number, within a tolerance."""

    type = "number-check"
    params_accepted = ("ground_truth", "candidate", "tolerance", "relative_tolerance")
    score_names = ("number-check",)

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        self.ground_truth = self.template_param(params, "ground_truth")
        self.candidate = self.template_param(params, "candidate", "{{ output_text }}")
        self.tolerance = _non_negative(params.get("tolerance", 1e-6), "tolerance", self)
        self.relative_tolerance = _non_negative(
            params.get("relative_tolerance", 0.0), "relative_tolerance", self
        )

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> Scores:
        context = self.context(item, output)
        truth_text = self.text(self.ground_truth, context)
        expected = last_number(truth_text)
        if expected is None:
            raise InvalidInputError(f"Metric {self.name!r}: the ground truth {truth_text!r} holds no number.")
        got = last_number(self.text(self.candidate, context))
        if got is None:
            return {"number-check": 0.0}
        difference = abs(got - expected)
        ok = difference <= self.tolerance or difference <= self.relative_tolerance * abs(expected)
        return {"number-check": 1.0 if ok else 0.0}
