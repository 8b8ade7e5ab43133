"""Shared fixtures: the fake model server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.model_server import FakeModelServer


@pytest.fixture
def fake_model() -> Iterator[FakeModelServer]:
    """A started fake OpenAI-compatible server that echoes the prompt."""
    with FakeModelServer() as server:
        yield server
