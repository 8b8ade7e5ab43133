"""A store written by the code before the engine owned its types resumes and finishes its jobs.

``tests/fixtures/store_v1/store.db`` was written by ``make_store.py`` (beside it) with commit 24261c5:
one unfinished job from each front door (a Llama Stack ``run_eval``, a NeMo custom task, a NeMo
``gsm8k`` job, ``evalstack run`` with a benchmark file), their specs in version 1 (plain dict dumps),
each with some of its "What is N squared?" samples recorded. This test opens a copy with today's
code, lets the worker resume every job against our fake model server, and checks the results from
the model's rule (right for even N, wrong for odd N) and that no recorded sample was asked again.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from tests.fakes.model_server import FakeModelServer, prompt_of
from tests.fakes.squares import answer, expected_accuracy, square_rows

from evalstack.config import Settings
from evalstack.engine.spec import LlamaStackRunSpec, NemoRunSpec, read_spec
from evalstack.services import Services, build_services
from evalstack.store.repository import Store

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store_v1"
ROWS = 8  # make_store.ROWS
MODEL = "fake"  # make_store.MODEL
JOB_TIMEOUT = 60.0


def asked_number(prompt: str) -> int:
    match = re.search(r"What is (\d+) squared\?", prompt)
    assert match is not None, prompt
    return int(match.group(1))


def recorded_number(item: dict[str, Any]) -> int:
    return asked_number(str(item.get("question") or item.get("input_query")))


async def recorded_before(db_url: str, job_ids: list[str]) -> dict[str, list[int]]:
    store = Store(db_url)
    await store.open()
    try:
        return {
            job_id: [recorded_number(s.item) for s in await store.read_samples(job_id)] for job_id in job_ids
        }
    finally:
        await store.close()


async def wait_finished(services: Services, job_ids: list[str]) -> None:
    deadline = asyncio.get_running_loop().time() + JOB_TIMEOUT
    while asyncio.get_running_loop().time() < deadline:
        jobs = [await services.store.get_job(job_id) for job_id in job_ids]
        if all(job is not None and job.status in ("completed", "failed") for job in jobs):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"jobs did not finish in {JOB_TIMEOUT}s")


async def test_a_store_written_before_the_engine_owned_its_types_resumes_and_finishes(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    shutil.copyfile(FIXTURE / "store.db", db)
    jobs: dict[str, str] = json.loads((FIXTURE / "jobs.json").read_text())
    db_url = f"sqlite:///{db}"
    before = await recorded_before(db_url, list(jobs.values()))
    assert all(numbers for numbers in before.values()), "the fixture holds samples of every job"
    assert all(len(numbers) < ROWS for numbers in before.values()), "and no job is finished"

    rows = square_rows(ROWS)
    with FakeModelServer(answer=answer) as model:
        settings = Settings(
            db_url=db_url,
            data_dir=tmp_path / "data",
            embedded_model=False,
            models=[{"model_id": MODEL, "base_url": model.base_url}],
        )
        services = build_services(settings)
        await services.start()
        try:
            await wait_finished(services, list(jobs.values()))
            records = {front: await services.store.get_job(job_id) for front, job_id in jobs.items()}
            for front, record in records.items():
                assert record is not None and record.status == "completed", (front, record and record.error)
            samples = {front: await services.store.read_samples(job_id) for front, job_id in jobs.items()}
            local = services.providers["local"]
            llama_stack = await local.job_result("squares", jobs["llama_stack"])
            evalstack_run = await local.job_result("squares-run", jobs["evalstack_run"])
        finally:
            await services.stop()
        asked = Counter(asked_number(prompt_of(body)) for body in model.requests)

    # Every job holds each row once, and only the rows missing from the store were asked for.
    for front, job_samples in samples.items():
        assert sorted(recorded_number(s.item) for s in job_samples) == list(range(ROWS)), front
    missing = Counter(n for numbers in before.values() for n in range(ROWS) if n not in numbers)
    assert asked == missing

    # The old specs read as today's types.
    assert isinstance(read_spec(records["llama_stack"]), LlamaStackRunSpec)  # type: ignore[arg-type]
    assert isinstance(read_spec(records["nemo_custom"]), NemoRunSpec)  # type: ignore[arg-type]

    accuracy = expected_accuracy(rows)
    assert accuracy == 0.5
    for result in (llama_stack, evalstack_run):
        equality = result.scores["basic::equality"]
        assert [row["score"] for row in equality.score_rows] == [
            1.0 if n % 2 == 0 else 0.0 for n in range(ROWS)
        ]
        assert equality.aggregated_results["accuracy"]["accuracy"] == accuracy
    custom = records["nemo_custom"].result  # type: ignore[union-attr]
    assert custom is not None
    assert custom["tasks"]["qa"]["metrics"]["accuracy"]["scores"]["string-check"]["value"] == accuracy
    academic = records["nemo_academic"].result  # type: ignore[union-attr]
    assert academic is not None
    scores = academic["tasks"]["gsm8k"]["metrics"]
    # The model's reply is the bare number (even N) or "no idea": the last number is right for even N,
    # and no reply has gsm8k's "#### <number>" that strict matching needs.
    assert (
        scores["exact_match__flexible-extract"]["scores"]["exact_match__flexible-extract"]["value"]
        == accuracy
    )
    assert scores["exact_match__strict-match"]["scores"]["exact_match__strict-match"]["value"] == 0.0
