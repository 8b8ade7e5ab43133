"""Job lease bookkeeping: who holds a job's lease, and whether that holder is still alive.

A lease names its holder as ``host:pid:token``; a holder that is a dead process of this host has
lost its lease at once (``Store.claim_job`` takes it over without waiting for it to lapse).
"""

from __future__ import annotations

import os
import socket
import uuid


def worker_identity() -> str:
    """``host:pid:token``: names one worker of one process in job leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_gone(owner: str) -> bool:
    """True when a lease holder is a process of this host that no longer exists (killed, crashed)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, but not ours to signal
        return False
    return False
