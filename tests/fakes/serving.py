"""Serving helpers for tests: a free loopback port and an ASGI app run by uvicorn in a thread.

    server = BackgroundServer(app, free_port(), name="fake hub")
    server.start()          # returns once uvicorn has started (RuntimeError if it dies or times out)
    ...
    server.stop()

``BackgroundServer`` is also a context manager (start on enter, stop on exit).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

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
