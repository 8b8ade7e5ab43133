"""The OpenAPI links a stateful fuzzer follows: generated from one table, each to a real operation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from evalstack.api.openapi import RESOURCE_LINKS, ResourceLinks, add_links, honest_openapi
from evalstack.config import Settings
from evalstack.server import create_app


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("links"), embedded_model=False))
    return honest_openapi(app)


def operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """operationId -> the operation, with its method and path."""
    found = {}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            found[operation["operationId"]] = {**operation, "method": method.upper(), "path": path}
    return found


def test_every_create_of_both_families_links_to_the_reads_and_deletes_of_what_it_made(
    document: dict[str, Any],
) -> None:
    by_id = operations(document)
    linked: set[tuple[str, str]] = set()
    for operation in by_id.values():
        for status, response in operation["responses"].items():
            for link in response.get("links", {}).values():
                assert status.startswith("2")
                target = by_id[link["operationId"]]  # a link to an operation that exists
                taken = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
                assert set(link["parameters"]) == taken, f"{operation['path']} -> {target['path']}"
                linked.add((target["method"], target["path"]))
    creates = {
        (method.upper(), path)
        for path, methods in document["paths"].items()
        for method in methods
        if method == "post" and path.endswith(("/datasets", "/benchmarks", "/scoring-functions", "/models"))
    } | {("POST", f"/v1/evaluation/{kind}") for kind in ("configs", "targets", "results", "jobs")}
    assert creates <= {entry.source for entry in RESOURCE_LINKS}
    for item in (
        "/v1/evaluation/configs/{namespace}/{name}",
        "/v1/evaluation/jobs/{job_id}",
        "/v1beta/datasets/{dataset_id}",
        "/v1alpha/eval/benchmarks/{benchmark_id}",
        "/v1/models/{model_id}",
    ):
        assert {("GET", item), ("DELETE", item)} <= linked, item


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            ResourceLinks(
                ("POST", "/v1/datasets"),
                {"dataset_id": "$response.body#/identifier"},
                (("GET", "/v1/nope/{dataset_id}"),),
            ),
            "GET /v1/nope/{dataset_id}: the schema has no such operation",
        ),
        (
            ResourceLinks(
                ("POST", "/v1/datasets"),
                {"id": "$response.body#/identifier"},
                (("GET", "/v1/datasets/{dataset_id}"),),
            ),
            "it sets ['id'], the operation takes ['dataset_id']",
        ),
        (
            ResourceLinks(
                ("POST", "/v1/datasets"),
                {"dataset_id": "$request.path.dataset_id"},
                (("GET", "/v1/datasets/{dataset_id}"),),
            ),
            "it has no path parameter 'dataset_id'",
        ),
    ],
)
def test_a_link_to_a_missing_operation_or_parameter_fails(
    document: dict[str, Any], entry: ResourceLinks, problem: str
) -> None:
    with pytest.raises(ValueError) as error:
        add_links(copy.deepcopy(document), (entry,))
    assert problem in str(error.value)
