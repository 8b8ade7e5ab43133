"""lm-eval's own gsm8k task run by lm-eval and by evalstack's engine: wall time and identical scores.

    python bench/lm_eval_tasks.py [--rounds 3] [--parallelism 64] [--shots 0,5] [--limit N]
                                  [--data ../shared/data] [--stub PATH] [--cache bench/.peers]

Both harnesses run lm-eval 0.4.13's ``gsm8k`` task definition (prompt, few-shot sampling with seed
1234, the strict and flexible regex filters, ``exact_match``) on all 1,319 test documents, through an
include-path override YAML that points it at the local GSM8K files (``dataset_path: json``), on a
chat endpoint with the chat template and few-shot examples as turns, 0-shot and 5-shot.

- lm-eval: its ``lm_eval`` command with ``local-chat-completions``, ``num_concurrent`` = parallelism,
  in its own virtual environment (``bench/.peers/lm-eval``, set up once as ``bench/peers.py`` does);
  once as it comes, and once with ``--cache_requests true`` (its own cache of built requests, emptied
  when the script starts, so its first such run builds it and the later ones read it).
- evalstack: ``evalstack run`` of a NeMo config ``{"type": "lm-eval", "tasks": {"gsm8k": ...}}`` with
  ``parallelism`` = parallelism (its per-sample records land in SQLite; resumable), with its lm-eval
  cache (task index, built requests: ``EVALSTACK_LM_EVAL_CACHE``) in the work folder: emptied before
  a first, cold run per shot count, then warm.
- evalstack serve: the same config as a NeMo job (``POST /v1/evaluation/jobs``) on a running
  ``evalstack serve`` (this checkout's, the same caches), timed from submit to completed (polled every
  20 ms); one new server per shot count, whose start-up is printed, and whose first job imports
  lm-eval and reads its task index (later jobs find both in memory).

The model is the stand-in server (``openai_stub.py --answer number``, zero latency): "The answer is N."
with N from a hash of the prompt, so only the flexible extraction finds numbers and the harnesses
see the same replies exactly when they send the same prompts. Per shot count: evalstack cold, the new
server's first job, then ``--rounds`` rounds of lm-eval, lm-eval with ``cache_requests``, evalstack,
a server job; a command's wall time is from spawn to exit, start-up included; each harness keeps its
own warm Hugging Face datasets cache, and runs from compiled bytecode (this checkout's sources are
compiled first, as pip compiled lm-eval's). Printed: every run (wall and CPU seconds), then per shot count
the medians, the first runs, the speed-ups (the faster of lm-eval's two medians over each evalstack
figure) and whether every run's scores are identical, once for wall time and once for CPU time (user +
system: what a run costs, however busy the machine is; for a server job, the server's).
"""

from __future__ import annotations

import argparse
import compileall
import glob
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REPO,
    SHARED,
    ChildRun,
    Server,
    Stub,
    median,
    run_child,
    stub_path,
    table,
    write_gsm8k_override,
)
from peers import LM_EVAL, ensure_venv

# The evalstack installed beside this interpreter (the project's venv), else the module.
_SCRIPT = Path(sys.executable).parent / "evalstack"
EVALSTACK = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "evalstack.cli"]
SCORES = ("exact_match,strict-match", "exact_match,flexible-extract")
MODEL = "stub-model"


def run_lm_eval(
    venv: Path,
    work: Path,
    stub: Stub,
    parallelism: int,
    shots: int,
    tag: str,
    limit: int | None,
    cache_requests: bool = False,
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
    if cache_requests:
        cmd += ["--cache_requests", "true"]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(work / "hf-lm-eval"),
        "LM_HARNESS_CACHE_PATH": str(work / "lm-eval-requests-cache"),
        "TQDM_MININTERVAL": "5",
    }
    return run_child(cmd, cwd=work, env=env)


def scores_lm_eval(work: Path, tag: str) -> dict[str, float] | None:
    found = sorted(glob.glob(str(work / f"lm-eval-{tag}" / "**" / "results_*.json"), recursive=True))
    if not found:
        return None
    results = json.loads(Path(found[-1]).read_text())["results"]["gsm8k"]
    return {key: float(results[key]) for key in SCORES}


