"""The store: every read and write of evalstack's database goes through :class:`Store`.

SQLAlchemy is synchronous, so database work runs on the store's own threads and the async methods
await it; the event loop never blocks on the database. Every write runs on one writer thread, so
writes from one process never race each other; reads run on a few reader threads with their own
connections, so a page a client reads never waits behind a batch of samples being written, nor a
write behind reads (SQLite in WAL mode and PostgreSQL let readers and a writer work at once; an
in-memory SQLite database, one connection, keeps everything on the writer thread). SQLite (the
default) runs in WAL mode, so a crash loses nothing that was committed.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast, get_args

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Text,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.pool import StaticPool

from evalstack.auth import Principal, check_may_delete, creator_name, current_principal
from evalstack.errors import ConflictError, InvalidInputError, NotFoundError, StorageFullError
from evalstack.store import sample_query, tables
from evalstack.store.records import (
    CachedResponse,
    CacheSummary,
    JobRecord,
    JobStatus,
    JobVersion,
    SampleFilter,
    SampleKey,
    SamplePage,
    SampleRecord,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

RESOURCE_KINDS: frozenset[str] = frozenset(
    {"model", "dataset", "benchmark", "scoring_fn", "nemo_config", "nemo_target", "nemo_result", "eval_job"}
)
"""The kinds of resources evalstack keeps; any lowercase name of up to 32 characters is accepted."""

_KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

JOB_FIELDS_UPDATABLE: frozenset[str] = frozenset(
    {"status", "error", "result", "progress", "spec", "benchmark_id", "provider_id"}
)
"""The job fields :meth:`Store.update_job` may change."""

SAMPLE_FIELDS: tuple[str, ...] = (
    "item", "output_text", "response", "finish_reason", "scores", "error", "extra",
)  # fmt: skip
"""The columns of a sample besides task and index, that :meth:`Store.read_samples` and
:meth:`Store.iter_samples` can read."""


def _wanted_fields(fields: Collection[str] | None) -> tuple[str, ...]:
    """``fields`` in column order (all of them for None); ValueError naming the accepted ones."""
    unknown = set(fields or ()) - set(SAMPLE_FIELDS)
    if unknown:
        raise ValueError(
            f"Unknown sample field(s) {', '.join(sorted(unknown))}; accepted: {', '.join(SAMPLE_FIELDS)}"
        )
    return SAMPLE_FIELDS if fields is None else tuple(f for f in SAMPLE_FIELDS if f in fields)


def _sample_records(rows: Iterable[Any], fields: Sequence[str]) -> list[SampleRecord]:
    """Rows of (task, index, *fields) as records; a field not read, or read as None, keeps its default."""
    records = []
    for task, index, *values in rows:
        sample = SampleRecord(task=task, index=index, item={})
        for name, value in zip(fields, values, strict=True):
            if value is not None:
                setattr(sample, name, value)
        records.append(sample)
    return records


READER_THREADS = 2
"""Threads (each with its own connection) that run reads; more would only contend for the GIL."""

_JOB_STATUSES: frozenset[str] = frozenset(get_args(JobStatus))
_JSON_DIALECTS = frozenset({"sqlite", "postgresql", "mysql", "mariadb"})
_RESOURCES = tables.resources
_DATASET_ROWS = tables.dataset_rows
_JOBS = tables.jobs
_SAMPLES = tables.samples
_LEASES = tables.job_leases
_CACHE = tables.response_cache


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    """Timestamps are stored in UTC; SQLite gives them back naive."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _compact_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A decoded JSON object whose keys and short string values are interned.

    A job's samples repeat the same keys (``choices``, ``message``...) and short values (``stop``,
    the model name) in every record; sharing one copy of each halves the memory of reading a large
    job's samples back.
    """
    return {
        sys.intern(key): sys.intern(value) if type(value) is str and len(value) <= 32 else value
        for key, value in pairs
    }


_decode_json = json.JSONDecoder(object_pairs_hook=_compact_object).decode


def _json_loads(value: str | bytes) -> Any:
    """Decode a stored JSON value (psycopg hands them over as bytes, SQLite as text)."""
    return _decode_json(value.decode() if isinstance(value, bytes | bytearray) else value)


def _sqlite_pragmas(busy_timeout: float, dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    finally:
        cursor.close()


# SQLite result codes (``sqlite3.Error.sqlite_errorname``) of a write that another connection blocked.
_SQLITE_CONTENTION = ("SQLITE_BUSY", "SQLITE_LOCKED")
# PostgreSQL SQLSTATE classes of a lost or refused connection: 08 connection exception, 57P operator
# intervention (the server shuts down, restarts or is not yet accepting connections).
_POSTGRES_TRANSIENT = ("08", "57P")


def _is_transient(exc: BaseException) -> bool:
    """Whether a database error says "try again" (contention, a dropped or refused connection).

    A transient error leaves nothing half-written: each store call is one transaction, which the
    database rolled back. Anything else (a full disk, a constraint, a bug) is not retried.
    """
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    original = exc.orig
    if str(getattr(original, "sqlite_errorname", "")).startswith(_SQLITE_CONTENTION):
        return True
    if isinstance(exc, OperationalError | InterfaceError) and type(original).__module__.startswith("psycopg"):
        sqlstate = getattr(original, "sqlstate", None)
        # No SQLSTATE: the client could not reach the server at all (refused, reset, closed).
        return sqlstate is None or str(sqlstate).startswith(_POSTGRES_TRANSIENT)
    return False


def _is_full(exc: BaseException) -> bool:
    """Whether a database error says the disk (or the database's size limit) is full."""
    if not isinstance(exc, DBAPIError):
        return False
    original = exc.orig
    if getattr(original, "sqlite_errorname", None) == "SQLITE_FULL":
        return True
    # PostgreSQL: 53100 disk_full, or a file it could not extend for want of space.
    return getattr(original, "sqlstate", None) == "53100" or "No space left on device" in str(original)


def _check_kind(kind: str) -> None:
    if not _KIND_PATTERN.match(kind):
        raise ValueError(
            f"Invalid resource kind {kind!r}: expected a lowercase name of up to 32 characters "
            f"such as {', '.join(sorted(RESOURCE_KINDS))}"
        )


def _add_missing_columns(engine: Engine) -> None:
    """Add the nullable columns a store created by an older version lacks (``created_by``)."""
    present = inspect(engine)
    for table in (tables.resources, tables.jobs):
        have = {column["name"] for column in present.get_columns(table.name)}
        for column in table.columns:
            if column.name in have or not column.nullable:
                continue
            column_type = column.type.compile(engine.dialect)
            try:
                with engine.begin() as conn:
                    conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column_type}"))
            except (OperationalError, ProgrammingError):  # another process added it meanwhile
                if column.name not in {c["name"] for c in inspect(engine).get_columns(table.name)}:
                    raise


