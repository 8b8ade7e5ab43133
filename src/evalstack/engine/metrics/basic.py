"""The built-in ``basic::`` scoring functions and user-registered ``regex_parser`` functions.

Every scorer takes one row with ``expected_answer`` and ``generated_answer`` and returns
``{"score": 1.0 | 0.0}``. A row without one of these fields (or with ``null``, a list or an
object there) raises ``InvalidInputError`` naming the field and the function. Numbers and
booleans are compared through ``str()``, so an ``expected_answer`` of ``42`` equals ``"42"``.

- ``basic::equality``: 1.0 when the two strings are identical (no trimming, case-sensitive).
- ``basic::subset_of``: 1.0 when ``expected_answer`` is a substring of ``generated_answer``.
- ``basic::regex_parser_multiple_choice_answer``: the first of :data:`MULTIPLE_CHOICE_REGEXES`
  that matches the answer gives a letter A-D (group 1), compared with ``expected_answer``.
  The regexes are our own list of answer prefixes in several languages ("The best answer is",
  "Answer:", "Antwort:", "答案:", ...; ASCII or fullwidth colon), each followed by optional
  whitespace and a letter, case-insensitive. The letter must come right after the prefix and
  must not run on into a word. So, as on the reference server, "The answer is (B)." scores 0:
  "The answer is" is not one of the prefixes and "(B)" is not a bare letter.
  Before matching, markdown bold (``**``), ``$`` and ``\\boxed{``/``\\text{`` wrappers are
  removed, so "**Answer:** B" and "Answer: $\\boxed{B}$" count. Lowercase (b), fullwidth,
  Arabic (ب) and Bengali (ব) letters are read as their Latin capital, and an
  ``expected_answer`` of " b " is read as "B".
- ``basic::regex_parser_math_response``: the last ``\\boxed{...}`` of the answer (balanced braces),
  or failing that the text after "final answer is", is compared with ``expected_answer`` (itself
  unboxed if boxed) after light LaTeX normalisation (:func:`normalize_math`); numbers, decimals and
  integer fractions are also compared by value, so ``\\frac{1}{2}`` equals ``0.5``.
- ``regex_parser`` functions (user-registered, or parsing_regexes given for the two functions
  above): the first regex that matches wins; its group 1 (group 0 when it has no group, the named
  group ``X`` when present) is compared with ``expected_answer``, both trimmed.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalstack.errors import InvalidInputError

log = logging.getLogger(__name__)

EQUALITY = "basic::equality"
SUBSET_OF = "basic::subset_of"
MULTIPLE_CHOICE = "basic::regex_parser_multiple_choice_answer"
MATH_RESPONSE = "basic::regex_parser_math_response"

ANSWER_FIELDS = ("expected_answer", "generated_answer")

# ---- row fields -------------------------------------------------------------------------------


def field_text(row: Mapping[str, Any], field: str, fn_id: str) -> str:
    """The value of ``field`` as text, or an ``InvalidInputError`` naming the field and function."""
    if field not in row:
        raise InvalidInputError(
            f"Scoring function '{fn_id}' needs the field '{field}', which the row does not have "
            f"(it has: {', '.join(sorted(map(str, row))) or 'no fields'})."
        )
    value = row[field]
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    kind = "null" if value is None else type(value).__name__
    raise InvalidInputError(
        f"Scoring function '{fn_id}' needs '{field}' to be a string or a number, but the row has {kind}."
    )


def compile_regexes(regexes: Sequence[str], fn_id: str, what: str = "parsing regex") -> list[re.Pattern[str]]:
    """Compile a scoring function's regexes (``parsing_regexes`` unless ``what`` names others).

    A bad one gives an ``InvalidInputError`` naming the function, ``what`` and the pattern.
    """
    compiled = []
    for pattern in regexes:
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError) as exc:
            raise InvalidInputError(
                f"Scoring function '{fn_id}': {what} {pattern!r} is not a valid regular expression: {exc}."
            ) from exc
    return compiled


def first_capture(text: str, regexes: Sequence[re.Pattern[str]]) -> str | None:
    """What the first matching regex captures: group ``X`` if named, else group 1, else the match."""
    for regex in regexes:
        match = regex.search(text)
        if match is None:
            continue
        if "X" in regex.groupindex:
            return match.group("X")
        return match.group(1) if regex.groups else match.group(0)
    return None


# ---- equality and subset_of ------------------------------------------------------------------


def equality(expected: str, generated: str) -> float:
    """1.0 when the answers are identical."""
    return 1.0 if expected == generated else 0.0


def subset_of(expected: str, generated: str) -> float:
    """1.0 when ``expected`` occurs in ``generated``."""
    return 1.0 if expected in generated else 0.0


# ---- multiple choice -------------------------------------------------------------------------

# Our own list of answer prefixes, tried in this order. Each is followed by whitespace and a letter.
MULTIPLE_CHOICE_PREFIXES: tuple[str, ...] = (
    r"The best answer is",
    r"Answer\s*[:\uFF1A]",  # English; also catches "Final answer:" and "Correct answer:"
    r"Antwort\s*[:\uFF1A]",  # German
    r"Antwoord\s*[:\uFF1A]",  # Dutch
    r"Réponse\s*[:\uFF1A]",  # French
    r"Respuesta\s*[:\uFF1A]",  # Spanish
    r"Resposta\s*[:\uFF1A]",  # Portuguese, Catalan
    r"Risposta\s*[:\uFF1A]",  # Italian
    r"Svar\s*[:\uFF1A]",  # Swedish, Danish, Norwegian
    r"Odpowiedź\s*[:\uFF1A]",  # Polish
    r"Odpověď\s*[:\uFF1A]",  # Czech
    r"Ответ\s*[:\uFF1A]",  # Russian
    r"Відповідь\s*[:\uFF1A]",  # Ukrainian
    r"Απάντηση\s*[:\uFF1A]",  # Greek
    r"Cevap\s*[:\uFF1A]",  # Turkish
    r"Yan\u0131t\s*[:\uFF1A]",  # Turkish
    r"Jawaban\s*[:\uFF1A]",  # Indonesian
    r"Jawapan\s*[:\uFF1A]",  # Malay
    r"Jibu\s*[:\uFF1A]",  # Swahili
    r"Ìdáhùn\s*[:\uFF1A]",  # Yoruba
    r"Idahun\s*[:\uFF1A]",  # Yoruba without tones
    r"Đáp án\s*[:\uFF1A]",  # Vietnamese
    r"Trả lời\s*[:\uFF1A]",  # Vietnamese
    r"คำตอบ\s*[:\uFF1A]",  # Thai
    r"उत्तर\s*[:\uFF1A]",  # Hindi, Marathi
    r"উত্তর\s*[:\uFF1Aঃ]",  # Bengali (also with the visarga)
    r"الإجابة\s*[:\uFF1A]",  # Arabic
    r"الجواب\s*[:\uFF1A]",  # Arabic
    r"إجابة\s*[:\uFF1A]",  # Arabic
    r"پاسخ\s*[:\uFF1A]",  # Persian
    r"תשובה\s*[:\uFF1A]",  # Hebrew
    r"答案\s*[:\uFF1A]",  # Chinese
    r"答\s*[:\uFF1A]",  # Chinese
    r"答え\s*[:\uFF1A]",  # Japanese
    r"回答\s*[:\uFF1A]",  # Japanese, Chinese
    r"解答\s*[:\uFF1A]",  # Japanese
    r"正解\s*[:\uFF1A]",  # Japanese
    r"정답\s*[:\uFF1A]",  # Korean
    r"답변\s*[:\uFF1A]",  # Korean
    r"답\s*[:\uFF1A]",  # Korean
)

# Latin, fullwidth, Arabic and Bengali option letters; the letter must not run on into a word of
# its script ("Answer: Because" gives nothing), but may be followed by CJK text or punctuation.
_CHOICE_LETTER = r"([A-D\uFF21-\uFF24\uFF41-\uFF44أبجدঅবডঢ])(?![A-Za-z\u0600-\u06FF\u0980-\u09FF])"
MULTIPLE_CHOICE_REGEXES: tuple[str, ...] = tuple(
    rf"(?i){prefix}\s*{_CHOICE_LETTER}" for prefix in MULTIPLE_CHOICE_PREFIXES
)


@functools.cache
def builtin_choice_regexes() -> tuple[re.Pattern[str], ...]:
    """:data:`MULTIPLE_CHOICE_REGEXES`, compiled on first use (not at import: it costs start-up time)."""
    return tuple(re.compile(pattern) for pattern in MULTIPLE_CHOICE_REGEXES)


_LETTER_MAP = {
    **{chr(0xFF21 + i): "ABCD"[i] for i in range(4)},  # fullwidth capitals
    **{chr(0xFF41 + i): "ABCD"[i] for i in range(4)},  # fullwidth small letters
    "أ": "A",
    "ب": "B",
    "ج": "C",
    "د": "D",
    "অ": "A",
    "ব": "B",
    "ড": "C",
    "ঢ": "D",
}
_MARKUP = re.compile(r"\*\*|\$|\\boxed\s*\{|\\text(?:bf)?\s*\{|\\mathrm\s*\{")


def normalize_choice(letter: str) -> str:
    """An option letter as a Latin capital ("b", fullwidth B, "ب" and "ব" become "B"); other text trimmed."""
    text = letter.strip()
    if len(text) == 1:
        return _LETTER_MAP.get(text, text.upper())
    return text


def extract_choice(answer: str, regexes: Sequence[re.Pattern[str]] | None = None) -> str | None:
    """The option letter the answer commits to (by :data:`MULTIPLE_CHOICE_REGEXES` unless given others)."""
    captured = first_capture(
        _MARKUP.sub("", answer), builtin_choice_regexes() if regexes is None else regexes
    )
    return None if captured is None else normalize_choice(captured)


def multiple_choice(expected: str, generated: str, regexes: Sequence[re.Pattern[str]] | None = None) -> float:
    """1.0 when the extracted letter is the expected one."""
    extracted = extract_choice(generated, regexes)
    return 1.0 if extracted and extracted == normalize_choice(expected) else 0.0


# ---- math ------------------------------------------------------------------------------------

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)")
_FINAL_ANSWER_DOLLARS = re.compile(r"(?i)final answer is:?\s*\$+([^$]+)\$")
_FINAL_ANSWER_WORD = re.compile(r"(?i)final answer is:?\s*(\S+?)\.?(?=\s|$)")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\q?quad|\\displaystyle|\\left(?![a-z])|\\right(?![a-z])")
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?|\\circ|°")
_ASSIGNMENT = re.compile(r"^[A-Za-z]\s*=\s*(?=\S)")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_SHORT_FRAC = re.compile(r"\\frac(\d)(\d)")
_SHORT_SQRT = re.compile(r"\\sqrt(\d)")
_SINGLE_BRACED = re.compile(r"([\^_])\{(\w)\}")
_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)$")
_FRACTION = re.compile(r"^(-?)(?:\\frac\{(-?\d+)\}\{(-?\d+)\}|(-?\d+)/(-?\d+))$")


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; ``None`` if absent."""
    starts = list(_BOX_COMMAND.finditer(text))
    for found in reversed(starts):
        i = found.end()
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j]
            continue  # unbalanced: try an earlier box
        token = re.match(r"[^\s$]+", text[i:])  # "\boxed 5"
        if token:
            return token.group(0)
    return None


