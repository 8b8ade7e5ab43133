"""The shape every academic benchmark compiles into, and the loader of its rows and few-shot pool."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from evalstack.engine.benchmarks.common import DataSource, Memo, Options, load_split
from evalstack.engine.benchmarks.results import GroupSummary, TaskSummary
from evalstack.engine.plan import TaskPlan
from evalstack.engine.ports import ClientSource
from evalstack.errors import InvalidInputError, NotFoundError
from evalstack.inference.base import ModelClient, ModelEndpoint

if TYPE_CHECKING:
    from evalstack.config import Settings


@dataclass
class Context:
    """What a benchmark needs to compile one task of a config."""

    task_name: str
    opts: Options
    settings: Settings
    endpoint: ModelEndpoint
    clients: ClientSource | None
    max_retries: int = 5
    request_timeout: float = 600.0

    def client(self) -> ModelClient:
        if self.clients is None:
            raise InvalidInputError("this benchmark needs a model client pool to send extra requests")
        return self.clients.get(self.endpoint, max_retries=self.max_retries, timeout=self.request_timeout)


@dataclass
class Compiled:
    """Tasks, how to summarise them, and groups."""

    plans: list[TaskPlan] = field(default_factory=list)
    summaries: list[TaskSummary] = field(default_factory=list)
    groups: list[GroupSummary] = field(default_factory=list)


class Benchmark(Protocol):
    """An academic benchmark: ``name`` is its config type."""

    name: str
    summary: str

    def compile(self, ctx: Context) -> Compiled: ...


Normalizer = Callable[[Mapping[str, Any], int], dict[str, Any]]


class Rows:
    """The normalised rows of a benchmark split, loaded once per plan, and its few-shot pool."""

    def __init__(
        self,
        bench: str,
        ctx: Context,
        test: DataSource,
        normalize: Normalizer,
        fewshot: DataSource | None = None,
    ) -> None:
        self.bench = bench
        self.ctx = ctx
        self.test = test
        self.normalize = normalize
        self.fewshot = fewshot
        self.fewshot_origin = "none"
        self._rows = Memo(self._load_rows)
        self._pool = Memo(self._load_pool)

    def _normalized(self, raw: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for position, row in enumerate(raw):
            try:
                out.append(self.normalize(row, position))
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise InvalidInputError(
                    f"{self.bench}: row {position} does not have the expected fields ({type(exc).__name__}: "
                    f"{exc}); fields found: {', '.join(map(str, row))}"
                ) from exc
        return out

    async def _load_rows(self) -> list[dict[str, Any]]:
        raw = await load_split(self.bench, self.test, self.ctx.opts, self.ctx.settings)
        return self._normalized(raw)

    async def _load_pool(self) -> list[dict[str, Any]]:
        if self.fewshot is not None:
            try:
                raw = await load_split(
                    self.bench, self.fewshot, self.ctx.opts, self.ctx.settings, use_files_url=False
                )
                self.fewshot_origin = "fewshot split"
                return self._normalized(raw)
            except NotFoundError:
                pass
        self.fewshot_origin = "evaluation split (the item itself excluded)"
        rows: list[dict[str, Any]] = await self._rows.get()
        return rows

    async def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await self._rows.get()
        return rows

    async def pool(self) -> list[dict[str, Any]]:
        pool: list[dict[str, Any]] = await self._pool.get()
        return pool
