"""Import lm-eval without paying for the packages it imports but a run may never use.

``lm_eval.api.task`` imports Hugging Face ``datasets`` at the top (with pandas and pyarrow, about half
a second) but uses it only in the methods that load a dataset; its metrics module imports
``sacrebleu`` for the BLEU, chrF and TER metrics only, and its API models import ``requests`` for
their synchronous client, which evalstack never calls. A run whose tasks come from a snapshot
(``snapshot``) needs none of them, so lm-eval is imported with a stand-in for each in the modules
that import it: the first attribute read from a stand-in imports the real package and answers from
it. Every other importer gets the real package as usual; the stand-ins are only in ``sys.modules``
while lm-eval's modules are imported.
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


DEFERRED = ("datasets", "requests", "sacrebleu")
"""The packages lm-eval imports at the top of a module and uses only in some of its functions."""

MODULES = ("lm_eval.api.task", "lm_eval.models.openai_completions")
"""lm-eval's task classes, and the API models whose request formats evalstack uses."""


def import_lm_eval() -> None:
    """Import lm-eval's task classes and API models with :data:`DEFERRED` deferred; idempotent."""
    if all(name in sys.modules for name in MODULES):
        return
    with _lock:
        stand_ins = {name: DeferredModule(name) for name in DEFERRED if name not in sys.modules}
        sys.modules.update(stand_ins)
        try:
            for name in MODULES:
                importlib.import_module(name)
        finally:
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]
