"""Runs untrusted generated code in a separate, limited process; never in the server process.

Each run: a fresh temporary directory (deleted afterwards) as the working directory, ``python -I``
(isolated: no user site, no environment-driven imports) with an empty environment, its own session (the
whole process group is killed on timeout), and resource limits set in the child before exec: address
space (``RLIMIT_AS``), CPU seconds (``RLIMIT_CPU``), file size, no core files (new processes are refused
by the audit hook below, not by a limit). Network: a new network namespace through ``unshare -rn`` when
the system allows it; in any case an audit hook installed before the program runs refuses sockets,
subprocesses, ``fork`` and ``exec``. A wall-clock timeout kills what is left.
The guard also refuses writes outside the working directory (``open`` for writing, remove, rename,
mkdir, chmod, links...), so a program cannot leave anything behind on this machine.

:class:`SandboxWorker` is the same sandbox kept alive: a Python process that loads a function once
(the heavy imports of a metric library) and calls it on each payload in a fresh fork of itself, under
the same limits, network namespace and guard (which then lets the worker fork, and allows Unix
sockets, as metric libraries that run candidates in child processes need). Answers come back as
JSON, never as pickles: nothing the sandbox says is trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MEMORY_LIMIT_BYTES = 1024 * 1024 * 1024
OUTPUT_LIMIT = 4000

_GUARD = r"""
def _install_guard(allow_processes):
    import os, sys
    workdir = os.path.realpath(os.getcwd())
    blocked = ["subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "pty.spawn", "ctypes."]
    if not allow_processes:
        blocked += ["socket.", "os.fork", "os.forkpty"]
    blocked = tuple(blocked)
    changes = {"os.remove": 0, "os.rename": 0, "os.mkdir": 0, "os.rmdir": 0, "os.chmod": 0, "os.chown": 0,
               "os.symlink": 1, "os.link": 1, "os.truncate": 0, "os.utime": 0, "shutil.rmtree": 0}
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    def inside(path):
        if isinstance(path, int) or path is None:
            return True
        real = os.path.realpath(os.fsdecode(path))
        return real == workdir or real.startswith(workdir + os.sep) or real == os.devnull
    def guard(event, args):
        if event.startswith(blocked):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open" and (args[2] or 0) & writing and not inside(args[0]):
            raise PermissionError(f"sandbox: writing outside the working directory ({args[0]!r})")
        target = args[changes[event]] if event in changes else None
        if event in changes and not (inside(target) and (event != "os.rename" or inside(args[1]))):
            raise PermissionError(f"sandbox: {event} outside the working directory ({target!r})")
        if event == "socket.__new__" and args[1] != 1:  # AF_UNIX
            raise PermissionError("sandbox: only Unix sockets are allowed")
        network = event in ("socket.connect", "socket.bind", "socket.sendto")
        if network and not isinstance(args[-1] if event == "socket.sendto" else args[1], str | bytes):
            raise PermissionError(f"sandbox: {event} to a network address is not allowed")
    sys.addaudithook(guard)
"""

_BOOTSTRAP = (
    _GUARD
    + r"""
import sys
_install_guard(False)
del _install_guard
_path = sys.argv[1]
with open(_path, encoding="utf-8") as _f:
    _source = _f.read()
del _f
_globals = {"__name__": "__main__", "__builtins__": __builtins__}
exec(compile(_source, "program.py", "exec"), _globals)
"""
)


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


def _sandbox_env(workdir: Path) -> dict[str, str]:
    """The whole environment of a sandboxed process: nothing of ours (no secrets) is inherited."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir), "PYTHONHASHSEED": "0"}


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
            env=_sandbox_env(workdir),
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


_WORKER = (
    _GUARD
    + r"""
import json, os, pickle, resource, select, signal, sys, time
config = json.loads(sys.argv[1])
sys.path[:0] = config["paths"]
sys.dont_write_bytecode = True
channel = os.dup(1)
os.dup2(2, 1)  # whatever else prints goes to the log, never into the answers
requests = sys.stdin.buffer


def read_exactly(fd, size, deadline):
    data = b""
    while len(data) < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_message(deadline=None, fd=None):
    fd = requests.fileno() if fd is None else fd
    header = read_exactly(fd, 8, deadline)
    if header is None:
        return None
    size = int.from_bytes(header, "big")
    if size > config["max_bytes"]:
        return None
    return read_exactly(fd, size, deadline)


def answer(reply):
    os.write(channel, (json.dumps(reply) + "\n").encode())


def plain(value):
    for convert in ("item", "tolist"):
        if callable(getattr(value, convert, None)):
            return getattr(value, convert)()
    if isinstance(value, tuple | set):
        return list(value)
    return str(value)


function = pickle.loads(read_message())
_install_guard(True)
del _install_guard
answer({"ready": True})
while select.select([requests.fileno()], [], [], config["idle_timeout"])[0]:
    payload = read_message()
    if payload is None:
        break
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(reader)
        os.setpgid(0, 0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1):
            os.dup2(null, fd)
        os.close(channel)
        cpu = int(config["timeout"]) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        try:
            reply = {"value": function(*pickle.loads(payload))}
            text = json.dumps(reply, default=plain)
        except BaseException as exc:
            text = json.dumps({"error": f"{type(exc).__name__}: {exc}"[:2000]})
        data = text.encode()
        os.write(writer, len(data).to_bytes(8, "big") + data)
        os._exit(0)
    os.close(writer)
    result = read_message(time.monotonic() + config["timeout"], reader)
    os.close(reader)
    try:
        os.killpg(child, signal.SIGKILL)  # with anything it started
    except OSError:
        pass
    os.waitpid(child, 0)
    if result is None:
        answer({"timeout": config["timeout"]})
        continue
    try:
        answer(json.loads(result))
    except ValueError:
        answer({"error": "the sandboxed call answered no JSON"})
"""
)


@dataclass
class WorkerAnswer:
    """What one call in a :class:`SandboxWorker` gave: ``value`` (JSON), or why there is none."""

    status: str  # "ok" | "error" | "timeout"
    value: Any = None
    message: str = ""


class SandboxWorker:
    """A sandboxed Python process that loads ``function`` once and calls it on each payload in a fork.

    ``function`` is pickled here (with cloudpickle: functions of modules the worker cannot import go
    by value) and unpickled in the worker; each :meth:`call` pickles its arguments, the worker forks,
    the fork calls ``function(*arguments)`` under a CPU and wall-clock limit of ``timeout`` and
    answers JSON. The worker exits when idle for ``idle_timeout`` seconds or when this side goes away
    (its stdin closes); the next call starts a new one. Calls are blocking (run them in a thread) and
    one at a time.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        timeout: float = 60.0,
        memory_bytes: int = 8 * MEMORY_LIMIT_BYTES,
        idle_timeout: float = 60.0,
        start_timeout: float = 300.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        import cloudpickle

        self.function = cloudpickle.dumps(function)
        self.timeout = timeout
        self.memory_bytes = memory_bytes
        self.idle_timeout = idle_timeout
        self.start_timeout = start_timeout
        self.env = dict(env or {})
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    @property
    def pid(self) -> int | None:
        """The worker's process id while it runs."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def call(self, *arguments: Any) -> WorkerAnswer:
        """``function(*arguments)`` in a fresh fork of the worker; never raises for the call's faults."""
        import pickle

        payload = pickle.dumps(arguments)
        with self._lock:
            process = self._running()
            try:
                assert process.stdin is not None
                process.stdin.write(len(payload).to_bytes(8, "big") + payload)
                process.stdin.flush()
                line = self._read_line(process, self.timeout + 30.0)
            except (OSError, ValueError) as exc:
                self._stop()
                return WorkerAnswer("error", message=f"the sandbox worker failed ({exc}); {self._log_tail()}")
            if line is None:
                tail = self._log_tail()
                self._stop()
                return WorkerAnswer("error", message=f"the sandbox worker stopped answering; {tail}")
        reply = json.loads(line)
        if "timeout" in reply:
            return WorkerAnswer("timeout", message=f"timed out after {self.timeout:g} s")
        if "error" in reply:
            return WorkerAnswer("error", message=str(reply["error"]))
        return WorkerAnswer("ok", value=reply.get("value"))

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()
        workdir = Path(tempfile.mkdtemp(prefix="evalstack-sandbox-"))
        config = {
            "paths": [p for p in sys.path if p],
            "timeout": self.timeout,
            "idle_timeout": self.idle_timeout,
            "max_bytes": 1 << 30,
        }
        command = [sys.executable, "-I", "-S", "-B", "-c", _WORKER, json.dumps(config)]
        if network_namespace_available():
            command = [shutil.which("unshare") or "unshare", "-rn", *command]
        log = (workdir / "worker.log").open("wb")
        try:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env={**_sandbox_env(workdir), **self.env},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                preexec_fn=functools.partial(_limits, 24 * 3600, self.memory_bytes),
            )
        finally:
            log.close()
        self._process, self._workdir = process, workdir
        assert process.stdin is not None
        process.stdin.write(len(self.function).to_bytes(8, "big") + self.function)
        process.stdin.flush()
        if self._read_line(process, self.start_timeout) is None:
            tail = self._log_tail()
            self._stop()
            raise RuntimeError(f"the sandbox worker did not start; {tail}")
        return process

    @staticmethod
    def _read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes | None:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready:
            return None
        line = process.stdout.readline()
        return line or None

    def _log_tail(self) -> str:
        if self._workdir is None:
            return "no log"
        try:
            text = (self._workdir / "worker.log").read_text("utf-8", "replace")
        except OSError:
            return "no log"
        return "its log ends: " + text[-OUTPUT_LIMIT:] if text.strip() else "its log is empty"

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __getstate__(self) -> dict[str, Any]:
        """What travels with a plan (to a Ray worker): the function and settings, never the process."""
        state = dict(self.__dict__)
        state.update(_lock=None, _process=None, _workdir=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._stop()
