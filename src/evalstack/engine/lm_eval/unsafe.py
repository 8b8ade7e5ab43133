"""lm-eval tasks marked ``unsafe_code`` (humaneval, mbpp): scoring runs model code, so it runs in our sandbox.

Such a task's ``process_results`` executes what the model wrote (through the Hugging Face ``code_eval``
metric). We never call it in the server process: each document's ``process_results`` runs in a
fresh fork of a :class:`~evalstack.engine.benchmarks.sandbox.SandboxWorker` (resource limits, no
network, a throwaway working directory, no writes outside it, no subprocesses), which loads the task
once. The worker sees the Hugging Face caches offline (``code_eval`` comes from the modules cache, as
for lm-eval run offline) and ``HF_ALLOW_CODE_EVAL=1``: the code may run because it runs there.
"""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Mapping
from typing import Any

from evalstack.engine.benchmarks.sandbox import SandboxWorker
from evalstack.errors import InvalidInputError

SCORING_TIMEOUT = 120.0
"""Seconds one document's scoring may take in the sandbox (``code_eval`` limits each program itself)."""

_TASK_DATA = ("dataset", "_instances", "_fewshot_docs", "sampler", "task_docs", "fewshot_rnd")
"""What a task object holds that scoring does not need (the data, built requests, few-shot state)."""


def without_data(task: Any) -> Any:
    """A shallow copy of ``task`` without what :data:`_TASK_DATA` names: what scoring and aggregation need."""
    slim = copy.copy(task)
    for attribute in _TASK_DATA:
        if hasattr(slim, attribute):
            setattr(slim, attribute, None)
    return slim


def is_unsafe(task: Any) -> bool:
    """Whether lm-eval marks ``task`` as running model-written code when it scores."""
    return bool(getattr(task, "UNSAFE_CODE", False) or task.get_config("unsafe_code"))


def allow_code_eval_here() -> None:
    """Let ``code_eval`` load in this process: lm-eval's humaneval runs a fixed self-check at import.

    Model-written code never reaches ``code_eval`` here; documents are scored in the sandbox.
    """
    os.environ.setdefault("HF_ALLOW_CODE_EVAL", "1")


def _hugging_face_env() -> dict[str, str]:
    """The Hugging Face caches this process uses, for the sandbox (whose HOME is its own folder)."""
    from huggingface_hub import constants

    env = {
        "HF_HOME": str(constants.HF_HOME),
        "HF_HUB_CACHE": str(constants.HF_HUB_CACHE),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_ALLOW_CODE_EVAL": "1",
        "HF_METRICS_CACHE": "metrics",  # relative: in the worker's own folder, where it may write
        "TOKENIZERS_PARALLELISM": "false",
    }
    modules = os.environ.get("HF_MODULES_CACHE")
    try:
        import evaluate.config

        modules = str(evaluate.config.HF_MODULES_CACHE)
    except ImportError:
        pass
    if modules:
        env["HF_MODULES_CACHE"] = modules
    if "HF_DATASETS_CACHE" in os.environ:
        env["HF_DATASETS_CACHE"] = os.environ["HF_DATASETS_CACHE"]
    return env


class SandboxedResults:
    """``task.process_results`` of an unsafe task, one document at a time in a sandbox worker."""

    def __init__(self, task: Any, *, timeout: float = SCORING_TIMEOUT) -> None:
        slim = without_data(task)
        env = _hugging_face_env()
        # a bound method of lm-eval's task class: the worker imports lm-eval, never evalstack
        self.worker = SandboxWorker(slim.process_results, timeout=timeout, env=env)
        self._turn = asyncio.Lock()

    async def __call__(self, doc: Mapping[str, Any], responses: list[Any]) -> dict[str, Any]:
        """The document's metrics; an ``InvalidInputError`` (that sample fails) when scoring did not end.

        One document at a time per task, waiting here rather than in a thread of the shared pool.
        """
        async with self._turn:
            answer = await asyncio.to_thread(self.worker.call, dict(doc), list(responses))
        if answer.status == "timeout":
            raise InvalidInputError(f"scoring in the sandbox {answer.message}; the sample is not scored")
        if answer.status != "ok" or not isinstance(answer.value, dict):
            raise InvalidInputError(f"scoring in the sandbox failed: {answer.message or answer.value!r}")
        return answer.value

    def close(self) -> None:
        self.worker.close()