def evalstack_config(work: Path, parallelism: int, shots: int, limit: int | None) -> dict[str, Any]:
    """The NeMo config both evalstack modes run: lm-eval's gsm8k through the include path."""
    extra = {"include_path": str(work / "tasks"), "endpoint_type": "chat", "num_fewshot": shots}
    params: dict[str, Any] = {"parallelism": parallelism, "extra": extra}
    if limit:
        params["limit_samples"] = limit
    return {"type": "lm-eval", "tasks": {"gsm8k": {"type": "gsm8k"}}, "params": params}


def evalstack_env(work: Path) -> dict[str, str]:
    """Where evalstack keeps its lm-eval cache and Hugging Face datasets cache in the work folder."""
    return {
        "EVALSTACK_LM_EVAL_CACHE": str(work / "evalstack-lm-eval-cache"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(work / "hf-evalstack"),
    }


def run_evalstack(
    work: Path, stub: Stub, parallelism: int, shots: int, tag: str, limit: int | None
) -> ChildRun:
    config = evalstack_config(work, parallelism, shots, limit)
    (work / f"evalstack-{tag}.config.json").write_text(json.dumps(config))
    cmd = [
        *EVALSTACK, "run", f"evalstack-{tag}.config.json",
        "--model", f"{stub.base_url}#{MODEL}", "--output", f"evalstack-{tag}.json",
    ]  # fmt: skip
    env = {**os.environ, **evalstack_env(work), "EVALSTACK_DATA_HOME": str(work / f"home-{tag}")}
    return run_child(cmd, cwd=work, env={**env, "COLUMNS": "100"})


def scores_evalstack(work: Path, tag: str) -> dict[str, float] | None:
    path = work / f"evalstack-{tag}.json"
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())["result"]["lm_eval"]["results"]["gsm8k"]
    return {key: float(raw[key]) for key in SCORES}


def run_server_job(
    server: Server, work: Path, stub: Stub, parallelism: int, shots: int, limit: int | None
) -> tuple[ChildRun, dict[str, float] | None]:
    """The same config as a NeMo job on a running ``evalstack serve``: from submit to completed (polled
    every 20 ms), the server's CPU seconds meanwhile, and the scores of its results."""
    target = {
        "type": "model",
        "model": {"api_endpoint": {"url": f"{stub.base_url}/chat/completions", "model_id": MODEL}},
    }
    body = {"config": evalstack_config(work, parallelism, shots, limit), "target": target}
    cpu, started = server.cpu_seconds(), time.perf_counter()
    job = server.post("/v1/evaluation/jobs", body)
    final = server.wait(f"/v1/evaluation/jobs/{job['id']}", {"completed", "failed", "cancelled"}, poll_s=0.02)
    wall = time.perf_counter() - started
    run = ChildRun(wall, 0 if final["status"] == "completed" else 1, server.peak_rss_mb(), "", "")
    run.cpu = server.cpu_seconds() - cpu
    if run.returncode:
        run.stderr = json.dumps(final)
        return run, None
    metrics = server.get(f"/v1/evaluation/jobs/{job['id']}/results")["tasks"]["gsm8k"]["metrics"]
    scores = {}
    for key in SCORES:
        name = key.replace(",", "__")  # lm-eval's "metric,filter" as evalstack names a score
        scores[key] = float(metrics[name]["scores"][name]["value"])
    return run, scores


FIRST_RUNS = ("evalstack cold", "evalstack serve first")
HARNESSES = ("lm-eval", "lm-eval cache_requests", "evalstack", "evalstack serve")
"""Each round runs these in turn. Before the rounds, evalstack runs once with its caches empty (cold),
and a new ``evalstack serve`` runs its first job (which imports lm-eval and loads its index)."""


