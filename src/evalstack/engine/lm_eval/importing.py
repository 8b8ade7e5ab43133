"""Import lm-eval without paying for Hugging Face ``datasets`` until a dataset is really loaded.

``lm_eval.api.task`` imports ``datasets`` at the top (with pandas and pyarrow, about half a second), but
uses it only inside the methods that load a dataset. A run whose tasks come from a snapshot
(``snapshot``) never loads one, so lm-eval is imported with a stand-in for ``datasets`` in its task
module: the first attribute read from it imports the real package and answers from it. Every other
importer of ``datasets`` gets the real package as usual; the stand-in is only in ``sys.modules`` while
``lm_eval.api.task`` is imported.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from typing import Any

_lock = threading.RLock()


class DeferredModule(types.ModuleType):
    """A module that imports the real one (by its name) on the first attribute read and delegates."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__spec__ = None  # the import system reads it; reading it must not load the module

    def __getattr__(self, attribute: str) -> Any:
        with _lock:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
        return getattr(real, attribute)


def import_lm_eval() -> None:
    """Import ``lm_eval.api.task`` (and so lm-eval's task classes) with ``datasets`` deferred; idempotent."""
    if "lm_eval.api.task" in sys.modules:
        return
    with _lock:
        stand_in = None
        if "datasets" not in sys.modules:
            stand_in = sys.modules["datasets"] = DeferredModule("datasets")
        try:
            importlib.import_module("lm_eval.api.task")
        finally:
            if stand_in is not None and sys.modules.get("datasets") is stand_in:
                del sys.modules["datasets"]
