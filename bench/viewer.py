"""The viewer at scale: a 1,000,000-sample job, its sample pages, filters and search.

    python bench/viewer.py [--samples 1000000] [--db URL] [--rounds 5] [--keep]

Fills a store (a SQLite file in a temporary folder unless ``--db`` names one that already holds
the job) with one job of ``--samples`` samples over 10 tasks, the shape an academic run records
(item, request sent, output, response, 0/1 scores, the ``parsed`` diagnostic; 2% truncated, 0.5%
failed). Then it starts ``evalstack view`` on that store in a subprocess and times, from a client
on the loopback interface (so each figure bounds the server time from above):

- the first samples page, a deep page (keyset, 90% into the job), a filtered page (wrong answers)
  and a deep filtered page, the capped match count, full-text searches for a rare word (1 sample in
  2,000), a word in 2% of the samples and a word in all of them, each as the HTML page and as the
  JSON listing;
- the job page, and (for information) its score distribution image, which scans every sample.

Target: each page and listing under 200 ms, with the server's memory flat: its peak RSS
(``VmHWM``) after all requests stays within 50 MB of its RSS after the first request.
Figures are medians of ``--rounds`` requests after one warm-up request.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, free_port, median, table

sys.path.insert(0, str(REPO / "src"))
from evalstack.store.records import JobRecord, SampleRecord
from evalstack.store.repository import Store

JOB = "eval-viewer-bench-1m"
TASKS = 10
BATCH = 10_000
TARGET_MS = 200.0
FLAT_MB = 50.0
SEARCH_WORD = "quasar"  # in about 1 sample of 2,000


def _words(rng: random.Random, vocabulary: list[str], count: int) -> str:
    return " ".join(rng.choice(vocabulary) for _ in range(count))


def make_samples(
    task: str, start: int, count: int, rng: random.Random, vocabulary: list[str]
) -> list[SampleRecord]:
    samples = []
    for index in range(start, start + count):
        question = _words(rng, vocabulary, 24)
        if rng.random() < 0.0005:
            question += " " + SEARCH_WORD
        choices = [_words(rng, vocabulary, 3) for _ in range(4)]
        prompt = f"{question}\nA. {choices[0]}\nB. {choices[1]}\nC. {choices[2]}\nD. {choices[3]}\nAnswer:"
        request = {
            "kind": "chat",
            "messages": [{"role": "user", "content": prompt}],
            "params": {"max_tokens": 8},
        }
        if rng.random() < 0.005:
            failed = SampleRecord(task, index, {"question": question, "answer": "A"}, error="HTTP 503")
            failed.extra = {"error_kind": "inference", "request": request}
            samples.append(failed)
            continue
        letter = rng.choice("ABCD")
        truncated = rng.random() < 0.02
        output = f"The answer is ({letter})" + (" because" if truncated else "")
        response = {"choices": [{"message": {"role": "assistant", "content": output}}], "model": "bench"}
        right = 1.0 if rng.random() < 0.6 else 0.0
        samples.append(
            SampleRecord(
                task, index, {"question": question, "choices": choices, "answer": letter if right else "A"},
                output_text=output, response=response, finish_reason="length" if truncated else "stop",
                scores={"acc": {"acc": right}, "parsed": {"strict-match": 1.0}}, extra={"request": request},
            )
        )  # fmt: skip
    return samples


async def fill(db_url: str, total: int) -> None:
    async with Store(db_url) as store:
        if await store.get_job(JOB) is not None and await store.count_samples(JOB) == total:
            print(f"store already holds the {total:,}-sample job")
            return
        await store.delete_job(JOB)
        per_task = total // TASKS
        spec = {"config": {"type": "mmlu", "name": "bench"}, "target": {"type": "model", "model": "bench"}}
        statuses = {f"task_{t}": "completed" for t in range(TASKS)}
        progress = {"samples_processed": total, "samples_total": total, "task_status": statuses}
        await store.create_job(
            JobRecord(id=JOB, front="nemo", spec=spec, status="completed", progress=progress)
        )
        rng = random.Random(0)
        vocabulary = [
            "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
            for _ in range(20_000)
        ]
        started = time.perf_counter()
        for t in range(TASKS):
            for start in range(0, per_task, BATCH):
                await store.add_samples(
                    JOB, make_samples(f"task_{t}", start, min(BATCH, per_task - start), rng, vocabulary)
                )
            done = (t + 1) * per_task
            print(f"  filled {done:,} samples ({done / (time.perf_counter() - started):,.0f}/s)", flush=True)


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process, in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, amount, _unit = line.split()
            values[key] = int(amount) / 1024
    return values["VmRSS:"], values["VmHWM:"]


def timed_get(url: str) -> tuple[float, int, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        body = response.read()
        status = response.status
    return (time.perf_counter() - started) * 1000, status, body


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--db", help="store URL (default: a SQLite file in a temporary folder)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the temporary store and print where it is")
    args = parser.parse_args()
    folder = None
    db_url = args.db
    if db_url is None:
        folder = tempfile.mkdtemp(prefix="evalstack-viewer-bench-")
        db_url = f"sqlite:///{folder}/evalstack.db"
    print(f"filling {args.samples:,} samples ...", flush=True)
    started = time.perf_counter()
    asyncio.run(fill(db_url, args.samples))
    print(f"filled in {time.perf_counter() - started:.0f} s")

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "evalstack.cli", "view", "--db", db_url, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                timed_get(f"{base}/v1/evalstack/jobs")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    reason = (proc.stderr.read() if proc.stderr else b"").decode()
                    raise SystemExit(f"evalstack view did not start: {reason}") from None
                time.sleep(0.2)
        per_task = args.samples // TASKS
        deep = f"{per_task // 2}:task_{int(TASKS * 0.9)}"
        wrong = "metric=acc&outcome=wrong"
        cases = [
            ("first page", "samples?"),
            ("deep page (90%)", f"samples?after={deep}"),
            ("filtered: wrong answers", f"samples?{wrong}"),
            ("filtered, deep", f"samples?{wrong}&after={deep}"),
            ("filtered: truncated", "samples?truncated=1"),
            ("count of every sample", "samples/count?"),
            ("count of wrong answers (to 10,000)", f"samples/count?{wrong}"),
            (f"search '{SEARCH_WORD}'", f"samples?q={SEARCH_WORD}"),
            ("search, filtered", f"samples?q={SEARCH_WORD}&{wrong}"),
            ("search 'because' (2% of samples)", "samples?q=because"),
            ("search 'answer' (every sample)", "samples?q=answer"),
        ]
        timed_get(f"{base}/ui/jobs/{JOB}/samples")
        rss_start, _ = rss_mb(proc.pid)
        rows = []
        worst = 0.0
        for name, query in cases:
            figures = []
            for prefix in (f"/ui/jobs/{JOB}/", f"/v1/evalstack/jobs/{JOB}/"):
                if prefix.startswith("/ui") and query.startswith("samples/count"):  # JSON only
                    figures.append(float("nan"))
                    continue
                timed_get(base + prefix + query)  # warm-up
                times = []
                for _ in range(args.rounds):
                    elapsed, status, _body = timed_get(base + prefix + query)
                    assert status == 200, (name, status)
                    times.append(elapsed)
                figures.append(median(times))
            worst = max(worst, *(f for f in figures if f == f))
            rows.append([name, *("-" if f != f else f"{f:.1f}" for f in figures)])
        job_ms = median([timed_get(f"{base}/ui/jobs/{JOB}")[0] for _ in range(args.rounds)])
        worst = max(worst, job_ms)
        image_ms = timed_get(f"{base}/ui/jobs/{JOB}/distribution.svg?metric=acc")[0]
        rss_end, hwm = rss_mb(proc.pid)
        print()
        print(f"{args.samples:,} samples in one job; medians of {args.rounds} requests, milliseconds")
        print(table(["request", "HTML page ms", "JSON listing ms"], rows))
        print(f"job page: {job_ms:.1f} ms")
        print(f"score distribution image (scans every sample; loaded apart): {image_ms:.0f} ms (no target)")
        print(
            f"server RSS after the first page {rss_start:.0f} MB, after all requests {rss_end:.0f} MB, ",
            end="",
        )
        print(f"peak {hwm:.0f} MB")
        ok_time = worst < TARGET_MS
        ok_memory = hwm - rss_start < FLAT_MB
        verdict = {True: "met", False: "MISSED"}
        print(f"target: every request < {TARGET_MS:.0f} ms: {verdict[ok_time]} (slowest {worst:.1f} ms)")
        print(f"target: memory flat (peak within {FLAT_MB:.0f} MB of the start): {verdict[ok_memory]}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if folder is not None:
            if args.keep:
                print(f"store kept: {db_url}")
            else:
                import shutil

                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
