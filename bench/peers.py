"""evalstack side by side with lm-evaluation-harness and Inspect on the same 4,000 prompts.

    python bench/peers.py [--rounds 3] [--parallelism 64] [--only evalstack,lm-eval,inspect]
                          [--data ../shared/data/mmlu/test.jsonl] [--stub PATH] [--cache bench/.peers]

What it does:

1. Sets up lm-evaluation-harness 0.4.13 and Inspect 0.3.285 in their own virtual environments
   under ``--cache`` (``bench/.peers/``, git-ignored; never the project's dependencies). Done once.
2. Prepares the first 4,000 MMLU rows as prompts: the question, a blank line, ``A. ...`` to
   ``D. ...``, a blank line, ``Answer with the letter only.``; and the three harnesses' task files:
   a NeMo custom config for ``evalstack run`` (one ``chat-completion`` task, the prompt as the
   user message, a ``string-check`` metric), an lm-eval YAML task (``local-chat-completions``,
   ``exact_match``), an Inspect task (``generate()``, exact letter match).
3. Starts the stand-in model server (``openai_stub.py --answer hash``, zero latency) and runs the
   three harnesses alternately, ``--rounds`` times, each at the same concurrency (64 by default),
   max_tokens 8; Inspect with its display and realtime log off.
4. Prints every run (wall time from spawn to exit, start-up included; samples/s; peak RSS of the
   process tree from ``wait4``; accuracy), then the medians and the ratios of median wall times.

The machine's other load makes single runs noisy: the harnesses alternate and the medians count.
All three must report the same accuracy (the stub answers by a hash of the prompt).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import textwrap
import venv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_MMLU, REPO, ChildRun, Stub, median, run_child, stub_path, table

LM_EVAL = "lm-eval[api]==0.4.13"
INSPECT = ("inspect-ai==0.3.285", "openai")
PROMPTS = 4000
MAX_TOKENS = 8
TASK = "evalstack_mmlu"


# ------------------------------------------------------------------------------------------ set-up


def ensure_venv(path: Path, packages: tuple[str, ...]) -> Path:
    """A virtual environment at ``path`` with ``packages`` installed (once; a stamp file remembers)."""
    stamp = path / ".installed"
    wanted = " ".join(packages)
    if stamp.is_file() and stamp.read_text() == wanted:
        return path
    print(f"setting up {path.name}: pip install {wanted} (once; takes minutes)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=path.exists()).create(path)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *packages], check=True)
    stamp.write_text(wanted)
    return path


def prompt_of(row: dict[str, Any]) -> str:
    """Question, blank line, lettered choices, blank line, the instruction."""
    choices = "\n".join(f"{letter}. {choice}" for letter, choice in zip("ABCD", row["choices"], strict=False))
    return f"{row['question']}\n\n{choices}\n\nAnswer with the letter only."


def prepare(work: Path, data: Path, parallelism: int, count: int = PROMPTS) -> None:
    """Prompts plus the three harnesses' task files in ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    with data.open(encoding="utf-8") as lines:
        for line in lines:
            if len(rows) == count:
                break
            if line.strip():
                row = json.loads(line)
                rows.append({"prompt": prompt_of(row), "answer": row["answer"]})
    if len(rows) < count:
        raise SystemExit(f"{data} has only {len(rows)} rows; {count} are needed")
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    config = {
        "type": "custom",
        "params": {"parallelism": parallelism, "max_tokens": MAX_TOKENS},
        "tasks": {
            "mmlu": {
                "type": "chat-completion",
                "params": {"template": {"messages": [{"role": "user", "content": "{{item.prompt}}"}]}},
                "dataset": {"files_url": "prompts.jsonl"},
                "metrics": {
                    "accuracy": {
                        "type": "string-check",
                        "params": {"check": ["{{sample.output_text | trim}}", "equals", "{{item.answer}}"]},
                    }
                },
            }
        },
    }
    (work / "evalstack-mmlu.json").write_text(json.dumps(config, indent=2), encoding="utf-8")

    lm_task = work / "lm_eval_tasks"
    lm_task.mkdir(exist_ok=True)
    (lm_task / f"{TASK}.yaml").write_text(
        textwrap.dedent(f"""\
        task: {TASK}
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {prompts.resolve()}
        test_split: test
        output_type: generate_until
        doc_to_text: "{{{{prompt}}}}"
        doc_to_target: "{{{{answer}}}}"
        generation_kwargs:
          max_gen_toks: {MAX_TOKENS}
          until: []
          do_sample: false
        metric_list:
          - metric: exact_match
            aggregation: mean
            higher_is_better: true
        """),
        encoding="utf-8",
    )

    (work / "inspect_task.py").write_text(
        textwrap.dedent(f'''\
        """The 4,000 prompts as an Inspect task: generate, then an exact letter match."""
        import json

        from inspect_ai import Task, task
        from inspect_ai.dataset import MemoryDataset, Sample
        from inspect_ai.scorer import CORRECT, INCORRECT, Score, accuracy, scorer, stderr
        from inspect_ai.solver import generate


        @scorer(metrics=[accuracy(), stderr()])
        def letter():
            async def score(state, target):
                answer = state.output.completion.strip()
                return Score(value=CORRECT if answer == target.text else INCORRECT, answer=answer)

            return score


        @task
        def {TASK}(path: str = "prompts.jsonl") -> Task:
            with open(path, encoding="utf-8") as lines:
                rows = [json.loads(line) for line in lines]
            samples = [Sample(input=r["prompt"], target=r["answer"], id=i) for i, r in enumerate(rows)]
            return Task(dataset=MemoryDataset(samples), solver=generate(), scorer=letter())
        '''),
        encoding="utf-8",
    )


