"""Aggregation functions: the spec's result shapes, worked out by hand."""

from __future__ import annotations

import pytest

from evalstack.engine.aggregate.llama_stack import AGGREGATIONS, aggregate
from evalstack.errors import InvalidInputError


def rows(*scores: object) -> list[dict[str, object]]:
    return [{"score": s} for s in scores]


def test_accuracy_shape_and_types() -> None:
    result = aggregate(rows(1.0, 0.0, 1.0, 1.0), ["accuracy"])
    assert result == {"accuracy": {"accuracy": 0.75, "num_correct": 3.0, "num_total": 4}}
    assert isinstance(result["accuracy"]["num_correct"], float)
    assert isinstance(result["accuracy"]["num_total"], int)


def test_accuracy_counts_a_null_score_as_not_correct() -> None:
    assert aggregate(rows(1.0, None), ["accuracy"])["accuracy"] == {
        "accuracy": 0.5,
        "num_correct": 1.0,
        "num_total": 2,
    }


def test_average_skips_null_scores() -> None:
    assert aggregate(rows(4.0, None, 2.0, 3), ["average"]) == {"average": {"average": 3.0}}


def test_weighted_average_uses_weights_and_defaults_to_one() -> None:
    data = [{"score": 1.0, "weight": 3}, {"score": 0.0, "weight": 1}, {"score": 0.5}]
    # (1*3 + 0*1 + 0.5*1) / (3 + 1 + 1) = 3.5 / 5
    assert aggregate(data, ["weighted_average"]) == {"weighted_average": {"weighted_average": 0.7}}


def test_weighted_average_rejects_a_non_numeric_weight() -> None:
    with pytest.raises(InvalidInputError, match="weight"):
        aggregate([{"score": 1.0, "weight": "heavy"}], ["weighted_average"])


def test_median_of_even_and_odd_counts() -> None:
    assert aggregate(rows(5, 1, 3), ["median"]) == {"median": {"median": 3.0}}
    assert aggregate(rows(4, 1, 3, 2, None), ["median"]) == {"median": {"median": 2.5}}


def test_categorical_count_keys_are_str_of_score() -> None:
    result = aggregate(rows(1.0, 0.0, 1.0, "A", None), ["categorical_count"])
    assert result == {"categorical_count": {"categorical_count": {"1.0": 2, "0.0": 1, "A": 1, "None": 1}}}


def test_several_functions_merge_like_the_reference() -> None:
    result = aggregate(rows(0.0, 1.0), ["accuracy", "average", "categorical_count"])
    assert result == {
        "accuracy": {"accuracy": 0.5, "num_correct": 1.0, "num_total": 2},
        "average": {"average": 0.5},
        "categorical_count": {"categorical_count": {"0.0": 1, "1.0": 1}},
    }


def test_empty_rows_give_none_instead_of_dividing_by_zero() -> None:
    result = aggregate([], list(AGGREGATIONS))
    assert result == {
        "accuracy": {"accuracy": None, "num_correct": 0.0, "num_total": 0},
        "average": {"average": None},
        "weighted_average": {"weighted_average": None},
        "median": {"median": None},
        "categorical_count": {"categorical_count": {}},
    }


def test_no_functions_give_an_empty_result() -> None:
    assert aggregate(rows(1.0), []) == {}


def test_unknown_function_lists_the_accepted_names() -> None:
    with pytest.raises(InvalidInputError) as err:
        aggregate(rows(1.0), ["accuracy", "mode"])
    message = err.value.message
    assert "'mode'" in message
    for name in ("accuracy", "average", "weighted_average", "median", "categorical_count"):
        assert name in message


def test_text_score_in_a_numeric_aggregation_points_to_categorical_count() -> None:
    with pytest.raises(InvalidInputError, match="categorical_count"):
        aggregate(rows(1.0, "A"), ["average"])


def test_the_unknown_function_message_in_full() -> None:
    with pytest.raises(InvalidInputError) as err:
        aggregate(rows(1.0), ["mode", "accuracy", "sum"])
    assert err.value.message == (
        "Unknown aggregation function(s): 'mode', 'sum'. "
        "Accepted: accuracy, average, weighted_average, median, categorical_count."
    )


@pytest.mark.parametrize("name", ["accuracy", "average", "weighted_average", "median"])
def test_a_text_score_names_the_aggregation_and_the_row(name: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        aggregate(rows(1.0, None, "A"), [name])
    assert err.value.message == (
        f"Aggregation '{name}' needs numeric scores, but score row 2 has score 'A'. "
        "Use 'categorical_count' for non-numeric scores."
    )


def test_boolean_scores_count_as_1_and_0() -> None:
    result = aggregate(rows(True, False, True, True), ["accuracy", "average", "weighted_average", "median"])
    assert result["accuracy"] == {"accuracy": 0.75, "num_correct": 3.0, "num_total": 4}
    assert result["average"] == {"average": 0.75}
    assert result["weighted_average"] == {"weighted_average": 0.75}
    assert result["median"] == {"median": 1.0}


def test_weighted_average_skips_null_scores_anywhere_and_reads_a_null_weight_as_1() -> None:
    scored = [
        {"score": None, "weight": 5.0},
        {"score": 1.0, "weight": None},
        {"score": None},
        {"score": 0.0, "weight": 3},
        {"score": 1.0},
    ]
    assert aggregate(scored, ["weighted_average"]) == {"weighted_average": {"weighted_average": 2.0 / 5.0}}


def test_null_scores_anywhere_are_skipped_by_average_and_median() -> None:
    result = aggregate(rows(None, 2.0, None, 4.0, 9.0), ["average", "median", "accuracy"])
    assert result["average"] == {"average": 5.0}
    assert result["median"] == {"median": 4.0}
    assert result["accuracy"] == {"accuracy": 15.0 / 5, "num_correct": 15.0, "num_total": 5}