def _json_text(value: str | bytes | None) -> Any:
    """A JSON column read as its text (``CAST(... AS TEXT)``), decoded by the C decoder.

    Reads that serve one page or one job decode this way: several times faster than the column's
    own decoder, whose interning hook (a Python call per object) pays off only for bulk reads.
    """
    return None if value is None else json.loads(value)


def _paged_sample(row: tuple[Any, ...]) -> SampleRecord:
    """A sample as ``sample_query.page_query`` reads it (``PAGE_COLUMNS``: JSON columns as text)."""
    task, index, item, text, response, finish, scores, error, extra = row
    return SampleRecord(
        task, index, _json_text(item), text, _json_text(response), finish, _json_text(scores) or {}, error,
        _json_text(extra) or {},
    )  # fmt: skip


_JOB_JSON_COLUMNS = ("spec", "result", "progress")
_JOB_AS_TEXT = select(
    *(
        sql_cast(column, Text).label(column.name) if column.name in _JOB_JSON_COLUMNS else column
        for column in _JOBS.c
    )
)
"""A job's row with its JSON columns as text, for :func:`_job_record` with ``json_as_text``."""


def _job_record(row: Row[Any], *, json_as_text: bool = False) -> JobRecord:
    decode = _json_text if json_as_text else _same
    return JobRecord(
        id=row.id,
        front=cast(Any, row.front),
        spec=decode(row.spec),
        status=cast(Any, row.status),
        error=row.error,
        result=decode(row.result),
        progress=decode(row.progress) or {},
        benchmark_id=row.benchmark_id,
        provider_id=row.provider_id,
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
        created_by=row.created_by,
    )


def _same(value: Any) -> Any:
    return value


def _cache_cutoff(max_age: float | None) -> datetime | None:
    """The oldest ``created_at`` still fresh under a time-to-live of ``max_age`` seconds."""
    return None if max_age is None else _now() - timedelta(seconds=max_age)


def _sample_values(job_id: str, sample: SampleRecord) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "task": sample.task,
        "index": sample.index,
        "item": sample.item,
        "output_text": sample.output_text,
        "response": sample.response,
        "finish_reason": sample.finish_reason,
        "scores": sample.scores,
        "error": sample.error,
        "extra": sample.extra,
    }