def run_one(
    name: str,
    venv: Path,
    work: Path,
    stub: Stub,
    server: Server,
    args: argparse.Namespace,
    shots: int,
    tag: str,
) -> tuple[ChildRun, dict[str, float] | None]:
    if name.startswith("evalstack serve"):
        return run_server_job(server, work, stub, args.parallelism, shots, args.limit)
    if name.startswith("lm-eval"):
        cached = name.endswith("cache_requests")
        run = run_lm_eval(venv, work, stub, args.parallelism, shots, tag, args.limit, cache_requests=cached)
        return run, scores_lm_eval(work, tag)
    if name == "evalstack cold":
        shutil.rmtree(work / "evalstack-lm-eval-cache", ignore_errors=True)
    run = run_evalstack(work, stub, args.parallelism, shots, tag, args.limit)
    return run, scores_evalstack(work, tag)


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
    # Both run from bytecode: pip compiled lm-eval's when it installed it; this checkout's editable
    # sources are compiled here (an environment with PYTHONDONTWRITEBYTECODE=1 never caches them).
    compileall.compile_dir(str(REPO / "src"), quiet=1)
    work = cache / "lm-eval-tasks-work"
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "lm-eval-requests-cache", ignore_errors=True)  # its first run builds it
    import lm_eval

    write_gsm8k_override(work / "tasks", Path(args.data).resolve(), Path(lm_eval.__file__).parent / "tasks")
    headers = ["harness", "shots", "round", "wall s", "cpu s", "peak MB", "strict", "flexible"]
    rows: list[list[Any]] = []
    summary: list[list[Any]] = []
    cpu_summary: list[list[Any]] = []
    startups: list[str] = []
    with Stub(stub_path(args.stub), answer="number") as stub:
        for shots in (int(s) for s in args.shots.split(",")):
            walls: dict[str, list[float]] = {name: [] for name in (*FIRST_RUNS, *HARNESSES)}
            cpus: dict[str, list[float]] = {name: [] for name in walls}
            scores: list[dict[str, float] | None] = []
            plan = [(name, -1) for name in FIRST_RUNS]
            plan += [(n, r) for r in range(args.rounds) for n in HARNESSES]
            with Server(work / f"serve-{shots}shot", env=evalstack_env(work)) as server:
                startups.append(f"{shots}-shot: {server.startup_s:.2f} s")
                for name, round_no in plan:
                    tag = f"{shots}shot-{name.replace(' ', '-')}-{round_no}"
                    run, got = run_one(name, venv, work, stub, server, args, shots, tag)
                    if run.returncode != 0 or got is None:
                        failure = f"{name} {tag} failed ({run.returncode}):\n{run.stderr[-2000:]}"
                        print(failure, file=sys.stderr)
                    walls[name].append(run.wall)
                    cpus[name].append(run.cpu)
                    scores.append(got)
                    values = [got[k] if got else None for k in SCORES]
                    round_label = "first" if round_no < 0 else round_no
                    rows.append([name, shots, round_label, run.wall, run.cpu, run.peak_rss_mb, *values])
                    print(table(headers, [rows[-1]]), flush=True)
            same = all(s is not None and s == scores[0] for s in scores)
            for figures, out in ((walls, summary), (cpus, cpu_summary)):
                lm = min(median(figures["lm-eval"]), median(figures["lm-eval cache_requests"]))
                ours = [
                    figures["evalstack cold"][0],
                    median(figures["evalstack"]),
                    figures["evalstack serve first"][0],
                    median(figures["evalstack serve"]),
                ]
                out.append(
                    [
                        shots,
                        median(figures["lm-eval"]),
                        median(figures["lm-eval cache_requests"]),
                        *ours,
                        *(f"{lm / figure:.1f}x" for figure in ours),
                        "yes" if same else "NO",
                    ]
                )
    columns = [
        "shots",
        "lm-eval",
        "lm-eval cache_requests",
        "evalstack run cold",
        "evalstack run warm",
        "serve first job",
        "serve job",
        "speed-up run cold",
        "speed-up run warm",
        "speed-up serve first",
        "speed-up serve",
        "identical scores",
    ]
    print()
    print(table(headers, rows))
    print()
    print(f"evalstack serve start-up (spawn to health check, before its first job): {', '.join(startups)}")
    print("wall seconds (medians); a speed-up is the faster lm-eval median over evalstack's figure")
    print(table(columns, summary))
    print()
    print("CPU seconds (user + system, medians; a serve job: the server's), the same way")
    print(table(columns, cpu_summary))


if __name__ == "__main__":
    main()
