"""schemathesis over ``/openapi.json`` of a running ``evalstack serve``, both API families.

Every operation gets requests generated from the schema, valid ones and invalid ones, and each
answer must be no 5xx, a documented status with a body that matches the documented schema, and for
an invalid request a 4xx. The run is bounded (a few examples per operation and mode, derandomized),
so it stays around a minute or two.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from tests.fakes.serving import ServeProcess

pytestmark = pytest.mark.slow

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, negative_data_rejection]
FUZZ = settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    process = ServeProcess(workdir, "embedded_model: false\n", name="fuzz").start()
    try:
        yield process
    finally:
        process.stop()


def test_every_operation_answers_generated_requests_as_documented(server: ServeProcess) -> None:
    api = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for loaded in api.get_all_operations():
        operation = loaded.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def call(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=CHECKS)

            try:
                call()
            except Unsatisfiable:  # nothing to make invalid (no parameters, or only a free-text id)
                continue
            except Exception as exc:  # every failing operation is reported, not only the first
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert operations > 50, f"only {operations} operations in the schema"
    assert not failures, "\n\n".join(failures)


def test_the_schema_documents_each_familys_errors(server: ServeProcess) -> None:
    import httpx

    document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    llama = document["paths"]["/v1/scoring/score"]["post"]["responses"]
    nemo = document["paths"]["/v1/evaluation/jobs"]["post"]["responses"]
    assert "422" not in llama and llama["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/LlamaStackError"
    }
    assert "422" in nemo and nemo["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NemoError"
    }
