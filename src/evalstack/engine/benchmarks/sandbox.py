"""Runs untrusted generated code in a separate, limited process; never in the server process.

Each run: a fresh temporary directory (deleted afterwards) as the working directory, ``python -I``
(isolated: no user site, no environment-driven imports) with an empty environment, its own session (the
whole process group is killed on timeout), and resource limits set in the child before exec: address
space (``RLIMIT_AS``), CPU seconds (``RLIMIT_CPU``), file size, no core files (new processes are refused
by the audit hook below, not by a limit). Network: a new network namespace through ``unshare -rn`` when
the system allows it; in any case an audit hook installed before the program runs refuses sockets,
subprocesses, ``fork`` and ``exec``. A wall-clock timeout kills what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MEMORY_LIMIT_BYTES = 1024 * 1024 * 1024
OUTPUT_LIMIT = 4000

_BOOTSTRAP = r"""
import sys
_BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.fork", "os.forkpty",
            "os.spawn", "pty.spawn", "ctypes.")
def _guard(event, args):
    if event.startswith(_BLOCKED):
        raise PermissionError(f"sandbox: {event} is not allowed")
sys.addaudithook(_guard)
_path = sys.argv[1]
with open(_path, encoding="utf-8") as _f:
    _source = _f.read()
del _f
_globals = {"__name__": "__main__", "__builtins__": __builtins__}
exec(compile(_source, "program.py", "exec"), _globals)
"""


@dataclass
class RunResult:
    """How a program ended: ``passed`` when it exited 0 within the limits."""

    passed: bool
    status: str  # "passed" | "failed" | "timeout"
    returncode: int | None
    output: str


ProgramRunner = Callable[[str, float, int], Awaitable[RunResult]]
"""Runs ``(source, timeout, memory_bytes)`` elsewhere, e.g. as a Ray task on a cluster's workers."""

program_runner: ContextVar[ProgramRunner | None] = ContextVar("program_runner", default=None)
"""Set by an executor whose sandboxes run elsewhere; unset, programs run here (``run_program_here``)."""


@functools.cache
def network_namespace_available() -> bool:
    """Whether ``unshare -rn`` works here (a user and network namespace without privileges)."""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return False
    try:
        done = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _limits(cpu_seconds: int, memory_bytes: int) -> None:  # runs in the child, before exec
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 * 1024, 16 * 1024 * 1024))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


async def run_program(
    source: str, *, timeout: float = 10.0, memory_bytes: int = MEMORY_LIMIT_BYTES
) -> RunResult:
    """Run ``source`` under the limits above, through ``program_runner`` when one is set, else here."""
    runner = program_runner.get()
    if runner is not None:
        return await runner(source, timeout, memory_bytes)
    return await run_program_here(source, timeout=timeout, memory_bytes=memory_bytes)


async def run_program_here(
    source: str, *, timeout: float = 10.0, memory_bytes: int = MEMORY_LIMIT_BYTES
) -> RunResult:
    """Run ``source`` as a Python program in this machine's sandbox; never raises for the program's faults."""
    workdir = Path(tempfile.mkdtemp(prefix="evalstack-sandbox-"))
    try:
        program = workdir / "program.py"
        program.write_text(source, encoding="utf-8")
        command = [sys.executable, "-I", "-S", "-c", _BOOTSTRAP, str(program)]
        if network_namespace_available():
            command = [shutil.which("unshare") or "unshare", "-rn", *command]
        cpu = max(1, int(timeout) + 1)
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=workdir,
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": str(workdir),
                "TMPDIR": str(workdir),
                "PYTHONHASHSEED": "0",
            },
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=functools.partial(_limits, cpu, memory_bytes),
        )
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            _kill(process)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(process.wait(), 5)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return RunResult(False, "timeout", None, f"timed out after {timeout:g} s")
        finally:
            _kill(process)
        text = out.decode("utf-8", "replace")[-OUTPUT_LIMIT:]
        code = process.returncode
        return RunResult(code == 0, "passed" if code == 0 else "failed", code, text)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill the program's whole process group (anything it started too)."""
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        os.killpg(process.pid, signal.SIGKILL)
