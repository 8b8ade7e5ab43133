"""Whether the embedded model can run here (its packages and its weights), for tests that skip without it."""

from __future__ import annotations

import importlib.util


def missing_embedded_model() -> str | None:
    """Why the embedded model cannot run here; ``None`` when it can."""
    from evalstack.inference.base import InferenceError
    from evalstack.inference.embedded import find_gguf

    for module in ("torch", "transformers", "gguf"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'evalstack[embedded]')"
    try:
        find_gguf()
    except InferenceError as exc:
        return str(exc)
    return None
