"""Model-client throughput: evalstack's OpenAI client (aiohttp) against a plain httpx client, side by side.

    python bench/http_client.py --stub path/to/openai_stub.py [--requests 4000] [--concurrency 16 64 256]
        [--latency-ms 0] [--repeats 3]

Starts the stub (``--answer hash``) on a free port, then for each concurrency runs the variants
alternately ``--repeats`` times, each sending ``--requests`` chat requests with exactly that many
workers (and a connection pool of that size), and prints the median requests/s and the stub's
``max_in_flight`` (meaningful with ``--latency-ms`` above 0). Other modules can add variants through
:func:`main`'s ``extra`` argument.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evalstack.inference.base import InferenceRequest, ModelClient, ModelEndpoint
from evalstack.inference.openai_http import OpenAIClient

Factory = Callable[[str, int], ModelClient]


def evalstack_client(base_url: str, concurrency: int) -> ModelClient:
    """evalstack's own client, as the engine uses it."""
    endpoint = ModelEndpoint(kind="openai", model="stub-model", base_url=base_url)
    return OpenAIClient(endpoint, max_retries=0, timeout=60.0, max_connections=concurrency)


class HttpxClient:
    """The same chat request through a bare ``httpx.AsyncClient`` (pool sized to the concurrency)."""

    def __init__(self, base_url: str, concurrency: int) -> None:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client = httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0)

    async def generate(self, request: InferenceRequest) -> Any:
        resp = await self._client.post(
            "/chat/completions", json={"model": "stub-model", "messages": request.messages}
        )
        resp.raise_for_status()
        return resp.json()["choices"][0]["message"]["content"]

    async def aclose(self) -> None:
        await self._client.aclose()


VARIANTS: dict[str, Factory] = {"aiohttp (evalstack)": evalstack_client, "httpx": HttpxClient}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stats(root: str, method: str = "GET") -> dict[str, Any]:
    req = urllib.request.Request(f"{root}/stats", method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


async def _drive(client: ModelClient, requests: int, concurrency: int) -> float:
    """Send ``requests`` chat requests with ``concurrency`` workers; return requests per second."""
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            msg = [{"role": "user", "content": f"Question {i}: which letter?"}]
            await client.generate(InferenceRequest(kind="chat", messages=msg, params={"max_tokens": 8}))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - start)


async def _one(factory: Factory, root: str, requests: int, concurrency: int) -> tuple[float, int]:
    client = factory(f"{root}/v1", concurrency)
    try:
        await _drive(client, min(requests, 4 * concurrency), concurrency)  # warm the pool
        await asyncio.to_thread(_stats, root, "POST")
        rate = await _drive(client, requests, concurrency)
        in_flight = int((await asyncio.to_thread(_stats, root))["max_in_flight"])
    finally:
        await client.aclose()
    return rate, in_flight


def main(argv: list[str] | None = None, extra: dict[str, Factory] | None = None) -> None:
    """Parse arguments, start the stub, run every variant alternately, print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stub", type=Path, required=True, help="path to openai_stub.py")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    variants = {**(extra or {}), **VARIANTS}
    port = _free_port()
    root = f"http://127.0.0.1:{port}"
    stub = subprocess.Popen(
        [
            sys.executable,
            str(args.stub),
            "--port",
            str(port),
            "--answer",
            "hash",
            "--latency-ms",
            str(args.latency_ms),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                _stats(root)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the stub did not start") from None
                time.sleep(0.1)
        print(
            f"{args.requests} chat requests per run, stub latency {args.latency_ms:g} ms, "
            f"median of {args.repeats} alternating runs"
        )
        print(f"{'concurrency':>11}  {'client':<22} {'req/s':>8}  {'runs':<26} {'max in flight':>13}")
        for concurrency in args.concurrency:
            rates: dict[str, list[float]] = {name: [] for name in variants}
            flights: dict[str, list[int]] = {name: [] for name in variants}
            for _ in range(args.repeats):
                for name, factory in variants.items():
                    rate, flight = asyncio.run(_one(factory, root, args.requests, concurrency))
                    rates[name].append(rate)
                    flights[name].append(flight)
            for name in variants:
                runs = " ".join(f"{r:.0f}" for r in rates[name])
                print(
                    f"{concurrency:>11}  {name:<22} {statistics.median(rates[name]):>8.0f}  {runs:<26} "
                    f"{max(flights[name]):>13}"
                )
    finally:
        stub.terminate()
        stub.wait(10)


if __name__ == "__main__":
    main()
