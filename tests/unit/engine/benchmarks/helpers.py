"""Running an academic config against the fake model server, and where the shared data lives."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evalstack.config import Settings
from evalstack.engine.benchmarks import compile_academic_plan
from evalstack.engine.runner import run_plan
from evalstack.inference.base import ModelEndpoint
from evalstack.inference.clients import ModelClientPool
from evalstack.store.records import SampleRecord

DATA_DIR = (Path(__file__).parents[4] / ".." / "shared" / "data").resolve()


def need_data(*relative: str) -> Path:
    """The shared data folder, or skip the test saying what is missing."""
    for rel in relative:
        if not (DATA_DIR / rel).is_file():
            pytest.skip(f"benchmark data {rel} not found under ../shared/data (relative to the repo root)")
    return DATA_DIR


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


async def run_config(
    config: dict[str, Any],
    base_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    data_dir: Path = DATA_DIR,
) -> tuple[dict[str, list[SampleRecord]], dict[str, Any]]:
    """Compile ``config`` for the fake server (benchmark data under ``data_dir``), run it, and return
    the samples by task and the result."""
    monkeypatch.setenv("EVALSTACK_DATA_DIR", str(data_dir))
    settings = Settings(data_dir=tmp_path, data_roots=[tmp_path])
    clients = ModelClientPool()
    endpoint = ModelEndpoint(kind="openai", model="fake-model", base_url=base_url)
    try:
        plan = await compile_academic_plan(config, endpoint, settings=settings, clients=clients)
        samples: dict[str, list[SampleRecord]] = {task.name: [] for task in plan.tasks}

        async def sink(sample: SampleRecord) -> None:
            samples[sample.task].append(sample)

        await run_plan(plan, clients, sink=sink)
        for records in samples.values():
            records.sort(key=lambda s: s.index)
        return samples, plan.summarize(samples)
    finally:
        await clients.aclose()


def score(result: dict[str, Any], task: str, name: str) -> dict[str, Any]:
    """One score entry of a task (``{"value", "stats", "ci"}``)."""
    entry: dict[str, Any] = result["tasks"][task]["metrics"][name]["scores"][name]
    return entry
