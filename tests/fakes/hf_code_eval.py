"""A stand-in for the Hugging Face Hub's ``code_eval`` metric script, for the offline evaluate cache.

lm-eval's humaneval and mbpp load ``evaluate.load("code_eval")``; a user who ran them online once has
that script in their Hugging Face modules cache, but the Hub is out of reach here. This module is
copied into a test's cache in the layout ``evaluate`` reads offline
(``evaluate_modules/metrics/evaluate-metric--code_eval/<hash>/code_eval.py``). Like the real metric it
refuses to run without ``HF_ALLOW_CODE_EVAL=1``, runs each candidate followed by its test in a forked
process with a timeout, and returns ``(pass_at_k, results)`` with the unbiased pass@k estimate.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import datasets
import evaluate
import numpy as np


def _run(program: str, outcome: Any) -> None:
    try:
        exec(program, {"__name__": "__candidate__"})
        outcome.put("passed")
    except BaseException as exc:
        outcome.put(f"failed: {type(exc).__name__}")


def check(program: str, timeout: float) -> str:
    context = multiprocessing.get_context("fork")
    outcome = context.SimpleQueue()
    process = context.Process(target=_run, args=(program, outcome))
    process.start()
    process.join(timeout)
    if process.is_alive():
        process.kill()
        process.join()
        return "timed out"
    return outcome.get() if not outcome.empty() else "failed: no result"


def estimate_pass_at_k(n: int, c: int, k: int) -> float:
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


class CodeEval(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="pass@k of code candidates (test stand-in)",
            citation="",
            inputs_description="predictions: candidates per problem; references: the tests",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Value("string"),
                }
            ),
        )

    def _compute(
        self,
        predictions: list[list[str]],
        references: list[str],
        k: list[int] | None = None,
        timeout: float = 3.0,
    ) -> tuple[dict[str, float], dict[int, list[tuple[int, str]]]]:
        k = k or [1]
        if os.getenv("HF_ALLOW_CODE_EVAL", "0") != "1":
            raise ValueError("set HF_ALLOW_CODE_EVAL=1 to let code_eval run untrusted code")
        results: dict[int, list[tuple[int, str]]] = {}
        for task_id, (candidates, test) in enumerate(zip(predictions, references, strict=True)):
            results[task_id] = [(i, check(c + "\n" + test, timeout)) for i, c in enumerate(candidates)]
        total = [len(r) for r in results.values()]
        correct = [sum(outcome == "passed" for _, outcome in r) for r in results.values()]
        pass_at_k = {
            f"pass@{kk}": float(
                np.mean([estimate_pass_at_k(n, c, kk) for n, c in zip(total, correct, strict=True)])
            )
            for kk in k
            if all(n >= kk for n in total)
        }
        return pass_at_k, results


def install(modules_cache: os.PathLike[str] | str) -> None:
    """Put this metric where ``evaluate`` looks for a cached ``code_eval`` (``HF_MODULES_CACHE``)."""
    from pathlib import Path

    root = Path(modules_cache) / "evaluate_modules"
    folder = root / "metrics" / "evaluate-metric--code_eval" / ("0" * 64)
    folder.mkdir(parents=True, exist_ok=True)
    for package in (root, root / "metrics", folder.parent, folder):
        (package / "__init__.py").touch()
    (folder / "code_eval.py").write_text(Path(__file__).read_text(encoding="utf-8"), encoding="utf-8")
