"""evalstack against lm-evaluation-harness on the same model server: MMLU and GSM8K, sample by sample.

    python bench/compare_lm_eval.py [--mmlu-per-subject 5] [--gsm8k 300] [--concurrency 16]
                                    [--data DIR] [--stub PATH] [--lm-eval PATH] [--keep DIR]

The model is the deterministic stand-in server (``openai_stub.py``; ``--stub`` or ``EVALSTACK_STUB``
name it, default ``../shared/tools/openai_stub.py``). Its reply depends only on the last user message,
so the same prompt gets the same reply from both harnesses, and any difference in the scores comes
from the prompt, the rows or the answer extraction.

- MMLU, chat endpoint, 0-shot, generated letter, the stub in ``--answer hash`` mode (one letter A-D),
  then in ``--answer "fixed:..."`` mode (a phrased reply, "The answer is (B).", which only a flexible
  extraction reads); the first ``--mmlu-per-subject`` questions of each of the 57 subjects.
- GSM8K, chat endpoint, 5-shot (the few-shot examples as earlier turns), the first 5 train examples,
  strict (``#### N``) and flexible (last number) extraction, the stub in ``--answer number`` mode
  ("The answer is N."); the first ``--gsm8k`` test questions.

lm-eval (``lm_eval`` of the lm-eval package, run as a subprocess with ``local-chat-completions``,
``--apply_chat_template --fewshot_as_multiturn --log_samples``) reads the same local files through
custom task YAMLs written here (``dataset_path: json`` + ``data_files``), with
``HF_DATASETS_OFFLINE=1``: nothing is downloaded. Its MMLU task reproduces evalstack's chat prompt
(subject line, question, lettered options, instruction); its GSM8K task is lm-eval's ``gsm8k`` with
the few-shot sampler set to ``first_n`` (evalstack's default; lm-eval's own ``gsm8k`` draws 5 train
examples at random, seed 1234). Extraction on lm-eval's side is lm-eval's own filters: ``regex``
(strict) and ``multi_choice_regex`` (flexible) for MMLU, the ``gsm8k`` task's two regexes for GSM8K.

evalstack runs through ``evalstack run <config.json> --model <stub>#<model> --output out.json`` with
``EVALSTACK_DATA_DIR`` pointing at the data folder; its per-sample records are read from the run's
database. Printed: accuracy per extraction for both, the number of samples compared, how many
prompts and replies are identical, how many per-sample scores and extracted answers agree, and
the samples where they do not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED, Stub, run_child, stub_path, table

DEFAULT_DATA = SHARED / "data"
MODEL = "stub-model"
PHRASED = "The answer is (B)."

# --------------------------------------------------------------------------------- lm-eval tasks

MMLU_YAML = """\
task: evalstack_mmlu
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data_file}
test_split: test
process_docs: !function utils.first_per_subject
output_type: generate_until
doc_to_text: "The following are multiple choice questions (with answers) about \
{{{{subject.replace('_', ' ')}}}}.\\n\\n{{{{question.strip()}}}}\\nA. {{{{choices[0].strip()}}}}\\n\
B. {{{{choices[1].strip()}}}}\\nC. {{{{choices[2].strip()}}}}\\nD. {{{{choices[3].strip()}}}}\\n\\n\
Answer with the letter of the correct option (A, B, C or D)."
doc_to_target: "{{{{answer}}}}"
num_fewshot: 0
generation_kwargs:
  until: []
  max_gen_toks: 256
  do_sample: false
  temperature: 0.0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
filter_list:
  - name: strict-match
    filter:
      - function: regex
        regex_pattern: "^\\\\s*\\\\(?([ABCD])\\\\)?(?:[.:)]|\\\\s*$)"
      - function: take_first
  - name: flexible-extract
    filter:
      - function: multi_choice_regex
        group_select: -1
        ignore_case: true
        ignore_punctuation: true
        regex_pattern: "(?i:answer|option|choice)(?: is)?:?\\\\s*\\\\(?([ABCD])\\\\)?|\
^\\\\s*\\\\(?([ABCD])\\\\)?[.:)]?\\\\s*$"
      - function: take_first
metadata:
  version: 1.0
"""

MMLU_UTILS = """\
PER_SUBJECT = {per_subject}


def first_per_subject(dataset):
    seen = {{}}

    def keep(doc):
        count = seen.get(doc["subject"], 0)
        seen[doc["subject"]] = count + 1
        return count < PER_SUBJECT

    return dataset.filter(keep)
"""

GSM8K_YAML = """\
task: evalstack_gsm8k
dataset_path: json
dataset_kwargs:
  data_files:
    test: {test_file}
    train: {train_file}
test_split: test
fewshot_split: train
fewshot_config:
  sampler: first_n
