"""Comparison, gate input and reports at scale: two jobs of the same items, compared item by item.

    python bench/compare.py [--samples 200000] [--tasks 57] [--db URL] [--keep]

Fills a store (a SQLite file in a temporary folder unless ``--db`` is given) with two jobs of
``--samples`` samples each over ``--tasks`` MMLU-like tasks (items with a subject, 0/1 ``acc`` and
``acc_norm`` scores, a continuous ``logprob`` score, the ``parsed`` diagnostic), the candidate
right a few points more often. Then it times, in this process:

- ``compare_jobs`` (pairing by item hash, every metric per task and group with t, cluster-robust
  and 10,000-resample bootstrap intervals, McNemar or 10,000 sign flips, Holm), split into reading
  both jobs and the statistics;
- ``build_job_report`` (metrics with bootstrap CIs and counts) and the CSV report streamed to a file.

It prints each step's wall and CPU time (the CPU time is what a busy shared machine does not inflate)
and the process's peak RSS. Figures, not a pass/fail target: the cost grows linearly with the
samples; reading both jobs and the 10,000-resample bootstrap and sign flips of the continuous
metric take most of it, and memory holds each sample's scores and item hash, never its text.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, self_peak_rss_mb, table

sys.path.insert(0, str(REPO / "src"))
from evalstack.analysis import compare_jobs
from evalstack.analysis.report import build_job_report, report_csv
from evalstack.store.records import JobRecord, SampleRecord
from evalstack.store.repository import Store

BATCH = 10_000


def make_samples(
    task: str, subject: str, start: int, count: int, bonus: float, seed: int
) -> list[SampleRecord]:
    rng = random.Random(seed)
    samples = []
    for index in range(start, start + count):
        item_rng = random.Random(f"{task}-{index}")  # the same item in both jobs
        difficulty = item_rng.random()
        right = float(rng.random() < 0.35 + 0.4 * difficulty + bonus)
        question = " ".join(item_rng.choice("abcdefghij") * 4 for _ in range(20))
        samples.append(
            SampleRecord(
                task=task,
                index=index,
                item={"question": question, "choices": ["w", "x", "y", "z"], "answer": 1, "subject": subject},
                output_text=" B",
                response={"choices": [{"text": " B", "logprobs": None}]},
                finish_reason="stop",
                scores={
                    "loglikelihood": {"acc": right, "acc_norm": right},
                    "logprob": {"logprob": -rng.random() * 3 - 2 * (1 - right)},
                    "parsed": {"flexible": 1.0},
                },
            )
        )
    return samples


async def fill(store: Store, job_id: str, samples: int, tasks: int, bonus: float) -> None:
    if await store.get_job(job_id) is not None:
        return
    names = [f"mmlu_subject_{t:02d}" for t in range(tasks)]
    result = {
        "tasks": {
            n: {"data": {"subject": n[5:], "category": ("stem", "other")[t % 2]}} for t, n in enumerate(names)
        }
    }
    await store.create_job(
        JobRecord(
            id=job_id,
            front="nemo",
            spec={"config": {"type": "mmlu"}, "target": {"type": "model", "model": job_id}},
            status="completed",
            result=result,
        )
    )
    per_task = samples // tasks
    for t, name in enumerate(names):
        for start in range(0, per_task, BATCH):
            count = min(BATCH, per_task - start)
            await store.add_samples(
                job_id, make_samples(name, name[5:], start, count, bonus, seed=hash((job_id, t, start)))
            )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--tasks", type=int, default=57)
    parser.add_argument("--db", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the temporary store")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="evalstack-compare-bench-"))
    url = args.db or f"sqlite:///{folder / 'bench.db'}"
    base, cand = f"bench-base-{args.samples}", f"bench-cand-{args.samples}"
    async with Store(url) as store:
        started = time.perf_counter()
        await fill(store, base, args.samples, args.tasks, 0.0)
        await fill(store, cand, args.samples, args.tasks, 0.03)
        filled = time.perf_counter() - started
        rows: list[list[object]] = []

        def timed(step: str, wall: float, cpu: float, size: int) -> None:
            elapsed = time.perf_counter() - wall
            rows.append([step, f"{elapsed:.2f}", f"{time.process_time() - cpu:.2f}", size])

        wall, cpu = time.perf_counter(), time.process_time()
        comparison = await compare_jobs(store, base, cand)
        timed("compare_jobs (both jobs read, all rows)", wall, cpu, len(comparison.rows))

        wall, cpu = time.perf_counter(), time.process_time()
        report = await build_job_report(store, cand)
        timed("build_job_report", wall, cpu, len(report.metrics))

        wall, cpu = time.perf_counter(), time.process_time()
        out = folder / "report.csv"
        with out.open("w", encoding="utf-8", newline="") as sink:
            async for chunk in report_csv(store, cand):
                sink.write(chunk)
        timed("CSV report streamed to a file", wall, cpu, out.stat().st_size)

    overall = next(
        r for r in comparison.rows if r.scope == "group" and r.name == "mmlu" and r.metric == "acc"
    )
    print(
        f"{args.samples:,} samples per job over {args.tasks} tasks (filled in {filled:.1f} s); "
        f"{os.cpu_count()} CPUs"
    )
    print(table(["step", "wall s", "CPU s (all threads)", "rows / bytes"], rows))
    print(
        f"overall acc: Δ {overall.delta:+.4f}, 95% CI [{overall.ci_low:+.4f}, {overall.ci_high:+.4f}] "
        f"(cluster-robust, {overall.clusters} subjects), McNemar p {overall.p_value:.2g}, "
        f"MDE {overall.mde:.4f}"
    )
    print(f"peak RSS {self_peak_rss_mb():.0f} MB")
    if not args.keep and args.db is None:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    elif args.keep:
        print(f"store kept at {url}")


if __name__ == "__main__":
    asyncio.run(main())
