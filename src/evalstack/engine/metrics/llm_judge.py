"""``llm-judge``: a judge model reads the sample and answers; regexes turn its answer into scores.

Params:

- ``model``: the judge, as ``"namespace/name"`` or a model registered in evalstack, or
  ``{"api_endpoint": {"url", "model_id", "api_key"?, "format"?}}``.
- ``template``: ``{"messages": [...]}`` (chat) or ``{"prompt": "..."}`` (completion), rendered with
  the sample's context (``item.*``, flat fields, ``sample.output_text``, ``sample.response``). Other
  keys (``max_tokens``, ``temperature``...) go into the judge request.
- ``scores``: ``{name: {"type": "int" | "float", "parser": {"type": "regex", "pattern": ...}}}``. The
  first match of the pattern in the judge's answer gives the score (its first group, or the whole
  match without groups), cast to the type. No match, or text that is not a number, gives ``None``
  (NaN in the statistics, counted in ``nan_count``). The judge's answer is kept in the sample's record.
- ``extra`` (optional): more fields sent as they are in the judge request.

A judge endpoint that fails after its retries fails the sample (an infrastructure error, never a
low score).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from evalstack.engine.metrics.nemo_base import (
    MetricDeps,
    NemoMetric,
    Scores,
    request_from_rendered,
    resolve_model_spec,
)
from evalstack.engine.plan import SampleOutput
from evalstack.engine.templates import check_templates, render_value
from evalstack.errors import InvalidInputError
from evalstack.inference.base import ModelClient

SCORE_TYPES = ("int", "float")


@dataclass(frozen=True)
class ScoreParser:
    """How one score is read from the judge's answer."""

    name: str
    type: str
    pattern: re.Pattern[str]

    def parse(self, text: str) -> float | None:
        match = self.pattern.search(text)
        if match is None:
            return None
        token = next((g for g in match.groups() if g is not None), None) if match.groups() else match.group(0)
        if token is None:
            return None
        try:
            number = float(token.strip())
        except ValueError:
            return None
        if self.type == "int":
            if not number.is_integer():
                return None
            return int(number)
        return number


class LLMJudgeMetric(NemoMetric):
    """Ask a judge model and parse its answer into the configured scores."""

    type = "llm-judge"
    params_accepted = ("model", "template", "scores", "extra")

    def __init__(self, name: str, params: Mapping[str, Any], client: ModelClient) -> None:
        super().__init__(name, params)
        template = params.get("template")
        if not isinstance(template, Mapping) or not ("messages" in template or "prompt" in template):
            raise self.invalid('params.template must be an object with "messages" (or "prompt")')
        check_templates(template)
        self.template = dict(template)
        self.kind = "chat" if "messages" in template else "completion"
        extra = params.get("extra") or {}
        if not isinstance(extra, Mapping):
            raise self.invalid("params.extra must be an object")
        self.extra = dict(extra)
        self.parsers = self._parsers(params.get("scores"))
        self.score_names = tuple(p.name for p in self.parsers)
        self.client = client

    @classmethod
    async def create(cls, name: str, params: Mapping[str, Any], deps: MetricDeps) -> LLMJudgeMetric:
        """Resolve the judge model and get its client, then build the metric."""
        if "model" not in params:
            raise cls._invalid_for(name, "params.model (the judge) is required")
        endpoint = await resolve_model_spec(params["model"], deps.registry, f"Metric {name!r} (llm-judge)")
        if deps.clients is None:
            raise cls._invalid_for(name, "no model clients are available to call the judge")
        client = deps.clients.get(endpoint, max_retries=deps.max_retries, timeout=deps.request_timeout)
        return cls(name, params, client)

    @classmethod
    def _invalid_for(cls, name: str, reason: str) -> InvalidInputError:
        return InvalidInputError(f"Metric {name!r} (llm-judge): {reason}.")

    def _parsers(self, scores: Any) -> list[ScoreParser]:
        if not isinstance(scores, Mapping) or not scores:
            raise self.invalid(
                'params.scores must map score names to {"type": "int"|"float", '
                '"parser": {"type": "regex", "pattern": "..."}}'
            )
        parsers: list[ScoreParser] = []
        for score_name, spec in scores.items():
            if not isinstance(spec, Mapping):
                raise self.invalid(f"scores.{score_name} must be an object with type and parser")
            score_type = spec.get("type", "float")
            if score_type not in SCORE_TYPES:
                raise self.invalid(f"scores.{score_name}.type must be one of {', '.join(SCORE_TYPES)}")
            parser = spec.get("parser")
            if not isinstance(parser, Mapping) or parser.get("type", "regex") != "regex":
                raise self.invalid(
                    f'scores.{score_name}.parser must be {{"type": "regex", "pattern": "..."}}'
                )
            pattern = parser.get("pattern")
            if not isinstance(pattern, str) or not pattern:
                raise self.invalid(f"scores.{score_name}.parser.pattern is required")
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise self.invalid(f"scores.{score_name}.parser.pattern is not a valid regex: {exc}") from exc
            parsers.append(ScoreParser(str(score_name), score_type, compiled))
        return parsers

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> Scores:
        rendered = render_value(self.template, self.context(item, output))
        request = request_from_rendered(self.kind, rendered, self.extra, f"Metric {self.name!r} (llm-judge)")
        result = await self.client.generate(request)
        output.note_judgement(self.name, result.text)
        return {p.name: p.parse(result.text) for p in self.parsers}
