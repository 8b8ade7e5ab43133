"""The NeMo Evaluator metric types, registered by name, and :func:`nemo_metric` to build one from config.

==================  ====================================================================================
type                scores
==================  ====================================================================================
``string-check``    ``string-check``
``bleu``            ``sentence`` (per sample), ``corpus`` (over the task)
``rouge``           ``rouge_1_score``, ``rouge_2_score``, ``rouge_3_score``, ``rouge_L_score``
``f1``              ``f1_score``
``em``              ``em_score``
``number-check``    ``number-check``
``llm-judge``       one per key of ``params.scores``
``tool-calling``    ``function_name_accuracy``, ``function_name_and_args_accuracy``
==================  ====================================================================================

Type names are matched case-insensitively, with ``_`` read as ``-`` (``llm_judge`` works too).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from evalstack.engine.metrics.bleu import BleuMetric
from evalstack.engine.metrics.f1_em import ExactMatchMetric, F1Metric
from evalstack.engine.metrics.llm_judge import LLMJudgeMetric
from evalstack.engine.metrics.nemo_base import MetricDeps, NemoMetric
from evalstack.engine.metrics.number_check import NumberCheckMetric
from evalstack.engine.metrics.rouge import RougeMetric
from evalstack.engine.metrics.string_check import StringCheckMetric
from evalstack.engine.metrics.tool_calling import ToolCallingMetric
from evalstack.errors import InvalidInputError

MetricFactory = Callable[[str, Mapping[str, Any], MetricDeps], Awaitable[NemoMetric]]


def _plain(cls: type[NemoMetric]) -> MetricFactory:
    async def build(name: str, params: Mapping[str, Any], deps: MetricDeps) -> NemoMetric:
        return cls(name, params)

    return build


NEMO_METRIC_TYPES: dict[str, MetricFactory] = {
    "string-check": _plain(StringCheckMetric),
    "bleu": _plain(BleuMetric),
    "rouge": _plain(RougeMetric),
    "f1": _plain(F1Metric),
    "em": _plain(ExactMatchMetric),
    "number-check": _plain(NumberCheckMetric),
    "llm-judge": LLMJudgeMetric.create,
    "tool-calling": _plain(ToolCallingMetric),
}


async def nemo_metric(name: str, spec: Any, deps: MetricDeps | None = None) -> NemoMetric:
    """Build the metric ``name`` from its config ``{"type": ..., "params": {...}}``.

    InvalidInputError names the metric and says what is wrong: an unknown type (listing the
    supported ones), missing or malformed params, a template with a syntax error.
    """
    if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
        raise InvalidInputError(
            f'Metric {name!r} must be an object {{"type": ..., "params": {{...}}}}; '
            f"supported types: {', '.join(NEMO_METRIC_TYPES)}."
        )
    metric_type = spec["type"].strip().lower().replace("_", "-")
    factory = NEMO_METRIC_TYPES.get(metric_type)
    if factory is None:
        raise InvalidInputError(
            f"Metric {name!r} has type {spec['type']!r}, which the local engine does not support; "
            f"supported types: {', '.join(NEMO_METRIC_TYPES)}."
        )
    params = spec.get("params") or {}
    if not isinstance(params, Mapping):
        raise InvalidInputError(f"Metric {name!r}: params must be an object, got {type(params).__name__}.")
    unknown = [key for key in spec if key not in ("type", "params")]
    if unknown:
        raise InvalidInputError(
            f"Metric {name!r}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            "a metric has type and params."
        )
    return await factory(name, params, deps or MetricDeps())
