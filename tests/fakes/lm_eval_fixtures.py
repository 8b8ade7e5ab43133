"""What the lm-eval tests share: a tiny local tokenizer, override task YAMLs on local data, answers.

The Hugging Face Hub is out of reach, so the tokenizer is a byte-level BPE trained here on a few
sentences (lossless: decode(encode(text)) == text) and saved as a transformers tokenizer folder.
The task YAMLs go in an include folder: each ``include:``s lm-eval's built-in task and switches it to
``dataset_path: json`` with local ``data_files`` (from ``../shared/data``), as a user would offline;
they are written by the bench scripts' writer (``bench/_common.py``), so the gsm8k the bench times is
the gsm8k these tests check.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lm_eval
from bench._common import write_gsm8k_override, write_task_override

from evalstack.store.records import SampleRecord

BUILTIN_TASKS = Path(lm_eval.__file__).parent / "tasks"
MMLU_SUBJECTS = {"anatomy": 12, "astronomy": 7, "college_physics": 5}
"""The subjects of the local MMLU group and how many questions each keeps (unequal: weighting shows)."""


def build_tokenizer(folder: Path, corpus: list[str]) -> Path:
    """A byte-level BPE tokenizer trained on ``corpus``, saved where ``AutoTokenizer`` can load it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(str(folder))
    return folder


def gsm8k_answerer(data: Path) -> Callable[[str], str]:
    """Deterministic replies to GSM8K prompts: by the question's hash, right with ``#### N``, right but
    loose (only the flexible extraction reads it), wrong, or without a number."""
    gold: dict[str, str] = {}
    for line in (data / "gsm8k/test.jsonl").read_text().split("\n"):
        if line.strip():
            row = json.loads(line)
            gold[row["question"].strip()] = row["answer"].rsplit("#### ", 1)[-1].strip()

    def answer(prompt: str) -> str:
        question = prompt.rsplit("Question:", 1)[-1].split("Answer:", 1)[0].strip()
        digest = int(hashlib.sha256(question.encode()).hexdigest()[:8], 16)
        right = gold.get(question, "7")
        style = digest % 4
        if style == 0:
            return f" Adding it up gives {right}.\n#### {right}\n\nQuestion: next"
        if style == 1:
            return f" So the total is {right} in the end."
        if style == 2:
            return " It is 18.\n#### 18"
        return " I cannot tell."

    return answer


def build_datasets_cache(hf_home: Path, repo_id: str, config: str, splits: dict[str, Path]) -> Path:
    """The Hugging Face datasets cache that ``load_dataset(repo_id, config)`` leaves after one online run.

    The splits (JSON lines files) are prepared by the ``datasets`` library's own builder into
    ``<HF_HOME>/datasets/<org>___<name>/<config>/0.0.0/<commit>/`` (Arrow files and dataset_info.json),
    the folder ``load_dataset`` fills from the Hub and reads back with ``HF_DATASETS_OFFLINE=1``.
    """
    import shutil

    from datasets.packaged_modules.json.json import Json

    organisation, name = repo_id.split("/")
    commit = hashlib.sha1(repo_id.encode()).hexdigest()  # a Hub commit id stands here
    scratch = hf_home / "scratch"
    builder = Json(
        cache_dir=str(scratch),
        dataset_name=name,
        config_name=config,
        hash=commit,
        data_files={split: str(path) for split, path in splits.items()},
    )
    builder.download_and_prepare()
    target = hf_home / "datasets" / f"{organisation}___{name}" / config / "0.0.0" / commit
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(builder.cache_dir, target)
    shutil.rmtree(scratch)
    return target


