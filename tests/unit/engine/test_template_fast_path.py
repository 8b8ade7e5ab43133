"""One-variable templates render without Jinja, to exactly the text Jinja would give."""

from __future__ import annotations

import pytest

from evalstack.engine.templates import build_context, compile_template, render_text
from evalstack.errors import InvalidInputError

ROW = {"prompt": " Hi there ", "n": 3, "f": 1.5, "b": True, "none": None, "Weird Col": "MiXed", "lst": [1, 2]}
CONTEXT = build_context(ROW, " B\n", {"id": "x"}, with_sample=True)


@pytest.mark.parametrize(
    "template",
    [
        "{{item.prompt}}",
        "{{ item.prompt }}",
        "{{ prompt | trim }}",
        "{{sample.output_text|trim}}",
        "{{ output_text | trim | lower }}",
        "{{ item.n }}",
        "{{ item.f }}",
        "{{ item.b }}",
        "{{ item.none }}",
        "{{ item.none | trim }}",
        "{{ item.weird_col | upper }}",
        "{{ item.lst }}",
        "{{ sample.response }}",
        "{{- item.prompt -}}",
    ],
)
def test_simple_templates_render_like_jinja(template: str) -> None:
    assert render_text(template, CONTEXT) == compile_template(template).render(CONTEXT)


def test_a_missing_field_still_fails_with_the_fields_named() -> None:
    with pytest.raises(InvalidInputError, match=r"item\.nope|nope") as info:
        render_text("{{ item.nope }}", CONTEXT)
    assert "prompt" in str(info.value)


def test_templates_with_more_than_one_variable_still_use_jinja() -> None:
    assert render_text("{{ item.prompt | trim }}!{{ item.n }}", CONTEXT) == "Hi there!3"
