"""A benchmark's parameters reach the model as given: what the fake server received, request by request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.model_server import FakeModelServer
from tests.unit.engine.benchmarks.helpers import need_data, read_jsonl, run_config, score


@pytest.fixture(scope="module")
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer(answer="#### 3") as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh(server: FakeModelServer) -> None:
    server.reset_stats()
    server.set_answer("#### 3")


async def test_sampling_stop_system_prompt_and_first_n_shots_on_completions(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = need_data("gsm8k/test.jsonl", "gsm8k/train_first500.jsonl")
    test = read_jsonl(data / "gsm8k/test.jsonl")[:3]
    train = read_jsonl(data / "gsm8k/train_first500.jsonl")
    config = {
        "type": "gsm8k",
        "params": {"temperature": 0.1, "max_tokens": 99, "limit_samples": 3},
        "tasks": {
            "gsm8k": {
                "type": "gsm8k",
                "params": {  # the task's params override the config's
                    "max_tokens": 33,
                    "temperature": 0.7,
                    "top_p": 0.9,
                    "stop": "END",
                    "extra": {
                        "endpoint_type": "completions",
                        "system_prompt": "Be brief.",
                        "num_fewshot": 2,
                        "fewshot_sampler": "first_n",
                        "top_k": 5,
                    },
                },
            }
        },
    }
    await run_config(config, server.base_url, tmp_path, monkeypatch)
    assert len(server.requests) == 3
    shots = "".join(f"Question: {row['question']}\nAnswer: {row['answer']}\n\n" for row in train[:2])
    prompts = sorted(body["prompt"] for body in server.requests)
    assert prompts == sorted(f"Be brief.\n\n{shots}Question: {row['question']}\nAnswer:" for row in test)
    for body in server.requests:
        assert body["max_tokens"] == 33
        assert body["temperature"] == 0.7
        assert body["top_p"] == 0.9
        assert body["stop"] == ["END"]
        assert body["top_k"] == 5


async def test_random_shots_differ_from_first_n_and_are_stable(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = need_data("gsm8k/test.jsonl", "gsm8k/train_first500.jsonl")
    train = read_jsonl(data / "gsm8k/train_first500.jsonl")

    async def prompts(sampler: str) -> list[str]:
        server.reset_stats()
        extra = {"endpoint_type": "completions", "num_fewshot": 2, "fewshot_sampler": sampler}
        config = {"type": "gsm8k", "params": {"limit_samples": 2, "extra": extra}}
        await run_config(config, server.base_url, tmp_path, monkeypatch)
        return sorted(body["prompt"] for body in server.requests)

    first_n, randomly, again = await prompts("first_n"), await prompts("random"), await prompts("random")
    assert all(p.startswith(f"Question: {train[0]['question']}") for p in first_n)
    assert randomly == again and randomly != first_n


async def test_system_prompt_on_chat_comes_first(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_data("arc/arc_challenge_test.jsonl")
    config = {
        "type": "arc_challenge",
        "params": {"limit_samples": 2, "extra": {"system_prompt": "Be brief."}},
    }
    await run_config(config, server.base_url, tmp_path, monkeypatch)
    for body in server.requests:
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert body["messages"][-1]["role"] == "user"
        assert body["max_tokens"] == 256 and body["temperature"] == 0.0 and "top_p" not in body


async def test_n_samples_asks_each_problem_n_times_at_the_pass_at_k_temperature(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_data("humaneval/HumanEval.jsonl.gz")
    server.set_answer("    return None\n")
    config = {
        "type": "humaneval",
        "params": {"limit_samples": 2, "extra": {"n_samples": 3, "endpoint_type": "completions"}},
    }
    samples, result = await run_config(config, server.base_url, tmp_path, monkeypatch)
    assert len(server.requests) == 6
    assert len({body["prompt"] for body in server.requests}) == 2
    assert all(body["temperature"] == 0.8 for body in server.requests)
    assert sorted((s.item["task_id"], s.item["sample"]) for s in samples["humaneval"]) == sorted(
        (task, j) for task in {s.item["task_id"] for s in samples["humaneval"]} for j in range(3)
    )
    assert score(result, "humaneval", "pass@1")["value"] == 0.0


async def test_dataset_files_url_and_limit(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {"id": f"anatomy-{i}", "subject": "anatomy", "question": f"Q{i}?", "choices": ["a", "b", "c", "d"]}
        | {"answer": "ABCD"[i % 4]}
        for i in range(5)
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    server.set_answer("The answer is (B).")
    config = {
        "type": "mmlu",
        "tasks": {"mmlu": {"type": "mmlu", "dataset": {"files_url": str(path), "limit": 3}}},
    }
    samples, result = await run_config(config, server.base_url, tmp_path, monkeypatch)
    assert [s.item["id"] for s in samples["mmlu_anatomy"]] == ["anatomy-0", "anatomy-1", "anatomy-2"]
    assert len(server.requests) == 3
    assert all("\nQ" in body["messages"][-1]["content"] for body in server.requests)
    assert score(result, "mmlu_anatomy", "exact_match__flexible-extract")["value"] == pytest.approx(1 / 3)


IFEVAL_ROWS = [
    # both instructions followed as written
    (
        "P1",
        ["punctuation:no_comma", "keywords:existence"],
        [{}, {"keywords": ["paris"]}],
        "I love Paris in spring",
    ),
    # the closing phrase is followed by a postscript: only the loose check (without the last line) passes
    (
        "P2",
        ["startend:end_checker"],
        [{"end_phrase": "Any other questions?"}],
        "Here you go.\nAny other questions?\nP.S. bye",
    ),
    # commas on every line: no variant passes the comma rule; the title passes both
    (
        "P3",
        ["punctuation:no_comma", "detectable_format:title"],
        [{}, {}],
        "<<My, Title>>\nyes, sure\nok, fine",
    ),
]


@pytest.mark.slow  # imports lm-eval's checkers
async def test_ifeval_strict_and_loose_outcomes_are_known(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("lm_eval.tasks.ifeval.utils", reason="IFEval checkers come from the lm-eval package")
    path = tmp_path / "ifeval.jsonl"
    lines = [
        {"key": i, "prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs}
        for i, (prompt, ids, kwargs, _) in enumerate(IFEVAL_ROWS)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    replies = {prompt: reply for prompt, _, _, reply in IFEVAL_ROWS}
    server.set_answer(lambda prompt: replies[prompt])
    config = {"type": "ifeval", "tasks": {"ifeval": {"type": "ifeval", "dataset": {"files_url": str(path)}}}}
    samples, result = await run_config(config, server.base_url, tmp_path, monkeypatch)
    assert all(s.error is None for s in samples["ifeval"])
    assert score(result, "ifeval", "prompt_level_strict_acc")["value"] == pytest.approx(1 / 3)
    assert score(result, "ifeval", "prompt_level_loose_acc")["value"] == pytest.approx(2 / 3)
    assert score(result, "ifeval", "inst_level_strict_acc")["value"] == pytest.approx(3 / 5)
    assert score(result, "ifeval", "inst_level_loose_acc")["value"] == pytest.approx(4 / 5)
    assert score(result, "ifeval", "inst_level_strict_acc")["stats"]["count"] == 5
