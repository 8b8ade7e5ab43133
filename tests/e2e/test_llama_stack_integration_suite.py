"""End to end: what Llama Stack's own integration tests for datasets, scoring and eval check.

Those tests (llamastack/llama-stack at v0.2.12 and v0.7.1, ``tests/integration/{datasets,scoring,
eval}``) pass against ``evalstack serve``; this module states the behaviour they rely on in our own
words and data, for both client generations: the real ``llama-stack-client`` 0.2.x on ``/v1``, and
plain HTTP on the paths the 0.7.x client uses (``/v1beta`` datasets, ``/v1alpha`` benchmarks and
eval; scoring stays on ``/v1``). The 0.7.x client needs Python 3.12, so it is not installed here.

One documented difference: ``run_eval`` is asynchronous (see the README), so the job is polled
until it completes where the reference server had already finished it.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import pytest
import yaml
from llama_stack_client import BadRequestError, LlamaStackClient
from tests.fakes.hf_hub import FakeHub
from tests.fakes.model_server import FakeModelServer
from tests.fakes.serving import ServeProcess

pytestmark = pytest.mark.slow

JOB_TIMEOUT = 60.0
JUDGE_PROMPT = (
    "Rate the answer. Reply 'Score: <n>' with n between 0 and 9.\n{input_query}\n{generated_answer}"
)


# ---- the data and the models ---------------------------------------------------------------------


def question(i: int) -> str:
    return f"What is {i} plus {i}?"


def text_model(prompt: str) -> str:
    """The candidate: right for odd i, lost for even i."""
    for i in range(1, 10):
        if question(i) in prompt:
            return str(2 * i) if i % 2 else "I am not sure."
    return "I do not understand."


def judge_model(prompt: str) -> str:
    """The judge: 8 for an answer it sees as a number, else 2."""
    last_line = prompt.strip().splitlines()[-1]
    return "Score: 8" if last_line.strip().isdigit() else "Score: 2"


CSV_ROWS = [
    {
        "input_query": question(i),
        "generated_answer": text_model(question(i)),
        "expected_answer": str(2 * i),
        "chat_completion_input": json.dumps([{"role": "user", "content": question(i)}]),
    }
    for i in range(1, 6)
]
EQUALITY = [1.0, 0.0, 1.0, 0.0, 1.0]


def csv_text() -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(CSV_ROWS[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(CSV_ROWS)
    return out.getvalue()


def data_url(text: str, media_type: str = "text/csv") -> str:
    """A file as Llama Stack's tests send it: ``data:<type>;base64,<content>``."""
    return f"data:{media_type};base64,{base64.b64encode(text.encode()).decode()}"


CHAT_ROWS = [
    {"messages": [{"role": "user", "content": "Hello, world!"}], "answer": "Hello, world!"},
    {"messages": [{"role": "user", "content": "What is the capital of France?"}], "answer": "Paris"},
]
HUB_ROWS = [{"problem": question(i), "answer": str(2 * i)} for i in range(12)]


