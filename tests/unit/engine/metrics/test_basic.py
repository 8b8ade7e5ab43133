"""The built-in basic scoring functions and regex parsers, on hand-worked rows."""

from __future__ import annotations

import pytest

from evalstack.engine.metrics import basic
from evalstack.errors import InvalidInputError


def score(fn_id: str, expected: object, generated: object, regexes: tuple[str, ...] = ()) -> float:
    row = {"expected_answer": expected, "generated_answer": generated}
    return basic.builtin_scorer(fn_id, regexes)(row)["score"]


# ---- equality and subset_of -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "generated", "want"),
    [
        ("Paris", "Paris", 1.0),
        ("Paris", "paris", 0.0),  # case-sensitive
        ("Paris", "Paris ", 0.0),  # no trimming, as on the reference
        ("", "", 1.0),
        (42, "42", 1.0),  # numbers compare through str()
        (4.5, "4.50", 0.0),
        (True, "True", 1.0),
    ],
)
def test_equality_compares_exact_strings(expected: object, generated: str, want: float) -> None:
    assert score(basic.EQUALITY, expected, generated) == want


@pytest.mark.parametrize(
    ("expected", "generated", "want"),
    [
        ("Paris", "The capital is Paris.", 1.0),
        ("Paris", "The capital is paris.", 0.0),
        ("", "anything", 1.0),  # the empty string is in every string
        ("Paris", "", 0.0),
        ("Paris, France", "Paris", 0.0),  # the expected answer must be inside the generated one
        (7, "There are 7 days", 1.0),
    ],
)
def test_subset_of_checks_the_expected_answer_is_a_substring(
    expected: object, generated: str, want: float
) -> None:
    assert score(basic.SUBSET_OF, expected, generated) == want


def test_scorer_returns_only_the_score_key() -> None:
    row = {"expected_answer": "a", "generated_answer": "a", "input_query": "q"}
    assert basic.builtin_scorer(basic.EQUALITY)(row) == {"score": 1.0}


@pytest.mark.parametrize("fn_id", basic.BUILTIN_BASIC)
@pytest.mark.parametrize("missing", ["expected_answer", "generated_answer"])
def test_missing_field_names_the_field_and_the_function(fn_id: str, missing: str) -> None:
    row = {"expected_answer": "A", "generated_answer": "Answer: A"}
    del row[missing]
    with pytest.raises(InvalidInputError) as err:
        basic.builtin_scorer(fn_id)(row)
    assert missing in err.value.message and fn_id in err.value.message


@pytest.mark.parametrize(("value", "kind"), [(None, "null"), (["A"], "list"), ({"a": 1}, "dict")])
def test_non_text_field_is_refused_with_its_type(value: object, kind: str) -> None:
    with pytest.raises(InvalidInputError, match=kind):
        basic.builtin_scorer(basic.EQUALITY)({"expected_answer": value, "generated_answer": "A"})


def test_unknown_builtin_lists_the_accepted_ones() -> None:
    with pytest.raises(InvalidInputError) as err:
        basic.builtin_scorer("basic::nope")
    assert "basic::equality" in err.value.message and "basic::subset_of" in err.value.message


# ---- multiple choice ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("generated", "letter"),
    [
        ("The best answer is B.", "B"),
        ("Reasoning...\nAnswer: C", "C"),
        ("answer:d", "D"),  # case-insensitive prefix and letter
        ("**Answer:** A", "A"),  # markdown bold around the prefix
        ("Answer: $\\boxed{B}$", "B"),
        ("Final Answer: B", "B"),
        ("Antwort: C", "C"),
        ("Réponse : A", "A"),
        ("Ответ: D", "D"),
        ("答案\uff1a\uff22。", "B"),  # fullwidth colon and fullwidth letter
        ("答案: C因为", "C"),  # CJK text right after the letter is fine
        ("الإجابة: ب", "B"),  # Arabic letter
        ("উত্তরঃ ব", "B"),  # Bengali visarga and letter
        ("The answer is (B).", None),  # not a prefix, and "(B)" is not a bare letter: 0 as on the reference
        ("The answer is B", None),
        ("Answer: (B)", None),
        ("Answer: Because it is", None),  # the letter must not run on into a word
        ("Answer: because... Answer: A", "A"),  # the search goes on to a later match
        ("Answer: E", None),  # only A-D
        ("I think B", None),
        ("", None),
    ],
)
def test_multiple_choice_extraction(generated: str, letter: str | None) -> None:
    assert basic.extract_choice(generated) == letter


def test_multiple_choice_prefix_order_decides_between_two_answers() -> None:
    # "The best answer is" comes first in the list, so it wins over an earlier "Answer:".
    assert basic.extract_choice("Answer: A. On reflection, the best answer is C") == "C"


@pytest.mark.parametrize(
    ("expected", "generated", "want"),
    [
        ("B", "The best answer is B", 1.0),
        ("B", "The best answer is C", 0.0),
        (" b ", "Answer: B", 1.0),  # the expected letter is trimmed and upper-cased
        ("B", "The answer is (B).", 0.0),
        ("B", "no answer at all", 0.0),
        ("B", "Answer: b", 1.0),
    ],
)
def test_multiple_choice_scores(expected: str, generated: str, want: float) -> None:
    assert score(basic.MULTIPLE_CHOICE, expected, generated) == want


