"""NeMo-style ``params`` of an lm-eval config, mapped onto lm-eval's settings.

``limit_samples`` is lm-eval's ``--limit``; ``max_tokens``, ``temperature``, ``top_p`` and ``stop``
become ``--gen_kwargs`` (``max_gen_toks``, ``temperature``, ``top_p``, ``until``); ``parallelism``,
``max_retries`` and ``request_timeout`` are our engine's. ``extra`` takes ``num_fewshot``,
``fewshot_seed``, ``apply_chat_template``, ``fewshot_as_multiturn``, ``system_instruction``,
``tokenizer`` (a Hugging Face name or a local folder), ``include_path`` (a folder of task YAMLs;
``include_defaults: false`` indexes only that folder),
``endpoint_type`` (``chat`` or ``completions``; default completions, chat when
``apply_chat_template`` is set), ``max_length``, ``add_bos_token``, ``seed`` and ``eos_string``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evalstack.engine.benchmarks.common import endpoint_type_of, merge_param_layers
from evalstack.engine.lm_eval.model import EndpointKind, ModelSettings
from evalstack.engine.lm_eval.tasks import DEFAULT_FEWSHOT_SEED, TaskSettings
from evalstack.errors import InvalidInputError
from evalstack.inference.base import ModelEndpoint

PARAM_KEYS = (
    "parallelism", "limit_samples", "max_tokens", "temperature", "top_p", "stop",
    "max_retries", "request_timeout", "extra",
)  # fmt: skip
EXTRA_KEYS = (
    "num_fewshot", "fewshot_seed", "apply_chat_template", "fewshot_as_multiturn", "system_instruction",
    "tokenizer", "include_path", "include_defaults", "endpoint_type", "max_length", "add_bos_token", "seed",
    "eos_string",
)  # fmt: skip


@dataclass(frozen=True)
class LmEvalOptions:
    """One task entry's settings: how lm-eval configures it, the model arguments, our engine's knobs."""

    tasks: TaskSettings
    model: ModelSettings
    parallelism: int | None = None
    max_retries: int | None = None
    request_timeout: float | None = None


def _int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"params.{key} must be an integer of at least {minimum}, got {value!r}")
    return value


def _float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidInputError(f"params.{key} must be a number of at least 0, got {value!r}")
    return float(value)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"params.{key} must be true or false, got {value!r}")
    return value


def _endpoint_kind(endpoint: ModelEndpoint, requested: Any, chat_template: bool | None) -> EndpointKind:
    """From the URL's route or ``extra.endpoint_type``; else chat when the chat template is on, as lm-eval."""
    return endpoint_type_of(endpoint, requested, default="chat" if chat_template else "completion")


def parse_options(
    names: Sequence[str], endpoint: ModelEndpoint, layers: Sequence[Mapping[str, Any] | None]
) -> LmEvalOptions:
    """The settings of one entry of an lm-eval config (``layers``: config params, then task params)."""
    merged, extra = merge_param_layers(
        layers, PARAM_KEYS, extra_keys=EXTRA_KEYS, extra_owner=" for an lm-eval task"
    )
    chat_template = (
        _bool(extra["apply_chat_template"], "extra.apply_chat_template")
        if ("apply_chat_template" in extra)
        else None
    )
    kind = _endpoint_kind(endpoint, extra.get("endpoint_type"), chat_template)
    if kind == "chat" and chat_template is False:
        raise InvalidInputError(
            "a chat endpoint sends the prompt as messages, so params.extra.apply_chat_template cannot be "
            "false "
            "(lm-eval's local-chat-completions needs it too); use a completions endpoint for raw prompts"
        )
    gen_kwargs: dict[str, Any] = {}
    if "max_tokens" in merged:
        gen_kwargs["max_gen_toks"] = _int(merged["max_tokens"], "max_tokens", 1)
    for key in ("temperature", "top_p"):
        if key in merged:
            gen_kwargs[key] = _float(merged[key], key)
    if "stop" in merged:
        stop = merged["stop"]
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise InvalidInputError("params.stop must be a string or a list of strings")
        gen_kwargs["until"] = stops
    include_path = extra.get("include_path")
    tasks = TaskSettings(
        names=tuple(names),
        include_path=str(include_path) if include_path is not None else None,
        include_defaults=_bool(extra.get("include_defaults", True), "extra.include_defaults"),
        limit=_int(merged["limit_samples"], "limit_samples", 1) if "limit_samples" in merged else None,
        num_fewshot=_int(extra["num_fewshot"], "extra.num_fewshot", 0) if "num_fewshot" in extra else None,
        fewshot_seed=_int(extra.get("fewshot_seed", DEFAULT_FEWSHOT_SEED), "extra.fewshot_seed", 0),
        gen_kwargs=tuple(gen_kwargs.items()),
        apply_chat_template=kind == "chat" or bool(chat_template),
        fewshot_as_multiturn=_bool(extra.get("fewshot_as_multiturn", True), "extra.fewshot_as_multiturn"),
        system_instruction=str(extra["system_instruction"]) if "system_instruction" in extra else None,
    )
    tokenizer = extra.get("tokenizer")
    if kind == "completion" and tokenizer is None:
        tokenizer = endpoint.model or None  # lm-eval's default: the model's own name on the Hub
    model = ModelSettings(
        endpoint=kind,
        model=endpoint.model,
        tokenizer=str(tokenizer) if tokenizer is not None and kind == "completion" else None,
        max_length=_int(extra.get("max_length", 2048), "extra.max_length", 2),
        seed=_int(extra.get("seed", 1234), "extra.seed", 0),
        add_bos_token=_bool(extra.get("add_bos_token", False), "extra.add_bos_token"),
        eos_string=str(extra["eos_string"]) if "eos_string" in extra else None,
    )
    return LmEvalOptions(
        tasks=tasks,
        model=model,
        parallelism=_int(merged["parallelism"], "parallelism", 1) if "parallelism" in merged else None,
        max_retries=_int(merged["max_retries"], "max_retries", 0) if "max_retries" in merged else None,
        request_timeout=_float(merged["request_timeout"], "request_timeout")
        if "request_timeout" in merged
        else None,
    )
