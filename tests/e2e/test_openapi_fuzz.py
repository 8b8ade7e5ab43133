"""schemathesis over ``/openapi.json`` of a running ``evalstack serve``, both API families.

Every operation gets requests generated from the schema, valid ones and invalid ones, and each
answer must be no 5xx, a documented status with a body that matches the documented schema, and for
an invalid request a 4xx. The run is bounded (a few examples per operation and mode, derandomized),
so it stays around a minute or two.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.generation.stateful.state_machine import StepInput, StepOutput
from schemathesis.specs.openapi.checks import (
    ensure_resource_availability,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)
from tests.fakes.serving import ServeProcess

from evalstack.api.openapi import NEMO_PREFIX, RESOURCE_LINKS

pytestmark = pytest.mark.slow

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, negative_data_rejection]
STATEFUL_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    use_after_free,  # a deleted thing is gone
    ensure_resource_availability,  # a created thing can be read at once
]
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
        # The benchmark catalog is built on its first read (lm-eval's task index: seconds, more on a
        # loaded machine); build it before the fuzzer's 10 s request timeout applies.
        httpx.get(f"{process.url}/v1/evalstack/benchmarks", timeout=300).raise_for_status()
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


# ---- stateful: create, then read, change and delete through the schema's links -----------------

STATEFUL = settings(
    max_examples=25,
    stateful_step_count=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


def linked_operations(nemo: bool) -> list[str]:
    """The labels ("POST /v1/datasets") of one family's create operations and their links' targets."""
    labels: set[str] = set()
    for entry in RESOURCE_LINKS:
        if entry.source[1].startswith(NEMO_PREFIX) == nemo:
            labels |= {f"{method} {path}" for method, path in (entry.source, *entry.targets)}
    return sorted(labels)


_ROWS_CONFIG = {
    "type": "custom",
    "tasks": {
        "qa": {
            "type": "data",
            "metrics": {
                "accuracy": {
                    "type": "string-check",
                    "params": {"check": ["{{output}}", "equals", "{{answer}}"]},
                }
            },
        }
    },
}
_ROWS_TARGET = {"type": "rows", "rows": [{"output": "4", "answer": "4"}, {"output": "5", "answer": "6"}]}
_BENCHMARK = {"dataset_id": "fuzz-rows", "scoring_functions": ["basic::equality"], "provider_id": None}
SEEDS: dict[str, dict[str, Any]] = {
    "POST /v1/evaluation/configs": _ROWS_CONFIG,
    "POST /v1/evaluation/targets": _ROWS_TARGET,
    "POST /v1/evaluation/jobs": {"config": _ROWS_CONFIG, "target": _ROWS_TARGET},
    "POST /v1/eval/benchmarks": _BENCHMARK,
    "POST /v1alpha/eval/benchmarks": _BENCHMARK,
    "POST /v1/models": {
        "model_type": "llm",
        "provider_id": None,
        "metadata": {"base_url": "http://127.0.0.1:9/v1"},
    },
    "POST /v1/scoring-functions": {"provider_id": None, "params": None, "return_type": {"type": "number"}},
}
"""What a create needs to succeed (a supported type, something to evaluate); the rest stays generated."""


LISTINGS = {
    True: (
        "/v1/evaluation/jobs",
        "/v1/evaluation/results",
        "/v1/evaluation/configs",
        "/v1/evaluation/targets",
    ),
    False: ("/v1/eval/benchmarks", "/v1/models", "/v1/scoring-functions", "/v1/datasets"),
}
"""What each family's creates make (NeMo, Llama Stack): their listings."""


def _path_of(listing: str, record: dict[str, Any]) -> str:
    """The path of one listed thing: NeMo configs and targets by namespace and name, the rest by id."""
    if listing.endswith(("/configs", "/targets")):
        return f"{listing}/{quote(record['namespace'], safe='')}/{quote(record['name'], safe='')}"
    return f"{listing}/{quote(record.get('identifier') or record['id'], safe='')}"


def delete_what_was_made(url: str, nemo: bool, keep: set[str]) -> None:
    """Delete every listed thing of one family (but ``keep``'s paths): each example of the state
    machine starts from the same server, so a create answers alike whenever the same steps come again
    (Hypothesis requires it: it replays choices and expects the same rules to be open)."""
    with httpx.Client(base_url=url, timeout=60) as http:
        for listing in LISTINGS[nemo]:
            for record in http.get(listing, params={"page_size": 1000}).json().get("data", []):
                path = _path_of(listing, record)
                if path not in keep:
                    http.delete(path)  # a built-in (a scoring function) stays; that is the same each time


class StatefulRun:
    """A state machine over one family's linked operations: positive requests, explicit links only."""

    def __init__(self, url: str, operations: list[str], reset: Callable[[], None]) -> None:
        self.reset = reset
        self.api = schemathesis.openapi.from_url(url).include(name=operations)
        self.api.config.generation.update(modes=[GenerationMode.POSITIVE])
        self.api.config.phases.stateful.inference.algorithms = []  # the schema's own links, no guessed ones
        self.followed: list[
            tuple[str, int]
        ] = []  # (link target, status) of each link followed with its value

    def run(self) -> None:
        followed, reset = self.followed, self.reset

        class Machine(self.api.as_state_machine()):  # type: ignore[misc]
            def before_call(self, case: schemathesis.Case) -> None:
                seed = SEEDS.get(case.operation.label)
                if seed is not None and isinstance(case.body, dict):
                    case.body = {**case.body, **seed}

            def teardown(self) -> None:
                reset()

            def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
                return {"timeout": 60}  # a slow answer on a loaded machine is not a failure; a hang is

            def step(self, input: StepInput) -> StepOutput:
                output = super().step(input)
                if input.transition is not None and input.is_applied:
                    followed.append((input.case.operation.label, output.response.status_code))
                return output

            def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
                case.validate_response(
                    response, checks=STATEFUL_CHECKS, transport_kwargs=kwargs or None, recorder=self.recorder
                )

        Machine.run(settings=STATEFUL)


@pytest.mark.parametrize("nemo", [True, False], ids=["NeMo", "Llama Stack"])
def test_links_lead_from_each_create_to_reads_and_deletes_without_a_server_error(
    server: ServeProcess, nemo: bool
) -> None:
    rows = {"type": "rows", "rows": [{"input_query": "2+2", "expected_answer": "4", "generated_answer": "4"}]}
    dataset = {"dataset_id": "fuzz-rows", "purpose": "eval/question-answer", "source": rows}
    assert httpx.post(f"{server.url}/v1/datasets", json=dataset, timeout=30).status_code == 200
    keep = {"/v1/datasets/fuzz-rows"}
    run = StatefulRun(
        f"{server.url}/openapi.json",
        linked_operations(nemo),
        lambda: delete_what_was_made(server.url, nemo, keep),
    )
    run.run()
    # The links were followed with what a create answered, and reached what it made.
    reached = {label for label, status in run.followed if 200 <= status < 300}
    assert reached, f"no link led to a success: {run.followed}"
