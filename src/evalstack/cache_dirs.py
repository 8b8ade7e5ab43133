"""Where evalstack keeps what it can rebuild (converted models, lm-eval's task index and requests)."""

from __future__ import annotations

import os
from pathlib import Path

OFF_VALUES = ("", "0", "off", "false", "no")


def user_cache_dir(env_var: str, name: str) -> Path | None:
    """``$env_var`` when set (None when it says off), else ``$XDG_CACHE_HOME/evalstack/<name>``
    (``~/.cache/evalstack/<name>``)."""
    value = os.environ.get(env_var)
    if value is not None and value.strip().lower() in OFF_VALUES:
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evalstack" / name