# ------------------------------------------------------------------------------------------ harnesses


@dataclass
class Harness:
    """How to run one harness and read its accuracy."""

    name: str
    run: Callable[[Path, Stub, int, int], ChildRun]
    accuracy: Callable[[Path, int], float | None]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def run_evalstack(work: Path, stub: Stub, parallelism: int, round_no: int) -> ChildRun:
    home = work / f"evalstack-home-{round_no}"
    cmd = [
        str(REPO / ".venv" / "bin" / "evalstack"),
        "run",
        "evalstack-mmlu.json",
        "--model",
        stub.base_url,
        "--output",
        f"evalstack-{round_no}.json",
    ]
    return run_child(cmd, cwd=work, env=_env(EVALSTACK_DATA_HOME=str(home), COLUMNS="100"))


def accuracy_evalstack(work: Path, round_no: int) -> float | None:
    document = json.loads((work / f"evalstack-{round_no}.json").read_text())
    scores = document["result"]["tasks"]["mmlu"]["metrics"]["accuracy"]["scores"]
    value = scores["string-check"]["value"]
    return None if value is None else float(value)


def run_lm_eval(work: Path, stub: Stub, parallelism: int, round_no: int) -> ChildRun:
    bin_dir = work.parent / "lm-eval" / "bin"
    model_args = (
        f"model=stub-model,base_url={stub.base_url}/chat/completions,num_concurrent={parallelism},"
        "max_retries=3,tokenized_requests=False"
    )
    cmd = [
        str(bin_dir / "lm_eval"),
        "--model",
        "local-chat-completions",
        "--model_args",
        model_args,
        "--tasks",
        TASK,
        "--include_path",
        str(work / "lm_eval_tasks"),
        "--apply_chat_template",
        "--output_path",
        str(work / f"lm-eval-{round_no}"),
    ]
    env = _env(HF_HUB_OFFLINE="1", HF_DATASETS_CACHE=str(work / "hf-datasets"), TQDM_MININTERVAL="5")
    return run_child(cmd, cwd=work, env=env)


def accuracy_lm_eval(work: Path, round_no: int) -> float | None:
    found = sorted(glob.glob(str(work / f"lm-eval-{round_no}" / "**" / "results_*.json"), recursive=True))
    if not found:
        return None
    results = json.loads(Path(found[-1]).read_text())["results"][TASK]
    return float(results["exact_match,none"])


def run_inspect(work: Path, stub: Stub, parallelism: int, round_no: int) -> ChildRun:
    bin_dir = work.parent / "inspect" / "bin"
    cmd = [
        str(bin_dir / "inspect"),
        "eval",
        "inspect_task.py",
        "--model",
        "openai-api/stub/stub-model",
        "--model-base-url",
        stub.base_url,
        "--max-connections",
        str(parallelism),
        "--max-tokens",
        str(MAX_TOKENS),
        "--display",
        "none",
        "--no-log-realtime",
        "--log-dir",
        str(work / f"inspect-{round_no}"),
    ]
    return run_child(cmd, cwd=work, env=_env(STUB_API_KEY="unused", INSPECT_LOG_LEVEL="warning"))


