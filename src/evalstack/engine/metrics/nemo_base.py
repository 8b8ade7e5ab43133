"""What NeMo Evaluator metrics share: the metric base class, the template context, params checks, and
the helpers that turn NeMo model specs and templates into endpoints and requests (the plan compiler
uses them too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from evalstack.engine.plan import SampleOutput
from evalstack.engine.ports import ClientSource, ModelResolver
from evalstack.engine.templates import build_context, check_templates, parse_json_text, render_text
from evalstack.errors import InvalidInputError
from evalstack.inference.base import InferenceRequest, ModelEndpoint
from evalstack.redaction import redact

Scores = dict[str, float | None]

API_ENDPOINT_FORMATS = ("nim", "openai", "lama_stack", "llama_stack")


def rendered_texts(value: Any) -> list[str]:
    """A rendered ground truth or reference as the texts to compare with: one per entry of a JSON list
    (a null entry is the empty text), else one. A value that is not text is compared as its JSON text
    (``42``, ``true``, ``{"city": "Paris"}``), as the template's author wrote the data."""
    values = value if isinstance(value, list) else [value]
    return [
        v if isinstance(v, str) else "" if v is None else json.dumps(v, ensure_ascii=False) for v in values
    ]


@dataclass
class MetricDeps:
    """What metrics that call models (llm-judge) need: where to resolve and reach a model."""

    registry: ModelResolver | None = None
    clients: ClientSource | None = None
    max_retries: int = 5
    request_timeout: float = 600.0


async def resolve_model_spec(spec: Any, registry: ModelResolver | None, where: str) -> ModelEndpoint:
    """A NeMo model (``"ns/name"`` or a registered name, or ``{api_endpoint: {url, model_id, api_key?,
    format?}}``) as an endpoint. ``url`` is kept as given: the OpenAI client accepts a base URL ending
    in ``/v1`` as well as the full ``.../chat/completions`` or ``.../completions`` route.
    """
    if isinstance(spec, str):
        if not spec.strip():
            raise InvalidInputError(f"{where}: the model name is empty.")
        if registry is None:
            raise InvalidInputError(
                f"{where}: model {spec!r} names a registered model, but no registry is set."
            )
        return await registry.resolve_model(spec.strip())
    if isinstance(spec, Mapping) and isinstance(spec.get("api_endpoint"), Mapping):
        endpoint = spec["api_endpoint"]
        url, model_id = endpoint.get("url"), endpoint.get("model_id")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"{where}: api_endpoint.url must be an http(s) URL, got {url!r}.")
        if not isinstance(model_id, str) or not model_id:
            raise InvalidInputError(f"{where}: api_endpoint.model_id is required.")
        fmt = endpoint.get("format")
        if fmt is not None and fmt not in API_ENDPOINT_FORMATS:
            raise InvalidInputError(
                f"{where}: api_endpoint.format {fmt!r} is not supported; "
                f"accepted: {', '.join(API_ENDPOINT_FORMATS)}."
            )
        api_key = endpoint.get("api_key")
        if registry is not None:  # the registry applies the egress policy to every URL it resolves
            await registry.resolve_model(f"{url.rstrip('/')}#{model_id}")
        return ModelEndpoint(
            kind="openai", model=model_id, base_url=url.rstrip("/"), api_key=api_key if api_key else None
        )
    raise InvalidInputError(
        f'{where}: a model is a name ("namespace/name" or a registered model) or '
        f'{{"api_endpoint": {{"url", "model_id", "api_key", "format"}}}}; '
        f"got {json.dumps(redact(spec))[:200]}."
    )


