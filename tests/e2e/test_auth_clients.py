"""Authentication end to end: a real server with keys and a JWT issuer, driven by the real clients.

The JWT issuer's JWKS is served by the test itself (uvicorn on loopback); tokens are signed here with
PyJWT, so a wrong signature, audience, issuer or expiry is a real verification failure.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import llama_stack_client
import nemo_microservices
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from llama_stack_client import LlamaStackClient
from nemo_microservices import NeMoMicroservices
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from tests.fakes.serving import BackgroundServer, free_port

from evalstack.auth import hash_key
from evalstack.config import Settings
from evalstack.server import create_app

CI_KEY = "ci-key-for-the-tests"
READER_KEY = "reader-key-for-the-tests"
OPS_KEY = "ops-key-for-the-tests"
ISSUER = "https://issuer.test/"
AUDIENCE = "evalstack"
KID = "test-key-1"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks(signing_key: rsa.RSAPrivateKey) -> Iterator[BackgroundServer]:
    public = jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
    public |= {"kid": KID, "use": "sig", "alg": "RS256"}

    async def keys(_request: Any) -> JSONResponse:
        return JSONResponse({"keys": [public]})

    app = Starlette(routes=[Route("/.well-known/jwks.json", keys)])
    with BackgroundServer(app, free_port(), name="JWKS") as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jwks: BackgroundServer) -> Iterator[BackgroundServer]:
    data = tmp_path_factory.mktemp("auth-e2e")
    settings = Settings(
        data_dir=data,
        embedded_model=False,
        auth={
            "api_keys": [
                {"name": "ci", "sha256": hash_key(CI_KEY), "scopes": ["read", "run"]},
                {"name": "reader", "sha256": hash_key(READER_KEY), "scopes": ["read"]},
                {"name": "ops", "sha256": hash_key(OPS_KEY), "scopes": ["read", "run", "admin"]},
            ],
            "jwt": {
                "jwks_url": f"{jwks.url}/.well-known/jwks.json",
                "issuer": ISSUER,
                "audience": AUDIENCE,
                "scopes_claim": "scope",
            },
        },
    )
    with BackgroundServer(create_app(settings), free_port(), name="evalstack", start_timeout=30) as running:
        yield running


def token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice@example.com", "iat": now, "exp": now + 300}
    payload |= {"scope": "read run"} | claims
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": KID})


def rows_dataset() -> dict[str, Any]:
    return {"type": "rows", "rows": [{"input_query": "1+1", "expected_answer": "2"}]}


def test_llama_stack_client_sends_its_api_key(server: BackgroundServer) -> None:
    with pytest.raises(llama_stack_client.AuthenticationError):
        LlamaStackClient(base_url=server.url).models.list()
    with pytest.raises(llama_stack_client.AuthenticationError):
        LlamaStackClient(base_url=server.url, api_key="not-a-key").models.list()

    reader = LlamaStackClient(base_url=server.url, api_key=READER_KEY)
    assert isinstance(reader.models.list(), list)
    with pytest.raises(llama_stack_client.PermissionDeniedError) as denied:
        reader.datasets.register(purpose="eval/messages-answer", source=rows_dataset(), dataset_id="denied")
    assert "lacks the 'run' scope" in str(denied.value)

    ci = LlamaStackClient(base_url=server.url, api_key=CI_KEY)
    registered = ci.datasets.register(
        purpose="eval/messages-answer", source=rows_dataset(), dataset_id="ls-ds"
    )
    assert registered.identifier == "ls-ds"
    assert [d.identifier for d in reader.datasets.list()].count("ls-ds") == 1


def test_nemo_sdk_sends_the_key_as_a_bearer_header(server: BackgroundServer) -> None:
    with (
        NeMoMicroservices(base_url=server.url) as anonymous,
        pytest.raises(nemo_microservices.AuthenticationError),
    ):
        anonymous.evaluation.configs.list()
    with NeMoMicroservices(
        base_url=server.url, default_headers={"Authorization": f"Bearer {READER_KEY}"}
    ) as sdk:
        assert sdk.evaluation.configs.list().data is not None
        with pytest.raises(nemo_microservices.PermissionDeniedError) as denied:
            sdk.evaluation.targets.create(
                name="t",
                namespace="auth",
                type="model",
                model={"api_endpoint": {"url": "http://127.0.0.1:9/v1"}},
            )
        assert "lacks the 'run' scope" in str(denied.value)


def test_jwt_from_the_issuer_is_accepted_with_its_scopes(
    server: BackgroundServer, signing_key: rsa.RSAPrivateKey
) -> None:
    good = {"Authorization": f"Bearer {token(signing_key)}"}
    assert httpx.get(f"{server.url}/v1/models", headers=good).status_code == 200
    created = httpx.post(
        f"{server.url}/v1/datasets",
        headers=good,
        json={"purpose": "eval/messages-answer", "source": rows_dataset(), "dataset_id": "jwt-ds"},
    )
    assert created.status_code == 200, created.text

    read_only = {"Authorization": f"Bearer {token(signing_key, scope='read')}"}
    denied = httpx.post(f"{server.url}/v1/evaluation/live", headers=read_only, json={})
    assert denied.status_code == 403
    assert "'alice@example.com' lacks the 'run' scope" in denied.json()["detail"]
    listed = httpx.get(f"{server.url}/v1/evaluation/configs", headers={"Authorization": "Basic Og=="}).json()
    assert "no credential" in listed["detail"]


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "https://other-issuer.test/"}, "issuer"),
        ({"exp": int(time.time()) - 60}, "expired"),
    ],
)
def test_jwt_with_bad_claims_gets_401(
    server: BackgroundServer, signing_key: rsa.RSAPrivateKey, claims: dict[str, Any], reason: str
) -> None:
    response = httpx.get(
        f"{server.url}/v1/models", headers={"Authorization": f"Bearer {token(signing_key, **claims)}"}
    )
    assert response.status_code == 401
    assert reason in response.json()["error"]["message"].lower()


def test_jwt_signed_by_another_key_gets_401(server: BackgroundServer) -> None:
    forged = token(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    response = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert "signature" in response.json()["error"]["message"].lower()


def test_health_stays_open(server: BackgroundServer) -> None:
    assert httpx.get(f"{server.url}/v1/health").status_code == 200


def test_only_the_creator_or_an_admin_deletes(
    server: BackgroundServer, signing_key: rsa.RSAPrivateKey
) -> None:
    ci = LlamaStackClient(base_url=server.url, api_key=CI_KEY)
    ci.datasets.register(purpose="eval/messages-answer", source=rows_dataset(), dataset_id="owned-by-ci")
    ci.datasets.register(purpose="eval/messages-answer", source=rows_dataset(), dataset_id="also-ci")
    alice = {"Authorization": f"Bearer {token(signing_key)}"}
    denied = httpx.delete(f"{server.url}/v1/datasets/owned-by-ci", headers=alice)
    assert denied.status_code == 403
    assert "created by 'ci'" in denied.json()["error"]["message"]
    ci.datasets.unregister("owned-by-ci")
    LlamaStackClient(base_url=server.url, api_key=OPS_KEY).datasets.unregister("also-ci")
    remaining = [d.identifier for d in ci.datasets.list()]
    assert "owned-by-ci" not in remaining and "also-ci" not in remaining

    model = {"model_id": "ci-model", "metadata": {"base_url": "http://127.0.0.1:9/v1"}}
    assert httpx.post(
        f"{server.url}/v1/models", headers={"Authorization": f"Bearer {CI_KEY}"}, json=model
    ).is_success
    taken = httpx.post(f"{server.url}/v1/models", headers=alice, json=model | {"provider_model_id": "other"})
    assert taken.status_code == 403
    assert "replacing what others created needs the 'admin' scope" in taken.json()["error"]["message"]
