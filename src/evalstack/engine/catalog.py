"""What evalstack can run: native benchmarks and every lm-eval task, group and tag, with its output type.

A native type (``mmlu``, ``gsm8k``...) runs on its own implementation in ``engine/benchmarks``; any other
name lm-eval knows runs through ``engine/lm_eval`` (lm-eval's task definition, our engine). A NeMo config
``{"type": NAME}`` picks the path by that rule; ``{"type": "lm-eval", "tasks": ...}`` always takes lm-eval's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from evalstack.engine.benchmarks import ACADEMIC_TYPES

Path_ = Literal["native", "lm-eval"]

NATIVE_OUTPUT_TYPES = {
    "mmlu": "multiple_choice",
    "arc_challenge": "multiple_choice",
    "arc_easy": "multiple_choice",
    "hellaswag": "multiple_choice",
    "truthfulqa": "multiple_choice",
    "boolq": "multiple_choice",
}
"""Native benchmarks scored by log-likelihood on completions (a letter on chat); the rest generate."""


@dataclass(frozen=True)
class CatalogEntry:
    """One runnable name: ``path`` says which implementation runs it, ``kind`` what lm-eval calls it."""

    name: str
    path: Path_
    kind: str
    output_type: str | None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def native_entries() -> list[CatalogEntry]:
    return [
        CatalogEntry(
            name, "native", "benchmark", NATIVE_OUTPUT_TYPES.get(name, "generate_until"), bench.summary
        )
        for name, bench in ACADEMIC_TYPES.items()
    ]


def lm_eval_entries(include_path: str | None = None) -> list[CatalogEntry]:
    """Every lm-eval task, group and tag (indexing lm-eval's YAMLs takes seconds the first time)."""
    from evalstack.engine.lm_eval.tasks import task_manager

    out = []
    for name, entry in sorted(task_manager(include_path).task_index.items()):
        if name in ACADEMIC_TYPES:
            continue  # the native implementation runs it; {"type": "lm-eval", ...} reaches lm-eval's
        config = entry.cfg or {}
        kind = {"TASK": "task", "PY_TASK": "task", "GROUP": "group", "TAG": "tag"}.get(
            entry.kind.name, "task"
        )
        output_type = config.get("output_type") if kind == "task" else None
        out.append(CatalogEntry(name, "lm-eval", kind, output_type, str(config.get("task_alias") or "")))
    return out


def catalog(search: str | None = None, *, include_path: str | None = None) -> list[CatalogEntry]:
    """Native benchmarks, then lm-eval's names; ``search`` keeps names or descriptions containing it."""
    entries = native_entries() + lm_eval_entries(include_path)
    if search:
        word = search.strip().lower()
        entries = [e for e in entries if word in e.name.lower() or word in e.description.lower()]
    return entries