def extract_math_answer(text: str) -> str | None:
    """The final answer of a math solution: the last box, else what follows "final answer is"."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    for regex in (_FINAL_ANSWER_DOLLARS, _FINAL_ANSWER_WORD):
        match = regex.search(text)
        if match:
            return match.group(1)
    return None


def normalize_math(answer: str) -> str:
    """Light LaTeX normalisation so that equivalent spellings of a final answer compare equal.

    Drops ``$``, spacing commands, ``\\left``/``\\right``, ``\\text{}``-style wrappers (keeping
    their content), degree signs, percent signs, a leading ``x =``, thousands separators, a trailing
    period and all whitespace; reads ``\\dfrac``/``\\tfrac`` as ``\\frac``, ``\\frac12`` as
    ``\\frac{1}{2}``, ``\\sqrt2`` as ``\\sqrt{2}``, ``x^{2}`` as ``x^2`` and ``.5`` as ``0.5``.
    """
    text = answer.strip().replace("$", "")
    text = _SPACING.sub("", text)
    previous = None
    while previous != text:  # unwrap nested text wrappers from the inside out
        previous = text
        text = _TEXT_WRAPPER.sub(r"\1", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _DEGREES.sub("", text)
    text = text.replace("\\%", "").replace("%", "")
    text = text.strip()
    text = _ASSIGNMENT.sub("", text)
    text = re.sub(r"\s+", "", text)
    text = text.rstrip(".")
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    text = _SHORT_FRAC.sub(r"\\frac{\1}{\2}", text)
    text = _SHORT_SQRT.sub(r"\\sqrt{\1}", text)
    text = _SINGLE_BRACED.sub(r"\1\2", text)
    if text.startswith("."):
        text = "0" + text
    elif text.startswith("-."):
        text = "-0" + text[1:]
    return text


def _as_number(text: str) -> float | None:
    """The value of a normalised plain number or integer fraction, else ``None``."""
    if _NUMBER.match(text):
        return float(text)
    match = _FRACTION.match(text)
    if match:
        sign, num, den = match.group(1), match.group(2) or match.group(4), match.group(3) or match.group(5)
        if int(den) == 0:
            return None
        value = int(num) / int(den)
        return -value if sign else value
    return None


def math_equal(expected: str, extracted: str) -> bool:
    """Whether two final answers agree after normalisation, by text or by numeric value."""
    a, b = normalize_math(expected), normalize_math(extracted)
    if not a or not b:
        return False
    if a == b:
        return True
    x, y = _as_number(a), _as_number(b)
    return x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)


def math_response(expected: str, generated: str, regexes: Sequence[re.Pattern[str]] = ()) -> float:
    """1.0 when the final answer of ``generated`` matches ``expected`` (see :func:`math_equal`).

    With ``regexes``, the first matching one extracts the answer (a ``\\boxed{}`` in what it
    captures is unwrapped); without, :func:`extract_math_answer` does.
    """
    if regexes:
        captured = first_capture(generated, regexes)
        extracted = None if captured is None else (extract_boxed(captured) or captured)
    else:
        extracted = extract_math_answer(generated)
    if extracted is None:
        return 0.0
    target = extract_boxed(expected) or expected
    return 1.0 if math_equal(target, extracted) else 0.0


# ---- user regex parsers ------------------------------------------------------------------------


def regex_parser(expected: str, generated: str, regexes: Sequence[re.Pattern[str]]) -> float:
    """1.0 when what the first matching regex captures equals ``expected`` (both trimmed)."""
    captured = first_capture(generated, regexes)
    return 1.0 if captured is not None and captured.strip() == expected.strip() else 0.0


# ---- scorers ---------------------------------------------------------------------------------

Compare = Callable[[str, str], float]


@dataclass(frozen=True)
class BasicScorer:
    """A per-row scorer: reads the two answer fields and compares them."""

    fn_id: str
    compare: Compare
    required_fields: tuple[str, ...] = ANSWER_FIELDS

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Score one row: ``{"score": 1.0 | 0.0}``."""
        expected = field_text(row, "expected_answer", self.fn_id)
        generated = field_text(row, "generated_answer", self.fn_id)
        return {"score": self.compare(expected, generated)}


