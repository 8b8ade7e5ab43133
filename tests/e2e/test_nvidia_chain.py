"""The whole nvidia chain, end to end, over real HTTP:

    llama-stack-client 0.2.12 -> evalstack A (providers: local, nvidia -> B)
                              -> evalstack B (NeMo Evaluator API on its local engine)
                              -> the fake model server

The benchmark is the custom-evaluation example of the original change, unchanged: a completion
task over ``hf://datasets/default/sample-basic-test/testing/testing.jsonl`` scored with BLEU. B
resolves the ``hf://`` URL against the fake Hugging Face Hub (its ``hf_endpoint`` setting).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest
from llama_stack_client import BadRequestError, LlamaStackClient
from tests.fakes.hf_hub import FakeHub
from tests.fakes.model_server import FakeModelServer
from tests.fakes.seed_example import BENCHMARK_ID, SEED_CONFIG
from tests.fakes.serving import BackgroundServer, free_port

from evalstack.config import ProviderEntry, Settings
from evalstack.server import create_app

pytestmark = pytest.mark.slow

ROWS = [
    {"prompt": "What is the capital of France?", "ideal_response": "The capital of France is Paris."},
    {"prompt": "What colour is a clear sky?", "ideal_response": "A clear sky is blue during the day."},
    {"prompt": "How many legs does a spider have?", "ideal_response": "A spider has eight legs."},
    {"prompt": "Which planet is the largest?", "ideal_response": "Jupiter is the largest planet of all."},
]
WRONG_ANSWER = "zzz qqq xxx"  # shares no word with its reference: sentence BLEU 0
ANSWERS = {row["prompt"]: row["ideal_response"] for row in ROWS[:3]}


def answer(prompt: str) -> str:
    """The fake model: right on the first three rows, wrong on the last."""
    return ANSWERS.get(prompt.strip(), WRONG_ANSWER)


T = TypeVar("T")


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 60.0, what: str = "") -> T:
    """Poll ``read`` until ``done`` holds for its value; fail with the last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or 'a condition'}; last value: {value!r}")
        time.sleep(0.1)
        value = read()
    return value


def serve(settings: Settings) -> BackgroundServer:
    """An evalstack app for ``settings``, to be served on its port in a background thread."""
    return BackgroundServer(
        create_app(settings), settings.port, name="evalstack server", start_timeout=60, stop_timeout=30
    )


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@dataclass
class Chain:
    model: FakeModelServer
    a: BackgroundServer
    b: BackgroundServer
    client: LlamaStackClient
    config: dict[str, Any]

    def b_job(self, job_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.b.url}/v1/evaluation/jobs/{job_id}", timeout=10)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def a_status(self, job_id: str) -> str:
        return str(self.client.eval.jobs.status(job_id, benchmark_id=BENCHMARK_ID).status)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    tmp = tmp_path_factory.mktemp("nvidia-chain")
    hub = FakeHub()
    hub.add_file("default/sample-basic-test", "testing/testing.jsonl", _jsonl(ROWS))
    with hub, FakeModelServer(answer=answer) as model:
        b_settings = Settings(
            data_dir=tmp / "b",
            port=free_port(),
            embedded_model=False,
            providers=[ProviderEntry(provider_id="local", provider_type="inline::local")],
            hf_endpoint=hub.url,
        )
        with serve(b_settings) as b:
            a_settings = Settings(
                data_dir=tmp / "a",
                port=free_port(),
                embedded_model=False,
                providers=[
                    ProviderEntry(provider_id="local", provider_type="inline::local"),
                    ProviderEntry(
                        provider_id="nvidia",
                        provider_type="remote::nvidia",
                        config={"evaluator_url": b.url, "max_retries": 2, "retry_backoff": 0.1},
                    ),
                ],
            )
            with serve(a_settings) as a:
                # B evaluates the target model by name: register it there, on the fake model server.
                LlamaStackClient(base_url=b.url).models.register(
                    model_id="candidate",
                    provider_model_id=model.model_id,
                    metadata={"base_url": model.base_url},
                )
                client = LlamaStackClient(base_url=a.url, timeout=30)
                yield Chain(model=model, a=a, b=b, client=client, config=copy.deepcopy(SEED_CONFIG))


def test_registering_without_provider_id_names_the_choice(chain: Chain) -> None:
    with pytest.raises(BadRequestError, match="multiple providers available"):
        chain.client.benchmarks.register(
            benchmark_id="no-provider", dataset_id="", scoring_functions=[], metadata=chain.config
        )


