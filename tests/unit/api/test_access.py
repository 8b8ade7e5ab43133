"""The auth matrix: every route of the app, called with no key and with read, run and admin keys.

The routes are read from the app itself, so a route added without a decision in
``api/access.py`` fails ``test_every_route_has_a_scope_decision``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Mount

from evalstack.api.access import ROUTE_DECISIONS, decision_for
from evalstack.auth import hash_key
from evalstack.config import Settings
from evalstack.server import create_app

KEYS = {"read": "key-read-only", "run": "key-run-only", "admin": "key-admin-only"}


def _routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(method, path template) of every route, walking included routers and mounts."""
    for route in routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:  # FastAPI's included routers
            for context in contexts():
                for method in sorted(context.methods or ()):
                    if method != "HEAD":
                        yield method, prefix + context.path
        elif isinstance(route, Mount):
            if route.routes:
                yield from _routes(list(route.routes), prefix + route.path)
            else:
                yield "GET", prefix + route.path + "/{path:path}"
        else:
            for method in sorted(getattr(route, "methods", None) or ()):
                if method != "HEAD":
                    yield method, prefix + route.path


def _settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        embedded_model=False,
        auth={
            "api_keys": [
                {"name": f"{scope}-holder", "sha256": hash_key(key), "scopes": [scope]}
                for scope, key in KEYS.items()
            ]
        },
    )


APP_ROUTES = sorted(set(_routes(create_app(Settings(embedded_model=False)).routes)))


def test_the_app_routes_were_found() -> None:
    paths = {path for _, path in APP_ROUTES}
    assert {"/v1/health", "/v1/evaluation/jobs", "/v1/eval/benchmarks", "/ui/"} <= paths
    assert len(APP_ROUTES) > 70


@pytest.mark.parametrize(("method", "template"), APP_ROUTES)
def test_every_route_has_a_scope_decision(method: str, template: str) -> None:
    assert (method, template) in ROUTE_DECISIONS, (
        f"{method} {template} has no scope decision; add one to ROUTE_DECISIONS in evalstack/api/access.py"
    )


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", template.replace("{path:path}", "style.css"))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(_settings(tmp_path_factory.mktemp("auth")))
    with TestClient(app) as test_client:
        yield test_client


@pytest.mark.parametrize(("method", "template"), APP_ROUTES)
def test_auth_matrix(client: TestClient, method: str, template: str) -> None:
    path = _concrete(template)
    decision = ROUTE_DECISIONS[(method, template)]
    assert decision_for(method, path) == decision
    nemo = path.startswith("/v1/evaluation")

    anonymous = client.request(method, path)
    if decision == "open":
        assert anonymous.status_code not in (401, 403), anonymous.text
    else:
        assert anonymous.status_code == 401, anonymous.text
        assert "www-authenticate" in anonymous.headers
        message = anonymous.json()["detail"] if nemo else anonymous.json()["error"]["message"]
        assert "Authorization" in message

    for scope, key in KEYS.items():
        response = client.request(method, path, headers={"Authorization": f"Bearer {key}"})
        if decision in ("open", scope):
            assert response.status_code not in (401, 403), (scope, response.text)
        else:
            assert response.status_code == 403, (scope, response.text)
            message = response.json()["detail"] if nemo else response.json()["error"]["message"]
            assert f"lacks the '{decision}' scope" in message


def test_a_wrong_key_gets_401_and_the_health_check_stays_open(client: TestClient) -> None:
    bad = client.get("/v1/models", headers={"Authorization": "Bearer not-a-key"})
    assert bad.status_code == 401
    assert bad.json() == {"error": {"message": "Invalid API key or token"}}
    assert client.get("/v1/evaluation/jobs", headers={"Authorization": "Bearer nope"}).json() == {
        "detail": "Invalid API key or token"
    }
    assert client.get("/v1/health").status_code == 200


def test_the_viewer_accepts_the_key_as_basic_auth_password(client: TestClient) -> None:
    challenge = client.get("/ui/")
    assert challenge.status_code == 401
    assert challenge.headers["www-authenticate"].startswith("Basic")
    assert client.get("/ui/", auth=("anyone", KEYS["read"])).status_code == 200
    assert client.get("/ui/", auth=("anyone", "wrong")).status_code == 401
    # The pages fetch counts and listings from the API: its challenge names Basic too, so a browser
    # resends the key its user typed into the prompt (Bearer first, for API clients).
    api = client.get("/v1/evalstack/jobs")
    assert api.headers.get_list("www-authenticate") == ['Bearer realm="evalstack"', 'Basic realm="evalstack"']
    assert client.get("/v1/evalstack/jobs", auth=("anyone", KEYS["read"])).status_code == 200


def test_an_open_server_needs_no_key(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path, embedded_model=False))) as open_client:
        assert open_client.get("/v1/models").status_code == 200


def test_a_body_over_the_limit_gets_413_in_the_family_body(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedded_model=False, max_body_bytes=4096)
    with TestClient(create_app(settings)) as small:
        big = {"rows": ["x" * 5000]}
        response = small.post("/v1/datasets", json=big)
        assert response.status_code == 413
        assert "larger than the limit of 4096 bytes" in response.json()["error"]["message"]
        nemo = small.post("/v1/evaluation/configs", json=big)
        assert nemo.status_code == 413
        assert "4096" in nemo.json()["detail"]
        streamed = small.post("/v1/datasets", content=iter([b"{" + b" " * 3000, b" " * 3000 + b"}"]))
        assert streamed.status_code == 413
        assert small.post("/v1/datasets", json={"a": "b"}).status_code != 413