def test_multiple_choice_with_request_regexes_uses_only_those() -> None:
    regexes = (r"Option \(([A-D])\)",)
    assert score(basic.MULTIPLE_CHOICE, "B", "Option (B)", regexes) == 1.0
    assert score(basic.MULTIPLE_CHOICE, "B", "Answer: B", regexes) == 0.0


def test_builtin_multiple_choice_regexes_are_listed_as_full_patterns() -> None:
    assert len(basic.MULTIPLE_CHOICE_REGEXES) == len(basic.MULTIPLE_CHOICE_PREFIXES) >= 30
    assert all(pattern.startswith("(?i)") for pattern in basic.MULTIPLE_CHOICE_REGEXES)


# ---- math ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so $\\boxed{5}$.", "5"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces
        ("first \\boxed{2}, finally \\boxed{3}", "3"),  # the last box
        ("\\fbox{7}", "7"),
        ("\\boxed 9 done", "9"),
        ("\\boxed{unclosed and \\boxed{4}", "4"),
        ("no box here", None),
    ],
)
def test_extract_boxed(text: str, answer: str | None) -> None:
    assert basic.extract_boxed(text) == answer


@pytest.mark.parametrize(
    ("expected", "generated", "want"),
    [
        ("5", "Thus the final answer is $\\boxed{5}$. I hope it is correct.", 1.0),
        ("5", "The final answer is $\\boxed{6}$.", 0.0),
        ("\\frac{1}{2}", "$\\boxed{\\frac12}$", 1.0),  # short fraction
        ("\\frac{1}{2}", "$\\boxed{\\dfrac{1}{2}}$", 1.0),
        ("0.5", "$\\boxed{\\frac{1}{2}}$", 1.0),  # compared by value
        ("-0.5", "\\boxed{-\\frac{1}{2}}", 1.0),
        ("\\frac{1}{3}", "\\boxed{0.333}", 0.0),  # not close enough
        ("1000", "\\boxed{1,000}", 1.0),  # thousands separator
        ("(1,2)", "\\boxed{(1, 2)}", 1.0),  # a pair is not a thousands number
        ("10", "\\boxed{10\\%}", 1.0),
        ("90", "\\boxed{90^\\circ}", 1.0),
        ("5", "\\boxed{x = 5}", 1.0),
        ("x^2+1", "\\boxed{x^{2} + 1}", 1.0),
        ("\\text{yes}", "\\boxed{\\textbf{yes}}", 1.0),
        ("\\boxed{7}", "The final answer is $\\boxed{7}$", 1.0),  # a boxed expected answer is unboxed
        ("3", "The final answer is 3. I hope it is correct.", 1.0),  # no box: text after the phrase
        ("3.14", "The final answer is $3.14$", 1.0),
        ("2", "\\boxed{2} then \\boxed{3}", 0.0),
        ("5", "The answer is 5", 0.0),  # nothing to extract
        ("", "\\boxed{}", 0.0),  # an empty answer never matches
        ("5", "\\boxed{5.0}", 1.0),
    ],
)
def test_math_response_scores(expected: str, generated: str, want: float) -> None:
    assert score(basic.MATH_RESPONSE, expected, generated) == want


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("$\\left( 1, 2 \\right)$", "(1,2)"),
        ("\\dfrac{3}{4}", "\\frac{3}{4}"),
        ("\\sqrt2", "\\sqrt{2}"),
        (".5", "0.5"),
        ("12.", "12"),
        ("5\\,\\text{cm}", "5cm"),
        ("\\leftarrow", "\\leftarrow"),  # only the \left delimiter command is dropped
    ],
)
def test_normalize_math(raw: str, normal: str) -> None:
    assert basic.normalize_math(raw) == normal


def test_math_with_request_regexes_uses_the_named_group() -> None:
    regexes = (r"ANSWER=(?P<X>\S+)",)
    assert score(basic.MATH_RESPONSE, "\\frac{1}{2}", "ANSWER=0.5", regexes) == 1.0
    assert score(basic.MATH_RESPONSE, "1", "\\boxed{1}", regexes) == 0.0  # the built-in extraction is off


# ---- user regex parsers -------------------------------------------------------------------------


def test_regex_parser_first_matching_regex_wins() -> None:
    scorer = basic.regex_parser_scorer("my::grade", [r"Grade: (\w+)", r"Verdict: (\w+)"])
    assert scorer({"expected_answer": "pass", "generated_answer": "Verdict: fail. Grade: pass"}) == {
        "score": 1.0
    }
    assert scorer({"expected_answer": "pass", "generated_answer": "Verdict: pass"}) == {"score": 1.0}
    assert scorer({"expected_answer": "pass", "generated_answer": "Grade: failed"}) == {"score": 0.0}
    assert scorer({"expected_answer": "pass", "generated_answer": "nothing"}) == {"score": 0.0}


def test_regex_parser_without_group_compares_the_whole_match_trimmed() -> None:
    scorer = basic.regex_parser_scorer("my::num", [r"\d+"])
    assert scorer({"expected_answer": " 42 ", "generated_answer": "it is 42!"}) == {"score": 1.0}


def test_regex_parser_needs_regexes() -> None:
    with pytest.raises(InvalidInputError, match="parsing_regexes"):
        basic.regex_parser_scorer("my::none", [])


def test_bad_regex_is_quoted_in_the_error() -> None:
    with pytest.raises(InvalidInputError, match=r"\(unclosed"):
        basic.regex_parser_scorer("my::bad", ["(unclosed"])
