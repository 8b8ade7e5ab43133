"""Sandboxed Jinja rendering for NeMo Evaluator templates, with both conventions at once.

The rendering context of one sample (:func:`build_context`) holds:

- ``item``: the row, its column names normalised (lower-cased, every character that is not an ASCII
  letter or digit turned into ``_``; where two columns normalise to the same name, a column whose name
  is already normal keeps it and the others get ``_1``, ``_2``... in column order);
- every column again at the top level, under its original name and under its normalised name (the
  flat convention of older docs: ``{{prompt}}``, ``{{ideal_response}}``);
- ``sample`` (``{output_text, response}``) and ``output_text`` at the top level, once there is an output.

Where a column is itself named ``item`` or ``sample``, the top-level name means the namespace; the
column stays reachable as ``item.item`` / ``item.sample``.

Templates render in a :class:`~jinja2.sandbox.SandboxedEnvironment` with ``StrictUndefined``, so a
missing field is an error, never an empty string. ``None`` renders as an empty string. ``item.x``
looks the key ``x`` up before any attribute, so columns named ``items`` or ``values`` work. ``tojson``
writes plain JSON (no HTML escaping, non-ASCII kept). Compiled templates are cached by source, so a
template is compiled once per process however many samples use it.

:func:`render_value` parses a rendered string back into JSON when its template uses ``tojson``
and the text is a JSON array or object (``"{{ item.messages | tojson }}"`` becomes a list again);
a template without ``tojson`` stays text even when the row's text happens to look like JSON, so a
prompt is never turned into an object. :func:`render_text` always returns the text.
Failures raise :class:`~evalstack.errors.InvalidInputError` naming the template and the reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from evalstack.errors import InvalidInputError
from evalstack.limits import MAX_TEMPLATE_CHARS

_NON_ALNUM = re.compile(r"[^a-z0-9]")
_TOJSON = re.compile(r"\|\s*tojson\b")
_MAX_SHOWN = 120


def normalise_name(name: str) -> str:
    """Lower-case ``name`` and replace every character that is not ``[a-z0-9]`` with ``_``."""
    return _NON_ALNUM.sub("_", str(name).lower())


@lru_cache(maxsize=512)
def _normalised_names(columns: tuple[str, ...]) -> tuple[str, ...]:
    """Normalised, de-duplicated names for ``columns`` (same order); see the module docstring."""
    wanted = [normalise_name(c) for c in columns]
    taken = {w for c, w in zip(columns, wanted, strict=True) if c == w}
    result: list[str] = []
    for column, name in zip(columns, wanted, strict=True):
        if column != name:
            base, n = name, 0
            while name in taken:
                n += 1
                name = f"{base}_{n}"
            taken.add(name)
        result.append(name)
    return tuple(result)


def normalise_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row with its column names normalised (the ``item`` of a template)."""
    keys = tuple(str(k) for k in row)
    return dict(zip(_normalised_names(keys), row.values(), strict=True))


def build_context(
    item: Mapping[str, Any],
    output_text: str | None = None,
    response: Mapping[str, Any] | None = None,
    *,
    with_sample: bool = False,
) -> dict[str, Any]:
    """The template context for one row and, with ``with_sample``, the model's output."""
    normalised = normalise_row(item)
    context: dict[str, Any] = dict(normalised)
    context.update(item)
    context["item"] = normalised
    if with_sample:
        context["sample"] = {"output_text": output_text, "response": response}
        if output_text is not None or "output_text" not in context:
            context["output_text"] = output_text
    return context


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises here, naming the missing field
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _finalize(value: Any) -> Any:
    return "" if value is None else value


class _Environment(SandboxedEnvironment):
    """Sandboxed environment where ``mapping.key`` means the key before any attribute."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


def _make_environment() -> _Environment:
    env = _Environment(undefined=jinja2.StrictUndefined, autoescape=False, finalize=_finalize)
    env.filters["tojson"] = _tojson
    return env


_ENV = _make_environment()
_GLOBALS: dict[str, Any] = dict(_ENV.globals)


def _shown(source: str) -> str:
    return source if len(source) <= _MAX_SHOWN else source[: _MAX_SHOWN - 3] + "..."


@lru_cache(maxsize=4096)
def compile_template(source: str) -> jinja2.Template:
    """Compile ``source`` once (cached); a syntax error or an oversized template is an InvalidInputError."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise InvalidInputError(
            f"Template {_shown(source)!r} has {len(source)} characters; "
            f"at most {MAX_TEMPLATE_CHARS} are accepted."
        )
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise InvalidInputError(
            f"Template {_shown(source)!r} is not valid Jinja: {exc.message} (line {exc.lineno})."
        ) from exc


