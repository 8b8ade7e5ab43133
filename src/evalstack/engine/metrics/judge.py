"""LLM-as-judge scoring: ``llm-as-judge::base`` and user-registered ``llm_as_judge`` functions.

The prompt template is filled in ``str.format`` style, as on the reference server, with the row's
``input_query``, ``expected_answer`` and ``generated_answer``; only the fields the template names
are needed in the row. The prompt goes to the judge model as one user message (temperature 0).
The first of ``judge_score_regexes`` that matches the judge's reply gives the score (group 1, or
the whole match for a regex without a group). A score that reads as a number becomes a float
(``"4"`` -> ``4.0``) so that ``average`` works; any other text (``"A"``) is kept as is. A reply
no regex matches scores ``None``. The row result is ``{"score": ..., "judge_feedback": reply}``.

Literal braces in a template must be doubled (``{{`` and ``}}``), as with ``str.format``.
Attribute and index lookups (``{input_query.upper}``) and positional fields (``{}``) are refused.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalstack.engine.metrics.basic import compile_regexes
from evalstack.engine.ports import ClientSource, ModelResolver
from evalstack.errors import InvalidInputError, NotFoundError, UpstreamError
from evalstack.inference.base import InferenceError, InferenceRequest, ModelClient

JUDGE_BASE = "llm-as-judge::base"
TEMPLATE_FIELDS = ("input_query", "expected_answer", "generated_answer")

# ``llm-as-judge::base`` uses these unless the request's params give others. "embedded" is the
# registry's alias of the embedded default model, so the function works offline out of the box.
DEFAULT_JUDGE_MODEL = "embedded"
DEFAULT_PROMPT_TEMPLATE = (
    "You are grading an answer to a question against a reference answer.\n\n"
    "Question: {input_query}\n"
    "Reference answer: {expected_answer}\n"
    "Answer to grade: {generated_answer}\n\n"
    "How well does the answer agree with the reference answer? Give one sentence of reasoning, "
    'then end with a line "Score: N", where N is an integer from 0 (wrong) to 5 (fully correct).'
)
DEFAULT_SCORE_REGEXES = (r"(?i)score\s*[:=]\s*(-?\d+(?:\.\d+)?)",)
DEFAULT_JUDGE_AGGREGATION = "average"


def template_fields(template: str, fn_id: str) -> tuple[str, ...]:
    """The row fields a prompt template names; ``InvalidInputError`` for a template ``str.format`` refuses."""
    accepted = ", ".join("{" + name + "}" for name in TEMPLATE_FIELDS)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise InvalidInputError(
            f"Scoring function '{fn_id}': the prompt template is not a valid str.format template ({exc}). "
            f"Write literal braces as '{{{{' and '}}}}'; placeholders accepted: {accepted}."
        ) from exc
    fields: list[str] = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or (spec and "{" in spec) or conversion not in (None, "r", "s", "a"):
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise InvalidInputError(
                f"Scoring function '{fn_id}': the prompt template has the placeholder {shown}, "
                f"which cannot be filled. Placeholders accepted: {accepted}; "
                "write literal braces as '{{' and '}}'."
            )
        if name not in fields:
            fields.append(name)
    return tuple(fields)


def _field_value(row: Mapping[str, Any], name: str, fn_id: str) -> str:
    if name not in row or row[name] is None:
        problem = "does not have" if name not in row else "has null for"
        raise InvalidInputError(
            f"Scoring function '{fn_id}' needs the field '{name}' for its prompt template, "
            f"and the row {problem} it."
        )
    value = row[name]
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def render_prompt(template: str, fields: Sequence[str], row: Mapping[str, Any], fn_id: str) -> str:
    """Fill the template with the named fields of ``row`` (lists and objects as JSON)."""
    values = {name: _field_value(row, name, fn_id) for name in fields}
    try:
        return template.format(**values)
    except (ValueError, KeyError, IndexError) as exc:  # defensive: template_fields checked it
        raise InvalidInputError(
            f"Scoring function '{fn_id}': the prompt template does not render: {exc}."
        ) from exc


def parse_judge_score(reply: str, regexes: Sequence[re.Pattern[str]]) -> float | str | None:
    """What the first matching regex captures: a float when numeric, else the text; ``None`` if none match."""
    for regex in regexes:
        match = regex.search(reply)
        if match is None:
            continue
        captured = match.group(1) if regex.groups else match.group(0)
        if captured is None:
            return None
        text = captured.strip()
        try:
            value = float(text)
        except ValueError:
            return text
        return value if math.isfinite(value) else text
    return None


@dataclass
class JudgeScorer:
    """Scores one row by asking the judge model."""

    fn_id: str
    judge_model: str
    client: ModelClient
    template: str
    fields: tuple[str, ...]
    regexes: Sequence[re.Pattern[str]]

    @property
    def required_fields(self) -> tuple[str, ...]:
        """The row fields the prompt template needs."""
        return self.fields

    def prompt(self, row: Mapping[str, Any]) -> str:
        """The judge prompt for ``row``."""
        return render_prompt(self.template, self.fields, row, self.fn_id)

    async def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """``{"score": float | str | None, "judge_feedback": str}``; ``UpstreamError`` if the judge fails."""
        prompt = self.prompt(row)
        request = InferenceRequest(
            kind="chat", messages=[{"role": "user", "content": prompt}], params={"temperature": 0.0}
        )
        try:
            result = await self.client.generate(request)
        except InferenceError as exc:
            raise UpstreamError(
                f"Judge model '{self.judge_model}' of scoring function '{self.fn_id}' failed: {exc}"
            ) from exc
        feedback = result.text or ""
        return {"score": parse_judge_score(feedback, self.regexes), "judge_feedback": feedback}


def check_judge_settings(
    fn_id: str, judge_model: str, template: str | None, score_regexes: Sequence[str]
) -> tuple[str, tuple[str, ...], list[re.Pattern[str]]]:
    """Validate a judge's settings without contacting anything: (template, fields, compiled regexes)."""
    if not judge_model or not judge_model.strip():
        raise InvalidInputError(
            f"Scoring function '{fn_id}' needs a judge_model: a registered model id, or an "
            "OpenAI-compatible base URL such as http://host:8000/v1."
        )
    chosen = DEFAULT_PROMPT_TEMPLATE if template is None else template
    fields = template_fields(chosen, fn_id)
    return chosen, fields, compile_regexes(score_regexes, fn_id, "judge score regex")


async def build_judge(
    fn_id: str,
    judge_model: str,
    template: str | None,
    score_regexes: Sequence[str],
    *,
    registry: ModelResolver,
    clients: ClientSource,
) -> JudgeScorer:
    """A judge scorer with its model resolved through the registry and a client from the pool."""
    chosen, fields, regexes = check_judge_settings(fn_id, judge_model, template, score_regexes)
    try:
        endpoint = await registry.resolve_model(judge_model)
    except NotFoundError as exc:
        raise NotFoundError(
            f"Scoring function '{fn_id}': judge model '{judge_model}' is not available ({exc.message}). "
            "Give a registered model id or an OpenAI-compatible base URL as judge_model.",
            detail=exc.detail,
        ) from exc
    return JudgeScorer(fn_id, judge_model, clients.get(endpoint), chosen, fields, regexes)
