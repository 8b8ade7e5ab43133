"""Run a command in a private network and PID namespace: loopback is the only interface there.

Ray listens on the machine's outward address even when told 127.0.0.1; inside a fresh network
namespace that address is 127.0.0.1, so a whole multi-node Ray cluster stays on loopback. The PID
namespace means nothing started inside (a `ray stop` included) can touch a process outside, and
everything inside dies with the namespace's first process.

    python -m tests.fakes.private_network COMMAND ARG...   # brings `lo` up, then execs COMMAND

``run_private(argv)`` does ``unshare -rn -p -f --mount-proc`` around that; ``private_network_refusal()``
says why it cannot (``None`` where it can), for a skip reason.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence

_UNSHARE = ("unshare", "-rn", "-p", "-f", "--mount-proc")
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def bring_loopback_up() -> None:
    """Set ``lo`` up in this network namespace (ioctl; no `ip` tool needed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | _IFF_UP))


@functools.cache
def private_network_refusal() -> str | None:
    """Why a private network and PID namespace cannot be made here; ``None`` when it can."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return "needs Linux with util-linux `unshare` (for a private network namespace)"
    probe = private_command(["true"])
    try:
        done = subprocess.run(probe, capture_output=True, timeout=30, check=False, cwd=_repo_root())
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`unshare -rn -p -f --mount-proc` failed: {exc}"
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return f"the system refuses `unshare -rn -p -f --mount-proc`: {reason[0]}"
    return None


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def private_command(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped to run inside a new private network + PID namespace (from the repository root)."""
    return [*_UNSHARE, sys.executable, "-m", "tests.fakes.private_network", *argv]


def run_private(
    argv: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside a new private network + PID namespace, from the repository root."""
    return subprocess.run(
        private_command(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=_repo_root(),
        env=dict(env) if env is not None else None,
    )


if __name__ == "__main__":
    bring_loopback_up()
    os.execvp(sys.argv[1], sys.argv[1:])
