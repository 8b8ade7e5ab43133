"""``bleu``: sacrebleu BLEU (0 to 100) of the output against rendered reference templates.

``params.references`` is a list of templates (one reference each; a template rendering to a JSON
list gives several). Per sample: ``sentence`` (sacrebleu sentence BLEU, exponential smoothing,
effective order). Over the whole task (or group): ``corpus`` (sacrebleu corpus BLEU), computed when
the results are summarised. A missing output counts as an empty hypothesis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evalstack.engine.metrics.nemo_base import NemoMetric, Scores, rendered_texts
from evalstack.engine.plan import SampleOutput
from evalstack.engine.templates import check_templates, render_value
from evalstack.errors import InvalidInputError


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float | None:
    """sacrebleu corpus BLEU; each hypothesis may have its own number of references. None without any."""
    if not hypotheses:
        return None
    from sacrebleu.metrics import BLEU

    width = max(len(refs) for refs in references)
    streams = [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]
    return float(BLEU().corpus_score(list(hypotheses), streams).score)  # type: ignore[arg-type]


class BleuMetric(NemoMetric):
    """Sentence BLEU per sample and corpus BLEU over all samples."""

    type = "bleu"
    params_accepted = ("references",)
    score_names = ("sentence",)

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        super().__init__(name, params)
        references = params.get("references")
        if isinstance(references, str):
            references = [references]
        if not (isinstance(references, list) and references and all(isinstance(r, str) for r in references)):
            raise self.invalid("params.references must be a non-empty list of templates")
        check_templates(references)
        self.references: list[str] = references
        from sacrebleu.metrics import BLEU  # imported only when a config uses BLEU

        self._sentence = BLEU(effective_order=True)

    def rendered_references(self, context: Mapping[str, Any]) -> list[str]:
        refs: list[str] = []
        for template in self.references:
            refs.extend(rendered_texts(render_value(template, context)))
        return refs

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> Scores:
        refs = self.rendered_references(self.context(item, output))
        return {"sentence": float(self._sentence.sentence_score(output.text or "", refs).score)}

    @property
    def corpus_score_names(self) -> tuple[str, ...]:
        return ("corpus",)

    @classmethod
    def pooled_corpus_scores(
        cls, parts: Sequence[tuple[NemoMetric, Sequence[tuple[Mapping[str, Any], SampleOutput]]]]
    ) -> Scores:
        hypotheses: list[str] = []
        references: list[list[str]] = []
        for metric, samples in parts:
            assert isinstance(metric, BleuMetric)
            for item, output in samples:
                try:
                    references.append(metric.rendered_references(metric.context(item, output)))
                except InvalidInputError:  # the sample could not be scored either: it failed
                    continue
                hypotheses.append(output.text or "")
        return {"corpus": corpus_bleu(hypotheses, references)}
