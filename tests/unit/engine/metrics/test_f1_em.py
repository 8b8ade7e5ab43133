"""f1 and em: SQuAD-style normalisation, hand-worked cases."""

from __future__ import annotations

import pytest

from evalstack.engine.metrics.f1_em import normalize_answer
from evalstack.engine.metrics.nemo import nemo_metric
from evalstack.engine.plan import SampleOutput
from evalstack.errors import InvalidInputError


def test_normalisation_drops_case_punctuation_and_articles() -> None:
    assert normalize_answer("The  Cat, an Owl & a Dog!") == "cat owl dog"


@pytest.mark.parametrize(
    ("output", "truth", "f1"),
    [
        ("The cat sat", "cat sat on mat", 2 * 1.0 * 0.5 / 1.5),  # P = 2/2, R = 2/4
        ("cat cat dog", "cat dog dog", 2 / 3),  # common = min counts: cat 1, dog 1; P = R = 2/3
        ("Paris!", "paris", 1.0),
        ("London", "Paris", 0.0),
        ("the", "a", 1.0),  # both empty after normalisation
        ("", "Paris", 0.0),
    ],
)
async def test_f1(output: str, truth: str, f1: float) -> None:
    metric = await nemo_metric("f1", {"type": "f1", "params": {"ground_truth": "{{ item.answer }}"}})
    assert (await metric.score({"answer": truth}, SampleOutput(output)))["f1_score"] == pytest.approx(f1)


async def test_exact_match_after_normalisation() -> None:
    metric = await nemo_metric("em", {"type": "em", "params": {"ground_truth": "{{answer}}"}})
    assert await metric.score({"answer": "The Eiffel Tower"}, SampleOutput("eiffel tower.")) == {
        "em_score": 1.0
    }
    assert await metric.score({"answer": "The Eiffel Tower"}, SampleOutput("the tower")) == {"em_score": 0.0}


async def test_several_ground_truths_take_the_best_match() -> None:
    metric = await nemo_metric("em", {"type": "em", "params": {"ground_truth": "{{ answers | tojson }}"}})
    assert await metric.score({"answers": ["4", "four"]}, SampleOutput("Four")) == {"em_score": 1.0}
    f1 = await nemo_metric("f1", {"type": "f1", "params": {"ground_truth": "{{ answers | tojson }}"}})
    scores = await f1.score({"answers": ["red car", "blue car"]}, SampleOutput("blue car"))
    assert scores == {"f1_score": 1.0}


@pytest.mark.parametrize(
    ("answers", "output", "em", "f1"),
    [
        ([None, "Paris"], None, 1.0, 1.0),  # a null ground truth is an empty answer, as is a missing output
        ([], None, 1.0, 1.0),  # no ground truths: the empty answer
        ([], "Paris", 0.0, 0.0),
        ([None], "Paris", 0.0, 0.0),
        (42, "42", 1.0, 1.0),  # a number is compared as its text
        (42, "It is 42", 0.0, 2 * (1 / 3) * 1 / (1 / 3 + 1)),  # P = 1/3, R = 1
        ({"city": "Paris"}, "City: Paris", 1.0, 1.0),  # an object is compared as its JSON text
        ({"city": "Paris"}, "Paris", 0.0, 2 * (1 / 2) * 1 / (1 / 2 + 1)),  # P = 1, R = 1/2
    ],
)
async def test_ground_truths_that_are_not_strings(
    answers: object, output: str | None, em: float, f1: float
) -> None:
    for kind, expected in (("em", em), ("f1", f1)):
        metric = await nemo_metric(kind, {"type": kind, "params": {"ground_truth": "{{ answers | tojson }}"}})
        score = (await metric.score({"answers": answers}, SampleOutput(output)))[f"{kind}_score"]
        assert score == pytest.approx(expected), kind


async def test_a_missing_ground_truth_names_the_metric() -> None:
    with pytest.raises(InvalidInputError, match=r"^Metric 'mine' \(em\): "):
        await nemo_metric("mine", {"type": "em", "params": {}})