def request_from_rendered(
    kind: str, rendered: Mapping[str, Any], params: Mapping[str, Any], where: str
) -> InferenceRequest:
    """An inference request from a rendered NeMo template: ``messages`` (chat) or ``prompt`` (completion)
    plus extra keys (``tools``, ``tool_choice``, ``max_tokens``...), which override ``params``.

    ``messages`` may be a list or JSON text (``"{{ item.messages | tojson }}"``, or a column holding
    JSON); other text becomes one user message. Extra keys holding JSON text (``tools``) are parsed.
    Message contents that rendered to a JSON object are sent back as text, and so is a ``prompt``.
    """
    extra = {k: parse_json_text(v) if isinstance(v, str) else v for k, v in rendered.items()}
    extra.pop("messages", None)
    extra.pop("prompt", None)
    merged = {**params, **extra}
    if kind == "chat":
        messages = rendered.get("messages")
        if isinstance(messages, str):
            messages = parse_json_text(messages)
        if isinstance(messages, str):
            if messages.strip()[:1] in ("[", "{"):
                raise InvalidInputError(
                    f"{where}: template.messages rendered to text that is not valid JSON "
                    f"({messages[:120]!r}); render lists with | tojson."
                )
            messages = [{"role": "user", "content": messages}]
        if isinstance(messages, Mapping):
            messages = [dict(messages)]
        if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
            raise InvalidInputError(
                f"{where}: template.messages must render to a list of {{role, content}} messages, "
                f"got {type(messages).__name__}."
            )
        fixed: list[dict[str, Any]] = []
        for message in messages:
            message = dict(message)
            if isinstance(message.get("content"), Mapping):
                message["content"] = json.dumps(message["content"], ensure_ascii=False)
            fixed.append(message)
        return InferenceRequest(kind="chat", messages=fixed, params=merged)
    prompt = rendered.get("prompt")
    if isinstance(prompt, list | Mapping):
        prompt = json.dumps(prompt, ensure_ascii=False)
    if not isinstance(prompt, str):
        raise InvalidInputError(f"{where}: template.prompt must render to text, got {type(prompt).__name__}.")
    return InferenceRequest(kind="completion", prompt=prompt, params=merged)


class NemoMetric:
    """A configured NeMo metric: ``name`` is its key in the config, ``score_names`` the scores it reports.

    Subclasses set ``type``, ``params_accepted`` and ``score_names``, check their params in
    ``__init__`` and implement :meth:`score`. Scores computed over all samples at once (corpus
    BLEU) come from :meth:`corpus_scores`, called when results are summarised.
    """

    type: ClassVar[str] = ""
    params_accepted: ClassVar[tuple[str, ...]] = ()
    score_names: tuple[str, ...] = ()

    def __init__(self, name: str, params: Mapping[str, Any]) -> None:
        self.name = name
        unknown = [key for key in params if key not in self.params_accepted]
        if unknown:
            raise self.invalid(
                f"unknown param{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(self.params_accepted) or '(none)'}"
            )

    # ---- helpers for subclasses ------------------------------------------------------------

    def invalid(self, reason: str) -> InvalidInputError:
        """An InvalidInputError that names this metric."""
        return InvalidInputError(f"Metric {self.name!r} ({self.type}): {reason}.")

    def template_param(self, params: Mapping[str, Any], key: str, default: str | None = None) -> str:
        """A required (or defaulted) template string param, syntax-checked now."""
        value = params.get(key, default)
        if not isinstance(value, str):
            raise self.invalid(f"params.{key} must be a template string, got {type(value).__name__}")
        check_templates(value)
        return value

    @staticmethod
    def context(item: Mapping[str, Any], output: SampleOutput) -> dict[str, Any]:
        """The template context of one sample (item, flat fields, sample, output_text)."""
        return build_context(item, output.text, output.response, with_sample=True)

    @staticmethod
    def text(template: str, context: Mapping[str, Any]) -> str:
        return render_text(template, context)

    # ---- the metric ------------------------------------------------------------------------

    async def score(self, item: Mapping[str, Any], output: SampleOutput) -> Scores:
        """Score one sample: score name to value, ``None`` where it could not be computed (NaN)."""
        raise NotImplementedError

    def corpus_scores(self, samples: Sequence[tuple[Mapping[str, Any], SampleOutput]]) -> Scores:
        """Scores computed over all ``(item, output)`` samples together; none by default."""
        return type(self).pooled_corpus_scores([(self, samples)])

    @classmethod
    def pooled_corpus_scores(
        cls, parts: Sequence[tuple[NemoMetric, Sequence[tuple[Mapping[str, Any], SampleOutput]]]]
    ) -> Scores:
        """Corpus scores over the samples of several tasks, each part scored with its own metric's
        settings (a group's corpus BLEU); none by default."""
        return {}

    @property
    def corpus_score_names(self) -> tuple[str, ...]:
        """The names :meth:`corpus_scores` reports (they have no per-sample values)."""
        return ()
