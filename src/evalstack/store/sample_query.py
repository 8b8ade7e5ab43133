"""Filtering, keyset paging and full-text search over a job's samples, in SQL (used by ``Store``).

Samples are read in ``(task, index)`` order, the order of the unique index on ``(job_id, task,
index)``, so a page after or before a key is an index range scan however deep it lies.

Full-text search covers the prompt (the row and the request sent, as JSON text) and the output:

- SQLite: a contentless FTS5 table ``samples_fts`` whose rowid is the sample's ``seq``. Recording a
  sample does not index it (tokenising prompts was most of the cost of writing a job's samples):
  a search first indexes the samples recorded since the previous one (:func:`catch_up_search_index`),
  every sample up to ``samples_fts_upto.seq`` being indexed. A trigger takes a deleted sample out of
  the index, and lowers the mark to the newest sample left (SQLite may give a deleted newest ``seq``
  to the next sample). A database made before the table existed gets it when the store opens, and
  one whose samples were indexed as they were recorded starts with all of them indexed.
- PostgreSQL: a GIN index on ``to_tsvector('simple', ...)`` of the same text; creating the index
  indexes the samples already there.
- Any other database: a case-insensitive substring match on the output (slow on large jobs).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    cast,
    exists,
    func,
    literal,
    select,
    text,
    true,
    tuple_,
)
from sqlalchemy.types import JSON, Float, Integer, Text

from evalstack.store import tables
from evalstack.store.records import SampleFilter, SampleKey

_SAMPLES = tables.samples
_C = _SAMPLES.c

PARSED_SCORES = "parsed"
"""The per-sample diagnostic metric whose scores are 0 when no answer could be extracted."""

_SQLITE_PROMPT = "{row}.item || ' ' || coalesce(json_extract({row}.extra, '$.request'), '')"
_SQLITE_OUTPUT = "coalesce({row}.output_text, '')"
_SQLITE_FTS_DDL = [
    "CREATE VIRTUAL TABLE samples_fts USING fts5(prompt, output, content='', "
    "tokenize='unicode61 remove_diacritics 2')",
]
_SQLITE_FTS_MARK = "CREATE TABLE IF NOT EXISTS samples_fts_upto (seq INTEGER NOT NULL)"
# A contentless FTS5 table forgets a row when given exactly the values it indexed.
_SQLITE_FTS_DELETE_TRIGGER = (
    "CREATE TRIGGER samples_fts_delete AFTER DELETE ON samples BEGIN "
    "INSERT INTO samples_fts(samples_fts, rowid, prompt, output) SELECT "
    f"'delete', old.seq, {_SQLITE_PROMPT.format(row='old')}, {_SQLITE_OUTPUT.format(row='old')} "
    "WHERE old.seq <= (SELECT seq FROM samples_fts_upto); "
    "UPDATE samples_fts_upto SET seq = min(seq, (SELECT coalesce(max(seq), 0) FROM samples)); END"
)
_SQLITE_FTS_TRIGGERS = [
    "DROP TRIGGER IF EXISTS samples_fts_insert",  # an older database indexed each sample on insert
    "DROP TRIGGER IF EXISTS samples_fts_delete",
    _SQLITE_FTS_DELETE_TRIGGER,
]
_SQLITE_FTS_CATCH_UP = [
    "INSERT INTO samples_fts(rowid, prompt, output) SELECT seq, "
    f"{_SQLITE_PROMPT.format(row='samples')}, {_SQLITE_OUTPUT.format(row='samples')} FROM samples "
    "WHERE seq > (SELECT seq FROM samples_fts_upto)",
    "UPDATE samples_fts_upto SET seq = (SELECT coalesce(max(seq), 0) FROM samples)",
]
_POSTGRES_DOCUMENT = (
    "to_tsvector('simple'::regconfig, coalesce(samples.output_text, '') || ' ' || "
    "samples.item::text || ' ' || coalesce((samples.extra -> 'request')::text, ''))"
)
_POSTGRES_INDEX = f"CREATE INDEX IF NOT EXISTS ix_samples_search ON samples USING gin ({_POSTGRES_DOCUMENT})"

_WORD = re.compile(r"\w+", re.UNICODE)


def ensure_search_index(conn: Connection) -> None:
    """Create the full-text index if it is missing (filling it from the samples already stored)."""
    dialect = conn.dialect.name
    if dialect == "sqlite":
        present = conn.scalar(
            text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'samples_fts'")
        )
        marked = conn.scalar(
            text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'samples_fts_upto'")
        )
        if not present:
            for statement in _SQLITE_FTS_DDL:
                conn.exec_driver_sql(statement)
        conn.exec_driver_sql(_SQLITE_FTS_MARK)
        if not marked:  # indexed up to here: all of an older database's samples, none of a new index's
            start = "(SELECT coalesce(max(seq), 0) FROM samples)" if present else "0"
            conn.exec_driver_sql(f"INSERT INTO samples_fts_upto (seq) SELECT {start}")
        triggers = text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'samples'")
        if dict(conn.execute(triggers).tuples().all()) != {"samples_fts_delete": _SQLITE_FTS_DELETE_TRIGGER}:
            for statement in _SQLITE_FTS_TRIGGERS:  # changed only when they differ: DDL takes a lock
                conn.exec_driver_sql(statement)
    elif dialect == "postgresql":
        conn.exec_driver_sql(_POSTGRES_INDEX)


def catch_up_search_index(conn: Connection) -> None:
    """Index the samples recorded since the last search (SQLite only: PostgreSQL's index keeps up itself)."""
    behind = text("SELECT EXISTS (SELECT 1 FROM samples WHERE seq > (SELECT seq FROM samples_fts_upto))")
    if conn.scalar(behind):
        for statement in _SQLITE_FTS_CATCH_UP:
            conn.exec_driver_sql(statement)


SearchPlan = Literal["list", "candidates", "probe"]
"""How SQLite finds a search's samples among a job's, chosen by :func:`search_plan`:

- ``candidates``: few samples match (fewer than ``RARE_MATCHES`` in the whole store): read those
  and keep the job's (the job index is left unused, so the plan cannot walk the whole job);
- ``probe``: many match: walk the job's samples in order and ask the index about each, which
  stops as soon as a page is full;
- ``list``: collect every match, then walk the job (for counting; and on PostgreSQL, whose GIN
  index serves the match).
"""

RARE_MATCHES = 20_000
"""Below this many matches a search starts from them. Reading a candidate costs about 8 us and
probing a sample about 50 us on SQLite, so for a page of 50 the two cost the same near
sqrt(300 x job size) matches: 17,000 for a job of 1,000,000 samples (about 150 ms either way)."""


def _fts_match(query: str) -> str | None:
    """The FTS5 query for ``query``'s words, each quoted so no input is read as query syntax."""
    words = _WORD.findall(query)
    return " ".join('"' + word.replace('"', '""') + '"' for word in words) if words else None


def search_plan(conn: Connection, flt: SampleFilter, *, counting: bool = False) -> SearchPlan:
    """The cheapest way to read ``flt``'s matches (see :data:`SearchPlan`); one capped index lookup."""
    match = _fts_match(flt.search or "")
    if conn.dialect.name != "sqlite" or match is None:
        return "list"
    counted = text(
        "SELECT count(*) FROM (SELECT rowid FROM samples_fts WHERE samples_fts MATCH :fts_query LIMIT :cap)"
    )
    found = conn.scalar(counted.bindparams(fts_query=match, cap=RARE_MATCHES))
    if int(found or 0) < RARE_MATCHES:
        return "candidates"
    return "list" if counting else "probe"


def _search_clause(dialect: str, query: str, plan: SearchPlan) -> ColumnElement[bool]:
    """Samples whose prompt or output hold every word of ``query`` (case-insensitive)."""
    words = _WORD.findall(query)
    if not words:
        return true()
    if dialect == "sqlite":
        if plan == "probe":
            probe = text(
                "EXISTS (SELECT 1 FROM samples_fts WHERE samples_fts MATCH :fts_query "
                "AND samples_fts.rowid = samples.seq)"
            )
            return and_(true(), probe.bindparams(fts_query=_fts_match(query)))
        matches = text("SELECT rowid FROM samples_fts WHERE samples_fts MATCH :fts_query")
        return _C.seq.in_(matches.bindparams(fts_query=_fts_match(query)))
    if dialect == "postgresql":
        document_match = text(f"{_POSTGRES_DOCUMENT} @@ plainto_tsquery('simple'::regconfig, :fts_query)")
        return and_(true(), document_match.bindparams(fts_query=" ".join(words)))
    return and_(*(func.lower(func.coalesce(_C.output_text, "")).contains(word.lower()) for word in words))


def score_value(metric: str, score: str) -> ColumnElement[Any]:
    """The per-sample score ``scores[metric][score]`` as a number (NULL where absent)."""
    return _C.scores[(metric, score)].as_float()


def _unparsed_clause(dialect: str) -> ColumnElement[bool]:
    if dialect == "sqlite":
        found = text(
            "EXISTS (SELECT 1 FROM json_each(samples.scores, '$.parsed') AS parsed WHERE parsed.value = 0)"
        )
    elif dialect == "postgresql":
        found = text(
            "EXISTS (SELECT 1 FROM json_each(samples.scores -> 'parsed') AS parsed WHERE CASE "
            "WHEN json_typeof(parsed.value) = 'number' THEN (parsed.value::text)::float8 = 0 ELSE false END)"
        )
    else:
        found = _C.scores[(PARSED_SCORES, PARSED_SCORES)].as_float() == 0
    return and_(_C.error.is_(None), found)


def filter_clauses(
    dialect: str, job_id: str, flt: SampleFilter, plan: SearchPlan = "list"
) -> list[ColumnElement[bool]]:
    """The WHERE conditions that pick ``flt``'s samples of ``job_id``."""
    searching = bool(flt.search and flt.search.strip())
    # `job_id || ''` hides the job index from SQLite's planner, so it starts from the few matches.
    job = _C.job_id.concat("") if searching and plan == "candidates" else _C.job_id
    clauses: list[ColumnElement[bool]] = [job == job_id]
    if flt.task is not None:
        clauses.append(_C.task == flt.task)
    if flt.metric is not None and (
        flt.outcome is not None or flt.min_score is not None or flt.max_score is not None
    ):
        value = score_value(flt.metric, flt.score or flt.metric)
        if flt.outcome == "right":
            clauses.append(value >= 1)
        elif flt.outcome == "wrong":
            clauses.append(value < 1)
        if flt.min_score is not None:
            clauses.append(value >= flt.min_score)
        if flt.max_score is not None:
            clauses.append(value <= flt.max_score)
    if flt.error == "any":
        clauses.append(_C.error.is_not(None))
    elif flt.error == "none":
        clauses.append(_C.error.is_(None))
    elif flt.error is not None:
        clauses.append(and_(_C.error.is_not(None), _C.extra["error_kind"].as_string() == flt.error))
    if flt.unparsed:
        clauses.append(_unparsed_clause(dialect))
    if flt.truncated:
        clauses.append(and_(_C.error.is_(None), _C.finish_reason == "length"))
    if searching:
        clauses.append(_search_clause(dialect, flt.search or "", plan))
    return clauses


SAMPLE_COLUMNS = (
    _C.task,
    _C["index"],
    _C.item,
    _C.output_text,
    _C.response,
    _C.finish_reason,
    _C.scores,
    _C.error,
    _C.extra,
)


PAGE_COLUMNS = tuple(
    cast(column, Text).label(column.name) if isinstance(column.type, JSON) else column
    for column in SAMPLE_COLUMNS
)
"""``SAMPLE_COLUMNS`` with the JSON ones as their text: a page is decoded by the C decoder (the
column type's decoder interns, a Python call per object, which pays off only for bulk reads)."""


def page_query(
    dialect: str,
    job_id: str,
    flt: SampleFilter,
    *,
    after: SampleKey | None,
    before: SampleKey | None,
    limit: int,
    plan: SearchPlan = "list",
) -> Select[Any]:
    """``limit`` samples after ``after`` (ascending), or before ``before`` (descending): ``PAGE_COLUMNS``."""
    # The keys of the page first, then its rows: sorting candidates never carries their JSON along.
    keys = select(_C.seq).where(*filter_clauses(dialect, job_id, flt, plan))
    key = tuple_(_C.task, _C["index"])
    if before is not None:
        keys = keys.where(key < tuple_(literal(before.task), literal(before.index)))
        order = (_C.task.desc(), _C["index"].desc())
    else:
        if after is not None:
            keys = keys.where(key > tuple_(literal(after.task), literal(after.index)))
        order = (_C.task.asc(), _C["index"].asc())
    page = keys.order_by(*order).limit(limit).scalar_subquery()
    return select(*PAGE_COLUMNS).where(_C.seq.in_(page)).order_by(*order)


def exists_query(
    dialect: str, job_id: str, flt: SampleFilter, *, before: SampleKey, plan: SearchPlan = "list"
) -> Select[Any]:
    """Whether any of ``flt``'s samples lies before ``before``."""
    key = tuple_(_C.task, _C["index"])
    inner = select(_C.seq).where(
        *filter_clauses(dialect, job_id, flt, plan), key < tuple_(literal(before.task), literal(before.index))
    )
    return select(exists(inner))


def count_query(
    dialect: str, job_id: str, flt: SampleFilter, cap: int | None, plan: SearchPlan = "list"
) -> Select[Any]:
    """How many samples match (counting stops at ``cap`` when given)."""
    inner = select(literal(1).label("one")).where(*filter_clauses(dialect, job_id, flt, plan))
    if cap is not None:
        inner = inner.limit(cap)
    return select(func.count()).select_from(inner.subquery())


def histogram_query(
    dialect: str, job_id: str, metric: str, score: str, low: float, width: float, bins: int
) -> Select[Any]:
    """Counts of the score's values per bin ``[low + i*width, low + (i+1)*width)`` (the top bin closed)."""
    value = score_value(metric, score)
    position = (value - low) / width
    floor = func.floor(position) if dialect == "postgresql" else cast(position, Integer)
    bucket = func.min(floor, bins - 1) if dialect == "sqlite" else func.least(floor, bins - 1)
    return (
        select(bucket.label("bucket"), func.count())
        .where(_C.job_id == job_id, _C.error.is_(None), value.is_not(None))
        .group_by(bucket)
    )


def range_query(job_id: str, metric: str, score: str) -> Select[Any]:
    """The smallest and largest value of one score over the job's samples."""
    value = score_value(metric, score)
    return select(func.min(cast(value, Float)), func.max(cast(value, Float))).where(
        _C.job_id == job_id, _C.error.is_(None)
    )


__all__ = [
    "PAGE_COLUMNS",
    "PARSED_SCORES",
    "RARE_MATCHES",
    "SAMPLE_COLUMNS",
    "SearchPlan",
    "catch_up_search_index",
    "count_query",
    "ensure_search_index",
    "exists_query",
    "filter_clauses",
    "histogram_query",
    "page_query",
    "range_query",
    "score_value",
    "search_plan",
]
