"""Shared fixtures: the fake model server, one lm-eval cache for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.model_server import FakeModelServer


@pytest.fixture(scope="session", autouse=True)
def lm_eval_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """lm-eval's task index and built requests (``engine/lm_eval/cache.py``) in one temporary folder
    for the session, never the user's cache: lm-eval's ~14,000 task YAMLs are indexed once for every
    test and the servers and CLI runs they start (which inherit the environment). The variable is
    ``evalstack.engine.lm_eval.cache.ENV_CACHE``, spelled out so that conftest imports no engine."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EVALSTACK_LM_EVAL_CACHE", str(tmp_path_factory.mktemp("lm-eval-cache")))
        yield


@pytest.fixture
def fake_model() -> Iterator[FakeModelServer]:
    """A started fake OpenAI-compatible server that echoes the prompt."""
    with FakeModelServer() as server:
        yield server