# ---- the server ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models() -> Iterator[tuple[FakeModelServer, FakeModelServer]]:
    with (
        FakeModelServer(answer=text_model, model_id="text-v1") as text,
        FakeModelServer(answer=judge_model, model_id="judge-v1") as judge,
    ):
        yield text, judge


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        content = "".join(json.dumps(row) + "\n" for row in HUB_ROWS)
        server.add_file("acme/qa", "data/train-00000-of-00001.jsonl", content)
        server.add_file("acme/qa", "data/test-00000-of-00001.jsonl", content[: len(content) // 2])
        yield server


@pytest.fixture(scope="module")
def base_url(
    tmp_path_factory: pytest.TempPathFactory, models: tuple[FakeModelServer, FakeModelServer], hub: FakeHub
) -> Iterator[str]:
    text, judge = models
    config = {
        "embedded_model": False,
        "hf_endpoint": hub.url,
        "models": [
            {"model_id": "text-model", "base_url": text.base_url, "provider_model_id": text.model_id},
            {"model_id": "judge-model", "base_url": judge.base_url, "provider_model_id": judge.model_id},
        ],
    }
    tmp = tmp_path_factory.mktemp("lls-suite")
    proc = ServeProcess(tmp, yaml.safe_dump(config), offline=False).start()
    try:
        yield proc.url
    finally:
        proc.stop()


# ---- one interface, two client generations ----------------------------------------------------------


class Generation(Protocol):
    """The dataset, benchmark and eval calls of Llama Stack's tests, as one client generation makes them."""

    def register_dataset(self, source: dict[str, Any], dataset_id: str | None = None) -> dict[str, Any]: ...
    def iterrows(self, dataset_id: str, limit: int) -> list[dict[str, Any]]: ...
    def dataset_ids(self) -> list[str]: ...
    def unregister_dataset(self, dataset_id: str) -> None: ...
    def register_benchmark(
        self, benchmark_id: str, dataset_id: str, scoring_functions: list[str]
    ) -> None: ...
    def benchmark_ids(self) -> list[str]: ...
    def evaluate_rows(
        self, benchmark_id: str, rows: list[dict[str, Any]], fns: list[str]
    ) -> dict[str, Any]: ...
    def run_eval(self, benchmark_id: str) -> str: ...
    def job_status(self, benchmark_id: str, job_id: str) -> str: ...
    def job_result(self, benchmark_id: str, job_id: str) -> dict[str, Any]: ...


def candidate(max_tokens: int | None = None) -> dict[str, Any]:
    """The candidate of the tests: a model with ``temperature: 0.0`` (0.7.1 also sets max_tokens)."""
    params: dict[str, Any] = {"temperature": 0.0}
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    return {"type": "model", "model": "text-model", "sampling_params": params}


class V02:
    """``llama-stack-client`` 0.2.x on ``/v1``."""

    def __init__(self, base_url: str) -> None:
        self.client = LlamaStackClient(base_url=base_url, max_retries=0, timeout=30.0)

    def register_dataset(self, source: dict[str, Any], dataset_id: str | None = None) -> dict[str, Any]:
        extra = {} if dataset_id is None else {"dataset_id": dataset_id}
        dataset = self.client.datasets.register(purpose="eval/messages-answer", source=source, **extra)
        return dataset.to_dict()

    def iterrows(self, dataset_id: str, limit: int) -> list[dict[str, Any]]:
        return list(self.client.datasets.iterrows(dataset_id, limit=limit).data)

    def dataset_ids(self) -> list[str]:
        return [d.identifier for d in self.client.datasets.list()]

    def unregister_dataset(self, dataset_id: str) -> None:
        self.client.datasets.unregister(dataset_id)

    def register_benchmark(self, benchmark_id: str, dataset_id: str, scoring_functions: list[str]) -> None:
        self.client.benchmarks.register(
            benchmark_id=benchmark_id, dataset_id=dataset_id, scoring_functions=scoring_functions
        )

    def benchmark_ids(self) -> list[str]:
        return [b.identifier for b in self.client.benchmarks.list()]

    def evaluate_rows(self, benchmark_id: str, rows: list[dict[str, Any]], fns: list[str]) -> dict[str, Any]:
        config: Any = {"eval_candidate": candidate()}
        response = self.client.eval.evaluate_rows(
            benchmark_id=benchmark_id, input_rows=rows, scoring_functions=fns, benchmark_config=config
        )
        return response.to_dict()

    def run_eval(self, benchmark_id: str) -> str:
        config: Any = {"eval_candidate": candidate()}
        return self.client.eval.run_eval(benchmark_id=benchmark_id, benchmark_config=config).job_id

    def job_status(self, benchmark_id: str, job_id: str) -> str:
        return self.client.eval.jobs.status(job_id=job_id, benchmark_id=benchmark_id).status

    def job_result(self, benchmark_id: str, job_id: str) -> dict[str, Any]:
        return self.client.eval.jobs.retrieve(job_id=job_id, benchmark_id=benchmark_id).to_dict()


class V07:
    """The requests ``llama-stack-client`` 0.7.x sends, made with httpx (ids percent-encoded as it does)."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30.0)

    def _ok(self, response: httpx.Response) -> Any:
        assert response.status_code in (200, 204), response.text
        return response.json() if response.content else None

    def register_dataset(self, source: dict[str, Any], dataset_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"purpose": "eval/messages-answer", "source": source}
        if dataset_id is not None:
            body["dataset_id"] = dataset_id
        return self._ok(self.http.post("/v1beta/datasets", json=body))

    def iterrows(self, dataset_id: str, limit: int) -> list[dict[str, Any]]:
        page = self._ok(
            self.http.get(f"/v1beta/datasetio/iterrows/{quote_id(dataset_id)}", params={"limit": limit})
        )
        return page["data"]

    def dataset_ids(self) -> list[str]:
        return [d["identifier"] for d in self._ok(self.http.get("/v1beta/datasets"))["data"]]

    def unregister_dataset(self, dataset_id: str) -> None:
        self._ok(self.http.delete(f"/v1beta/datasets/{quote_id(dataset_id)}"))

    def register_benchmark(self, benchmark_id: str, dataset_id: str, scoring_functions: list[str]) -> None:
        body = {
            "benchmark_id": benchmark_id,
            "dataset_id": dataset_id,
            "scoring_functions": scoring_functions,
        }
        self._ok(self.http.post("/v1alpha/eval/benchmarks", json=body))

    def benchmark_ids(self) -> list[str]:
        return [b["identifier"] for b in self._ok(self.http.get("/v1alpha/eval/benchmarks"))["data"]]

    def evaluate_rows(self, benchmark_id: str, rows: list[dict[str, Any]], fns: list[str]) -> dict[str, Any]:
        body = {
            "input_rows": rows,
            "scoring_functions": fns,
            "benchmark_config": {"eval_candidate": candidate(max_tokens=512)},
        }
        path = f"/v1alpha/eval/benchmarks/{quote_id(benchmark_id)}/evaluations"
        return self._ok(self.http.post(path, json=body))

    def run_eval(self, benchmark_id: str) -> str:
        body = {"benchmark_config": {"eval_candidate": candidate(max_tokens=512)}}
        job = self._ok(self.http.post(f"/v1alpha/eval/benchmarks/{quote_id(benchmark_id)}/jobs", json=body))
        return str(job["job_id"])

    def job_status(self, benchmark_id: str, job_id: str) -> str:
        path = f"/v1alpha/eval/benchmarks/{quote_id(benchmark_id)}/jobs/{job_id}"
        return str(self._ok(self.http.get(path))["status"])

    def job_result(self, benchmark_id: str, job_id: str) -> dict[str, Any]:
        path = f"/v1alpha/eval/benchmarks/{quote_id(benchmark_id)}/jobs/{job_id}/result"
        return self._ok(self.http.get(path))


def quote_id(identifier: str) -> str:
    """An id in a path as the 0.7.x client puts it: percent-encoded, ``/`` included."""
    return quote(identifier, safe="")


@pytest.fixture(params=["0.2", "0.7"])
def gen(request: pytest.FixtureRequest, base_url: str) -> Generation:
    return V02(base_url) if request.param == "0.2" else V07(base_url)


@pytest.fixture
def client(base_url: str) -> LlamaStackClient:
    return LlamaStackClient(base_url=base_url, max_retries=0, timeout=30.0)


# ---- datasets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "provider_id", "limit"),
    [
        ({"type": "uri", "uri": "huggingface://datasets/acme/qa?split=train"}, "huggingface", 10),
        ({"type": "rows", "rows": CHAT_ROWS}, "localfs", 2),
        ({"type": "uri", "uri": data_url(csv_text())}, "localfs", 5),
    ],
    ids=["huggingface", "rows", "data-url"],
)
def test_register_iterrows_list_and_unregister(
    gen: Generation, source: dict[str, Any], provider_id: str, limit: int
) -> None:
    dataset = gen.register_dataset(source)
    assert dataset["identifier"].startswith("dataset-")
    assert dataset["provider_id"] == provider_id
    rows = gen.iterrows(dataset["identifier"], limit)
    assert len(rows) == limit
    if source["type"] == "rows":
        assert rows == CHAT_ROWS
    elif provider_id == "localfs":
        assert rows == CSV_ROWS
    else:
        assert rows == HUB_ROWS[:limit]
    assert dataset["identifier"] in gen.dataset_ids()
    gen.unregister_dataset(dataset["identifier"])
    assert dataset["identifier"] not in gen.dataset_ids()


@pytest.mark.parametrize(
    "uri",
    [
        "data:text/csv," + quote(csv_text()),  # plain (percent-encoded), not base64
        data_url("".join(json.dumps(row) + "\n" for row in CSV_ROWS), "application/jsonl"),
        # Llama Stack's helper writes "None" when mimetypes does not know the extension (.jsonl)
        data_url("".join(json.dumps(row) + "\n" for row in CSV_ROWS), "None"),
    ],
    ids=["plain-csv", "base64-jsonl", "untyped-jsonl"],
)
def test_data_urls_plain_or_base64_csv_or_json_lines(gen: Generation, uri: str) -> None:
    dataset = gen.register_dataset({"type": "uri", "uri": uri})
    assert gen.iterrows(dataset["identifier"], 10) == CSV_ROWS


def test_bad_and_oversized_data_urls_are_refused_clearly(base_url: str) -> None:
    bad = {"purpose": "eval/messages-answer", "source": {"type": "uri", "uri": "data:text/csv;base64,%%%"}}
    huge_uri = "data:text/csv," + "a" * (16 * 2**20)
    huge = {"purpose": "eval/messages-answer", "source": {"type": "uri", "uri": huge_uri}}
    for prefix in ("/v1", "/v1beta"):
        response = httpx.post(f"{base_url}{prefix}/datasets", json=bad, timeout=30.0)
        assert response.status_code == 400
        assert "not valid base64" in response.json()["error"]["message"]
        response = httpx.post(f"{base_url}{prefix}/datasets", json=huge, timeout=60.0)
        assert response.status_code == 400
        message = response.json()["error"]["message"]
        assert "A data: URL dataset may be at most 16 MiB; this one is 16.0 MiB" in message


def test_registering_a_dataset_again(base_url: str) -> None:
    """0.2.x servers take a second registration (200); 0.7.x ones keep the same one and refuse a change."""
    old, new = [{"n": 1}], [{"n": 2}]

    def register(prefix: str, rows: list[dict[str, Any]]) -> httpx.Response:
        body = {
            "purpose": "eval/question-answer",
            "source": {"type": "rows", "rows": rows},
            "dataset_id": "again",
        }
        return httpx.post(f"{base_url}{prefix}/datasets", json=body, timeout=30.0)

    def rows() -> list[dict[str, Any]]:
        return httpx.get(f"{base_url}/v1beta/datasetio/iterrows/again", timeout=30.0).json()["data"]

    assert register("/v1", old).status_code == 200
    assert register("/v1", new).status_code == 200
    assert rows() == new
    assert register("/v1beta", new).status_code == 200
    refused = register("/v1beta", old)
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "Dataset 'again' already exists with other rows. Unregister it first if you want to replace it."
    )
    assert rows() == new


def test_registering_a_benchmark_again(base_url: str) -> None:
    def register(prefix: str, fns: list[str]) -> httpx.Response:
        body = {"benchmark_id": "again", "dataset_id": "d", "scoring_functions": fns}
        return httpx.post(f"{base_url}{prefix}/eval/benchmarks", json=body, timeout=30.0)

    def functions() -> list[str]:
        return httpx.get(f"{base_url}/v1alpha/eval/benchmarks/again", timeout=30.0).json()[
            "scoring_functions"
        ]

    assert register("/v1", ["basic::equality"]).status_code == 200
    assert register("/v1", ["basic::subset_of"]).status_code == 200
    assert functions() == ["basic::subset_of"]
    assert register("/v1alpha", ["basic::subset_of"]).status_code == 200
    refused = register("/v1alpha", ["basic::equality"])
    assert refused.status_code == 400
    assert (
        "Benchmark 'again' already exists with other scoring_functions" in refused.json()["error"]["message"]
    )
    assert functions() == ["basic::subset_of"]


# ---- scoring ----------------------------------------------------------------------------------------


def judge_params(aggregations: list[str]) -> dict[str, Any]:
    return {
        "type": "llm_as_judge",
        "judge_model": "judge-model",
        "prompt_template": JUDGE_PROMPT,
        "judge_score_regexes": [r"Score: (\d+)"],
        "aggregation_functions": aggregations,
    }


def test_register_list_unregister_a_judge_function_and_duplicates(client: LlamaStackClient) -> None:
    assert len(client.scoring_functions.list()) > 0
    judges = [
        p for p in client.providers.list() if p.api == "scoring" and p.provider_type == "inline::llm-as-judge"
    ]
    assert judges, "Llama Stack's tests skip registration without an inline::llm-as-judge scoring provider"
    fn_id = f"judge-{uuid.uuid4().hex[:8]}"

    def register() -> None:
        client.scoring_functions.register(
            scoring_fn_id=fn_id,
            provider_id=judges[0].provider_id,
            description="LLM as judge scoring function with our prompt",
            return_type={"type": "string"},
            params={"type": "llm_as_judge", "judge_model": "judge-model", "prompt_template": JUDGE_PROMPT},
        )

    register()
    assert fn_id in [fn.identifier for fn in client.scoring_functions.list()]
    # As the reference's llm-as-judge provider: the same id again is a 400, until it is unregistered.
    with pytest.raises(BadRequestError, match="already exists"):
        register()
    deleted = httpx.delete(f"{client.base_url}/v1/scoring-functions/{fn_id}", timeout=30.0)
    assert deleted.status_code in (200, 204)
    assert fn_id not in [fn.identifier for fn in client.scoring_functions.list()]
    register()
    assert fn_id in [fn.identifier for fn in client.scoring_functions.list()]


def test_score_rows_with_a_basic_function(client: LlamaStackClient) -> None:
    response = client.scoring.score(input_rows=CSV_ROWS, scoring_functions={"basic::equality": None})
    assert list(response.results) == ["basic::equality"]
    assert [row["score"] for row in response.results["basic::equality"].score_rows] == EQUALITY


def test_score_rows_with_the_judge_and_its_params(client: LlamaStackClient) -> None:
    response = client.scoring.score(
        input_rows=CSV_ROWS, scoring_functions={"llm-as-judge::base": judge_params(["categorical_count"])}
    )
    result = response.results["llm-as-judge::base"]
    assert [row["score"] for row in result.score_rows] == [8.0 if s else 2.0 for s in EQUALITY]
    assert result.aggregated_results == {"categorical_count": {"categorical_count": {"8.0": 3, "2.0": 2}}}


@pytest.mark.parametrize("provider_id", ["basic", "llm-as-judge"])
def test_each_provider_first_function_takes_aggregation_params(
    client: LlamaStackClient, provider_id: str
) -> None:
    functions = [fn for fn in client.scoring_functions.list() if fn.provider_id == provider_id]
    assert functions, f"no scoring functions of provider {provider_id}"
    fn = functions[0]
    aggregations = ["accuracy", "median", "categorical_count", "average"]
    params: dict[str, Any]
    if provider_id == "llm-as-judge":
        aggregations = ["categorical_count"]
        params = judge_params(aggregations)
    elif "regex_parser" in fn.identifier:
        params = {
            "type": "regex_parser",
            "parsing_regexes": [r"Score: (\d+)"],
            "aggregation_functions": aggregations,
        }
    else:
        params = {"type": "basic", "aggregation_functions": aggregations}
    response = client.scoring.score(input_rows=CSV_ROWS, scoring_functions={fn.identifier: params})
    result = response.results[fn.identifier]
    assert len(result.score_rows) == len(CSV_ROWS)
    assert set(result.aggregated_results) == set(aggregations)


def test_no_braintrust_functions_are_listed(client: LlamaStackClient) -> None:
    # Llama Stack's tests skip the braintrust case when the server lists none: evalstack has none.
    assert not [fn for fn in client.scoring_functions.list() if fn.provider_id == "braintrust"]


# ---- eval -------------------------------------------------------------------------------------------


def test_evaluate_rows_of_a_data_url_dataset(gen: Generation) -> None:
    dataset = gen.register_dataset({"type": "uri", "uri": data_url(csv_text())})
    assert dataset["identifier"] in gen.dataset_ids()
    rows = gen.iterrows(dataset["identifier"], 3)
    assert len(rows) == 3
    benchmark_id = str(uuid.uuid4())
    gen.register_benchmark(benchmark_id, dataset["identifier"], ["basic::equality"])
    assert benchmark_id in gen.benchmark_ids()
    response = gen.evaluate_rows(benchmark_id, rows, ["basic::equality"])
    assert [g["generated_answer"] for g in response["generations"]] == [r["generated_answer"] for r in rows]
    assert [s["score"] for s in response["scores"]["basic::equality"]["score_rows"]] == EQUALITY[:3]


def test_run_eval_of_a_data_url_dataset_completes_asynchronously(gen: Generation) -> None:
    dataset = gen.register_dataset({"type": "uri", "uri": data_url(csv_text())})
    benchmark_id = str(uuid.uuid4())
    gen.register_benchmark(benchmark_id, dataset["identifier"], ["basic::subset_of"])
    job_id = gen.run_eval(benchmark_id)
    # The documented difference: the reference answers job "0", already completed; evalstack's job id
    # is its own and the job runs in the background until it is completed.
    assert job_id.startswith("eval-")
    deadline = time.monotonic() + JOB_TIMEOUT
    status = gen.job_status(benchmark_id, job_id)
    while status in ("scheduled", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.1)
        status = gen.job_status(benchmark_id, job_id)
    assert status == "completed"
    result = gen.job_result(benchmark_id, job_id)
    assert len(result["generations"]) == 5
    assert [s["score"] for s in result["scores"]["basic::subset_of"]["score_rows"]] == EQUALITY