num_fewshot: 5
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until:
    - "Question:"
    - "</s>"
    - "<|im_end|>"
  do_sample: false
  temperature: 0.0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: false
    regexes_to_ignore:
      - ","
      - "\\\\$"
      - "(?s).*#### "
      - "\\\\.$"
filter_list:
  - name: strict-match
    filter:
      - function: regex
        regex_pattern: "#### (\\\\-?[0-9\\\\.\\\\,]+)"
      - function: take_first
  - name: flexible-extract
    filter:
      - function: regex
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{{2,}})|(-?[0-9]+)"
      - function: take_first
metadata:
  version: 3.0
"""


@dataclass
class Case:
    """One comparison: a benchmark, a stub answer mode, both harnesses' settings."""

    label: str
    lm_task: str
    stub_answer: str
    config: dict[str, Any]
    lm_limit: int | None
    key: str  # how a sample is matched: "id" (the row's id) or "index" (its position)
    filters: Sequence[str] = ("strict-match", "flexible-extract")
    notes: list[str] = field(default_factory=list)


def write_tasks(folder: Path, data: Path, per_subject: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evalstack_mmlu.yaml").write_text(
        MMLU_YAML.format(data_file=json.dumps(str(data / "mmlu" / "test.jsonl"))), encoding="utf-8"
    )
    (folder / "utils.py").write_text(MMLU_UTILS.format(per_subject=per_subject), encoding="utf-8")
    (folder / "evalstack_gsm8k.yaml").write_text(
        GSM8K_YAML.format(
            test_file=json.dumps(str(data / "gsm8k" / "test.jsonl")),
            train_file=json.dumps(str(data / "gsm8k" / "train_first500.jsonl")),
        ),
        encoding="utf-8",
    )


# ------------------------------------------------------------------------------------- running


