"""lm-eval's own gsm8k task run by lm-eval and by evalstack's engine: wall time and identical scores.

    python bench/lm_eval_tasks.py [--rounds 3] [--parallelism 64] [--shots 0,5] [--limit N]
                                  [--data ../shared/data] [--stub PATH] [--cache bench/.peers]

Both harnesses run lm-eval 0.4.13's ``gsm8k`` task definition (prompt, few-shot sampling with seed
1234, the strict and flexible regex filters, ``exact_match``) on all 1,319 test documents, through an
include-path override YAML that points it at the local GSM8K files (``dataset_path: json``), on a
chat endpoint with the chat template and few-shot examples as turns, 0-shot and 5-shot.

- lm-eval: its ``lm_eval`` command with ``local-chat-completions``, ``num_concurrent`` = parallelism,
  in its own virtual environment (``bench/.peers/lm-eval``, set up once as ``bench/peers.py`` does).
- evalstack: ``evalstack run`` of a NeMo config ``{"type": "lm-eval", "tasks": {"gsm8k": ...}}`` with
  ``parallelism`` = parallelism (its per-sample records land in SQLite; resumable).

The model is the stand-in server (``openai_stub.py --answer number``, zero latency): "The answer is N."
with N from a hash of the prompt, so only the flexible extraction finds numbers and the two harnesses
see the same replies exactly when they send the same prompts. Runs alternate, ``--rounds`` each;
wall time is from spawn to exit, start-up included. Printed: every run, then per shot count the
medians, the speed-up (lm-eval median / evalstack median) and whether both scores are identical.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, SHARED, ChildRun, Stub, median, run_child, stub_path, table
from peers import LM_EVAL, ensure_venv

# The evalstack installed beside this interpreter (the project's venv), else the module.
_SCRIPT = Path(sys.executable).parent / "evalstack"
EVALSTACK = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "evalstack.cli"]
SCORES = ("exact_match,strict-match", "exact_match,flexible-extract")
MODEL = "stub-model"


def gsm8k_override(folder: Path, data: Path, lm_eval_tasks: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    task = {
        "include": str(lm_eval_tasks / "gsm8k" / "gsm8k.yaml"),
        "task": "gsm8k",
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {
            "data_files": {
                "test": str(data / "gsm8k/test.jsonl"),
                "train": str(data / "gsm8k/train_first500.jsonl"),
            }
        },
    }
    (folder / "gsm8k.yaml").write_text(json.dumps(task))
    return folder


def run_lm_eval(
    venv: Path, work: Path, stub: Stub, parallelism: int, shots: int, tag: str, limit: int | None
) -> ChildRun:
    model_args = (
        f"model={MODEL},base_url={stub.base_url}/chat/completions,num_concurrent={parallelism},max_retries=3"
    )
    cmd = [
        str(venv / "bin" / "lm_eval"),
        "--model", "local-chat-completions", "--model_args", model_args,
        "--tasks", "gsm8k", "--include_path", str(work / "tasks"),
        "--apply_chat_template", "--fewshot_as_multiturn", "--num_fewshot", str(shots),
        "--output_path", str(work / f"lm-eval-{tag}"),
    ]  # fmt: skip
    if limit:
        cmd += ["--limit", str(limit)]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(work / "hf-lm-eval"),
        "TQDM_MININTERVAL": "5",
    }
    return run_child(cmd, cwd=work, env=env)


def scores_lm_eval(work: Path, tag: str) -> dict[str, float] | None:
    found = sorted(glob.glob(str(work / f"lm-eval-{tag}" / "**" / "results_*.json"), recursive=True))
    if not found:
        return None
    results = json.loads(Path(found[-1]).read_text())["results"]["gsm8k"]
    return {key: float(results[key]) for key in SCORES}


def run_evalstack(
    work: Path, stub: Stub, parallelism: int, shots: int, tag: str, limit: int | None
) -> ChildRun:
    extra = {"include_path": str(work / "tasks"), "endpoint_type": "chat", "num_fewshot": shots}
    params: dict[str, Any] = {"parallelism": parallelism, "extra": extra}
    if limit:
        params["limit_samples"] = limit
    config = {"type": "lm-eval", "tasks": {"gsm8k": {"type": "gsm8k"}}, "params": params}
    (work / f"evalstack-{tag}.config.json").write_text(json.dumps(config))
    cmd = [
        *EVALSTACK, "run", f"evalstack-{tag}.config.json",
        "--model", f"{stub.base_url}#{MODEL}", "--output", f"evalstack-{tag}.json",
    ]  # fmt: skip
    env = {
        **os.environ,
        "EVALSTACK_DATA_HOME": str(work / f"home-{tag}"),
        "HF_HUB_OFFLINE": "1",
        "COLUMNS": "100",
    }
    env["HF_DATASETS_CACHE"] = str(work / "hf-evalstack")
    return run_child(cmd, cwd=work, env=env)


def scores_evalstack(work: Path, tag: str) -> dict[str, float] | None:
    path = work / f"evalstack-{tag}.json"
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())["result"]["lm_eval"]["results"]["gsm8k"]
    return {key: float(raw[key]) for key in SCORES}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=64)
    parser.add_argument("--shots", default="0,5")
    parser.add_argument("--limit", type=int, help="documents per run (default: all 1,319)")
    parser.add_argument("--data", default=str(SHARED / "data"))
    parser.add_argument("--stub", help="path of openai_stub.py (default ../shared/tools/openai_stub.py)")
    parser.add_argument("--cache", default=str(REPO / "bench" / ".peers"))
    args = parser.parse_args()

    cache = Path(args.cache).resolve()
    venv = ensure_venv(cache / "lm-eval", (LM_EVAL,))
    work = cache / "lm-eval-tasks-work"
    work.mkdir(parents=True, exist_ok=True)
    import lm_eval

    gsm8k_override(work / "tasks", Path(args.data).resolve(), Path(lm_eval.__file__).parent / "tasks")
    rows: list[list[Any]] = []
    summary: list[list[Any]] = []
    with Stub(stub_path(args.stub), answer="number") as stub:
        for shots in (int(s) for s in args.shots.split(",")):
            walls: dict[str, list[float]] = {"lm-eval": [], "evalstack": []}
            scores: dict[str, list[Any]] = {"lm-eval": [], "evalstack": []}
            for round_no in range(args.rounds):
                for name in ("lm-eval", "evalstack"):
                    tag = f"{shots}shot-{round_no}"
                    if name == "lm-eval":
                        run = run_lm_eval(venv, work, stub, args.parallelism, shots, tag, args.limit)
                        got = scores_lm_eval(work, tag)
                    else:
                        run = run_evalstack(work, stub, args.parallelism, shots, tag, args.limit)
                        got = scores_evalstack(work, tag)
                    if run.returncode != 0 or got is None:
                        print(
                            f"{name} {tag} failed ({run.returncode}):\n{run.stderr[-2000:]}", file=sys.stderr
                        )
                    walls[name].append(run.wall)
                    scores[name].append(got)
                    values = [got[k] if got else None for k in SCORES]
                    rows.append([name, shots, round_no, run.wall, run.peak_rss_mb, *values])
                    print(
                        table(
                            ["harness", "shots", "round", "wall s", "peak MB", "strict", "flexible"],
                            [rows[-1]],
                        ),
                        flush=True,
                    )
            lm, es = median(walls["lm-eval"]), median(walls["evalstack"])
            same = all(
                s == scores["lm-eval"][0] and s is not None for s in scores["lm-eval"] + scores["evalstack"]
            )
            summary.append([shots, lm, es, lm / es if es else float("nan"), "yes" if same else "NO"])
    print()
    print(table(["harness", "shots", "round", "wall s", "peak MB", "strict", "flexible"], rows))
    print()
    print(table(["shots", "lm-eval median s", "evalstack median s", "speed-up", "identical scores"], summary))


if __name__ == "__main__":
    main()
