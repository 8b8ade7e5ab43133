"""rouge: ROUGE-1/2/3/L F-measures, checked against rouge-score called directly."""

from __future__ import annotations

import pytest
from rouge_score import rouge_scorer

from evalstack.engine.metrics.nemo import nemo_metric
from evalstack.engine.plan import SampleOutput
from evalstack.errors import InvalidInputError

KEYS = {
    "rouge1": "rouge_1_score",
    "rouge2": "rouge_2_score",
    "rouge3": "rouge_3_score",
    "rougeL": "rouge_L_score",
}


@pytest.mark.parametrize("use_stemmer", [False, True])
async def test_scores_match_rouge_score(use_stemmer: bool) -> None:
    params = {"ground_truth": "{{ item.reference }}", "use_stemmer": use_stemmer}
    metric = await nemo_metric("rouge", {"type": "rouge", "params": params})
    reference = "the quick brown fox jumped over the lazy dogs near the river bank"
    output = "a quick brown fox jumps over lazy dogs by the river"
    scores = await metric.score({"reference": reference}, SampleOutput(output))
    expected = rouge_scorer.RougeScorer(list(KEYS), use_stemmer=use_stemmer).score(reference, output)
    assert set(scores) == set(KEYS.values())
    for rouge_type, key in KEYS.items():
        assert scores[key] == pytest.approx(expected[rouge_type].fmeasure)
    rouge_1, rouge_3 = scores["rouge_1_score"], scores["rouge_3_score"]
    assert rouge_1 is not None and rouge_3 is not None
    assert 0.0 < rouge_3 < rouge_1 < 1.0


async def test_several_ground_truths_keep_the_best() -> None:
    metric = await nemo_metric(
        "rouge", {"type": "rouge", "params": {"ground_truth": "{{ answers | tojson }}"}}
    )
    answers = ["completely unrelated words", "the cat sat on the mat"]
    scores = await metric.score({"answers": answers}, SampleOutput("the cat sat on a mat"))
    expected = rouge_scorer.RougeScorer(list(KEYS)).score(answers[1], "the cat sat on a mat")
    assert scores["rouge_1_score"] == pytest.approx(expected["rouge1"].fmeasure)


async def test_long_texts_score_the_same_off_the_event_loop() -> None:
    metric = await nemo_metric("rouge", {"type": "rouge", "params": {"ground_truth": "{{ reference }}"}})
    reference = "the cat sat on the mat " * 100
    output = "a cat sat on the mat " * 100
    scores = await metric.score({"reference": reference}, SampleOutput(output))
    expected = rouge_scorer.RougeScorer(list(KEYS)).score(reference, output)
    assert scores["rouge_L_score"] == pytest.approx(expected["rougeL"].fmeasure)


@pytest.mark.parametrize(
    ("truth", "output", "rouge_1"),
    [
        ([None], "none", 0.0),  # a null ground truth is empty text, not the word "None"
        ([], "xxxx", 0.0),  # no ground truths: empty text
        ("xxxx", None, 0.0),  # a missing output is empty text
        (42, "42", 1.0),  # a number is compared as its text
        ({"city": "Paris"}, "city Paris", 1.0),  # an object is compared as its JSON text
        ([None, "the cat"], "the cat", 1.0),
    ],
)
async def test_ground_truths_and_outputs_that_are_not_text(
    truth: object, output: str | None, rouge_1: float
) -> None:
    metric = await nemo_metric("r", {"type": "rouge", "params": {"ground_truth": "{{ truth | tojson }}"}})
    scores = await metric.score({"truth": truth}, SampleOutput(output))
    assert scores["rouge_1_score"] == pytest.approx(rouge_1)


async def test_stemming_is_off_unless_asked_for() -> None:
    plain = await nemo_metric("r", {"type": "rouge", "params": {"ground_truth": "{{ ref }}"}})
    stemmed = await nemo_metric(
        "r", {"type": "rouge", "params": {"ground_truth": "{{ ref }}", "use_stemmer": True}}
    )
    row, output = {"ref": "running dogs"}, SampleOutput("run dog")
    assert (await plain.score(row, output))["rouge_1_score"] == 0.0
    assert (await stemmed.score(row, output))["rouge_1_score"] == pytest.approx(1.0)


@pytest.mark.parametrize("value", ["yes", 1, None])
async def test_use_stemmer_must_be_a_boolean(value: object) -> None:
    with pytest.raises(
        InvalidInputError, match=r"^Metric 'r' \(rouge\): params\.use_stemmer must be true or false\.$"
    ):
        await nemo_metric(
            "r", {"type": "rouge", "params": {"ground_truth": "{{ ref }}", "use_stemmer": value}}
        )
