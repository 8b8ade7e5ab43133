"""``rouge``: ROUGE-1, -2, -3 and -L F-measures (0 to 1) with Google's rouge-score package.

``params.ground_truth`` is a template (rendering to a JSON list gives several references: the best
F-measure per score is kept). ``params.use_stemmer`` (default false) turns on Porter stemming.
Scores: ``rouge_1_score``, ``rouge_2_score``, ``rouge_3_score``, ``rouge_L_score``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from evalstack.engine.metrics.nemo_base import NemoMetric, Scores, rendered_texts
from evalstack.engine.plan import SampleOutput
from evalstack.engine.templates import render_value

_TYPES = {
    "rouge1": "rouge_1_score",
    "rouge2": "rouge_2_score",
    "rouge3": "rouge_3_score",
    "rougeL": "rouge_L_score",
}
# Texts longer than this are scored in a worker thread so the event loop stays responsive.
_INLINE_CHARS = 4000


class RougeMetric(NemoMetric):
    """ROUGE F-measures of the output against the ground truth."""

    type = "rouge"
    params_accepted = ("ground_truth", "use_stemmer")
    score_names = tuple(_TYPES.values())

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        self.ground_truth = self.template_param(params, "ground_truth")
        stem = params.get("use_stemmer", False)
        if not isinstance(stem, bool):
            raise self.invalid("params.use_stemmer must be true or false")
        from rouge_score import rouge_scorer  # imported only when a config uses ROUGE

        self._scorer = rouge_scorer.RougeScorer(list(_TYPES), use_stemmer=stem)

    def _score(self, references: list[str], prediction: str) -> Scores:
        if len(references) == 1:
            result = self._scorer.score(references[0], prediction)
        else:
            result = self._scorer.score_multi(references, prediction)
        return {key: float(result[rouge_type].fmeasure) for rouge_type, key in _TYPES.items()}

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> Scores:
        references = rendered_texts(render_value(self.ground_truth, self.context(item, output))) or [""]
        prediction = output.text or ""
        if len(prediction) + sum(map(len, references)) > _INLINE_CHARS:
            return await asyncio.to_thread(self._score, references, prediction)
        return self._score(references, prediction)