def is_template(source: str) -> bool:
    """Whether ``source`` holds Jinja syntax (anything else renders to itself)."""
    return "{" in source


def check_templates(obj: Any) -> None:
    """Compile every template string inside ``obj`` (dicts, lists) now, so syntax errors surface early."""
    if isinstance(obj, str):
        if is_template(obj):
            compile_template(obj)
    elif isinstance(obj, Mapping):
        for value in obj.values():
            check_templates(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            check_templates(value)


def _fields_hint(context: Mapping[str, Any]) -> str:
    item = context.get("item")
    names = sorted(item) if isinstance(item, Mapping) else sorted(k for k in context if k != "item")
    shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    extra = " and sample.output_text, sample.response, output_text" if "sample" in context else ""
    return f"The row has the fields: {shown or '(none)'}; use item.<field> or <field>{extra}."


# A template that is one variable path with optional trim/lower/upper filters ("{{ item.prompt }}",
# "{{ sample.output_text | trim }}") renders without Jinja: same text, a fraction of the cost.
_SIMPLE = re.compile(
    r"^\{\{-?\s*([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*((?:\|\s*(?:trim|lower|upper)\s*)*)-?\}\}$"
)
_FILTERS: dict[str, Any] = {"trim": str.strip, "lower": str.lower, "upper": str.upper}
_MISSING = object()


@lru_cache(maxsize=4096)
def _simple_template(source: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """``(path, filters)`` of a one-variable template, else None."""
    match = _SIMPLE.match(source)
    if match is None:
        return None
    filters = tuple(f.strip() for f in match.group(2).split("|") if f.strip())
    return tuple(match.group(1).split(".")), filters


def _render_simple(path: tuple[str, ...], filters: tuple[str, ...], context: Mapping[str, Any]) -> Any:
    """The rendered text, or ``_MISSING`` when Jinja must decide (missing keys, non-mapping values)."""
    value: Any = context
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    if not isinstance(value, str | int | float) and value is not None:
        return _MISSING  # lists, dicts, objects: leave their text to Jinja
    if not filters:
        return "" if value is None else str(value)
    text = str(value)
    for name in filters:
        text = _FILTERS[name](text)
    return text


def render_text(source: str, context: Mapping[str, Any]) -> str:
    """Render one template string to text."""
    if not is_template(source):
        return source
    simple = _simple_template(source)
    if simple is not None:
        text = _render_simple(simple[0], simple[1], context)
        if text is not _MISSING:
            return str(text)
    template = compile_template(source)
    try:
        # One plain dict of globals and variables, shared with the template: Template.render would
        # rebuild it through a ChainMap of the globals on every call, which dominates short templates.
        jinja_context = _ENV.context_class(_ENV, {**_GLOBALS, **context}, template.name, template.blocks)
        return _ENV.concat(template.root_render_func(jinja_context))
    except jinja2.UndefinedError as exc:
        raise InvalidInputError(
            f"Template {_shown(source)!r} failed to render: {exc.message}. {_fields_hint(context)}"
        ) from exc
    except jinja2.TemplateError as exc:  # SecurityError and friends
        raise InvalidInputError(f"Template {_shown(source)!r} failed to render: {exc}.") from exc
    except Exception as exc:  # errors raised by the template's own expressions
        raise InvalidInputError(
            f"Template {_shown(source)!r} failed to render: {type(exc).__name__}: {exc}."
        ) from exc


def parse_json_text(text: str) -> Any:
    """``text`` parsed as JSON when it looks like a JSON array or object; otherwise ``text`` itself."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except ValueError:
            return text
    return text


def render_value(obj: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside ``obj`` (recursively through dicts and lists).

    A string whose template uses ``tojson`` and renders to a JSON array or object is parsed back;
    other values pass through.
    """
    if isinstance(obj, str):
        if not is_template(obj):
            return obj
        text = render_text(obj, context)
        return parse_json_text(text) if _TOJSON.search(obj) else text
    if isinstance(obj, dict | Mapping):
        return {key: render_value(value, context) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [render_value(value, context) for value in obj]
    return obj
