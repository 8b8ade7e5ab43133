"""Answer extraction: hand-worked cases, including the awkward ones."""

from __future__ import annotations

import pytest

from evalstack.engine.benchmarks.extract import (
    extract_code,
    extract_letter_flexible,
    extract_letter_strict,
    extract_number_flexible,
    extract_number_strict,
    extract_yes_no_flexible,
    extract_yes_no_strict,
    letters_for,
    normalize_number,
    strip_reasoning,
)

ABCD = "ABCD"


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("B", "B", "B"),
        (" (C) ", "C", "C"),
        ("D. Paris", "D", "D"),
        ("**A**", "A", "A"),
        ("The answer is (B).", None, "B"),
        ("Sure! Let me think about it.\n\nAnswer: C", None, "C"),
        ("The correct option is D because...", None, "D"),
        ("A cat would never do that, so the answer is B", None, "B"),
        ("<think>Maybe A? No, (C) is wrong.</think>\nB", "B", "B"),
        ("<think>I think the answer is A but the output was cut", None, None),
        ("I am not sure.", None, None),
        ("E", None, None),  # not one of the options
    ],
)
def test_letter_extraction(text: str, strict: str | None, flexible: str | None) -> None:
    assert extract_letter_strict(text, ABCD) == strict
    assert extract_letter_flexible(text, ABCD) == flexible


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a stated answer: the last one wins (the model changed its mind)
        ("Answer: A. Wait, re-reading the question, the answer is C.", "C"),
        ("The answer is (B)... no: the correct option is D", "D"),
        ("Option A looks right, but choice: C", "C"),
        ("Option A looks right, but choice: c", "A"),  # a lower-case letter is not a label
        ("answer - B", "B"),
        ("The answer is option (A), final.", "A"),
        # no stated answer: the last (X)
        ("Between (A) and (D) I pick the second, (D)", "D"),
        ("Tempting: (B), yet (C)", "C"),
        ("(B) is tempting, yet (C)", "B"),  # a reply that starts with a label is the strict form
        # no (X): a line that starts with a label
        ("Looking at it again.\nC) Rome\nThat one.", "C"),
        ("Thinking.\n  B: Paris is the capital", "B"),
        # no label at a line start: one distinct stand-alone letter among the options
        ("I would go with D.", "D"),
        ("I would go with D here", None),  # a letter before a lower-case word reads as an article
        ("D, definitely D", "D"),
        ("Either B, or C.", None),  # two letters: no answer
        ("A cat and A dog", None),  # "A" starting a phrase is not an answer
        ("It's A's fault", None),  # nor a possessive
        ("Probably E", None),  # not an option
        # the stated answer beats a parenthesised letter, and the last (X) beats a line start
        ("My first thought was (A). Answer: B", "B"),
        ("A. first\nthen (C)", "A"),  # "A." at the start is the strict form
        ("first\nA. one\nthen (C)", "C"),
        ("Thinking it over.\nB. Paris, not D", "B"),  # a label at a line start beats two lone letters
        ("The answer is **B**.", "B"),  # markdown around a stated answer
        ("I pick `C`", "C"),
    ],
)
def test_flexible_letter_rules_in_order(text: str, expected: str | None) -> None:
    assert extract_letter_flexible(text, ABCD) == expected


def test_letters_beyond_the_options_are_never_returned() -> None:
    assert extract_letter_flexible("The answer is C", "AB") is None
    assert extract_letter_flexible("(C)", "AB") is None
    assert extract_letter_strict("C", "AB") is None
    assert extract_letter_flexible("The answer is C", "ABC") == "C"


def test_letter_from_quoted_option_text() -> None:
    choices = ["Berlin", "Paris", "Rome", "Madrid"]
    assert extract_letter_flexible("I believe it is Paris.", ABCD, choices) == "B"
    assert extract_letter_flexible("Either Paris or Rome.", ABCD, choices) is None


