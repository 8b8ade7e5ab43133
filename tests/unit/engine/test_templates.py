"""Template rendering: both NeMo conventions at once, the sandbox, filters, JSON parse-back, errors."""

from __future__ import annotations

import pytest

from evalstack.engine.templates import (
    build_context,
    check_templates,
    compile_template,
    normalise_row,
    render_text,
    render_value,
)
from evalstack.errors import InvalidInputError

ROW = {"Question": "What is 2+2?", "ideal response": "4", "tags": ["math", "easy"], "items": "ten"}


def test_item_and_flat_conventions_render_the_same_row() -> None:
    context = build_context(ROW)
    assert render_text("{{ item.question }} / {{ item.ideal_response }}", context) == "What is 2+2? / 4"
    assert (
        render_text("{{ question }} / {{ ideal_response }} / {{ Question }}", context)
        == "What is 2+2? / 4 / What is 2+2?"
    )


def test_sample_and_output_text_are_available_once_there_is_an_output() -> None:
    response = {"choices": [{"message": {"content": "4", "tool_calls": [{"function": {"name": "add"}}]}}]}
    context = build_context(ROW, " 4 ", response, with_sample=True)
    assert render_text("[{{ sample.output_text | trim }}|{{ output_text }}]", context) == "[4| 4 ]"
    assert (
        render_text("{{ sample.response.choices[0].message.tool_calls[0].function.name }}", context) == "add"
    )


def test_columns_are_normalised_and_clashes_numbered() -> None:
    normalised = normalise_row({"Answer": 1, "answer": 2, "ANSWER": 3, "Some-Field (x)": 4})
    # a column whose name is already normal keeps it; the others are numbered in column order
    assert normalised == {"answer_1": 1, "answer": 2, "answer_2": 3, "some_field__x_": 4}


def test_mapping_keys_win_over_dict_methods() -> None:
    assert render_text("{{ item.items }}", build_context(ROW)) == "ten"


def test_a_missing_field_is_an_error_naming_the_template_and_the_fields() -> None:
    with pytest.raises(InvalidInputError) as err:
        render_text("{{ item.answer }}", build_context(ROW))
    assert "{{ item.answer }}" in err.value.message
    assert "answer" in err.value.message and "question" in err.value.message


def test_none_renders_as_empty_text() -> None:
    assert render_text("[{{ output_text }}]", build_context({"a": 1}, None, with_sample=True)) == "[]"


def test_filters_used_by_the_docs() -> None:
    context = build_context({"text": "  Héllo <World>  "})
    assert render_text("{{ text | trim | lower }}", context) == "héllo <world>"
    assert render_text("{{ text | upper | replace('WORLD', 'there') | trim }}", context) == "HÉLLO <there>"
    # tojson writes plain JSON: no HTML escaping, non-ASCII kept
    assert render_text("{{ text | trim | tojson }}", context) == '"Héllo <World>"'


def test_tojson_values_are_parsed_back_and_plain_text_is_not() -> None:
    row = {"messages": [{"role": "user", "content": "hi"}], "note": '{"looks": "like json"}'}
    template = {
        "messages": "{{ item.messages | tojson }}",
        "meta": ["{{ note }}", 3, {"n": "{{ item.messages | length }}"}],
    }
    rendered = render_value(template, build_context(row))
    assert rendered == {
        "messages": [{"role": "user", "content": "hi"}],
        "meta": ['{"looks": "like json"}', 3, {"n": "1"}],
    }


def test_sandbox_refuses_unsafe_attribute_access() -> None:
    with pytest.raises(InvalidInputError, match="failed to render"):
        render_text("{{ ''.__class__.__mro__[1].__subclasses__() }}", build_context({}))


def test_syntax_errors_are_reported_when_checked() -> None:
    with pytest.raises(InvalidInputError, match="not valid Jinja"):
        check_templates({"messages": [{"role": "user", "content": "{{ item.question }"}]})


def test_templates_are_compiled_once() -> None:
    source = "{{ item.question }} #cache-test"
    before = compile_template.cache_info()
    for n in range(50):
        render_text(source, build_context({"question": str(n)}))
    after = compile_template.cache_info()
    assert after.misses - before.misses == 1
    assert after.hits - before.hits == 49
