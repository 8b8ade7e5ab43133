"""``f1`` and ``em``: SQuAD-style token F1 and exact match of the output against the ground truth.

``params.ground_truth`` is a template; one rendering to a JSON list gives several acceptable answers
and the best match counts. Both texts are normalised first: lower-cased, punctuation removed, the
articles ``a``, ``an``, ``the`` removed, whitespace collapsed. F1 is the harmonic mean of token
precision and recall (0 to 1; when either side has no tokens it is 1 if both are empty, else 0).
Scores: ``f1_score`` (type ``f1``) and ``em_score`` (type ``em``, 1.0 or 0.0).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping
from typing import Any

from evalstack.engine.metrics.nemo_base import NemoMetric, Scores, rendered_texts
from evalstack.engine.plan import SampleOutput
from evalstack.engine.templates import render_value

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, truth: str) -> float:
    """SQuAD token F1 between two texts."""
    pred_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(truth).split()
    if not pred_tokens or not truth_tokens:
        return float(pred_tokens == truth_tokens)
    common = sum((Counter(pred_tokens) & Counter(truth_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, truth: str) -> float:
    """1.0 when the normalised texts are equal."""
    return float(normalize_answer(prediction) == normalize_answer(truth))


class _AnswerMetric(NemoMetric):
    params_accepted = ("ground_truth",)

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        self.ground_truth = self.template_param(params, "ground_truth")

    def _truths(self, item: Mapping[str, Any], output: SampleOutput) -> list[str]:
        return rendered_texts(render_value(self.ground_truth, self.context(item, output))) or [""]


class F1Metric(_AnswerMetric):
    """Best token F1 over the ground truths."""

    type = "f1"
    score_names = ("f1_score",)

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> Scores:
        prediction = output.text or ""
        return {"f1_score": max(token_f1(prediction, t) for t in self._truths(item, output))}


class ExactMatchMetric(_AnswerMetric):
    """1.0 when the output matches one of the ground truths after normalisation."""

    type = "em"
    score_names = ("em_score",)

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> Scores:
        prediction = output.text or ""
        return {"em_score": max(exact_match(prediction, t) for t in self._truths(item, output))}
