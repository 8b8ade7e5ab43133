"""Scale checks: the same job through the server, requests in flight up to 1,024, memory over 100,000
rows, bootstrap confidence intervals over 100,000 samples, and `evalstack run` start-up.

    python bench/scale.py [--only server,inflight,memory,bootstrap,startup] [--rounds 3] [--stub PATH]

Sections (each prints its figures and its target):

- ``server``: the 4,000-prompt NeMo custom job of ``bench/peers.py`` through a running
  ``evalstack serve`` (Llama Stack ``run_eval`` with the config as the benchmark's metadata, and a
  NeMo ``POST /v1/evaluation/jobs``), submit to completed, against ``evalstack run`` (whole process,
  start-up included) on the same stub. Target: within 1.5x of ``evalstack run``.
- ``inflight``: in-process jobs at parallelism 64, 256 and 1,024 against the stub at 50 ms latency;
  the most requests in flight (stub ``/stats``) and the mean (samples/s x latency). Target: >= 95%.
- ``memory``: a 100,000-row job through the server; the server's peak RSS (``VmHWM``). Target: < 400 MB.
- ``bootstrap``: ``engine.aggregate.stats.bootstrap_ci`` (and ``score_stats``) over 100,000 samples, 0/1 and
  continuous scores. Target: < 2 s.
- ``startup``: ``evalstack run --limit 1`` from spawn to the first model request (a tiny listener
  records its arrival), and ``evalstack --help``. Target: < 1.5 s.

Figures are medians of ``--rounds`` runs; the machine's other load makes single runs noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_MMLU, REPO, Server, Stub, median, run_child, stub_path, table
from peers import PROMPTS, prepare
from throughput import custom_config, write_rows

EVALSTACK = REPO / ".venv" / "bin" / "evalstack"


# ------------------------------------------------------------------------------------------ server


def _config(work: Path, parallelism: int) -> dict[str, Any]:
    config = json.loads((work / "evalstack-mmlu.json").read_text())
    config["tasks"]["mmlu"]["dataset"]["files_url"] = (work / "prompts.jsonl").resolve().as_uri()
    config["params"]["parallelism"] = parallelism
    return config


def llama_stack_job(server: Server, config: dict[str, Any], model: str, name: str) -> tuple[float, str]:
    """Register the config as a benchmark, run_eval, wait; (seconds, status)."""
    server.post(
        "/v1/eval/benchmarks",
        {
            "benchmark_id": name,
            "dataset_id": "",
            "scoring_functions": [],
            "provider_id": "local",
            "metadata": config,
        },
    )
    started = time.perf_counter()
    job = server.post(
        f"/v1/eval/benchmarks/{name}/jobs",
        {
            "benchmark_config": {
                "eval_candidate": {"type": "model", "model": model, "sampling_params": {"max_tokens": 8}}
            }
        },
    )
    final = server.wait(
        f"/v1/eval/benchmarks/{name}/jobs/{job['job_id']}", {"completed", "failed", "cancelled"}
    )
    return time.perf_counter() - started, str(final["status"])


def nemo_job(server: Server, config: dict[str, Any], base_url: str) -> tuple[float, str]:
    """POST /v1/evaluation/jobs with an inline config and target, wait; (seconds, status)."""
    target = {
        "type": "model",
        "model": {"api_endpoint": {"url": f"{base_url}/chat/completions", "model_id": "stub-model"}},
    }
    started = time.perf_counter()
    job = server.post("/v1/evaluation/jobs", {"config": config, "target": target})
    final = server.wait(f"/v1/evaluation/jobs/{job['id']}", {"completed", "failed", "cancelled"})
    return time.perf_counter() - started, str(final["status"])


def section_server(args: argparse.Namespace, tmp: Path) -> None:
    work = tmp / "server"
    prepare(work, Path(args.data), 64)
    walls: dict[str, list[float]] = {"evalstack run": [], "llama stack run_eval": [], "nemo job": []}
    with (
        Stub(stub_path(args.stub), latency_ms=0, answer="hash") as stub,
        Server(work, tmp / "server-home") as server,
    ):
        config = _config(work, 64)
        for round_no in range(1, args.rounds + 1):
            home = tmp / f"run-home-{round_no}"
            done = run_child(
                [str(EVALSTACK), "run", "evalstack-mmlu.json", "--model", stub.base_url],
                cwd=work,
                env=dict(os.environ, EVALSTACK_DATA_HOME=str(home)),
            )
            if done.returncode != 0:
                raise SystemExit(f"evalstack run failed:\n{done.stderr[-2000:]}")
            walls["evalstack run"].append(done.wall)
            seconds, status = llama_stack_job(server, config, stub.base_url, f"mmlu-{round_no}")
            if status != "completed":
                raise SystemExit(f"run_eval ended {status}")
            walls["llama stack run_eval"].append(seconds)
            seconds, status = nemo_job(server, config, stub.base_url)
            if status != "completed":
                raise SystemExit(f"NeMo job ended {status}")
            walls["nemo job"].append(seconds)
    base = median(walls["evalstack run"])
    rows = [
        [name, median(w), PROMPTS / median(w), median(w) / base, " ".join(f"{x:.2f}" for x in w)]
        for name, w in walls.items()
    ]
    print(
        f"\n[server] {PROMPTS:,} prompts, parallelism 64, stub at zero latency; server jobs timed from "
        "submit to completed (polling every 50 ms), evalstack run from spawn to exit"
    )
    print(table(["path", "wall s (median)", "samples/s", "x evalstack run", "runs"], rows))
    worst = max(median(w) / base for name, w in walls.items() if name != "evalstack run")
    print(
        f"target: server jobs within 1.5x of evalstack run -> {'ok' if worst <= 1.5 else 'FAIL'}"
        f" ({worst:.2f}x)"
    )


# ------------------------------------------------------------------------------------------ in flight


def _level_in_subprocess(level: int, data: Path, work: Path, base_url: str) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("throughput.py")),
            "--one-level",
            str(level),
            "--data",
            str(data),
            "--work",
            str(work),
            "--base-url",
            base_url,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"level {level} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def section_inflight(args: argparse.Namespace, tmp: Path) -> None:
    # 50 ms is the target's latency; the 1 s row shows how many requests the runner keeps in flight
    # when the client's CPU per request (x parallelism) fits within the latency.
    cases = [(64, 50.0), (256, 50.0), (1024, 50.0), (1024, 1000.0)]
    rows_out = []
    failed = False
    for level, latency_ms in cases:
        with Stub(stub_path(args.stub), latency_ms=latency_ms) as stub:
            data = tmp / f"inflight-{level}-{latency_ms:g}.jsonl"
            count = max(4000, 8 * level) if latency_ms <= 100 else 4 * level
            write_rows(data, count)
            work = tmp / f"inflight-{level}-{latency_ms:g}"
            work.mkdir()
            result = _level_in_subprocess(level, data, work, stub.base_url)
            stats = stub.stats()
        rate = result["samples"] / result["wall"]
        most = stats["max_in_flight"] / level
        mean = rate * latency_ms / 1000 / level
        if latency_ms == 50.0:
            failed |= most < 0.95
        rows_out.append(
            [
                level,
                f"{latency_ms:g}",
                count,
                result["wall"],
                rate,
                stats["max_in_flight"],
                f"{most:.0%}",
                f"{mean:.0%}",
                result["peak_rss_mb"],
            ]
        )
    print("\n[inflight] in-process NeMo jobs (chat + string-check) against the stub; wall includes start-up")
    print(
        table(
            [
                "parallelism",
                "latency ms",
                "rows",
                "wall s",
                "samples/s",
                "max in flight",
                "max / parallelism",
                "mean / parallelism",
                "peak RSS MB",
            ],
            rows_out,
        )
    )
    print(
        f"target: in flight >= 95% of parallelism up to 1,024 at 50 ms -> {'FAIL' if failed else 'ok'}"
        " (max in flight, the stub's /stats); the mean is samples/s x latency, so it is bounded by the"
        " client's CPU per request: 1,024 x 50 ms held all the time would take 20,000 requests/s"
    )


# ------------------------------------------------------------------------------------------ memory


def section_memory(args: argparse.Namespace, tmp: Path) -> None:
    work = tmp / "memory"
    work.mkdir()
    rows = 100_000
    data = work / "rows.jsonl"
    write_rows(data, rows)
    config = custom_config(data, 256)
    with (
        Stub(stub_path(args.stub), latency_ms=0, answer="hash") as stub,
        Server(work, tmp / "memory-home") as server,
    ):
        before = server.peak_rss_mb()
        seconds, status = nemo_job(server, config, stub.base_url)
        peak = server.peak_rss_mb()
    print(
        f"\n[memory] a {rows:,}-row NeMo job through evalstack serve (parallelism 256, stub at zero latency)"
    )
    print(
        table(
            ["rows", "status", "wall s", "samples/s", "server RSS before MB", "server peak RSS MB"],
            [[rows, status, seconds, rows / seconds, before, peak]],
        )
    )
    print(f"target: peak server RSS < 400 MB -> {'ok' if peak < 400 and status == 'completed' else 'FAIL'}")


# ------------------------------------------------------------------------------------------ bootstrap


def section_bootstrap(args: argparse.Namespace, tmp: Path) -> None:
    from evalstack.engine.aggregate.stats import bootstrap_ci, score_stats

    rng = random.Random(0)
    cases = {
        "0/1 scores": [float(rng.random() < 0.25) for _ in range(100_000)],
        "continuous scores": [rng.random() * 100 for _ in range(100_000)],
    }
    out = []
    worst = 0.0
    for name, values in cases.items():
        times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            low, high = bootstrap_ci(values, 0.95)
            stats = score_stats(values)
            times.append(time.perf_counter() - started)
        worst = max(worst, median(times))
        out.append([name, len(values), median(times), f"[{low:.4f}, {high:.4f}]", stats.get("mean")])
    print("\n[bootstrap] 95% bootstrap CI (1,000 resamples) plus score statistics over 100,000 samples")
    print(table(["scores", "samples", "seconds (median)", "95% CI", "mean"], out))
    print(f"target: < 2 s -> {'ok' if worst < 2 else 'FAIL'}")


# ------------------------------------------------------------------------------------------ start-up


class _FirstRequest(BaseHTTPRequestHandler):
    first: float | None = None

    def do_POST(self) -> None:
        if _FirstRequest.first is None:
            _FirstRequest.first = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "model": "stub-model",
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "A"}}
                ],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


def section_startup(args: argparse.Namespace, tmp: Path) -> None:
    work = tmp / "startup"
    prepare(work, Path(args.data), 1, count=PROMPTS)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FirstRequest)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1#stub-model"
    firsts: list[float] = []
    walls: list[float] = []
    helps: list[float] = []
    try:
        for round_no in range(args.rounds):
            _FirstRequest.first = None
            env = dict(os.environ, EVALSTACK_DATA_HOME=str(tmp / f"startup-home-{round_no}"))
            started = time.perf_counter()
            done = run_child(
                [str(EVALSTACK), "run", "evalstack-mmlu.json", "--limit", "1", "--model", base_url],
                cwd=work,
                env=env,
            )
            if done.returncode != 0 or _FirstRequest.first is None:
                raise SystemExit(f"evalstack run --limit 1 failed:\n{done.stderr[-2000:]}")
            firsts.append(_FirstRequest.first - started)
            walls.append(done.wall)
            helps.append(run_child([str(EVALSTACK), "--help"]).wall)
    finally:
        httpd.shutdown()
    print("\n[startup] evalstack run --limit 1 (NeMo custom config): spawn to first model request")
    print(
        table(
            ["measure", "seconds (median)", "runs"],
            [
                ["evalstack --help", median(helps), " ".join(f"{x:.2f}" for x in helps)],
                ["spawn -> first request", median(firsts), " ".join(f"{x:.2f}" for x in firsts)],
                ["whole 1-row run", median(walls), " ".join(f"{x:.2f}" for x in walls)],
            ],
        )
    )
    print(f"target: < 1.5 s to the first request -> {'ok' if median(firsts) < 1.5 else 'FAIL'}")


SECTIONS = {
    "server": section_server,
    "inflight": section_inflight,
    "memory": section_memory,
    "bootstrap": section_bootstrap,
    "startup": section_startup,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default=str(DEFAULT_MMLU), help="MMLU test.jsonl (first 4,000 rows)")
    parser.add_argument("--stub", help="path of openai_stub.py (default ../shared/tools/openai_stub.py)")
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section(s) {unknown}; accepted: {', '.join(SECTIONS)}")
    with tempfile.TemporaryDirectory(prefix="evalstack-scale-") as tmp:
        for name in names:
            SECTIONS[name](args, Path(tmp))


if __name__ == "__main__":
    main()
