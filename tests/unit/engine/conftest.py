"""Fixtures the engine tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from evalstack.store.repository import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """An open SQLite store in the test's own folder."""
    async with Store(f"sqlite:///{tmp_path / 'evalstack.db'}") as opened:
        yield opened
