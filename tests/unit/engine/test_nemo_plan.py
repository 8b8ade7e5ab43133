"""Compiling NeMo Evaluator configs and targets into plans, and summarising samples into NeMo results.

The custom-evaluation example of the original change's README runs verbatim, its hf:// dataset
served by the fake Hub and its model by the fake model server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sacrebleu

from evalstack.api.llama_stack.models import RegisterDatasetRequest, RowsDataSource
from evalstack.config import Settings
from evalstack.engine.nemo_plan import compile_nemo_plan, read_output
from evalstack.engine.plan import EvalPlan, SampleOutput
from evalstack.errors import EvalstackError, InvalidInputError, NotFoundError
from evalstack.inference.base import ModelClient
from evalstack.inference.clients import ModelClientPool
from evalstack.registry import Registry
from evalstack.store.records import SampleRecord
from evalstack.store.repository import Store
from tests.fakes.hf_hub import FakeHub
from tests.fakes.model_server import FakeModelServer
from tests.fakes.seed_example import SEED_CONFIG

SEED_MODEL = "meta-llama/Llama3.1-8B-Instruct"
QA_ROWS = [
    {"prompt": "What is the capital of France?", "ideal_response": "What is the capital of France? Paris"},
    {"prompt": "Name a primary colour.", "ideal_response": "Red is a primary colour."},
    {"prompt": "2 + 2 =", "ideal_response": "4"},
]


# The fake servers live for the module (starting and stopping them per test cost more than the tests);
# each test gets the model server with its answer and request log reset.
@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.add_file(
            "default/sample-basic-test",
            "testing/testing.jsonl",
            "".join(json.dumps(r) + "\n" for r in QA_ROWS),
        )
        yield server


@pytest.fixture(scope="module")
def model_server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server


@pytest.fixture
def fake_model(model_server: FakeModelServer) -> FakeModelServer:
    model_server.reset_stats()
    model_server.set_answer("echo")
    return model_server


@pytest.fixture
def settings(tmp_path: Path, hub: FakeHub) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", data_roots=[tmp_path], hf_endpoint=hub.url, embedded_model=False
    )


@pytest.fixture
async def registry(
    tmp_path: Path, settings: Settings, fake_model: FakeModelServer
) -> AsyncIterator[Registry]:
    store = Store(f"sqlite:///{tmp_path / 'evalstack.db'}")
    await store.open()
    reg = Registry(store, settings)
    await reg.register_model(SEED_MODEL, "served-llama", {"base_url": fake_model.base_url})
    yield reg
    await store.close()


@pytest.fixture
async def pool() -> AsyncIterator[ModelClientPool]:
    clients = ModelClientPool()
    yield clients
    await clients.aclose()


async def compile_plan(
    config: dict[str, Any],
    target: dict[str, Any],
    registry: Registry,
    pool: ModelClientPool,
    settings: Settings,
) -> EvalPlan:
    return await compile_nemo_plan(config, target, registry=registry, clients=pool, settings=settings)


async def run_samples(plan: EvalPlan, client: ModelClient | None) -> dict[str, list[SampleRecord]]:
    """A minimal sequential runner: rows -> request -> model -> metrics, as the engine does it."""
    results: dict[str, list[SampleRecord]] = {}
    for task in plan.tasks:
        records = results.setdefault(task.name, [])
        for index, row in enumerate(await task.rows()):
            record = SampleRecord(task=task.name, index=index, item=row)
            try:
                if task.build_request is not None:
                    assert client is not None
                    result = await client.generate(task.build_request(row))
                    output = SampleOutput(result.text, result.raw)
                else:
                    assert task.read_output is not None
                    output = task.read_output(row)
                record.output_text, record.response = output.text, output.response
                for metric in task.metrics:
                    record.scores[metric.name] = await metric.score(row, output)
            except EvalstackError as exc:
                record.error, record.scores = exc.message, {}
            records.append(record)
    return results


# ---- the README example ------------------------------------------------------------------------


async def test_the_readme_custom_example_runs_verbatim(
    registry: Registry, pool: ModelClientPool, settings: Settings, fake_model: FakeModelServer
) -> None:
    plan = await compile_plan(SEED_CONFIG, {"type": "model", "model": SEED_MODEL}, registry, pool, settings)
    assert plan.parallelism == 8
    assert plan.model is not None and plan.model.model == "served-llama"
    assert plan.model.base_url == fake_model.base_url
    [task] = plan.tasks
    request = task.build_request(QA_ROWS[0]) if task.build_request else None
    assert request is not None and request.kind == "completion"
    assert request.prompt == QA_ROWS[0]["prompt"] and request.params == {"max_tokens": 200}

    samples = await run_samples(plan, pool.get(plan.model))
    assert [s.output_text for s in samples["qa"]] == [r["prompt"] for r in QA_ROWS]  # the server echoes
    assert fake_model.requests[0]["max_tokens"] == 200 and fake_model.requests[0]["model"] == "served-llama"

    results = plan.summarize(samples)
    scores = results["tasks"]["qa"]["metrics"]["bleu"]["scores"]
    sentence = [sacrebleu.sentence_bleu(r["prompt"], [r["ideal_response"]]).score for r in QA_ROWS]
    assert scores["sentence"]["value"] == pytest.approx(sum(sentence) / len(sentence))
    assert scores["sentence"]["stats"]["count"] == 3 and scores["sentence"]["stats"]["nan_count"] == 0
    corpus = sacrebleu.corpus_bleu([r["prompt"] for r in QA_ROWS], [[r["ideal_response"] for r in QA_ROWS]])
    assert scores["corpus"] == {"value": pytest.approx(corpus.score)}
    assert results["tasks"]["qa"]["data"] == {"samples": 3, "samples_failed": 0}
    assert results["groups"] == {}
    json.dumps(results, allow_nan=False)  # plain JSON, no NaN


# ---- summarising -----------------------------------------------------------------------------


def record(
    task: str, index: int, scores: dict[str, dict[str, float | None]], error: str | None = None
) -> SampleRecord:
    return SampleRecord(task=task, index=index, item={"a": "x"}, output_text="x", scores=scores, error=error)


async def test_summary_excludes_failed_samples_counts_nans_and_pools_groups(
    registry: Registry, pool: ModelClientPool, settings: Settings
) -> None:
    check = {"type": "string-check", "params": {"check": ["{{a}}", "equals", "{{output_text}}"]}}
    config: dict[str, Any] = {
        "type": "custom",
        "tasks": {
            "t1": {"type": "data", "metrics": {"accuracy": check}},
            "t2": {"type": "data", "metrics": {"accuracy": check, "other": check}},
            "t3": {"type": "data", "metrics": {"accuracy": check}},
        },
        "groups": {
            "g": {"tasks": ["t1", "t2"], "groups": {"inner": {"tasks": ["t3"]}}},
            "only-other": {"tasks": ["t2"], "metrics": {"other": {"type": "string-check"}}},
        },
    }
    plan = await compile_plan(config, {"type": "rows", "rows": [{"a": "x"}]}, registry, pool, settings)
    ok: dict[str, float | None] = {"string-check": 1.0}
    samples = {
        "t1": [record("t1", 0, {"accuracy": ok}), record("t1", 1, {"accuracy": {"string-check": 0.0}})],
        "t2": [
            record("t2", 0, {"accuracy": ok, "other": {"string-check": None}}),
            record("t2", 1, {}, error="model endpoint failed: HTTP 500"),
        ],
        "t3": [record("t3", 0, {"accuracy": ok})],
    }
    results = plan.summarize(samples)
    t1 = results["tasks"]["t1"]["metrics"]["accuracy"]["scores"]["string-check"]
    assert t1["value"] == 0.5 and t1["stats"]["count"] == 2 and t1["stats"]["variance"] == 0.25
    t2 = results["tasks"]["t2"]
    assert t2["data"] == {"samples": 2, "samples_failed": 1}
    assert t2["metrics"]["accuracy"]["scores"]["string-check"]["stats"]["count"] == 1
    other = t2["metrics"]["other"]["scores"]["string-check"]
    assert other["value"] is None and other["stats"]["nan_count"] == 1 and other["stats"]["count"] == 0

    group = results["groups"]["g"]
    pooled = group["metrics"]["accuracy"]["scores"]["string-check"]
    assert pooled["stats"]["count"] == 4 and pooled["value"] == 0.75  # t1 (2) + t2 (1 scored) + inner t3 (1)
    inner = group["groups"]["inner"]["metrics"]["accuracy"]["scores"]["string-check"]
    assert inner["stats"]["count"] == 1
    assert set(results["groups"]["only-other"]["metrics"]) == {"other"}
    json.dumps(results, allow_nan=False)


# ---- configs and targets ---------------------------------------------------------------------


async def test_live_style_data_task_on_inline_rows(
    registry: Registry, pool: ModelClientPool, settings: Settings
) -> None:
    config: dict[str, Any] = {
        "type": "custom",
        "tasks": {
            "qa": {
                "type": "data",
                "metrics": {
                    "accuracy": {
                        "type": "string-check",
                        "params": {"check": ["{{some_output}}", "contains", "{{expected}}"]},
                    }
                },
            }
        },
    }
    rows = [{"some_output": "yes", "expected": "yes"}, {"some_output": "no", "expected": "yes"}]
    plan = await compile_plan(config, {"type": "rows", "rows": rows}, registry, pool, settings)
    assert plan.model is None and plan.tasks[0].build_request is None
    samples = await run_samples(plan, None)
    assert [s.scores["accuracy"]["string-check"] for s in samples["qa"]] == [1.0, 0.0]
    assert (
        plan.summarize(samples)["tasks"]["qa"]["metrics"]["accuracy"]["scores"]["string-check"]["value"]
        == 0.5
    )


async def test_chat_task_merges_params_and_parses_tojson_templates(
    registry: Registry, pool: ModelClientPool, settings: Settings, tmp_path: Path
) -> None:
    row = {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
        ],
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    }
    (tmp_path / "tools.jsonl").write_text(json.dumps(row) + "\n")
    config: dict[str, Any] = {
        "type": "custom",
        "params": {"max_tokens": 100, "temperature": 0.5, "extra": {"top_k": 5, "num_fewshot": 3}},
        "tasks": {
            "tools": {
                "type": "chat-completion",
                "params": {
                    "top_p": 0.9,
                    "stop": ["</s>"],
                    "limit_samples": 1,
                    "template": {
                        "messages": "{{ item.messages | tojson }}",
                        "tools": "{{ item.tools | tojson }}",
                        "tool_choice": "auto",
                        "max_tokens": 300,
                    },
                },
                "dataset": {"files_url": f"file://{tmp_path}/tools.jsonl"},
                "metrics": {
                    "tool-calling-accuracy": {
                        "type": "tool-calling",
                        "params": {"tool_calls_ground_truth": "{{ item.tool_calls | tojson }}"},
                    }
                },
            }
        },
    }
    endpoint = {
        "api_endpoint": {"url": "http://127.0.0.1:9/v1/chat/completions", "model_id": "m", "format": "nim"}
    }
    plan = await compile_plan(config, {"type": "model", "model": endpoint}, registry, pool, settings)
    assert plan.model is not None and plan.model.base_url == "http://127.0.0.1:9/v1/chat/completions"
    assert plan.parallelism == settings.default_parallelism
    [task] = plan.tasks
    assert task.limit == 1
    assert task.build_request is not None
    request = task.build_request((await task.rows())[0])
    assert request.kind == "chat" and request.messages == row["messages"]
    assert request.params == {
        "max_tokens": 300,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["</s>"],
        "top_k": 5,
        "tools": row["tools"],
        "tool_choice": "auto",
    }
    called = {
        "choices": [
            {
                "message": {
                    "tool_calls": [{"function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
                }
            }
        ]
    }
    scores = await task.metrics[0].score(row, SampleOutput("", called))
    assert scores == {"function_name_accuracy": 1.0, "function_name_and_args_accuracy": 1.0}


async def test_cached_outputs_are_scored_without_a_model(
    registry: Registry, pool: ModelClientPool, settings: Settings, tmp_path: Path
) -> None:
    outputs = [
        {"question": "Capital of France?", "answer": "Paris", "output_text": "Paris"},
        {
            "question": "Capital of Italy?",
            "answer": "Rome",
            "sample": {"output_text": "Milan", "response": None},
        },
    ]
    (tmp_path / "outputs.json").write_text(json.dumps(outputs))
    config: dict[str, Any] = {
        "type": "custom",
        "tasks": {
            "qa": {
                "type": "completion",
                "params": {"template": {"prompt": "{{question}}"}},
                "metrics": {"em": {"type": "em", "params": {"ground_truth": "{{answer}}"}}},
            }
        },
    }
    target = {"type": "cached_outputs", "cached_outputs": {"files_url": "outputs.json"}}
    plan = await compile_plan(config, target, registry, pool, settings)
    assert plan.model is None and plan.tasks[0].read_output is not None
    samples = await run_samples(plan, None)
    assert [s.scores["em"]["em_score"] for s in samples["qa"]] == [1.0, 0.0]


def test_outputs_are_read_from_the_usual_fields() -> None:
    chat = {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}
    assert read_output({"some_output": "a"}).text == "a"
    assert read_output({"response": chat}) == SampleOutput("hi", chat)
    assert read_output({"sample": {"output_text": "b", "response": chat}}) == SampleOutput("b", chat)
    assert read_output({"question": "q"}) == SampleOutput(None, None)


async def test_dataset_targets_by_object_and_by_registered_reference(
    registry: Registry, pool: ModelClientPool, settings: Settings
) -> None:
    await registry.register_dataset(
        RegisterDatasetRequest(
            dataset_id="qa-rows",
            purpose="eval/question-answer",
            source=RowsDataSource(rows=[{"output": "4", "answer": "4"}, {"output": "5", "answer": "4"}]),
        )
    )
    config: dict[str, Any] = {
        "type": "custom",
        "params": {"limit_samples": 1},
        "tasks": {
            "t": {
                "type": "data",
                "metrics": {"n": {"type": "number-check", "params": {"ground_truth": "{{answer}}"}}},
            }
        },
    }
    plan = await compile_plan(
        config, {"type": "dataset", "dataset": "default/qa-rows"}, registry, pool, settings
    )
    samples = await run_samples(plan, None)
    assert [s.scores["n"]["number-check"] for s in samples["t"]] == [1.0]

    by_object = {
        "type": "dataset",
        "dataset": {"files_url": "hf://datasets/default/sample-basic-test", "limit": 2},
    }
    config["tasks"]["t"]["metrics"] = {
        "s": {"type": "string-check", "params": {"check": ["{{prompt}}", "!=", ""]}}
    }
    del config["params"]
    plan = await compile_plan(config, by_object, registry, pool, settings)
    assert len((await run_samples(plan, None))["t"]) == 2

    with pytest.raises(NotFoundError, match="not registered"):
        await compile_plan(config, {"type": "dataset", "dataset": "default/nope"}, registry, pool, settings)


async def test_a_template_that_fails_fails_only_its_sample(
    registry: Registry, pool: ModelClientPool, settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "rows.jsonl").write_text('{"prompt": "a"}\n{"question": "b"}\n')
    config: dict[str, Any] = {
        "type": "custom",
        "tasks": {
            "qa": {
                "type": "completion",
                "params": {"template": {"prompt": "{{ item.prompt }}"}},
                "dataset": {"files_url": "rows.jsonl"},
            }
        },
    }
    plan = await compile_plan(config, {"type": "model", "model": SEED_MODEL}, registry, pool, settings)
    build = plan.tasks[0].build_request
    assert build is not None
    assert build({"prompt": "a"}).prompt == "a"
    with pytest.raises(InvalidInputError, match=r"item\.prompt"):
        build({"question": "b"})


@pytest.mark.parametrize(
    ("config", "target", "message"),
    [
        (
            {"type": "bfclv3"},
            {"type": "rows", "rows": []},
            "Config type 'bfclv3' is not supported.*supported: custom.*mmlu",
        ),
        ({"tasks": {}}, {"type": "rows", "rows": []}, "needs a 'type'"),
        (
            {"type": "custom", "tasks": [{"type": "default"}]},
            {"type": "rows", "rows": []},
            "early-access format",
        ),
        ({"type": "custom"}, {"type": "rows", "rows": []}, "at least one task"),
        (
            {"type": "custom", "tasks": {"t": {"type": "beir"}}},
            {"type": "rows", "rows": []},
            "task 't' has type 'beir'.*accepted: completion, chat-completion, data",
        ),
        (
            {"type": "custom", "tasks": {"t": {"type": "data", "metric": {}}}},
            {"type": "rows", "rows": []},
            r"config\.tasks\.t\.metric: unknown field",
        ),
        (
            {"type": "custom", "params": {"paralelism": 2}, "tasks": {"t": {"type": "data"}}},
            {"type": "rows", "rows": []},
            r"config\.params\.paralelism: unknown field",
        ),
        (
            {
                "type": "custom",
                "tasks": {"t": {"type": "completion", "params": {"template": {"prompt": "x"}}}},
            },
            {"type": "rows", "rows": [{}]},
            "needs a model target",
        ),
        (
            {"type": "custom", "tasks": {"t": {"type": "completion", "params": {}}}},
            {"type": "model", "model": SEED_MODEL},
            "has no dataset",
        ),
        (
            {
                "type": "custom",
                "tasks": {
                    "t": {
                        "type": "chat-completion",
                        "params": {"template": {"prompt": "x"}},
                        "dataset": {"files_url": "x.jsonl"},
                    }
                },
            },
            {"type": "model", "model": SEED_MODEL},
            "params.template needs 'messages'",
        ),
        (
            {"type": "custom", "tasks": {"t": {"type": "data"}}, "groups": {"g": {"tasks": ["t", "u"]}}},
            {"type": "rows", "rows": []},
            "names unknown task 'u'",
        ),
        (
            {"type": "custom", "tasks": {"t": {"type": "data"}}},
            {"type": "retriever", "retriever": {}},
            "Target type 'retriever' is not supported",
        ),
        ({"type": "custom", "tasks": {"t": {"type": "data"}}}, {"type": "rows"}, "needs the field 'rows'"),
        (
            {"type": "custom", "tasks": {"t": {"type": "data"}}},
            {"type": "model", "model": "nobody/here"},
            "Model 'nobody/here' not found",
        ),
    ],
)
async def test_bad_configs_and_targets_say_what_is_wrong(
    registry: Registry,
    pool: ModelClientPool,
    settings: Settings,
    config: dict[str, Any],
    target: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(EvalstackError, match=message):
        await compile_plan(config, target, registry, pool, settings)