def write_wikitext(folder: Path, pages: list[str]) -> str:
    """A ``wikitext`` override on local ``pages`` (a JSON lines file of ``{"page": ...}``); its task name."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "wikitext_pages.jsonl"
    data.write_text("".join(json.dumps({"page": page}) + "\n" for page in pages))
    task = {
        "include": str(BUILTIN_TASKS / "wikitext" / "wikitext.yaml"),
        "task": "local_wikitext",
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "training_split": None,
        "validation_split": None,
    }
    (folder / "local_wikitext.yaml").write_text(json.dumps(task))
    return "local_wikitext"


def write_humaneval(folder: Path, data: Path) -> str:
    """A ``humaneval`` override (lm-eval's own YAML, ``unsafe_code: true``) on the local HumanEval file."""
    folder.mkdir(parents=True, exist_ok=True)
    task = {
        "include": str(BUILTIN_TASKS / "humaneval" / "humaneval.yaml"),
        "task": "local_humaneval",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data / "humaneval/HumanEval.jsonl.gz")}},
    }
    (folder / "local_humaneval.yaml").write_text(json.dumps(task))
    return "local_humaneval"


def write_tasks(folder: Path, data: Path) -> Path:
    """Override YAMLs for gsm8k, gsm8k_chat, arc_easy, hellaswag and an MMLU subset group in ``folder``."""
    write_gsm8k_override(folder, data, BUILTIN_TASKS)
    write_gsm8k_override(folder, data, BUILTIN_TASKS, task="gsm8k_chat", tag=[])
    write_task_override(
        folder,
        "arc_easy",
        BUILTIN_TASKS / "arc" / "arc_easy.yaml",
        {"test": str(data / "arc/arc_easy_test.jsonl")},
        tag=[],
        training_split=None,
        validation_split=None,
        doc_to_target="{{['A', 'B', 'C', 'D', 'E'].index(answer)}}",
        doc_to_choice="{{choices}}",
    )
    write_task_override(
        folder,
        "hellaswag",
        BUILTIN_TASKS / "hellaswag" / "hellaswag.yaml",
        {"validation": str(data / "hellaswag/val.jsonl")},
        tag=[],
        training_split=None,
        process_docs=None,
        doc_to_text="{{ctx}}",
        doc_to_choice="{{endings}}",
        doc_to_target="{{label}}",
    )
    text = (data / "mmlu/test.jsonl").read_text()
    rows = [json.loads(line) for line in text.split("\n") if line.strip()]
    names = []
    for subject, count in MMLU_SUBJECTS.items():
        subject_file = folder / f"mmlu_{subject}.jsonl"
        kept = [r for r in rows if r["subject"] == subject][:count]
        subject_file.write_text(
            "".join(json.dumps({**r, "answer": "ABCD".index(r["answer"])}) + "\n" for r in kept)
        )
        name = f"local_mmlu_{subject}"
        write_task_override(
            folder,
            name,
            BUILTIN_TASKS / "mmlu" / "default" / f"mmlu_{subject}.yaml",
            {"test": str(subject_file)},
            tag=[],
            fewshot_split=None,
        )
        names.append(name)
    group = {
        "group": "local_mmlu",
        "task": names,
        "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
        "metadata": {"version": 2},
    }
    (folder / "local_mmlu.yaml").write_text(json.dumps(group))
    return folder


def run_ours(config: dict[str, Any], base_url: str) -> tuple[dict[str, list[SampleRecord]], dict[str, Any]]:
    """An lm-eval config compiled and run by evalstack's engine against ``base_url`` (model "fake"),
    nothing stored: the records by task, and the plan's summary of them."""
    from evalstack.config import Settings
    from evalstack.engine.lm_eval import compile_lm_eval_plan
    from evalstack.engine.runner import run_plan
    from evalstack.inference.base import ModelEndpoint
    from evalstack.inference.clients import ModelClientPool

    async def run() -> tuple[dict[str, list[SampleRecord]], dict[str, Any]]:
        pool = ModelClientPool()
        endpoint = ModelEndpoint(kind="openai", model="fake", base_url=base_url)
        plan = await compile_lm_eval_plan(config, endpoint, settings=Settings(), clients=pool)
        records: dict[str, list[SampleRecord]] = {}

        async def sink(sample: SampleRecord) -> None:
            records.setdefault(sample.task, []).append(sample)

        try:
            await run_plan(plan, pool, sink=sink)
        finally:
            await pool.aclose()
        return records, plan.summarize(records)

    return asyncio.run(run())