def accuracy_inspect(work: Path, round_no: int) -> float | None:
    python = work.parent / "inspect" / "bin" / "python"
    script = textwrap.dedent(f"""\
        import glob
        from inspect_ai.log import read_eval_log
        found = sorted(glob.glob({str(work / f"inspect-{round_no}" / "*.eval")!r}))
        log = read_eval_log(found[-1], header_only=True)
        if log.status != "success" or log.results is None:
            print("error", log.status, str(log.error)[:300])
        else:
            print(log.results.scores[0].metrics["accuracy"].value)
        """)
    out = subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=False)
    text = out.stdout.strip()
    try:
        return float(text)
    except ValueError:
        print(f"inspect round {round_no}: {text or out.stderr[-500:]}", file=sys.stderr)
        return None


HARNESSES = {
    "evalstack": Harness("evalstack", run_evalstack, accuracy_evalstack),
    "lm-eval": Harness("lm-eval", run_lm_eval, accuracy_lm_eval),
    "inspect": Harness("inspect", run_inspect, accuracy_inspect),
}


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=64)
    parser.add_argument("--only", default="evalstack,lm-eval,inspect", help="comma-separated harnesses")
    parser.add_argument("--data", default=str(DEFAULT_MMLU), help="MMLU test.jsonl (first 4,000 rows)")
    parser.add_argument("--stub", help="path of openai_stub.py (default ../shared/tools/openai_stub.py)")
    parser.add_argument(
        "--cache", default=str(REPO / "bench" / ".peers"), help="virtual environments and work files"
    )
    args = parser.parse_args()

    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in HARNESSES]
    if unknown:
        raise SystemExit(f"unknown harness(es) {unknown}; accepted: {', '.join(HARNESSES)}")
    data = Path(args.data)
    if not data.is_file():
        raise SystemExit(f"MMLU data not found at {data}; pass --data PATH to a test.jsonl")
    cache = Path(args.cache).resolve()
    if "lm-eval" in names:
        ensure_venv(cache / "lm-eval", (LM_EVAL,))
    if "inspect" in names:
        ensure_venv(cache / "inspect", INSPECT)
    work = cache / "work"
    prepare(work, data, args.parallelism)

    runs: dict[str, list[tuple[ChildRun, float | None]]] = {n: [] for n in names}
    per_run: list[list[Any]] = []
    with Stub(stub_path(args.stub), latency_ms=0, answer="hash") as stub:
        for round_no in range(1, args.rounds + 1):
            order = names[round_no - 1 :] + names[: round_no - 1]  # rotate who goes first
            for name in order:
                harness = HARNESSES[name]
                result = harness.run(work, stub, args.parallelism, round_no)
                acc = harness.accuracy(work, round_no) if result.returncode == 0 else None
                if result.returncode != 0:
                    print(
                        f"{name} round {round_no} exited {result.returncode}:\n{result.stderr[-2000:]}",
                        file=sys.stderr,
                    )
                runs[name].append((result, acc))
                per_run.append(
                    [
                        round_no,
                        name,
                        result.wall,
                        PROMPTS / result.wall,
                        result.peak_rss_mb,
                        "-" if acc is None else f"{acc:.5f}",
                    ]
                )
                print(f"round {round_no} {name}: {result.wall:.1f} s, accuracy {acc}", flush=True)

    print()
    print(
        f"{PROMPTS:,} MMLU prompts, stub --answer hash at zero latency, concurrency {args.parallelism}, "
        f"max_tokens {MAX_TOKENS}; {args.rounds} alternating round(s)"
    )
    print(table(["round", "harness", "wall s", "samples/s", "peak RSS MB", "accuracy"], per_run))
    print()
    medians: dict[str, float] = {}
    summary = []
    for name in names:
        walls = [r.wall for r, _ in runs[name] if r.returncode == 0]
        rss = [r.peak_rss_mb for r, _ in runs[name] if r.returncode == 0]
        accs = sorted({f"{a:.5f}" for _, a in runs[name] if a is not None})
        medians[name] = median(walls)
        summary.append([name, medians[name], PROMPTS / medians[name], median(rss), ", ".join(accs) or "-"])
    print("medians")
    print(table(["harness", "wall s", "samples/s", "peak RSS MB", "accuracy"], summary))
    if "evalstack" in medians:
        base = medians["evalstack"]
        targets = {"lm-eval": 5.0, "inspect": 20.0}
        for name, target in targets.items():
            if name in medians:
                ratio = medians[name] / base
                verdict = "ok" if ratio >= target else "below target"
                print(f"{name} wall / evalstack wall = {ratio:.1f}x (target >= {target:g}x: {verdict})")
    accuracies = {f"{a:.5f}" for runs_of in runs.values() for _, a in runs_of if a is not None}
    print(f"accuracies agree: {'yes' if len(accuracies) == 1 else 'NO'} ({', '.join(sorted(accuracies))})")


if __name__ == "__main__":
    main()