def run_lm_eval(
    case: Case, stub: Stub, lm_eval: str, tasks_dir: Path, work: Path, concurrency: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run lm-eval on ``case``; its aggregated results and its logged samples."""
    out = work / f"lm-eval-{case.label}"
    cmd = [
        lm_eval,
        "--model", "local-chat-completions",
        "--model_args",
        f"base_url={stub.base_url}/chat/completions,model={MODEL},num_concurrent={concurrency},"
        "max_retries=3,tokenized_requests=False",
        "--tasks", case.lm_task,
        "--include_path", str(tasks_dir),
        "--apply_chat_template",
        "--fewshot_as_multiturn",
        "--log_samples",
        "--output_path", str(out),
        "--seed", "1234",
    ]  # fmt: skip
    if case.lm_limit is not None:
        cmd += ["--limit", str(case.lm_limit)]
    env = {
        **os.environ,
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(work / "hf-datasets"),
        "HF_HOME": str(work / "hf-home"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    done = run_child(cmd, env=env, cwd=work, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"lm_eval failed ({done.returncode}):\n{done.stderr[-4000:]}")
    results_files = sorted(out.rglob("results_*.json"))
    samples_files = sorted(out.rglob(f"samples_{case.lm_task}_*.jsonl"))
    if not results_files or not samples_files:
        raise SystemExit(f"lm_eval wrote no results or samples under {out}")
    results = json.loads(results_files[-1].read_text(encoding="utf-8"))
    samples = [
        json.loads(line) for line in samples_files[-1].read_text(encoding="utf-8").splitlines() if line
    ]
    print(f"  lm-eval:   {done.wall:6.1f} s, {len(samples)} logged samples")
    return results, samples


def run_evalstack(case: Case, stub: Stub, data: Path, work: Path) -> tuple[dict[str, Any], list[Any]]:
    """Run ``evalstack run`` on ``case``; its output document and its per-sample records."""
    folder = work / f"evalstack-{case.label}"
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "config.json"
    config.write_text(json.dumps(case.config), encoding="utf-8")
    out = folder / "out.json"
    db = f"sqlite:///{folder / 'evalstack.db'}"
    evalstack = shutil.which("evalstack", path=str(Path(sys.executable).parent)) or "evalstack"
    cmd = [
        evalstack,
        "run",
        str(config),
        "--model",
        f"{stub.base_url}#{MODEL}",
        "--output",
        str(out),
        "--db",
        db,
    ]
    env = {
        **os.environ,
        "EVALSTACK_DATA_DIR": str(data),
        "EVALSTACK_DATA_HOME": str(folder / "home"),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "160",
    }
    env.pop("NVIDIA_EVALUATOR_URL", None)
    done = run_child(cmd, env=env, cwd=folder, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(
            f"evalstack run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    document = json.loads(out.read_text(encoding="utf-8"))
    samples = asyncio.run(_read_samples(db, document["job_id"]))
    print(f"  evalstack: {done.wall:6.1f} s, {len(samples)} samples recorded")
    return document, samples


async def _read_samples(db_url: str, job_id: str) -> list[Any]:
    from evalstack.store.repository import Store

    store = Store(db_url)
    await store.open()
    try:
        return await store.read_samples(job_id)
    finally:
        await store.close()


async def _our_prompts(
    config: Mapping[str, Any], base_url: str, data: Path
) -> dict[str, list[dict[str, Any]]]:
    """evalstack's request messages per sample key, built by the compiled plan (no model call)."""
    from evalstack.config import Settings
    from evalstack.engine.benchmarks import compile_academic_plan
    from evalstack.inference.base import ModelEndpoint

    os.environ["EVALSTACK_DATA_DIR"] = str(data)
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(data_dir=Path(home), embedded_model=False, data_roots=[Path(home)])
        endpoint = ModelEndpoint(kind="openai", model=MODEL, base_url=base_url)
        plan = await compile_academic_plan(dict(config), endpoint, settings=settings, clients=None)
        prompts: dict[str, list[dict[str, Any]]] = {}
        for task in plan.tasks:
            assert task.build_request is not None
            for item in await task.rows():
                prompts[str(item["id"])] = list(task.build_request(item).messages or ())
        return prompts


# ----------------------------------------------------------------------------------- comparing


def _lm_messages(sample: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The chat messages lm-eval sent for one logged sample."""
    argument = sample["arguments"]
    first = argument.get("gen_args_0", argument) if isinstance(argument, Mapping) else argument[0]
    text = first.get("arg_0") if isinstance(first, Mapping) else first[0]
    if isinstance(text, list):
        text = text[0]
    messages: list[dict[str, Any]] = json.loads(text) if isinstance(text, str) else list(text or ())
    return messages


def _lm_reply(sample: Mapping[str, Any]) -> str:
    resps = sample["resps"]
    while isinstance(resps, list):
        resps = resps[0]
    return str(resps)


def _lm_filtered(sample: Mapping[str, Any]) -> str:
    value = sample["filtered_resps"]
    while isinstance(value, list):
        value = value[0]
    return str(value)


def _our_extracted(case: Case, sample: Any, flt: str) -> str:
    """evalstack's extracted answer for one sample (re-run through its extractors)."""
    from evalstack.engine.benchmarks.extract import (
        extract_letter_flexible,
        extract_letter_strict,
        extract_number_flexible,
        extract_number_strict,
        normalize_number,
    )

    text = sample.output_text
    if case.lm_task == "evalstack_gsm8k":
        raw = extract_number_strict(text) if flt == "strict-match" else extract_number_flexible(text)
        return str(normalize_number(raw))
    choices = sample.item["choices"]
    letter = (
        extract_letter_strict(text, "ABCD")
        if flt == "strict-match"
        else extract_letter_flexible(text, "ABCD", choices)
    )
    return str(letter)


def _lm_normalized(case: Case, value: str) -> str:
    if case.lm_task == "evalstack_gsm8k":
        from evalstack.engine.benchmarks.extract import normalize_number

        return str(normalize_number(value)) if value != "[invalid]" else "None"
    letter = value.strip().strip("()")  # multi_choice_regex's fallbacks answer "(B)"
    return letter if letter in ("A", "B", "C", "D") else "None"


def compare(
    case: Case,
    lm_results: Mapping[str, Any],
    lm_samples: Sequence[Mapping[str, Any]],
    document: Mapping[str, Any],
    our_samples: Sequence[Any],
    our_prompts: Mapping[str, list[dict[str, Any]]],
) -> list[list[Any]]:
    """Rows of the summary table for one case; prints the disagreements."""
    ours = {str(s.item["id"]): s for s in our_samples}
    result = document["result"]
    rows: list[list[Any]] = []
    lm_block = lm_results["results"][case.lm_task]
    for flt in case.filters:
        score_name = f"exact_match__{flt}"
        if "mmlu" in case.lm_task:
            our_value = result["groups"]["mmlu"]["metrics"][score_name]["scores"][score_name]["value"]
        else:
            our_value = result["tasks"]["gsm8k"]["metrics"][score_name]["scores"][score_name]["value"]
        lm_value = lm_block[f"exact_match,{flt}"]
        by_key = {}
        for sample in lm_samples:
            if sample.get("filter", flt) != flt:
                continue
            key = str(sample["doc"]["id"]) if case.key == "id" else str(sample["doc_id"])
            by_key[key] = sample
        common = sorted(set(by_key) & set(ours))
        same_prompt = same_last = same_reply = same_score = same_answer = 0
        differences: list[str] = []
        for key in common:
            lm, our = by_key[key], ours[key]
            lm_messages = _lm_messages(lm)
            our_messages = our_prompts.get(key, [])
            same_prompt += lm_messages == our_messages
            same_last += bool(lm_messages and our_messages) and lm_messages[-1] == our_messages[-1]
            same_reply += _lm_reply(lm) == (our.output_text or "")
            our_score = float((our.scores.get("exact_match") or {}).get(score_name) or 0.0)
            lm_score = float(lm["exact_match"])
            same_score += our_score == lm_score
            lm_answer = _lm_normalized(case, _lm_filtered(lm))
            our_answer = _our_extracted(case, our, flt)
            same_answer += lm_answer == our_answer
            if our_score != lm_score or lm_answer != our_answer:
                differences.append(
                    f"    {key}: reply {(our.output_text or '')[:60]!r}; evalstack {our_answer} "
                    f"({our_score:g}), lm-eval {lm_answer} ({lm_score:g})"
                )
        rows.append(
            [
                case.label, flt, len(ours), len(by_key), len(common), our_value, lm_value,
                our_value - lm_value, f"{same_prompt}/{len(common)}", f"{same_last}/{len(common)}",
                f"{same_reply}/{len(common)}", f"{same_answer}/{len(common)}", f"{same_score}/{len(common)}",
            ]
        )  # fmt: skip
        if differences:
            print(f"  {case.label} {flt}: {len(differences)} samples differ")
            for line in differences[:10]:
                print(line)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mmlu-per-subject", type=int, default=5, help="MMLU questions per subject (57 subjects)"
    )
    parser.add_argument("--gsm8k", type=int, default=300, help="GSM8K test questions")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the benchmark data folder")
    parser.add_argument("--stub", help="openai_stub.py (default ../shared/tools/openai_stub.py)")
    parser.add_argument("--lm-eval", help="the lm_eval command (default: the one next to this Python)")
    parser.add_argument("--keep", type=Path, help="keep the work files (task YAMLs, outputs) in this folder")
    args = parser.parse_args()

    data = args.data.resolve()
    for rel in ("mmlu/test.jsonl", "gsm8k/test.jsonl", "gsm8k/train_first500.jsonl"):
        if not (data / rel).is_file():
            raise SystemExit(f"{rel} not found under {data}; pass --data DIR (laid out as ../shared/data)")
    lm_eval = (
        args.lm_eval
        or shutil.which("lm_eval", path=str(Path(sys.executable).parent))
        or shutil.which("lm_eval")
    )
    if lm_eval is None:
        raise SystemExit("lm_eval not found; install lm-eval (pip install lm-eval) or pass --lm-eval PATH")
    script = stub_path(args.stub)
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="evalstack-vs-lm-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    tasks_dir = work / "tasks"
    write_tasks(tasks_dir, data, args.mmlu_per_subject)

    mmlu_config = {
        "type": "mmlu",
        "params": {"limit_samples": args.mmlu_per_subject, "parallelism": args.concurrency},
    }
    cases = [
        Case("mmlu-hash", "evalstack_mmlu", "hash", mmlu_config, None, "id"),
        Case("mmlu-phrased", "evalstack_mmlu", f"fixed:{PHRASED}", mmlu_config, None, "id"),
        Case(
            "gsm8k-number",
            "evalstack_gsm8k",
            "number",
            {"type": "gsm8k", "params": {"limit_samples": args.gsm8k, "parallelism": args.concurrency}},
            args.gsm8k,
            "index",
        ),
    ]
    rows: list[list[Any]] = []
    try:
        for case in cases:
            print(f"{case.label}: stub --answer {case.stub_answer!r}")
            with Stub(script, answer=case.stub_answer) as stub:
                lm_results, lm_samples = run_lm_eval(case, stub, lm_eval, tasks_dir, work, args.concurrency)
                document, our_samples = run_evalstack(case, stub, data, work)
                prompts = asyncio.run(_our_prompts(case.config, stub.base_url, data))
            rows.extend(compare(case, lm_results, lm_samples, document, our_samples, prompts))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    headers = [
        "case", "extraction", "n ours", "n lm-eval", "matched", "evalstack", "lm-eval", "diff",
        "same messages", "same last user msg", "same reply", "same extracted", "same score",
    ]  # fmt: skip
    print()
    print(table(headers, rows))
    print(
        textwrap.dedent(
            f"""
        MMLU: {args.mmlu_per_subject} questions x 57 subjects, chat, 0-shot; evalstack's figure is the micro
        average (group mmlu), lm-eval's the mean over the same questions. GSM8K: the first {args.gsm8k} test
        questions, chat, 5-shot (first 5 train examples as earlier turns)."""
        )
    )


if __name__ == "__main__":
    main()
