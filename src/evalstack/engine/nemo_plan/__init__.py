"""NeMo Evaluator v1 configs and targets, compiled into the engine's :class:`EvalPlan`.

Modules: ``config`` (the config and target shapes and their validation), ``sources`` (where rows
come from), ``compile`` (custom configs; academic types go to ``engine.benchmarks``), ``results``
(the results object from the samples).

Config types: ``custom`` (tasks of type ``completion``, ``chat-completion`` and ``data``) and the
academic types of :mod:`evalstack.engine.benchmarks` (``mmlu``, ``gsm8k``...), registered in
:data:`CONFIG_TYPES`; any other type is rejected with the list of supported ones.

Target types: ``model`` (an ``api_endpoint`` object, or a name the registry resolves), ``rows`` (inline
rows), ``dataset`` (a Dataset object, or a dataset registered in evalstack), ``cached_outputs``
(``{files_url}``: rows that already hold the outputs). A task with its own ``dataset`` reads it;
tasks without one read the target's rows. ``data`` tasks never call a model; ``completion`` and
``chat-completion`` tasks call the target model, or read their outputs from the rows with a
``cached_outputs`` target.

Inference parameters, lowest to highest precedence: config ``params``, task ``params``, extra keys
of the task's template (``max_tokens``, ``tools``, ``tool_choice``...). ``max_tokens``,
``temperature``, ``top_p`` and ``stop`` become request fields; from ``extra``, the sampling fields
``top_k``, ``min_p``, ``seed``, ``frequency_penalty``, ``presence_penalty``, ``repetition_penalty``,
``logprobs``, ``top_logprobs`` and ``n`` are sent too, ``use_greedy: true`` sends ``temperature: 0``,
``hf_token`` authenticates ``hf://`` downloads, and other keys (harness settings) are ignored.
``parallelism``, ``max_retries`` and ``request_timeout`` apply to the whole job (config params first,
else the largest task value). The number of rows is the smallest of ``dataset.limit`` and
``limit_samples`` (task, else config).

Results (``summarize``): ``{"tasks": {task: {"metrics": {metric: {"scores": {score: {"value",
"stats"}}}}, "data": {"samples", "samples_failed"}}}, "groups": {group: {"metrics": ...,
"groups": ...}}}``. ``value`` is the mean and ``stats`` the ScoreStats of the per-sample values;
corpus BLEU (``corpus``) is computed over all samples and has a value only. Samples that failed
(the model endpoint failed after its retries, a template did not render, a metric could not run)
have no scores: they are left out of every statistic and counted in the task's
``data.samples_failed``; ``data.samples`` counts all recorded samples. A score that could not be
computed for a sample that did not fail (an unparsable judge answer) is a NaN, counted in
``nan_count``. A group pools the samples of its ``tasks`` and of its nested ``groups`` (all tasks
when it names neither) for every metric name they share; its ``metrics`` keys, when given, pick
which metric names to report.
"""

from evalstack.engine.nemo_plan.compile import asks_for_lm_eval, compile_nemo_plan
from evalstack.engine.nemo_plan.config import (
    CONFIG_TYPES,
    ENTITY_FIELDS,
    TARGET_TYPES,
    TASK_TYPES,
    NemoConfig,
    NemoDataset,
    NemoParams,
    NemoTarget,
    NemoTaskParams,
    parse_config,
    parse_target,
)
from evalstack.engine.nemo_plan.results import summarize_results
from evalstack.engine.nemo_plan.sources import check_files_url, read_output

__all__ = [
    "CONFIG_TYPES",
    "ENTITY_FIELDS",
    "TARGET_TYPES",
    "TASK_TYPES",
    "NemoConfig",
    "NemoDataset",
    "NemoParams",
    "NemoTarget",
    "NemoTaskParams",
    "asks_for_lm_eval",
    "check_files_url",
    "compile_nemo_plan",
    "parse_config",
    "parse_target",
    "read_output",
    "summarize_results",
]
