"""Any lm-evaluation-harness task or group on our engine, per sample identical to lm-eval.

lm-eval (pinned in the ``academic`` extra) is used as a library for what a task *is*: its
TaskManager loads tasks and groups by name (plus ``params.extra.include_path``), its task objects
render prompts and few-shot examples, filter responses and score documents, its API model classes
tokenise and format requests, and its aggregation summarises tasks and groups. Our engine does the
rest: HTTP client, concurrency, retries, per-sample store, resume, statistics.

- ``tasks``: load and configure tasks as lm-eval's evaluator does, build their requests once.
- ``model``: lm-eval's ``local-completions`` / ``local-chat-completions`` request formats.
- ``unsafe``: the scoring of tasks marked ``unsafe_code``, in our sandbox.
- ``options``: NeMo-style ``params`` mapped onto lm-eval's settings.
- ``plan``: the EvalPlan, per-document scoring and the results object.
- ``catalog``: what lm-eval can run, for ``evalstack benchmarks``.
"""

from evalstack.engine.lm_eval.plan import LM_EVAL_TYPE, compile_lm_eval_plan, score_name, summarize_lm_eval

__all__ = ["LM_EVAL_TYPE", "compile_lm_eval_plan", "is_lm_eval_config", "score_name", "summarize_lm_eval"]


def is_lm_eval_config(config_type: str, include_path: str | None = None) -> bool:
    """Whether a config ``type`` asks for lm-eval: ``lm-eval`` itself, or an lm-eval task or group name.

    Callers check the native types first; the native benchmarks keep their own implementations.
    """
    if not isinstance(config_type, str) or not config_type.strip():
        return False
    if config_type.strip() == LM_EVAL_TYPE:
        return True
    from evalstack.engine.lm_eval.tasks import known_name

    try:
        return known_name(config_type.strip(), include_path)
    except Exception:  # an unreadable include path is reported when the plan compiles
        return False