def test_option_text_matches_whole_words_only() -> None:
    # Short options such as "n" or "e" must not be found inside "not" or "sure".
    assert extract_letter_flexible("I am not sure.", ABCD, ["n", "n+1", "2n", "n^2"]) is None
    assert extract_letter_flexible("I am not sure.", ABCD, ["3", "e", "pi", "0"]) is None
    assert extract_letter_flexible("It is e, of course.", ABCD, ["3", "e", "pi", "0"]) == "B"


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18", "18", "18"),
        ("She pays $1,234.50 in total.", None, "1234.5"),
        ("#### $1,234.50", "1234.5", "1234.5"),
        ("The total is 42 dollars.", None, "42"),
        ("It costs -3.0 degrees", None, "-3"),
        ("<think>maybe 7</think>The answer is 12.", None, "12"),
        ("So the answer is \\boxed{64} (from 8 x 8 = 64 and 2 more)", None, "64"),
        ("no numbers here", None, None),
    ],
)
def test_number_extraction(text: str, strict: str | None, flexible: str | None) -> None:
    assert normalize_number(extract_number_strict(text)) == strict
    assert normalize_number(extract_number_flexible(text)) == flexible


def test_normalize_number_compares_by_value() -> None:
    assert normalize_number("1234.50") == normalize_number("$1,234.5") == "1234.5"
    assert normalize_number("18.") == "18"
    assert normalize_number(".5") == "0.5"
    assert normalize_number("0.0000001") == "0.0000001"  # plain digits, never 1E-7
    assert normalize_number("1.5e3") == "1500"
    assert normalize_number("-0") == "0"
    assert normalize_number("  ") is None
    assert normalize_number(None) is None
    assert normalize_number(" Twelve MAX ") == "twelve max"  # not a number: kept, lower-cased


def test_a_single_digit_is_a_flexible_number() -> None:
    assert extract_number_flexible("She has 7 apples") == "7"
    assert extract_number_flexible("-4 degrees, then 5") == "5"


@pytest.mark.parametrize(("count", "letters"), [(1, "A"), (4, "ABCD"), (26, "ABCDEFGHIJKLMNOPQRSTUVWXYZ")])
def test_letters_for(count: int, letters: str) -> None:
    assert letters_for(count) == letters


@pytest.mark.parametrize("count", [0, 27])
def test_letters_for_needs_1_to_26_choices(count: int) -> None:
    with pytest.raises(ValueError, match=f"a multiple-choice item needs 1 to 26 choices, got {count}"):
        letters_for(count)


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("Yes, it does.", True, True),
        ("no", False, False),
        ("Based on the passage, the answer is yes.", None, True),
        ("<think>yes? no?</think> False.", False, False),
        ("It depends.", None, None),
        ("**No**, never.", False, False),
        ("Yes, although the answer is no", True, True),  # the strict form wins
        ("Is it yes or no? The answer: no", None, False),  # the stated answer wins over the words
        ("Is it yes or no? Hard to say.", None, None),  # both words: no answer
        ("I would say yes, and true.", None, True),  # only yes-words
        ("I would say no, that is false.", None, False),  # only no-words
        ("The answer is correct.", None, True),
        ("The answer is incorrect.", None, False),
        ("The answer: **no**", None, False),  # markdown around a stated yes/no
    ],
)
def test_yes_no_extraction(text: str, strict: bool | None, flexible: bool | None) -> None:
    assert extract_yes_no_strict(text) is strict
    assert extract_yes_no_flexible(text) is flexible


def test_strip_reasoning_variants() -> None:
    assert strip_reasoning("<think>a</think>b<thinking>c</thinking> d") == "b d"
    assert strip_reasoning("reasoning without an opening tag</think>final") == "final"
    assert strip_reasoning(None) == ""


def test_extract_code_prefers_a_block_that_defines() -> None:
    reply = "Here:\n```\npip install x\n```\nand\n```python\ndef f(x):\n    return x\n```\n"
    assert extract_code(reply) == "def f(x):\n    return x\n"
    later = "```\npip install x\n```\n```py\n# a helper\nimport math\n\ndef f(x):\n    return x\n```"
    assert extract_code(later) == "# a helper\nimport math\n\ndef f(x):\n    return x\n"
    assert extract_code("```\nx = 1\n```\nthen\n```\ny = 2\n```") == "x = 1\n"  # none defines: the first
    assert extract_code("    return 1") == "return 1"
