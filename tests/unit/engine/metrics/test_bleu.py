"""bleu: per-sample sentence BLEU and corpus BLEU, checked against sacrebleu called directly."""

from __future__ import annotations

import pytest
import sacrebleu

from evalstack.engine.metrics.bleu import BleuMetric
from evalstack.engine.metrics.nemo import nemo_metric
from evalstack.engine.plan import SampleOutput

SAMPLES = [
    ({"ideal_response": "The cat sat on the mat.", "alt": "A cat was on the mat."}, "The cat is on the mat."),
    (
        {"ideal_response": "It is raining in Paris today.", "alt": "Today Paris has rain."},
        "Today it rains in Paris.",
    ),
    ({"ideal_response": "Four.", "alt": "4"}, "4"),
]


async def test_sentence_bleu_matches_sacrebleu() -> None:
    metric = await nemo_metric("bleu", {"type": "bleu", "params": {"references": ["{{ideal_response}}"]}})
    for row, output in SAMPLES:
        scores = await metric.score(row, SampleOutput(output))
        assert scores["sentence"] == pytest.approx(
            sacrebleu.sentence_bleu(output, [row["ideal_response"]]).score
        )


async def test_several_references() -> None:
    params = {"references": ["{{ item.ideal_response }}", "{{ item.alt }}"]}
    metric = await nemo_metric("bleu", {"type": "bleu", "params": params})
    row, output = SAMPLES[0]
    expected = sacrebleu.sentence_bleu(output, [row["ideal_response"], row["alt"]]).score
    assert (await metric.score(row, SampleOutput(output)))["sentence"] == pytest.approx(expected)
    assert 0.0 < expected < 100.0


async def test_corpus_bleu_matches_sacrebleu() -> None:
    params = {"references": ["{{ideal_response}}", "{{alt}}"]}
    metric = await nemo_metric("bleu", {"type": "bleu", "params": params})
    corpus = metric.corpus_scores([(row, SampleOutput(out)) for row, out in SAMPLES])
    expected = sacrebleu.corpus_bleu(
        [out for _, out in SAMPLES],
        [[r["ideal_response"] for r, _ in SAMPLES], [r["alt"] for r, _ in SAMPLES]],
    ).score
    assert corpus["corpus"] == pytest.approx(expected)


async def test_corpus_bleu_pools_tasks_with_their_own_references() -> None:
    first = await nemo_metric("bleu", {"type": "bleu", "params": {"references": ["{{ideal_response}}"]}})
    second = await nemo_metric("bleu", {"type": "bleu", "params": {"references": ["{{alt}}"]}})
    pooled = BleuMetric.pooled_corpus_scores(
        [
            (first, [(SAMPLES[0][0], SampleOutput(SAMPLES[0][1]))]),
            (second, [(SAMPLES[1][0], SampleOutput(SAMPLES[1][1]))]),
        ]
    )
    expected = sacrebleu.corpus_bleu(
        [SAMPLES[0][1], SAMPLES[1][1]], [[SAMPLES[0][0]["ideal_response"], SAMPLES[1][0]["alt"]]]
    )
    assert pooled["corpus"] == pytest.approx(expected.score)


async def test_missing_output_scores_zero_and_empty_corpus_has_no_value() -> None:
    metric = await nemo_metric("bleu", {"type": "bleu", "params": {"references": ["{{ideal_response}}"]}})
    assert (await metric.score(SAMPLES[0][0], SampleOutput(None)))["sentence"] == 0.0
    assert metric.corpus_scores([]) == {"corpus": None}
