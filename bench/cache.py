"""The response cache: a finished 4,000-prompt job run again with the cache on asks the model nothing.

    python bench/cache.py [--latency-ms 200] [--parallelism 16] [--data ../shared/data/mmlu/test.jsonl]
                          [--stub PATH] [--work bench/.cache-bench]

What it does:

1. Prepares the first 4,000 MMLU rows as prompts and a NeMo custom config for ``evalstack run``
   (the same task as ``bench/peers.py``: one ``chat-completion`` task, a ``string-check`` metric).
2. Starts the stand-in model server (``openai_stub.py --answer hash``) with ``--latency-ms`` per
   answer (default 200 ms, a model server's pace; 0 measures evalstack's own overhead).
3. Runs ``evalstack run CONFIG --model URL#stub-model --cache`` twice on one fresh database: the
   first run asks the model and fills the cache, the second is answered from it.
4. Prints, per run: wall time from spawn to exit (start-up included), the job's own time (its
   ``progress.elapsed_s``: from the first row to the last sample), the model requests the stub saw,
   the cache hits and misses from the job's progress, and the accuracy; then the ratios of the two
   runs' times (target: below 0.1) and whether the second run sent zero requests (target: yes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_MMLU, REPO, Stub, run_child, stub_path, table
from peers import PROMPTS, prepare


def evalstack_command() -> list[str]:
    """The repository's ``.venv`` script, else this interpreter's ``evalstack.cli``."""
    script = REPO / ".venv" / "bin" / "evalstack"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "evalstack.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the stub's delay per answer")
    parser.add_argument("--parallelism", type=int, default=16, help="requests in flight per job")
    parser.add_argument("--data", default=str(DEFAULT_MMLU), help="MMLU test.jsonl (first 4,000 rows)")
    parser.add_argument("--stub", help="path of openai_stub.py (default ../shared/tools/openai_stub.py)")
    parser.add_argument("--work", default=str(REPO / "bench" / ".cache-bench"), help="work files (replaced)")
    args = parser.parse_args()

    data = Path(args.data)
    if not data.is_file():
        raise SystemExit(f"MMLU data not found at {data}; pass --data PATH to a test.jsonl")
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    prepare(work, data, args.parallelism)
    env = {**os.environ, "EVALSTACK_DATA_HOME": str(work / "home"), "COLUMNS": "100"}
    rows = []
    walls: list[float] = []
    job_times: list[float] = []
    requests: list[int] = []
    with Stub(stub_path(args.stub), latency_ms=args.latency_ms, answer="hash") as stub:
        for name in ("first run", "second run"):
            stub.reset()
            output = work / f"{name.split()[0]}.json"
            cmd = [
                *evalstack_command(), "run", "evalstack-mmlu.json", "--model", f"{stub.base_url}#stub-model",
                "--cache", "--output", str(output),
            ]  # fmt: skip
            run = run_child(cmd, cwd=work, env=env)
            if run.returncode != 0:
                raise SystemExit(f"{name} exited {run.returncode}:\n{run.stderr[-2000:]}")
            document = json.loads(output.read_text(encoding="utf-8"))
            cache = document["progress"].get("cache", {})
            accuracy = document["result"]["tasks"]["mmlu"]["metrics"]["accuracy"]["scores"]["string-check"]
            seen = int(stub.stats()["requests"]) - 1  # the stub counts this GET /stats too
            job_time = float(document["progress"]["elapsed_s"])
            walls.append(run.wall)
            job_times.append(job_time)
            requests.append(seen)
            rows.append(
                [name, run.wall, job_time, PROMPTS / run.wall, seen, cache.get("hits"), cache.get("misses"),
                 f"{accuracy['value']:.5f}"]
            )  # fmt: skip
            print(f"{name}: {run.wall:.2f} s, {seen} model requests", flush=True)
    print()
    print(
        f"{PROMPTS:,} MMLU prompts, stub --answer hash at {args.latency_ms:g} ms per answer, "
        f"concurrency {args.parallelism}, `evalstack run --cache` twice on one database"
    )
    headers = [
        "run",
        "wall s",
        "job s",
        "samples/s",
        "model requests",
        "cache hits",
        "cache misses",
        "accuracy",
    ]
    print(table(headers, rows))
    for what, times in (("wall (start-up included)", walls), ("job time", job_times)):
        ratio = times[1] / times[0]
        print(f"second / first {what} = {ratio:.3f} (target < 0.1: {'ok' if ratio < 0.1 else 'missed'})")
    print(f"second run model requests = {requests[1]} (target 0: {'ok' if requests[1] == 0 else 'missed'})")


if __name__ == "__main__":
    main()
