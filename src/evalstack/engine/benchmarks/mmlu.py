"""MMLU: 57 subjects, 4-way multiple choice (Hendrycks et al., 2021), as lm-evaluation-harness's ``mmlu``.

Prompt: ``The following are multiple choice questions (with answers) about <subject>.\\n\\n`` then
``<question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:``; choices `` A``..`` D``. 0-shot by default
(lm-eval's default; the paper used 5-shot: ``num_fewshot: 5``), examples from the ``dev`` split,
or, where the data has none, from the same subject's test questions without the item itself.
One task per subject (``mmlu_<subject>``); groups ``mmlu``, ``mmlu_stem``, ``mmlu_humanities``,
``mmlu_social_sciences``, ``mmlu_other``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evalstack.engine.benchmarks.common import DataSource
from evalstack.engine.benchmarks.extract import letters_for
from evalstack.engine.benchmarks.multiple_choice import McSpec, answer_index

MMLU_SUBJECTS: dict[str, str] = {
    "abstract_algebra": "stem", "anatomy": "stem", "astronomy": "stem", "business_ethics": "other",
    "clinical_knowledge": "other", "college_biology": "stem", "college_chemistry": "stem",
    "college_computer_science": "stem", "college_mathematics": "stem", "college_medicine": "other",
    "college_physics": "stem", "computer_security": "stem", "conceptual_physics": "stem",
    "econometrics": "social_sciences", "electrical_engineering": "stem", "elementary_mathematics": "stem",
    "formal_logic": "humanities", "global_facts": "other", "high_school_biology": "stem",
    "high_school_chemistry": "stem", "high_school_computer_science": "stem",
    "high_school_european_history": "humanities", "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences", "high_school_macroeconomics": "social_sciences",
    "high_school_mathematics": "stem", "high_school_microeconomics": "social_sciences",
    "high_school_physics": "stem", "high_school_psychology": "social_sciences",
    "high_school_statistics": "stem", "high_school_us_history": "humanities",
    "high_school_world_history": "humanities", "human_aging": "other", "human_sexuality": "social_sciences",
    "international_law": "humanities", "jurisprudence": "humanities", "logical_fallacies": "humanities",
    "machine_learning": "stem", "management": "other", "marketing": "other", "medical_genetics": "other",
    "miscellaneous": "other", "moral_disputes": "humanities", "moral_scenarios": "humanities",
    "nutrition": "other", "philosophy": "humanities", "prehistory": "humanities",
    "professional_accounting": "other", "professional_law": "humanities", "professional_medicine": "other",
    "professional_psychology": "social_sciences", "public_relations": "social_sciences",
    "security_studies": "social_sciences", "sociology": "social_sciences",
    "us_foreign_policy": "social_sciences",
    "virology": "other", "world_religions": "humanities",
}  # fmt: skip
"""The 57 MMLU subjects and their category (the four categories of the MMLU paper, as lm-eval groups them)."""


def _mmlu_row(row: Mapping[str, Any], position: int) -> dict[str, Any]:
    choices = [str(c) for c in row["choices"]]
    subject = str(row["subject"]).strip().replace(" ", "_")
    return {
        "id": str(row.get("id") or f"{subject}-{position}"),
        "subject": subject,
        "question": str(row["question"]),
        "choices": choices,
        "answer": answer_index(row["answer"], len(choices)),
    }


def _mmlu_body(item: Mapping[str, Any]) -> str:
    letters = letters_for(len(item["choices"]))
    options = "\n".join(
        f"{letter}. {str(c).strip()}" for letter, c in zip(letters, item["choices"], strict=True)
    )
    return f"{str(item['question']).strip()}\n{options}\nAnswer:"


MMLU = McSpec(
    name="mmlu",
    summary="MMLU: 57 subjects, 4-way multiple choice (Hendrycks et al., 2021)",
    test=DataSource("mmlu/test.jsonl", "hf://datasets/cais/mmlu/all?split=test"),
    fewshot=DataSource("mmlu/dev.jsonl", "hf://datasets/cais/mmlu/all?split=dev"),
    normalize=_mmlu_row,
    description=lambda item: (
        "The following are multiple choice questions (with answers) about "
        f"{str(item['subject']).replace('_', ' ')}.\n\n"
    ),
    ll_context=_mmlu_body,
    ll_continuation=lambda item, i: " " + letters_for(len(item["choices"]))[i],
    gen_stem=lambda item: str(item["question"]).strip(),
    subjects=MMLU_SUBJECTS,
)
