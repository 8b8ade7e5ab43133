"""Server-side template injection: the payloads attackers use against Jinja, refused by the sandbox.

Templates come from users (NeMo configs, Llama Stack prompt templates) and rows come from datasets
and models; neither may reach Python objects, the process environment or the file system.
"""

from __future__ import annotations

import pytest

from evalstack.engine.templates import build_context, render_text
from evalstack.errors import InvalidInputError
from evalstack.limits import MAX_TEMPLATE_CHARS

SSTI_PAYLOADS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{{ ''|attr('__class__')|attr('__mro__') }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__.os.popen('id').read() }}",
    "{{ namespace.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ range.__self__.__import__('os').popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__init__.__globals__.__builtins__ }}",
    "{{ item.__class__.__init__.__globals__ }}",
    "{{ config.items() }}",
    "{{ request.application.__globals__.__builtins__.__import__('os').popen('id').read() }}",
    "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "{{ item.q.format.__globals__ }}",
    "{{ '{0.__class__}'.format(item) }}",
    "{% for i in range(10**9) %}{% endfor %}",
]


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
def test_injection_payloads_are_refused(payload: str) -> None:
    with pytest.raises(InvalidInputError, match="failed to render"):
        render_text(payload, build_context({"q": "What is 2+2?"}))


def test_a_row_holding_template_syntax_is_data_not_code() -> None:
    row = {"q": "{{ 7*7 }} {% for c in ().__class__.__base__.__subclasses__() %}{{c}}{% endfor %}"}
    assert render_text("Q: {{ item.q }}", build_context(row)) == f"Q: {row['q']}"
    assert render_text("Q: {{ item.q | upper }}", build_context(row)) == f"Q: {row['q'].upper()}"


def test_an_oversized_template_is_refused_with_the_bound() -> None:
    huge = "{{ item.q }}" + "x" * MAX_TEMPLATE_CHARS
    with pytest.raises(InvalidInputError, match=f"at most {MAX_TEMPLATE_CHARS} are accepted"):
        render_text(huge, build_context({"q": "hi"}))