def test_custom_evaluation_runs_on_the_remote_evaluator(chain: Chain) -> None:
    client = chain.client
    client.benchmarks.register(
        benchmark_id=BENCHMARK_ID,
        dataset_id="",
        scoring_functions=[],
        metadata=chain.config,
        provider_id="nvidia",
    )
    config_on_b = httpx.get(f"{chain.b.url}/v1/evaluation/configs/nvidia/{BENCHMARK_ID}", timeout=10).json()
    assert config_on_b["tasks"]["qa"]["metrics"]["bleu"]["type"] == "bleu"
    # Registering it again updates the config on B (409 -> update) instead of failing.
    client.benchmarks.register(
        benchmark_id=BENCHMARK_ID,
        dataset_id="",
        scoring_functions=[],
        metadata=chain.config,
        provider_id="nvidia",
    )
    assert client.benchmarks.retrieve(BENCHMARK_ID).provider_id == "nvidia"

    job = client.eval.run_eval(
        BENCHMARK_ID,
        benchmark_config={
            "eval_candidate": {
                "type": "model",
                "model": "candidate",
                "sampling_params": {"max_tokens": 100, "strategy": {"type": "greedy"}},
            },
            "scoring_params": {},
        },
    )
    assert job.status == "in_progress"
    config_ref = chain.b_job(job.job_id)["config"]  # a reference, or the config expanded
    if isinstance(config_ref, dict):
        config_ref = f"{config_ref.get('namespace')}/{config_ref.get('name')}"
    assert config_ref == f"nvidia/{BENCHMARK_ID}"

    status = wait_for(
        lambda: chain.a_status(job.job_id),
        lambda s: s not in ("scheduled", "in_progress"),
        what=f"job {job.job_id} to finish",
    )
    assert status == "completed", chain.b_job(job.job_id)
    assert chain.b_job(job.job_id)["status"] == "completed"

    result = client.eval.jobs.retrieve(job.job_id, benchmark_id=BENCHMARK_ID)
    scores = result.scores[BENCHMARK_ID]
    b_results = httpx.get(f"{chain.b.url}/v1/evaluation/jobs/{job.job_id}/results", timeout=10).json()
    assert scores.aggregated_results == b_results  # the whole results JSON, exactly as before

    aggregated: dict[str, Any] = dict(scores.aggregated_results)
    bleu = aggregated["tasks"]["qa"]["metrics"]["bleu"]["scores"]
    assert bleu["sentence"]["value"] == pytest.approx(75.0, abs=0.01)  # 100, 100, 100 and 0
    assert 0.0 < bleu["corpus"]["value"] < 100.0

    # Per-sample outputs come from B's download-results archive, in dataset order.
    assert [g["generated_answer"] for g in result.generations] == [answer(r["prompt"]) for r in ROWS]
    score_rows: list[dict[str, Any]] = [dict(row) for row in scores.score_rows]
    sentence = [row["metrics"]["bleu"]["sentence"] for row in score_rows]
    assert sentence == pytest.approx([100.0, 100.0, 100.0, 0.0], abs=0.01)
    assert len(chain.model.requests) >= len(ROWS)


def test_cancel_midway_ends_cancelled_on_both_sides(chain: Chain) -> None:
    client = chain.client
    client.benchmarks.register(
        benchmark_id=BENCHMARK_ID,
        dataset_id="",
        scoring_functions=[],
        metadata=chain.config,
        provider_id="nvidia",
    )
    chain.model.hang = True
    try:
        job = client.eval.run_eval(
            BENCHMARK_ID,
            benchmark_config={
                "eval_candidate": {
                    "type": "model",
                    "model": "candidate",
                    "sampling_params": {"max_tokens": 16, "strategy": {"type": "greedy"}},
                },
                "scoring_params": {},
            },
        )
        wait_for(lambda: chain.model.in_flight, lambda n: n > 0, what="B to call the model")
        assert chain.a_status(job.job_id) == "in_progress"

        client.eval.jobs.cancel(job.job_id, benchmark_id=BENCHMARK_ID)
        seen: list[str] = []

        def status() -> str:
            seen.append(chain.a_status(job.job_id))
            return seen[-1]

        wait_for(status, lambda s: s != "in_progress", timeout=30, what=f"job {job.job_id} to stop")
        assert seen[-1] == "cancelled"
        assert set(seen) <= {"in_progress", "cancelled"}  # cancelling is never reported as failed
        assert chain.b_job(job.job_id)["status"] == "cancelled"
    finally:
        chain.model.hang = False
    with pytest.raises(BadRequestError, match="not completed"):
        client.eval.jobs.retrieve(job.job_id, benchmark_id=BENCHMARK_ID)