BUILTIN_BASIC = (EQUALITY, SUBSET_OF, MULTIPLE_CHOICE, MATH_RESPONSE)


def builtin_scorer(fn_id: str, parsing_regexes: Sequence[str] = ()) -> BasicScorer:
    """The scorer of a built-in ``basic::`` function; ``parsing_regexes`` replace the built-in
    extraction of the two regex parser functions and are ignored by the others."""
    if fn_id == EQUALITY:
        return BasicScorer(fn_id, equality)
    if fn_id == SUBSET_OF:
        return BasicScorer(fn_id, subset_of)
    if fn_id == MULTIPLE_CHOICE:
        regexes = compile_regexes(parsing_regexes, fn_id) if parsing_regexes else builtin_choice_regexes()
        return BasicScorer(fn_id, lambda e, g: multiple_choice(e, g, regexes))
    if fn_id == MATH_RESPONSE:
        math_regexes = compile_regexes(parsing_regexes, fn_id)
        return BasicScorer(fn_id, lambda e, g: math_response(e, g, math_regexes))
    raise InvalidInputError(
        f"'{fn_id}' is not a built-in basic scoring function. Accepted: {', '.join(BUILTIN_BASIC)}."
    )


def regex_parser_scorer(fn_id: str, parsing_regexes: Sequence[str]) -> BasicScorer:
    """The scorer of a user-registered ``regex_parser`` function."""
    if not parsing_regexes:
        raise InvalidInputError(
            f"Scoring function '{fn_id}' is a regex_parser function but has no parsing_regexes; "
            "give at least one regular expression whose group 1 captures the answer."
        )
    regexes = compile_regexes(parsing_regexes, fn_id)
    return BasicScorer(fn_id, lambda e, g: regex_parser(e, g, regexes))
