"""bleu: per-sample sentence BLEU and corpus BLEU, checked against sacrebleu called directly."""

from __future__ import annotations

import pytest
import sacrebleu

from evalstack.engine.metrics.bleu import BleuMetric
from evalstack.engine.metrics.nemo import nemo_metric
from evalstack.engine.plan import SampleOutput
from evalstack.errors import InvalidInputError

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


async def test_short_hypotheses_use_the_effective_order() -> None:
    # Two words share no 3- or 4-gram with anything: only BLEU's effective order gives them a score.
    metric = await nemo_metric("bleu", {"type": "bleu", "params": {"references": "{{ ref }}"}})
    score = (await metric.score({"ref": "the cat sat"}, SampleOutput("the cat")))["sentence"]
    assert score == pytest.approx(sacrebleu.sentence_bleu("the cat", ["the cat sat"]).score)
    assert score > 0


async def test_a_template_may_render_a_list_of_references_with_nulls_and_numbers() -> None:
    metric = await nemo_metric(
        "bleu", {"type": "bleu", "params": {"references": ["{{ refs | tojson }}", "{{ n }}"]}}
    )
    row = {"refs": ["It is raining in Paris.", None], "n": 4}
    output = "It rains in Paris."
    score = (await metric.score(row, SampleOutput(output)))["sentence"]
    assert score == pytest.approx(sacrebleu.sentence_bleu(output, ["It is raining in Paris.", "", "4"]).score)
    assert (await metric.score(row, SampleOutput("4")))["sentence"] == pytest.approx(100.0)
    # a null reference is empty text, not the word "None"
    nulls = {"refs": [None], "n": 4}
    assert (await metric.score(nulls, SampleOutput("None")))["sentence"] == pytest.approx(
        sacrebleu.sentence_bleu("None", ["", "4"]).score
    )
    assert sacrebleu.sentence_bleu("None", ["None", "4"]).score == pytest.approx(100.0)
    tojson = await nemo_metric("bleu", {"type": "bleu", "params": {"references": ["{{ n | tojson }}"]}})
    assert (await tojson.score({"n": 4}, SampleOutput("4")))["sentence"] == pytest.approx(100.0)


async def test_corpus_bleu_with_an_uneven_number_of_references() -> None:
    metric = await nemo_metric("bleu", {"type": "bleu", "params": {"references": ["{{ refs | tojson }}"]}})
    rows = [
        ({"refs": ["The cat sat on the mat.", "A cat was on the mat."]}, "The cat is on the mat."),
        ({"refs": ["It is raining in Paris today."]}, "Today it rains in Paris."),
    ]
    corpus = metric.corpus_scores([(row, SampleOutput(out)) for row, out in rows])
    expected = sacrebleu.corpus_bleu(
        [out for _, out in rows],
        [["The cat sat on the mat.", "It is raining in Paris today."], ["A cat was on the mat.", None]],
    ).score
    assert corpus["corpus"] == pytest.approx(expected)


async def test_a_missing_output_is_empty_text_that_matches_nothing() -> None:
    metric = await nemo_metric("bleu", {"type": "bleu", "params": {"references": ["{{ ref }}"]}})
    row = {"ref": "XXXX"}  # even a reference made of the placeholder mutmut would put there
    assert (await metric.score(row, SampleOutput(None)))["sentence"] == 0.0
    assert metric.corpus_scores([(row, SampleOutput(None))])["corpus"] == 0.0


async def test_a_missing_output_is_an_empty_hypothesis_in_the_corpus() -> None:
    metric = await nemo_metric("bleu", {"type": "bleu", "params": {"references": ["{{ ideal_response }}"]}})
    corpus = metric.corpus_scores([(row, SampleOutput(out)) for row, out in SAMPLES[:2]])
    without_second = metric.corpus_scores(
        [(SAMPLES[0][0], SampleOutput(SAMPLES[0][1])), (SAMPLES[1][0], SampleOutput(None))]
    )
    expected = sacrebleu.corpus_bleu(
        [SAMPLES[0][1], ""], [[SAMPLES[0][0]["ideal_response"], SAMPLES[1][0]["ideal_response"]]]
    )
    assert without_second["corpus"] == pytest.approx(expected.score)
    assert 0.0 < without_second["corpus"] < corpus["corpus"]  # the empty answer shortens the corpus


async def test_references_that_render_as_json_values_are_their_json_text() -> None:
    metric = await nemo_metric("bleu", {"type": "bleu", "params": {"references": ["{{ ref | tojson }}"]}})
    answer = '{"city": "Zürich", "capital": false}'  # as written, not "Z\\u00fcrich"
    row = {"ref": {"city": "Zürich", "capital": False}}
    assert (await metric.score(row, SampleOutput(answer)))["sentence"] == pytest.approx(100.0)
    listed = {"ref": [True, {"n": 4}]}
    assert (await metric.score(listed, SampleOutput("true")))["sentence"] == pytest.approx(100.0)
    assert (await metric.score(listed, SampleOutput('{"n": 4}')))["sentence"] == pytest.approx(100.0)


async def test_corpus_leaves_out_only_the_samples_whose_references_fail() -> None:
    metric = await nemo_metric("bleu", {"type": "bleu", "params": {"references": ["{{ item.ref }}"]}})
    rows = [
        ({"ref": "The cat sat on the mat."}, "The cat is on the mat."),
        ({}, "no reference for this one"),
        ({"ref": "It is raining in Paris today."}, "Today it rains in Paris."),
    ]
    corpus = metric.corpus_scores([(row, SampleOutput(out)) for row, out in rows])
    kept = [rows[0], rows[2]]
    expected = sacrebleu.corpus_bleu([out for _, out in kept], [[row["ref"] for row, _ in kept]]).score
    assert corpus["corpus"] == pytest.approx(expected)


@pytest.mark.parametrize("references", [[], [3], 5, None, ["ok", 3]])
async def test_references_must_be_a_non_empty_list_of_templates(references: object) -> None:
    with pytest.raises(
        InvalidInputError,
        match=r"^Metric 'b' \(bleu\): params\.references must be a non-empty list of templates\.$",
    ):
        await nemo_metric("b", {"type": "bleu", "params": {"references": references}})


async def test_a_broken_reference_template_is_rejected_when_the_metric_is_built() -> None:
    with pytest.raises(InvalidInputError, match="is not valid Jinja"):
        await nemo_metric("b", {"type": "bleu", "params": {"references": ["{{ ref"]}})
