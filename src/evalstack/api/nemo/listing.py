"""Listing for the NeMo v1 API: ``page``, ``page_size``, ``sort``, ``filter[...]`` and ``search[...]``.

``filter`` matches exactly (a comma-separated value matches any of its parts); ``search`` matches
substrings, case-insensitively (keys AND, comma-separated values OR). Dates take ``filter[created_at][gte]``
style operators (``eq``, ``neq``, ``gt``, ``gte``, ``lt``, ``lte``) or ``search[created_at][start|end]``.
Pages past the end are empty, which is how the SDK's auto-pager knows to stop.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.datastructures import QueryParams

from evalstack.api.nemo.errors import invalid
from evalstack.api.nemo.models import DEFAULT_NAMESPACE, ListEnvelope, PaginationData, SortField

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000
SORTS = ("created_at", "-created_at")
DATE_FIELDS = frozenset({"created_at", "updated_at"})
DATE_OPS = ("eq", "neq", "gt", "gte", "lt", "lte")
_DATE_COMPARE: dict[str, Callable[[datetime, datetime], bool]] = {
    "eq": operator.eq,
    "neq": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}

# Resolves a filter or search key to the values of one entity it is compared against.
FieldGetter = Callable[[Mapping[str, Any], str], list[Any]]


@dataclass
class ListQuery:
    """The parsed list parameters."""

    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE
    sort: SortField = "-created_at"
    filter: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)


def nest_brackets(pairs: Iterable[tuple[str, str]], root: str) -> dict[str, Any]:
    """``root[a][b]=v`` query pairs as ``{"a": {"b": "v"}}``; repeated leaves are joined with commas."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if not key.startswith(root + "["):
            continue
        rest = key[len(root) :]
        parts: list[str] = []
        while rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                break
            parts.append(rest[1:end])
            rest = rest[end + 1 :]
        if rest or not parts or any(not p for p in parts):
            raise invalid(
                f"malformed query parameter {key!r}; use {root}[field] or {root}[field][sub]", ["query", key]
            )
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise invalid(f"query parameter {key!r} conflicts with {root}[{part}]", ["query", key])
            node = child
        leaf = parts[-1]
        if isinstance(node.get(leaf), dict):
            raise invalid(
                f"query parameter {key!r} conflicts with a nested {root}[{leaf}][...]", ["query", key]
            )
        node[leaf] = f"{node[leaf]},{value}" if leaf in node else value
    return out


def _int_param(params: QueryParams, name: str, default: int, low: int, high: int | None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"{name} must be an integer, got {raw!r}", ["query", name]) from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise invalid(f"{name} must be {bound}, got {value}", ["query", name])
    return value


def parse_list_query(params: QueryParams, *, filters: Iterable[str], searches: Iterable[str]) -> ListQuery:
    """Read and check the list parameters; unknown filter or search keys are rejected, naming the accepted."""
    query = ListQuery(
        page=_int_param(params, "page", 1, 1, None),
        page_size=_int_param(params, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
    )
    sort = params.get("sort") or "-created_at"
    if sort == "created_at":
        query.sort = "created_at"
    elif sort != "-created_at":
        raise invalid(f"sort must be one of {', '.join(SORTS)}, got {sort!r}", ["query", "sort"])
    pairs = list(params.multi_items())
    for root, accepted in (("filter", sorted(filters)), ("search", sorted(searches))):
        parsed = nest_brackets(pairs, root)
        for key in parsed:
            if key not in accepted:
                raise invalid(
                    f"unknown {root} key {key!r}; accepted: {', '.join(accepted)}",
                    ["query", f"{root}[{key}]"],
                )
        for key in DATE_FIELDS & parsed.keys():
            _date_ops(parsed[key], key, root)
        setattr(query, root, parsed)
    return query


def parse_time(value: Any) -> datetime | None:
    """A datetime from an ISO string or datetime; naive values are UTC; None when unparseable."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _date_bound(raw: str, key: str, op: str, root: str) -> datetime:
    bound = parse_time(raw)
    if bound is None:
        raise invalid(
            f"{root}[{key}][{op}] must be an ISO 8601 date or time, got {raw!r}", ["query", root, key, op]
        )
    return bound


def _date_ops(spec: Any, key: str, root: str) -> dict[str, datetime]:
    """A date condition as ``{operator: bound}``: a plain value is ``eq``; search takes ``start``/``end``."""
    ops = {"eq": spec} if isinstance(spec, str) else dict(spec)
    if root == "search":
        accepted = {"start": "gte", "end": "lte"}
        for op in ops:
            if op not in accepted:
                raise invalid(
                    f"unknown date bound {op!r} for search[{key}]; accepted: start, end", ["query", root, key]
                )
        ops = {accepted[op]: raw for op, raw in ops.items()}
    for op, raw in ops.items():
        if op not in DATE_OPS:
            raise invalid(
                f"unknown date operator {op!r} for filter[{key}]; accepted: {', '.join(DATE_OPS)}",
                ["query", root, key],
            )
        if not isinstance(raw, str):
            raise invalid(f"{root}[{key}][{op}] must be a date, not nested further", ["query", root, key, op])
    return {op: _date_bound(raw, key, op, root) for op, raw in ops.items()}


def _date_matches(values: list[Any], spec: Any, key: str, root: str) -> bool:
    times = [t for t in (parse_time(v) for v in values) if t is not None]
    for op, bound in _date_ops(spec, key, root).items():
        compare = _DATE_COMPARE[op]
        if not any(compare(t, bound) for t in times):
            return False
    return True


def _value_matches(values: list[Any], wanted: str, *, exact: bool) -> bool:
    options = [w.strip() for w in wanted.split(",") if w.strip()] or [wanted]
    texts = [_text(v) for v in values if v is not None]
    if exact:
        return any(t == o for t in texts for o in options)
    return any(o.lower() in t.lower() for t in texts for o in options)


def _mapping_matches(actual: Any, spec: Mapping[str, Any], *, exact: bool) -> bool:
    """Nested filters such as ``filter[custom_fields][team]=x`` or ``filter[config][name]=x``."""
    if not isinstance(actual, Mapping):
        return False
    for key, wanted in spec.items():
        value = actual.get(key)
        if isinstance(wanted, Mapping):
            if not _mapping_matches(value, wanted, exact=exact):
                return False
        elif not _value_matches([value], str(wanted), exact=exact):
            return False
    return True


def matches(entity: Mapping[str, Any], query: ListQuery, getter: FieldGetter) -> bool:
    """Whether ``entity`` passes every filter and every search of ``query``."""
    for root, conditions in (("filter", query.filter), ("search", query.search)):
        exact = root == "filter"
        for key, wanted in conditions.items():
            values = getter(entity, key)
            if key in DATE_FIELDS:
                if not _date_matches(values, wanted, key, root):
                    return False
            elif isinstance(wanted, Mapping):
                if not any(_mapping_matches(v, wanted, exact=exact) for v in values):
                    return False
            elif not _value_matches(values, str(wanted), exact=exact):
                return False
    return True


def default_getter(entity: Mapping[str, Any], key: str) -> list[Any]:
    """The entity's top-level value under ``key``."""
    return [entity.get(key)]


def _sort_key(entity: Mapping[str, Any]) -> datetime:
    return parse_time(entity.get("created_at")) or datetime.min.replace(tzinfo=UTC)


def paginate(
    entities: Iterable[Mapping[str, Any]], query: ListQuery, getter: FieldGetter = default_getter
) -> dict[str, Any]:
    """Filter, sort and page ``entities`` (wire dicts) into the list envelope."""
    kept = [dict(e) for e in entities if matches(e, query, getter)]
    kept.sort(key=_sort_key, reverse=query.sort.startswith("-"))
    start = (query.page - 1) * query.page_size
    return envelope(kept[start : start + query.page_size], query, len(kept))


def envelope(data: list[dict[str, Any]], query: ListQuery, total_results: int) -> dict[str, Any]:
    """The list envelope of one page ``data`` out of ``total_results``."""
    pagination = PaginationData(
        page=query.page,
        page_size=query.page_size,
        current_page_size=len(data),
        total_pages=math.ceil(total_results / query.page_size),
        total_results=total_results,
    )
    wrapped = ListEnvelope(
        data=data, pagination=pagination, sort=query.sort, filter=query.filter, search=query.search
    )
    return wrapped.model_dump(mode="json")


# ---- the NeMo resources' filters, searches and field getters ----------------------------------------

COMMONFILTERS = {"namespace", "project", "created_at", "custom_fields"}
FILTERS: dict[str, set[str]] = {
    "config": COMMONFILTERS | {"name", "type"},
    "target": COMMONFILTERS | {"name", "type", "model"},
    "job": COMMONFILTERS | {"status", "config", "target"},
    "result": {"job_id", "namespace", "project", "created_at"},
}
ENTITYSEARCHES = {"id", "name", "namespace", "description", "project", "custom_fields", "ownership"}
_DATES = {"created_at", "updated_at"}
SEARCHES: dict[str, set[str]] = {
    "config": ENTITYSEARCHES | _DATES | {"type", "params", "tasks", "groups"},
    "target": ENTITYSEARCHES
    | _DATES
    | {"type", "model", "rows", "dataset", "cached_outputs", "retriever", "rag"},
    "job": (ENTITYSEARCHES - {"name"})
    | _DATES
    | {"config", "target", "status", "status_details", "result", "output_files_url"},
    "result": {"id", "job", "namespace", "project", "description", "custom_fields", "ownership"}
    | _DATES
    | {"files_url", "tasks", "groups"},
}


def entity_getter(entity: Mapping[str, Any], key: str) -> list[Any]:
    return [entity.get(key)]


def target_getter(entity: Mapping[str, Any], key: str) -> list[Any]:
    """``model`` matches a model reference, an endpoint's ``model_id`` or a model entity's ``ns/name``."""
    if key != "model":
        return [entity.get(key)]
    model = entity.get("model")
    if not isinstance(model, Mapping):
        return [model]
    values: list[Any] = [model]
    endpoint = model.get("api_endpoint")
    if isinstance(endpoint, Mapping):
        values.append(endpoint.get("model_id"))
    if model.get("name"):
        values += [model.get("name"), f"{model.get('namespace', DEFAULT_NAMESPACE)}/{model.get('name')}"]
    return values


def job_getter(job: Mapping[str, Any], key: str) -> list[Any]:
    """``config``/``target`` match ``ns/name`` (or nested fields of the snapshot)."""
    if key in ("config", "target"):
        snapshot = job.get(key) or {}
        values: list[Any] = [snapshot]
        if snapshot.get("name"):
            values.append(f"{snapshot.get('namespace', DEFAULT_NAMESPACE)}/{snapshot['name']}")
        if snapshot.get("id"):
            values.append(snapshot["id"])
        return values
    return [job.get(key)]


def result_getter(result: Mapping[str, Any], key: str) -> list[Any]:
    return [result.get("job")] if key == "job_id" else [result.get(key)]


# ---- router ----------------------------------------------------------------------------------------
