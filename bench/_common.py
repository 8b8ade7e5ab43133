"""Helpers shared by the benchmark scripts: the stand-in model server, ``evalstack serve``, peak memory,
tables, medians, lm-eval task YAMLs that read local data.

The model server is ``openai_stub.py`` (standard library only; ``--answer hash`` picks one of A-D
from a hash of the prompt, ``--latency-ms`` delays every answer, ``GET /stats`` reports the most
requests in flight). By default it is looked up at ``../shared/tools/openai_stub.py`` next to the
repository; ``--stub PATH`` or the ``EVALSTACK_STUB`` environment variable name another copy.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEFAULT_STUB = SHARED / "tools" / "openai_stub.py"
DEFAULT_MMLU = SHARED / "data" / "mmlu" / "test.jsonl"


def stub_path(given: str | None = None) -> Path:
    """The stub script: ``given``, else ``$EVALSTACK_STUB``, else ``../shared/tools/openai_stub.py``."""
    path = Path(given or os.environ.get("EVALSTACK_STUB") or DEFAULT_STUB)
    if not path.is_file():
        raise SystemExit(
            f"model server stub not found at {path}; pass --stub PATH (openai_stub.py) or set EVALSTACK_STUB"
        )
    return path


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not exited after ``grace_s`` seconds."""
    proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Stub:
    """The stand-in model server in a subprocess; a context manager."""

    def __init__(
        self, script: Path, *, latency_ms: float = 0.0, answer: str = "hash", port: int | None = None
    ) -> None:
        self.script = script
        self.latency_ms = latency_ms
        self.answer = answer
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's root URL (no ``/v1``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI API root (``.../v1``)."""
        return f"{self.url}/v1"

    def __enter__(self) -> Stub:
        cmd = [
            sys.executable,
            str(self.script),
            "--port",
            str(self.port),
            "--answer",
            self.answer,
            "--latency-ms",
            str(self.latency_ms),
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                self.stats()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"the stub exited at start ({' '.join(cmd)})") from None
                time.sleep(0.05)
        raise SystemExit("the stub did not answer within 15 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop(self.proc, grace_s=5)

    def stats(self) -> dict[str, Any]:
        """``GET /stats``: requests seen, most in flight at once."""
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data

    def reset(self) -> None:
        """Zero the stub's counters."""
        req = urllib.request.Request(f"{self.url}/stats/reset", data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            resp.read()


class Server:
    """``evalstack serve`` (this checkout's) in a subprocess; a context manager.

    Its data directory is ``home`` (default ``work/data``); ``settings`` (YAML text), when given, is
    its settings file; ``env`` adds environment variables. Its log goes to ``work/server.log``.
    """

    def __init__(
        self,
        work: Path,
        home: Path | None = None,
        *,
        settings: str | None = None,
        db: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.work, self.home, self.port = work, home or work / "data", free_port()
        self.settings, self.db, self.env = settings, db, env or {}
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s = float("nan")
        """Seconds from spawn until it answered its health check."""

    def __enter__(self) -> Server:
        self.work.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "EVALSTACK_DATA_HOME": str(self.home), "HF_HUB_OFFLINE": "1", **self.env}
        env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
        command = [sys.executable, "-m", "evalstack.cli", "serve", "--port", str(self.port)]
        command += ["--log-level", "warning"]
        if self.settings is not None:
            config = self.work / "evalstack.yaml"
            config.write_text(self.settings)
            command += ["--config", str(config)]
        if self.db is not None:
            command += ["--db", self.db]
        log = self.work / "server.log"
        started = time.perf_counter()
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                command, cwd=self.work, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"evalstack serve exited at start:\n{log.read_text()[-2000:]}")
            try:
                self.get("/v1/health")
                self.startup_s = time.perf_counter() - started
                return self
            except OSError:
                time.sleep(0.05)
        raise SystemExit("evalstack serve did not answer within 60 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop(self.proc, grace_s=15)

    def peak_rss_mb(self) -> float:
        """The server's peak resident memory so far (``VmHWM``), in MB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """The server's CPU time so far (user + system), in seconds."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            body = resp.read()
            return json.loads(body) if body else None

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            data = resp.read()
            return json.loads(data) if data else None

    def wait(self, path: str, done: set[str], timeout: float = 1800, poll_s: float = 0.05) -> dict[str, Any]:
        """Poll ``path`` until its ``status`` is in ``done``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.get(path)
            if job.get("status") in done:
                return job
            time.sleep(poll_s)
        raise SystemExit(f"{path} did not finish within {timeout} s")


def self_peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class ChildRun:
    """A finished command: wall seconds, exit code, peak RSS (MB), captured output, CPU seconds (user and
    system, the child and its reaped children: what it cost, however busy the machine was)."""

    wall: float
    returncode: int
    peak_rss_mb: float
    stdout: str
    stderr: str
    cpu: float = 0.0


def run_child(
    cmd: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 1800
) -> ChildRun:
    """Run ``cmd``: wall time from spawn to exit, and peak RSS from ``wait4`` (the child and its reaped
    children)."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=env, cwd=cwd)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildRun(
            wall,
            proc.returncode,
            usage.ru_maxrss / 1024,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            usage.ru_utime + usage.ru_stime,
        )


def write_task_override(
    folder: Path, task: str, include: Path, data_files: dict[str, str], **fields: Any
) -> Path:
    """An lm-eval include-path YAML ``folder/<task>.yaml``: it ``include:``s a task YAML (a built-in one)
    and reads local JSON lines (``dataset_path: json``, ``data_files`` by split) instead of the Hub;
    ``fields`` set or override any other key. JSON is YAML, so the file is written as JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "include": str(include),
        "task": task,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": data_files},
        **fields,
    }
    path = folder / f"{task}.yaml"
    path.write_text(json.dumps(config))
    return path


def write_gsm8k_override(
    folder: Path, data: Path, builtin_tasks: Path, task: str = "gsm8k", **fields: Any
) -> Path:
    """lm-eval's own ``gsm8k`` (``builtin_tasks``: lm-eval's ``tasks`` folder) on ``data``'s local GSM8K
    files: the 1,319 test questions and the first 500 training ones (the few-shot pool)."""
    files = {"test": str(data / "gsm8k/test.jsonl"), "train": str(data / "gsm8k/train_first500.jsonl")}
    return write_task_override(folder, task, builtin_tasks / "gsm8k" / "gsm8k.yaml", files, **fields)


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned columns (Markdown-compatible)."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.5f}" if abs(value) < 1 else f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)
