"""The scoring-function half of the registry, in memory, for tests of the scoring service and metrics.

Subclasses add ``resolve_model`` for the models their tests name.
"""

from __future__ import annotations

from evalstack.api.llama_stack.models import ScoringFn


class InMemoryScoringFunctions:
    """Keeps registered scoring functions in a dict, the way the registry keeps them in the store."""

    def __init__(self) -> None:
        self.functions: dict[str, ScoringFn] = {}

    async def put_scoring_fn(self, fn: ScoringFn) -> None:
        self.functions[fn.identifier] = fn

    async def get_scoring_fn(self, fn_id: str) -> ScoringFn | None:
        return self.functions.get(fn_id)

    async def list_scoring_fns(self) -> list[ScoringFn]:
        return list(self.functions.values())

    async def delete_scoring_fn(self, fn_id: str) -> None:
        del self.functions[fn_id]
