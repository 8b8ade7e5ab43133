"""Serving helpers for tests: a free loopback port and an ASGI app run by uvicorn in a thread.

    server = BackgroundServer(app, free_port(), name="fake hub")
    server.start()          # returns once uvicorn has started (RuntimeError if it dies or times out)
    ...
    server.stop()

``BackgroundServer`` is also a context manager (start on enter, stop on exit). ``ServeProcess`` runs
``evalstack serve`` itself in a subprocess.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

import httpx
import uvicorn

HOST = "127.0.0.1"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class BackgroundServer:
    """``app`` served by uvicorn on ``127.0.0.1:port`` in a daemon thread.

    ``start`` blocks until uvicorn reports it has started; it raises ``RuntimeError`` naming the
    server when the thread exits first or ``start_timeout`` seconds pass. ``stop`` asks uvicorn to
    exit and joins the thread (at most ``stop_timeout`` seconds).
    """

    def __init__(
        self,
        app: Any,
        port: int,
        *,
        name: str = "server",
        start_timeout: float = 10.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.name = name
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        config = uvicorn.Config(app, host=HOST, port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"{self.name} at {self.url} exited during startup")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} at {self.url} did not start in {self.start_timeout:g}s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=self.stop_timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServeProcess:
    """``python -m evalstack.cli serve`` in a subprocess on a free port, for tests that kill and restart it.

    Each ``start()`` picks a new port (``url``). The server gets its own data directory under ``workdir``,
    the given config file text and database URL, and none of the environment variables that would
    change its providers, Hub or database behind the test's back. ``offline`` sets ``HF_HUB_OFFLINE``.
    """

    def __init__(
        self,
        workdir: Path,
        config: str,
        *,
        db_url: str | None = None,
        name: str = "server",
        offline: bool = True,
        start_timeout: float = 60.0,
    ) -> None:
        self.workdir = workdir
        self.db_url = db_url or f"sqlite:///{workdir / 'evalstack.db'}"
        self.config = workdir / f"{name}.yaml"
        self.config.write_text(config, encoding="utf-8")
        self.log = workdir / f"{name}.log"
        self.offline = offline
        self.start_timeout = start_timeout
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        """Start the server and return once ``/v1/health`` answers (RuntimeError with its log otherwise)."""
        self.port = free_port()
        env = {**os.environ, "EVALSTACK_DATA_HOME": str(self.workdir / "data")}
        for name in ("NVIDIA_EVALUATOR_URL", "HF_ENDPOINT", "HF_HUB_OFFLINE", "EVALSTACK_DB_URL"):
            env.pop(name, None)
        if self.offline:
            env["HF_HUB_OFFLINE"] = "1"
        command = [sys.executable, "-m", "evalstack.cli", "serve", "--config", str(self.config)]
        command += ["--port", str(self.port), "--db", self.db_url, "--log-level", "warning"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"evalstack serve exited with {self.proc.returncode}:\n{self.log.read_text()}"
                )
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop(kill=True)
        raise RuntimeError(f"evalstack serve did not start:\n{self.log.read_text()}")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL, to simulate a crash) and wait for the process to end."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
