"""Answer extraction from generated text: reasoning blocks, choice letters, yes/no, numbers, code.

Every extractor returns ``None`` when it finds no answer; the caller counts those as unparsed
(and scores them as wrong, as lm-evaluation-harness does).

Two levels, as lm-evaluation-harness reports for GSM8K:

- *strict*: the answer is in the format the prompt asks for (``#### 42``; a reply that *is* a
  letter: ``B``, ``(B)``, ``B.``, ``B) Paris``).
- *flexible*: the answer is found anywhere a reader would find it (the last number; ``The answer
  is (B)``, ``Answer: **C**``; the one option whose text the reply quotes).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

_THINK_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.IGNORECASE | re.DOTALL)
_THINK_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(think|thinking|reasoning)>", re.IGNORECASE)
_MARKDOWN = re.compile(r"[*_`]+")


def strip_reasoning(text: str | None) -> str:
    """The reply without ``<think>...</think>`` (and ``<thinking>``, ``<reasoning>``) blocks.

    A block that was opened but never closed (the output was cut while thinking) leaves nothing
    after it; a lone closing tag (the server swallowed the opening one) drops everything before it.
    """
    if not text:
        return ""
    text = _THINK_BLOCK.sub("", text)
    opened = _THINK_OPEN.search(text)
    if opened is not None:
        text = text[: opened.start()]
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    return text.strip()


def letters_for(count: int) -> str:
    """The option letters for ``count`` choices: ``ABCD`` for 4."""
    if not 1 <= count <= 26:
        raise ValueError(f"a multiple-choice item needs 1 to 26 choices, got {count}")
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:count]


def _letter_class(letters: str) -> str:
    return f"[{re.escape(letters)}]"


def extract_letter_strict(text: str | None, letters: str) -> str | None:
    """The letter when the reply *is* an option label: ``B``, ``(B)``, ``B.``, ``B)``, ``B: Paris``."""
    reply = _MARKDOWN.sub("", strip_reasoning(text)).strip()
    match = re.match(rf"^\(?({_letter_class(letters)})\)?(?:[.:)]|\s*$)", reply)
    return match.group(1) if match else None


def extract_letter_flexible(
    text: str | None, letters: str, choices: Sequence[str] | None = None
) -> str | None:
    """The letter a reader would take from the reply, or ``None``.

    In order: the strict form; the last ``answer is (X)`` / ``Answer: X`` / ``correct option is X``;
    the last ``(X)``; a line that starts with the label (``X. ...``); a single distinct stand-alone
    capital letter among the options (an ``A`` that starts a sentence, ``A cat``, does not count);
    else the one option whose text the reply contains as whole words.
    """
    strict = extract_letter_strict(text, letters)
    if strict is not None:
        return strict
    reply = _MARKDOWN.sub("", strip_reasoning(text))
    cls = _letter_class(letters)
    stated = re.findall(
        rf"(?:answer|option|choice)(?:\s+is|\s*:|\s*-)?\s*(?:is\s+)?(?:option\s+|choice\s+)?:?\s*"
        rf"\(?({cls})\)?(?![\w'])",
        reply,
        flags=re.IGNORECASE,
    )
    stated = [s for s in stated if s in letters]
    if stated:
        return str(stated[-1])
    parenthesised = re.findall(rf"\(({cls})\)", reply)
    if parenthesised:
        return str(parenthesised[-1])
    line_start = re.search(rf"(?m)^\s*({cls})[.:)]\s", reply)
    if line_start:
        return line_start.group(1)
    alone = set(re.findall(rf"(?<![\w'])({cls})(?![\w'])(?!\s+[a-z])", reply))
    if len(alone) == 1:
        return alone.pop()
    if choices:
        # Whole words only: an option "n" or "e" must not match inside "not" or "sure".
        padded = f" {_fold(reply)} "
        found = [i for i, choice in enumerate(choices) if _fold(choice) and f" {_fold(choice)} " in padded]
        if len(found) == 1 and found[0] < len(letters):
            return letters[found[0]]
    return None


def _fold(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


_YES = {"yes", "true", "correct"}
_NO = {"no", "false", "incorrect"}


def extract_yes_no_strict(text: str | None) -> bool | None:
    """``True``/``False`` when the reply starts with yes/no (or true/false)."""
    reply = _MARKDOWN.sub("", strip_reasoning(text)).strip().lower()
    match = re.match(r"^(yes|no|true|false)\b", reply)
    if match is None:
        return None
    return match.group(1) in _YES


def extract_yes_no_flexible(text: str | None) -> bool | None:
    """``True``/``False`` from the answer a reader would take: the strict form, ``answer is yes``, or
    the only one of yes/no that the reply uses."""
    strict = extract_yes_no_strict(text)
    if strict is not None:
        return strict
    reply = _MARKDOWN.sub("", strip_reasoning(text)).lower()
    stated = re.findall(r"answer(?:\s+is|\s*:)\s*(yes|no|true|false|correct|incorrect)\b", reply)
    if stated:
        return stated[-1] in _YES
    words = set(re.findall(r"\b(yes|no|true|false)\b", reply))
    if words and words <= _YES:
        return True
    if words and words <= _NO:
        return False
    return None


# lm-evaluation-harness GSM8K filters: strict "#### <number>"; flexible, the last number-like run.
_GSM8K_STRICT = re.compile(r"#### \$?(\-?[0-9\.\,]+)")  # lm-eval's, plus an optional "$"
_GSM8K_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def extract_number_strict(text: str | None) -> str | None:
    """The number after the first ``#### `` (the GSM8K answer format), raw."""
    match = _GSM8K_STRICT.search(strip_reasoning(text))
    return match.group(1) if match else None