class Store:
    """evalstack's persistent state behind one async interface.

    ``url`` is any SQLAlchemy URL, e.g. ``sqlite:///path/evalstack.db`` (the parent folder is
    created) or ``postgresql+psycopg://user@host/db``. Call :meth:`open` before use and
    :meth:`close` at the end. A call that fails transiently (SQLite still locked after
    ``sqlite_busy_timeout`` seconds, a PostgreSQL connection lost) is retried for up to
    ``reconnect_for`` seconds.
    """

    def __init__(self, url: str, *, reconnect_for: float = 300.0, sqlite_busy_timeout: float = 30.0) -> None:
        self.url = url
        self.reconnect_for = reconnect_for
        self.sqlite_busy_timeout = sqlite_busy_timeout
        self._engine: Engine | None = None
        self._executor: ThreadPoolExecutor | None = None  # the writer thread
        self._readers: ThreadPoolExecutor | None = None  # reader threads (the writer's for in-memory SQLite)

    # ---- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and create the tables that are missing."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evalstack-store")
        try:
            await self._run_once(self._executor, self._open_sync)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        if self._one_connection():
            self._readers = self._executor
        else:
            self._readers = ThreadPoolExecutor(READER_THREADS, thread_name_prefix="evalstack-store-read")

    async def close(self) -> None:
        """Finish pending work, release connections and stop the store's thread."""
        executor, readers = self._executor, self._readers
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        try:
            if readers is not None and readers is not executor:
                await loop.run_in_executor(None, readers.shutdown)  # reads in flight finish first
            await self._run_once(executor, self._close_sync)
        finally:
            self._executor = self._readers = None
            await loop.run_in_executor(None, executor.shutdown)

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _open_sync(self) -> None:
        try:
            url = make_url(self.url)
        except ArgumentError as exc:
            raise InvalidInputError(
                f"Invalid database URL {self.url!r}: {exc}. "
                "Expected a SQLAlchemy URL such as 'sqlite:///path/evalstack.db'."
            ) from exc
        backend = url.get_backend_name()
        kwargs: dict[str, Any] = {}
        if backend in _JSON_DIALECTS:
            kwargs["json_serializer"] = _json_dumps
            kwargs["json_deserializer"] = _json_loads
        if backend == "sqlite":
            kwargs["connect_args"] = {"check_same_thread": False}
            if self._sqlite_in_memory(url):
                kwargs["poolclass"] = StaticPool
            else:
                Path(str(url.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True  # a pooled connection a server restart broke is replaced
        engine = create_engine(url, **kwargs)
        if backend == "sqlite":
            event.listen(engine, "connect", functools.partial(_sqlite_pragmas, self.sqlite_busy_timeout))
        tables.metadata.create_all(engine)
        _add_missing_columns(engine)
        with engine.begin() as conn:
            sample_query.ensure_search_index(conn)
        self._engine = engine
        logger.info("store opened: %s", url.render_as_string(hide_password=True))

    def _one_connection(self) -> bool:
        """Whether the store has a single connection (in-memory SQLite), so no reader threads."""
        return self._engine is not None and isinstance(self._engine.pool, StaticPool)

    @staticmethod
    def _sqlite_in_memory(url: URL) -> bool:
        database = url.database or ""
        return database in ("", ":memory:") or database.startswith("file:")

    def _close_sync(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        self._engine = None

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one store call (one transaction) on the writer thread (see :meth:`_retrying`)."""
        return await self._retrying(self._executor, fn, *args, **kwargs)

    async def _read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one read (no write in it) on a reader thread (see :meth:`_retrying`)."""
        return await self._retrying(self._readers, fn, *args, **kwargs)

    async def _retrying(
        self, executor: ThreadPoolExecutor | None, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """Run one store call on ``executor``, again while it fails transiently.

        SQLite "database is locked" under contention, and a PostgreSQL connection that dropped or is
        refused (a restart), are retried with backoff for up to ``reconnect_for`` seconds; callers
        meanwhile wait, so a job pauses instead of failing. Other errors are raised at once.
        """
        deadline = time.monotonic() + self.reconnect_for
        delay = 0.02
        failing_since: float | None = None
        while True:
            try:
                result = await self._run_once(executor, fn, *args, **kwargs)
            except DBAPIError as exc:
                if _is_full(exc):
                    raise StorageFullError(
                        f"The database is full, nothing of this write was stored: {exc.orig}. "
                        "Free space (or raise the database's size limit); finished work is kept."
                    ) from exc
                if not _is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
                if failing_since is None:
                    failing_since = time.monotonic()
                    logger.warning(
                        "database unavailable, retrying for up to %.0fs: %s", self.reconnect_for, exc.orig
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if failing_since is not None:
                logger.warning("database available again after %.1fs", time.monotonic() - failing_since)
            return result

    async def _run_once(
        self, executor: ThreadPoolExecutor | None, fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        if executor is None:
            raise RuntimeError("The store is not open: call 'await store.open()' first.")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))

    def _connect(self) -> Connection:
        """A connection for reads (its transaction is rolled back when the block ends)."""
        if self._engine is None:
            raise RuntimeError("The store is not open: call 'await store.open()' first.")
        return self._engine.connect()

    def _begin(self) -> AbstractContextManager[Connection]:
        """A connection in a transaction, committed when the ``with`` block ends without an error."""
        if self._engine is None:
            raise RuntimeError("The store is not open: call 'await store.open()' first.")
        return self._engine.begin()

    # ---- resources ------------------------------------------------------------------------------

    async def put_resource(self, kind: str, key: str, data: dict[str, Any]) -> None:
        """Insert or replace the resource ``(kind, key)``; a replaced one keeps its place and creator.

        Raises ForbiddenError when the current caller replaces what someone else created without ``admin``.
        """
        _check_kind(kind)
        await self._run(self._put_resource, kind, key, data, current_principal.get())

    def _put_resource(self, kind: str, key: str, data: dict[str, Any], caller: Principal | None) -> None:
        now = _now()
        c = _RESOURCES.c
        creator = caller.name if caller is not None else None
        with self._begin() as conn:
            owner = conn.scalar(select(c.created_by).where(c.kind == kind, c.key == key))
            check_may_delete(caller, owner, f"{kind} '{key}'", "replacing")
            replaced = conn.execute(
                update(_RESOURCES).where(c.kind == kind, c.key == key).values(data=data, updated_at=now)
            )
            if not replaced.rowcount:
                conn.execute(
                    insert(_RESOURCES).values(
                        kind=kind, key=key, data=data, created_at=now, updated_at=now, created_by=creator
                    )
                )

    async def add_resource(self, kind: str, key: str, data: dict[str, Any]) -> bool:
        """Insert the resource ``(kind, key)`` unless it exists; False (and nothing written) if it does."""
        _check_kind(kind)
        return await self._run(self._add_resource, kind, key, data, creator_name())

    def _add_resource(self, kind: str, key: str, data: dict[str, Any], creator: str | None) -> bool:
        now = _now()
        c = _RESOURCES.c
        with self._begin() as conn:
            if conn.scalar(select(c.seq).where(c.kind == kind, c.key == key)) is not None:
                return False
            conn.execute(
                insert(_RESOURCES).values(
                    kind=kind, key=key, data=data, created_at=now, updated_at=now, created_by=creator
                )
            )
            return True

    async def get_resource(self, kind: str, key: str) -> dict[str, Any] | None:
        """The resource's data, or None."""
        _check_kind(kind)
        return await self._read(self._get_resource, kind, key)

    def _get_resource(self, kind: str, key: str) -> dict[str, Any] | None:
        c = _RESOURCES.c
        with self._connect() as conn:
            data: dict[str, Any] | None = conn.scalars(
                select(c.data).where(c.kind == kind, c.key == key)
            ).one_or_none()
            return data

    async def list_resources(self, kind: str) -> list[dict[str, Any]]:
        """Every resource of one kind, oldest first."""
        _check_kind(kind)
        return await self._read(self._list_resources, kind)

    def _list_resources(self, kind: str) -> list[dict[str, Any]]:
        c = _RESOURCES.c
        with self._connect() as conn:
            return list(conn.scalars(select(c.data).where(c.kind == kind).order_by(c.seq)))

    async def resource_creator(self, kind: str, key: str) -> str | None:
        """Who created the resource (None when unknown or when it does not exist)."""
        c = _RESOURCES.c
        return await self._read(self._scalar, select(c.created_by).where(c.kind == kind, c.key == key))

    def _scalar(self, query: Any) -> Any:
        with self._connect() as conn:
            return conn.scalar(query)

    async def delete_resource(self, kind: str, key: str) -> bool:
        """Delete the resource; False when there was none.

        Raises ForbiddenError when the current caller created neither it nor holds ``admin``.
        """
        _check_kind(kind)
        return await self._run(self._delete_resource, kind, key, current_principal.get())

    def _delete_resource(self, kind: str, key: str, caller: Principal | None) -> bool:
        c = _RESOURCES.c
        with self._begin() as conn:
            creator = conn.scalar(select(c.created_by).where(c.kind == kind, c.key == key))
            check_may_delete(caller, creator, f"{kind} '{key}'")
            return bool(conn.execute(delete(_RESOURCES).where(c.kind == kind, c.key == key)).rowcount)

    # ---- dataset rows ---------------------------------------------------------------------------

    async def replace_rows(self, dataset_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """Make ``rows`` the dataset's stored rows, in one transaction."""
        await self._run(self._write_rows, dataset_id, list(rows), True)

    async def append_rows(self, dataset_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """Add ``rows`` after the dataset's stored rows, in one transaction."""
        await self._run(self._write_rows, dataset_id, list(rows), False)

    def _write_rows(self, dataset_id: str, rows: list[dict[str, Any]], replace_all: bool) -> None:
        c = _DATASET_ROWS.c
        with self._begin() as conn:
            if replace_all:
                conn.execute(delete(_DATASET_ROWS).where(c.dataset_id == dataset_id))
                first = 0
            else:
                last = conn.scalar(select(func.max(c.position)).where(c.dataset_id == dataset_id))
                first = 0 if last is None else last + 1
            if rows:
                conn.execute(
                    insert(_DATASET_ROWS),
                    [
                        {"dataset_id": dataset_id, "position": first + offset, "data": row}
                        for offset, row in enumerate(rows)
                    ],
                )

    async def read_rows(
        self, dataset_id: str, start: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Stored rows ``[start, start + limit)`` in order; ``limit=None`` reads to the end."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")
        return await self._read(self._read_rows, dataset_id, start, limit)

    def _read_rows(self, dataset_id: str, start: int, limit: int | None) -> list[dict[str, Any]]:
        if limit == 0:
            return []
        c = _DATASET_ROWS.c
        query = select(c.data).where(c.dataset_id == dataset_id, c.position >= start)
        if limit is not None:
            query = query.where(c.position < start + limit)
        with self._connect() as conn:
            return list(conn.scalars(query.order_by(c.position)))

    async def count_rows(self, dataset_id: str) -> int:
        """How many rows the store holds for the dataset."""
        return await self._read(self._count_rows, dataset_id)

    def _count_rows(self, dataset_id: str) -> int:
        query = (
            select(func.count()).select_from(_DATASET_ROWS).where(_DATASET_ROWS.c.dataset_id == dataset_id)
        )
        with self._connect() as conn:
            return int(conn.scalar(query) or 0)

    async def delete_rows(self, dataset_id: str) -> None:
        """Forget every stored row of the dataset."""
        await self._run(self._delete_rows, dataset_id)

    def _delete_rows(self, dataset_id: str) -> None:
        with self._begin() as conn:
            conn.execute(delete(_DATASET_ROWS).where(_DATASET_ROWS.c.dataset_id == dataset_id))

    # ---- jobs -----------------------------------------------------------------------------------

    async def create_job(self, job: JobRecord) -> JobRecord:
        """Store a new job; returns it with ``created_at`` and ``updated_at`` set.

        Raises ConflictError when a job with the same id exists.
        """
        if job.status not in _JOB_STATUSES:
            raise ValueError(
                f"Unknown job status {job.status!r}; accepted: {', '.join(sorted(_JOB_STATUSES))}"
            )
        if job.created_by is None:
            job = replace(job, created_by=creator_name())
        return await self._run(self._create_job, job)

    def _create_job(self, job: JobRecord) -> JobRecord:
        now = _now()
        with self._begin() as conn:
            if conn.scalar(select(_JOBS.c.seq).where(_JOBS.c.id == job.id)) is not None:
                raise ConflictError(f"Job '{job.id}' already exists")
            conn.execute(
                insert(_JOBS).values(
                    id=job.id,
                    front=job.front,
                    status=job.status,
                    spec=job.spec,
                    error=job.error,
                    result=job.result,
                    progress=job.progress,
                    benchmark_id=job.benchmark_id,
                    provider_id=job.provider_id,
                    created_at=now,
                    updated_at=now,
                    created_by=job.created_by,
                )
            )
        return replace(job, created_at=now, updated_at=now)

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job, or None."""
        return await self._read(self._get_job, job_id)

    def _get_job(self, job_id: str) -> JobRecord | None:
        with self._connect() as conn:
            row = conn.execute(_JOB_AS_TEXT.where(_JOBS.c.id == job_id)).one_or_none()
            return None if row is None else _job_record(row, json_as_text=True)

    async def list_jobs(self, front: str | None = None) -> list[JobRecord]:
        """Every job (of one front door when ``front`` is given), newest first."""
        return await self._read(self._list_jobs, front)

    def _list_jobs(self, front: str | None) -> list[JobRecord]:
        query = _JOB_AS_TEXT
        if front is not None:
            query = query.where(_JOBS.c.front == front)
        with self._connect() as conn:
            rows = conn.execute(query.order_by(_JOBS.c.seq.desc()))
            return [_job_record(row, json_as_text=True) for row in rows]

    async def job_versions(self, front: str | None = None) -> list[JobVersion]:
        """Every job's id, status and ``updated_at`` (of one front door when ``front`` is given), newest
        first: a light query, none of the JSON columns read."""
        return await self._read(self._job_versions, front)

    def _job_versions(self, front: str | None) -> list[JobVersion]:
        c = _JOBS.c
        query = select(c.id, c.status, c.updated_at)
        if front is not None:
            query = query.where(c.front == front)
        with self._connect() as conn:
            rows = conn.execute(query.order_by(c.seq.desc())).tuples()
            return [
                JobVersion(job_id, cast(Any, status), _aware(updated)) for job_id, status, updated in rows
            ]

    async def get_jobs(self, job_ids: Sequence[str]) -> list[JobRecord]:
        """The jobs of ``job_ids`` that exist, in that order."""
        if not job_ids:
            return []
        return await self._read(self._get_jobs, list(job_ids))

    def _get_jobs(self, job_ids: list[str]) -> list[JobRecord]:
        found: dict[str, JobRecord] = {}
        with self._connect() as conn:
            for start in range(0, len(job_ids), 500):  # bounded IN lists
                query = _JOB_AS_TEXT.where(_JOBS.c.id.in_(job_ids[start : start + 500]))
                for row in conn.execute(query):
                    found[row.id] = _job_record(row, json_as_text=True)
        return [found[job_id] for job_id in job_ids if job_id in found]

    async def update_job(
        self, job_id: str, *, expected_status: Collection[str] | None = None, **changes: Any
    ) -> JobRecord:
        """Change some fields of a job (see ``JOB_FIELDS_UPDATABLE``) and bump ``updated_at``.

        With ``expected_status`` the change is made only while the job's status is one of those
        (checked in the same transaction), else ConflictError: a status change cannot overwrite
        one made meanwhile by another task or process. Raises NotFoundError for an unknown job,
        TypeError for a field that cannot change.
        """
        unknown = set(changes) - JOB_FIELDS_UPDATABLE
        if unknown:
            raise TypeError(
                f"update_job() cannot change {', '.join(sorted(unknown))}; "
                f"accepted: {', '.join(sorted(JOB_FIELDS_UPDATABLE))}"
            )
        if "status" in changes and changes["status"] not in _JOB_STATUSES:
            raise ValueError(
                f"Unknown job status {changes['status']!r}; accepted: {', '.join(sorted(_JOB_STATUSES))}"
            )
        expected = None if expected_status is None else frozenset(expected_status)
        return await self._run(self._update_job, job_id, changes, expected)

    def _update_job(
        self, job_id: str, changes: dict[str, Any], expected: frozenset[str] | None = None
    ) -> JobRecord:
        c = _JOBS.c
        with self._begin() as conn:
            if expected is not None:
                # Take the write lock before reading, so the check and the change are one step
                # even against another process (SQLite reads outside a write lock see old data).
                conn.execute(update(_JOBS).where(c.id == job_id).values(status=c.status))
            row = conn.execute(select(_JOBS).where(c.id == job_id)).one_or_none()
            if row is None:
                raise NotFoundError(f"Job '{job_id}' not found")
            if expected is not None and row.status not in expected:
                raise ConflictError(
                    f"Job '{job_id}' is {row.status}; expected {' or '.join(sorted(expected))}"
                )
            values = {
                name: {} if name == "progress" and value is None else value for name, value in changes.items()
            }
            values["updated_at"] = _now()
            conn.execute(update(_JOBS).where(c.id == job_id).values(**values))
            return replace(_job_record(row), **values)

    async def delete_job(self, job_id: str) -> bool:
        """Delete the job and its samples; False when there was no such job.

        Raises ForbiddenError when the current caller created neither it nor holds ``admin``.
        """
        return await self._run(self._delete_job, job_id, current_principal.get())

    def _delete_job(self, job_id: str, caller: Principal | None) -> bool:
        with self._begin() as conn:
            check_may_delete(
                caller, conn.scalar(select(_JOBS.c.created_by).where(_JOBS.c.id == job_id)), f"job '{job_id}'"
            )
            conn.execute(delete(_SAMPLES).where(_SAMPLES.c.job_id == job_id))
            conn.execute(delete(_LEASES).where(_LEASES.c.job_id == job_id))
            return bool(conn.execute(delete(_JOBS).where(_JOBS.c.id == job_id)).rowcount)

    async def job_ids(self, statuses: Collection[str]) -> list[str]:
        """Ids of the jobs in one of ``statuses``, oldest first (a light query for the worker)."""
        return await self._read(self._job_ids, list(statuses))

    def _job_ids(self, statuses: list[str]) -> list[str]:
        query = select(_JOBS.c.id).where(_JOBS.c.status.in_(statuses)).order_by(_JOBS.c.seq)
        with self._connect() as conn:
            return list(conn.scalars(query))

    async def job_statuses(self, job_ids: Collection[str]) -> dict[str, str]:
        """The status of each of ``job_ids`` that exists."""
        if not job_ids:
            return {}
        return await self._read(self._job_statuses, list(job_ids))

    def _job_statuses(self, job_ids: list[str]) -> dict[str, str]:
        with self._connect() as conn:
            rows = conn.execute(select(_JOBS.c.id, _JOBS.c.status).where(_JOBS.c.id.in_(job_ids)))
            return {job_id: status for job_id, status in rows.tuples()}

    # ---- job leases: one worker process runs a job at a time -----------------------------------

    async def claim_job(
        self,
        job_id: str,
        owner: str,
        ttl: float,
        *,
        owner_gone: Callable[[str], bool] | None = None,
    ) -> bool:
        """Claim the right to run ``job_id`` for ``ttl`` seconds; True if ``owner`` now holds it.

        The claim succeeds when nobody holds the job, when ``owner`` already does (it is renewed),
        when the holder's lease expired, or when ``owner_gone(holder)`` says the holder is dead
        (e.g. a killed process on this host). Atomic, also between processes.
        """
        return await self._run(self._claim_job, job_id, owner, ttl, owner_gone)

    def _claim_job(
        self, job_id: str, owner: str, ttl: float, owner_gone: Callable[[str], bool] | None
    ) -> bool:
        now = _now()
        until = now + timedelta(seconds=ttl)
        lease = _LEASES.c
        try:
            with self._begin() as conn:
                taken = conn.execute(
                    update(_LEASES)
                    .where(lease.job_id == job_id, or_(lease.owner == owner, lease.expires_at < now))
                    .values(owner=owner, expires_at=until)
                )
                if taken.rowcount:
                    return True
                holder = conn.scalar(select(lease.owner).where(lease.job_id == job_id))
                if holder is None:
                    conn.execute(insert(_LEASES), {"job_id": job_id, "owner": owner, "expires_at": until})
                    return True
                if owner_gone is not None and owner_gone(holder):
                    taken = conn.execute(
                        update(_LEASES)
                        .where(lease.job_id == job_id, lease.owner == holder)
                        .values(owner=owner, expires_at=until)
                    )
                    return bool(taken.rowcount)
                return False
        except IntegrityError:  # another process inserted its lease first
            return False

    async def renew_job_leases(self, owner: str, job_ids: Collection[str], ttl: float) -> set[str]:
        """Extend ``owner``'s leases on ``job_ids``; returns the ids it still holds."""
        if not job_ids:
            return set()
        return await self._run(self._renew_job_leases, owner, list(job_ids), ttl)

    def _renew_job_leases(self, owner: str, job_ids: list[str], ttl: float) -> set[str]:
        lease = _LEASES.c
        mine = (lease.owner == owner, lease.job_id.in_(job_ids))
        with self._begin() as conn:
            conn.execute(update(_LEASES).where(*mine).values(expires_at=_now() + timedelta(seconds=ttl)))
            return set(conn.scalars(select(lease.job_id).where(*mine)))

    async def release_job(self, job_id: str, owner: str) -> None:
        """Give up ``owner``'s lease on ``job_id`` (nothing happens if it holds none)."""
        await self._run(self._release_job, job_id, owner)

    def _release_job(self, job_id: str, owner: str) -> None:
        with self._begin() as conn:
            conn.execute(delete(_LEASES).where(_LEASES.c.job_id == job_id, _LEASES.c.owner == owner))

    # ---- samples --------------------------------------------------------------------------------

    async def add_samples(self, job_id: str, samples: Sequence[SampleRecord]) -> None:
        """Record finished samples in one transaction.

        Idempotent on ``(job_id, task, index)``: a sample already recorded is kept as it was
        and the new one is dropped, so a resumed job never records a sample twice.
        """
        if samples:
            await self._run(self._add_samples, job_id, list(samples))

    def _add_samples(self, job_id: str, samples: list[SampleRecord]) -> None:
        unique: dict[tuple[str, int], SampleRecord] = {}
        for sample in samples:
            unique.setdefault((sample.task, sample.index), sample)
        values = [_sample_values(job_id, sample) for sample in unique.values()]
        with self._begin() as conn:
            dialect = conn.dialect.name
            if dialect == "sqlite":
                statement: Any = sqlite_insert(_SAMPLES).on_conflict_do_nothing(
                    index_elements=["job_id", "task", "index"]
                )
            elif dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as postgresql_insert  # not on SQLite's path

                statement = postgresql_insert(_SAMPLES).on_conflict_do_nothing(
                    index_elements=["job_id", "task", "index"]
                )
            else:
                c = _SAMPLES.c
                recorded = set(
                    conn.execute(select(c.task, c["index"]).where(c.job_id == job_id)).tuples().all()
                )
                values = [v for v in values if (v["task"], v["index"]) not in recorded]
                statement = insert(_SAMPLES)
            if values:
                conn.execute(statement, values)

    async def read_samples(
        self, job_id: str, task: str | None = None, *, fields: Collection[str] | None = None
    ) -> list[SampleRecord]:
        """The job's samples (of one task when ``task`` is given), ordered by task then index; ``fields``
        as for :meth:`iter_samples`."""
        wanted = _wanted_fields(fields)
        return await self._read(self._read_samples, job_id, task, wanted)

    def _read_samples(self, job_id: str, task: str | None, fields: tuple[str, ...]) -> list[SampleRecord]:
        c = _SAMPLES.c
        query = select(c.task, c["index"], *(c[name] for name in fields)).where(c.job_id == job_id)
        if task is not None:
            query = query.where(c.task == task)
        with self._connect() as conn:
            return _sample_records(conn.execute(query.order_by(c.task, c["index"])), fields)

    async def iter_samples(
        self, job_id: str, batch_size: int = 2000, *, fields: Collection[str] | None = None
    ) -> AsyncIterator[list[SampleRecord]]:
        """The job's samples in batches of at most ``batch_size``, ordered by task then index.

        Each batch is one keyset query on the ``(job_id, task, index)`` index, so a job of any size
        is read with bounded memory. ``fields`` (some of ``SAMPLE_FIELDS``) reads only those columns
        besides task and index; the others keep their empty defaults. Raises ValueError naming the
        accepted fields for an unknown one.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        wanted = _wanted_fields(fields)
        after: tuple[str, int] | None = None
        while True:
            batch = await self._read(self._read_sample_batch, job_id, after, batch_size, wanted)
            if not batch:
                return
            yield batch
            if len(batch) < batch_size:
                return
            after = (batch[-1].task, batch[-1].index)

    def _read_sample_batch(
        self, job_id: str, after: tuple[str, int] | None, limit: int, fields: tuple[str, ...]
    ) -> list[SampleRecord]:
        c = _SAMPLES.c
        query = select(c.task, c["index"], *(c[name] for name in fields)).where(c.job_id == job_id)
        if after is not None:
            task, index = after
            query = query.where(or_(c.task > task, and_(c.task == task, c["index"] > index)))
        with self._connect() as conn:
            return _sample_records(conn.execute(query.order_by(c.task, c["index"]).limit(limit)), fields)

    async def recorded_indices(self, job_id: str) -> dict[str, set[int]]:
        """For each task of the job, the indices of the samples already recorded."""
        return await self._read(self._recorded_indices, job_id)

    def _recorded_indices(self, job_id: str) -> dict[str, set[int]]:
        recorded: dict[str, set[int]] = {}
        c = _SAMPLES.c
        with self._connect() as conn:
            for task, index in conn.execute(select(c.task, c["index"]).where(c.job_id == job_id)).tuples():
                recorded.setdefault(task, set()).add(index)
        return recorded

    async def failed_sample_keys(self, job_id: str, error_kind: str) -> list[tuple[str, int]]:
        """``(task, index)`` of the job's failed samples whose ``extra["error_kind"]`` is ``error_kind``."""
        return await self._read(self._failed_sample_keys, job_id, error_kind)

    def _failed_sample_keys(self, job_id: str, error_kind: str) -> list[tuple[str, int]]:
        c = _SAMPLES.c
        query = select(c.task, c["index"], c.extra).where(c.job_id == job_id, c.error.is_not(None))
        with self._connect() as conn:
            rows = conn.execute(query.order_by(c.task, c["index"])).tuples().all()
        return [(task, index) for task, index, extra in rows if (extra or {}).get("error_kind") == error_kind]

    async def reopen_job(
        self, job_id: str, *, expected_status: Collection[str], drop: Sequence[tuple[str, int]]
    ) -> JobRecord:
        """In one transaction: drop the samples ``drop`` names and make the job ``pending`` again.

        Its error and result are cleared (the next run computes them). ConflictError, changing
        nothing, when the job's status is not one of ``expected_status``.
        """
        return await self._run(self._reopen_job, job_id, frozenset(expected_status), list(drop))

    def _reopen_job(self, job_id: str, expected: frozenset[str], drop: list[tuple[str, int]]) -> JobRecord:
        c = _JOBS.c
        with self._begin() as conn:
            conn.execute(update(_JOBS).where(c.id == job_id).values(status=c.status))  # the write lock first
            row = conn.execute(select(_JOBS).where(c.id == job_id)).one_or_none()
            if row is None:
                raise NotFoundError(f"Job '{job_id}' not found")
            if row.status not in expected:
                expected_text = " or ".join(sorted(expected))
                raise ConflictError(f"Job '{job_id}' is {row.status}; expected {expected_text}")
            if drop:
                s = _SAMPLES.c
                one = delete(_SAMPLES).where(
                    s.job_id == job_id, s.task == bindparam("task_"), s["index"] == bindparam("index_")
                )
                conn.execute(one, [{"task_": task, "index_": index} for task, index in drop])
            values: dict[str, Any] = {"status": "pending", "error": None, "result": None}
            values["updated_at"] = _now()
            conn.execute(update(_JOBS).where(c.id == job_id).values(**values))
            return replace(_job_record(row), **values)

    async def count_samples(self, job_id: str) -> int:
        """How many samples the job has recorded."""
        return await self._read(self._count_samples, job_id)

    def _count_samples(self, job_id: str) -> int:
        query = select(func.count()).select_from(_SAMPLES).where(_SAMPLES.c.job_id == job_id)
        with self._connect() as conn:
            return int(conn.scalar(query) or 0)

    # ---- response cache -------------------------------------------------------------------------

    async def get_cached_responses(
        self, keys: Collection[str], max_age: float | None = None
    ) -> dict[str, CachedResponse]:
        """The cached answers under ``keys`` that exist and are at most ``max_age`` seconds old."""
        if not keys:
            return {}
        return await self._read(self._get_cached_responses, list(keys), _cache_cutoff(max_age))

    def _get_cached_responses(self, keys: list[str], cutoff: datetime | None) -> dict[str, CachedResponse]:
        c = _CACHE.c
        found: dict[str, CachedResponse] = {}
        with self._connect() as conn:
            for start in range(0, len(keys), 500):  # bounded IN lists
                query = select(c.key, c.model, c.text, c.finish_reason, c.raw, c.size, c.created_at).where(
                    c.key.in_(keys[start : start + 500])
                )
                if cutoff is not None:
                    query = query.where(c.created_at >= cutoff)
                for key, model, text, finish, raw, size, created in conn.execute(query).tuples():
                    found[key] = CachedResponse(key, model, text, finish, raw or {}, size, _aware(created))
        return found

    async def put_cached_responses(self, entries: Sequence[CachedResponse]) -> None:
        """Store answers in the cache in one transaction; an entry replaces one with the same key."""
        if entries:
            await self._run(self._put_cached_responses, list(entries))

    def _put_cached_responses(self, entries: list[CachedResponse]) -> None:
        now = _now()
        unique = {entry.key: entry for entry in entries}
        values = [
            {
                "key": e.key,
                "model": e.model,
                "text": e.text,
                "finish_reason": e.finish_reason,
                "raw": e.raw,
                "size": e.size,
                "created_at": e.created_at or now,
            }
            for e in unique.values()
        ]
        with self._begin() as conn:
            dialect = conn.dialect.name
            if dialect in ("sqlite", "postgresql"):
                if dialect == "sqlite":
                    statement: Any = sqlite_insert(_CACHE)
                else:
                    from sqlalchemy.dialects.postgresql import insert as postgresql_insert

                    statement = postgresql_insert(_CACHE)
                replaced = {name: statement.excluded[name] for name in values[0] if name != "key"}
                conn.execute(statement.on_conflict_do_update(index_elements=["key"], set_=replaced), values)
            else:
                conn.execute(delete(_CACHE).where(_CACHE.c.key.in_(list(unique))))
                conn.execute(insert(_CACHE), values)

    async def cache_summary(self, max_age: float | None = None) -> CacheSummary:
        """Entries and bytes in the cache, per model identity; ``expired`` under ``max_age`` seconds."""
        return await self._read(self._cache_summary, _cache_cutoff(max_age))

    def _cache_summary(self, cutoff: datetime | None) -> CacheSummary:
        c = _CACHE.c
        summary = CacheSummary()
        query = select(
            c.model,
            func.count(),
            func.coalesce(func.sum(c.size), 0),
            func.min(c.created_at),
            func.max(c.created_at),
        ).group_by(c.model)
        with self._connect() as conn:
            for model, count, size, oldest, newest in conn.execute(query).tuples():
                summary.models[model] = {"entries": int(count), "bytes": int(size)}
                summary.entries += int(count)
                summary.bytes += int(size)
                oldest, newest = _aware(oldest), _aware(newest)
                summary.oldest = oldest if summary.oldest is None else min(summary.oldest, oldest)
                summary.newest = newest if summary.newest is None else max(summary.newest, newest)
            if cutoff is not None:
                expired = select(func.count()).select_from(_CACHE).where(c.created_at < cutoff)
                summary.expired = int(conn.scalar(expired) or 0)
        return summary

    async def clear_cache(self, *, model: str | None = None, max_age: float | None = None) -> int:
        """Delete cached answers (of one ``model`` identity; only those older than ``max_age`` seconds
        when given); returns how many were deleted."""
        return await self._run(self._clear_cache, model, _cache_cutoff(max_age))

    def _clear_cache(self, model: str | None, cutoff: datetime | None) -> int:
        c = _CACHE.c
        statement = delete(_CACHE)
        if model is not None:
            statement = statement.where(c.model == model)
        if cutoff is not None:
            statement = statement.where(c.created_at < cutoff)
        with self._begin() as conn:
            return int(conn.execute(statement).rowcount or 0)

    # ---- browsing samples: filters, keyset pages, search --------------------------------------

    async def page_samples(
        self,
        job_id: str,
        flt: SampleFilter | None = None,
        *,
        after: SampleKey | None = None,
        before: SampleKey | None = None,
        limit: int = 50,
    ) -> SamplePage:
        """Up to ``limit`` of the job's samples matching ``flt``, in (task, index) order.

        The page starts right after ``after`` (or ends right before ``before``; from the start when
        neither is given). Paged in SQL on the samples index, so a deep page costs what the first does.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        if after is not None and before is not None:
            raise ValueError("give after or before, not both")
        flt = flt or SampleFilter()
        await self._index_for_search(flt)
        return await self._read(self._page_samples, job_id, flt, after, before, limit)

    def _page_samples(
        self, job_id: str, flt: SampleFilter, after: SampleKey | None, before: SampleKey | None, limit: int
    ) -> SamplePage:
        with self._connect() as conn:
            dialect = conn.dialect.name
            plan = sample_query.search_plan(conn, flt)
            query = sample_query.page_query(
                dialect, job_id, flt, after=after, before=before, limit=limit + 1, plan=plan
            )
            records = [_paged_sample(row) for row in conn.execute(query).tuples()]
            more = len(records) > limit
            records = records[:limit]
            if before is not None:
                records.reverse()
                return SamplePage(records, has_before=more, has_after=True)
            has_before = False
            if after is not None and records:
                first = SampleKey(records[0].task, records[0].index)
                earlier = sample_query.exists_query(dialect, job_id, flt, before=first, plan=plan)
                has_before = bool(conn.scalar(earlier))
            elif after is not None:
                has_before = True
            return SamplePage(records, has_before=has_before, has_after=more)

    async def count_matching_samples(
        self, job_id: str, flt: SampleFilter | None = None, *, cap: int | None = None
    ) -> int:
        """How many of the job's samples match ``flt``; counting stops at ``cap`` when given."""
        flt = flt or SampleFilter()
        await self._index_for_search(flt)
        return await self._read(self._count_matching_samples, job_id, flt, cap)

    async def _index_for_search(self, flt: SampleFilter) -> None:
        """Before a search: index the samples recorded since the last one (SQLite indexes on demand)."""
        sqlite = self._engine is not None and self._engine.dialect.name == "sqlite"
        if sqlite and flt.search and flt.search.strip():
            await self._run(self._catch_up_search_index)

    def _catch_up_search_index(self) -> None:
        with self._begin() as conn:
            sample_query.catch_up_search_index(conn)

    def _count_matching_samples(self, job_id: str, flt: SampleFilter, cap: int | None) -> int:
        with self._connect() as conn:
            plan = sample_query.search_plan(conn, flt, counting=True)
            query = sample_query.count_query(conn.dialect.name, job_id, flt, cap, plan)
            return int(conn.scalar(query) or 0)

    async def get_sample(self, job_id: str, task: str, index: int) -> SampleRecord | None:
        """One recorded sample, or None."""
        page = await self.page_samples(
            job_id, SampleFilter(task=task), after=SampleKey(task, index - 1), limit=1
        )
        found = page.samples[0] if page.samples else None
        return found if found is not None and found.index == index else None

    async def score_histogram(
        self, job_id: str, metric: str, score: str, bins: int = 20
    ) -> tuple[float, float, list[int]] | None:
        """One score's distribution: ``(low, high, counts per equal-width bin)``; None without values."""
        return await self._read(self._score_histogram, job_id, metric, score, bins)

    def _score_histogram(
        self, job_id: str, metric: str, score: str, bins: int
    ) -> tuple[float, float, list[int]] | None:
        with self._connect() as conn:
            low, high = conn.execute(sample_query.range_query(job_id, metric, score)).one()
            if low is None or high is None:
                return None
            low, high = float(low), float(high)
            width = (high - low) / bins if high > low else 1.0
            counts = [0] * bins
            query = sample_query.histogram_query(conn.dialect.name, job_id, metric, score, low, width, bins)
            for bucket, count in conn.execute(query).tuples():
                counts[min(max(int(bucket), 0), bins - 1)] += int(count)
            return low, high, counts