def extract_number_flexible(text: str | None) -> str | None:
    """The last number-like run of the reply (``$1,234.50``, ``-3``, ``42.``), raw; a ``\\boxed{}``
    answer wins when there is one."""
    reply = strip_reasoning(text)
    boxed = _BOXED.findall(reply)
    if boxed:
        inner = _GSM8K_FLEXIBLE.findall(boxed[-1])
        if inner:
            return next(part for part in inner[-1] if part)
    matches = [m for m in _GSM8K_FLEXIBLE.findall(reply) if any(c.isdigit() for c in (m[0] or m[1]))]
    if not matches:
        return None
    last = matches[-1]
    return last[0] or last[1]


def extract_regex(text: str | None, pattern: re.Pattern[str]) -> str | None:
    """The answer ``pattern`` finds in the reply (``params.extra.answer_regex``): its last match's first
    non-empty group (the whole match when it has no groups), reasoning blocks removed; lm-eval's
    ``regex`` filter with ``group_select: -1``."""
    matches = list(pattern.finditer(strip_reasoning(text)))
    if not matches:
        return None
    last = matches[-1]
    groups = [group for group in last.groups() if group]
    return groups[0] if groups else (None if pattern.groups else last.group(0))


def normalize_number(raw: str | None) -> str | None:
    """A comparable form of a number: ``$1,234.50`` -> ``1234.5``, ``42.`` -> ``42``, ``-0`` -> ``0``.

    Removes ``$``, ``,`` and a trailing ``.`` (as the GSM8K harness does), then compares by value,
    so ``1234.50`` equals ``1234.5``. Text that is not a number is kept (stripped, lower-cased).
    """
    if raw is None:
        return None
    cleaned = raw.strip().replace(",", "").replace("$", "").rstrip(".").strip()
    if not cleaned:
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return cleaned.lower()
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


_CODE_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL | re.IGNORECASE)


def extract_code(text: str | None) -> str:
    """The Python code of a chat reply: the first fenced block that defines something, else the first
    block, else the whole reply (reasoning blocks removed)."""
    reply = strip_reasoning(text)
    blocks = _CODE_BLOCK.findall(reply)
    for block in blocks:
        if re.search(r"^\s*(def|class|import|from)\s", block, re.MULTILINE):
            return str(block)
    if blocks:
        return str(blocks[0])
    return reply
