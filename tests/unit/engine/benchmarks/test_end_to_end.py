"""Academic benchmarks end to end on ../shared/data against the fake model server."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest

from evalstack.engine.benchmarks.gsm8k import gold_answer
from evalstack.engine.benchmarks.mmlu import MMLU_SUBJECTS
from tests.fakes.model_server import FakeModelServer, default_logprob, fake_tokens
from tests.unit.engine.benchmarks.helpers import read_jsonl, run_config, score

from .helpers import need_data


async def test_mmlu_chat_counts_and_groups_by_subject_and_category(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = need_data("mmlu/test.jsonl")
    rows = read_jsonl(data / "mmlu/test.jsonl")
    per_subject = 3
    first: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        if len(first[row["subject"]]) < per_subject:
            first[row["subject"]].append(row)
    with FakeModelServer(answer="Let me see.\nThe answer is (A).") as server:
        samples, result = await run_config(
            {"type": "mmlu", "params": {"limit_samples": per_subject, "parallelism": 16}},
            server.base_url,
            tmp_path,
            monkeypatch,
        )
    assert set(first) == set(MMLU_SUBJECTS)
    assert sum(len(s) for s in samples.values()) == 57 * per_subject
    for subject, expected in first.items():
        task = f"mmlu_{subject}"
        assert [s.item["id"] for s in samples[task]] == [r["id"] for r in expected]
        want = sum(r["answer"] == "A" for r in expected) / per_subject
        assert score(result, task, "exact_match__flexible-extract")["value"] == pytest.approx(want)
        assert score(result, task, "exact_match__strict-match")["value"] == 0.0
        data_block = result["tasks"][task]["data"]
        assert data_block["unparsed"] == {"strict-match": per_subject, "flexible-extract": 0}
        assert data_block["samples"] == per_subject and data_block["category"] == MMLU_SUBJECTS[subject]
    # Groups: micro pools all questions, macro averages the subjects.
    overall = result["groups"]["mmlu"]["metrics"]["exact_match__flexible-extract"]["scores"]
    all_rows = [r for rs in first.values() for r in rs]
    assert overall["exact_match__flexible-extract"]["value"] == pytest.approx(
        sum(r["answer"] == "A" for r in all_rows) / len(all_rows)
    )
    assert overall["exact_match__flexible-extract"]["stats"]["count"] == 57 * per_subject
    ci = overall["exact_match__flexible-extract"]["ci"]
    assert ci["lower"] <= overall["exact_match__flexible-extract"]["value"] <= ci["upper"]
    categories = collections.Counter(MMLU_SUBJECTS.values())
    for category, count in categories.items():
        group = result["groups"][f"mmlu_{category}"]
        assert group["data"]["tasks"] == count
        subjects = [s for s, c in MMLU_SUBJECTS.items() if c == category]
        means = [sum(r["answer"] == "A" for r in first[s]) / per_subject for s in subjects]
        macro = group["metrics"]["exact_match__flexible-extract"]["scores"][
            "exact_match__flexible-extract_macro"
        ]
        assert macro["value"] == pytest.approx(sum(means) / len(means))
    # The request: chat, the subject line, lettered options, the instruction.
    body = server.requests[0]
    assert body["messages"][-1]["content"].startswith("The following are multiple choice questions")
    assert "Answer with the letter of the correct option (A, B, C or D)." in body["messages"][-1]["content"]


async def test_arc_loglikelihood_on_completions_picks_the_most_likely_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = need_data("arc/arc_easy_test.jsonl")
    rows = read_jsonl(data / "arc/arc_easy_test.jsonl")[:12]
    with FakeModelServer(answer=" next") as server:  # a separate generated token after the echo
        samples, result = await run_config(
            {"type": "arc_easy", "params": {"limit_samples": 12, "extra": {"endpoint_type": "completions"}}},
            server.base_url,
            tmp_path,
            monkeypatch,
        )
    assert len(samples["arc_easy"]) == 12
    correct = correct_norm = 0
    for row in rows:
        lls = [sum(default_logprob(t) for t in fake_tokens(" " + c)) for c in row["choices"]]
        norm = [ll / len((" " + c).encode()) for ll, c in zip(lls, row["choices"], strict=True)]
        gold = "ABCDE".index(row["answer"])
        correct += lls.index(max(lls)) == gold
        correct_norm += norm.index(max(norm)) == gold
    assert score(result, "arc_easy", "acc")["value"] == pytest.approx(correct / 12)
    assert score(result, "arc_easy", "acc_norm")["value"] == pytest.approx(correct_norm / 12)
    assert all(b.get("echo") and b.get("logprobs") for b in server.requests)
    assert sum(len(r["choices"]) for r in rows) == len(server.requests)


async def test_gsm8k_fewshot_prompt_and_extraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = need_data("gsm8k/test.jsonl", "gsm8k/train_first500.jsonl")
    rows = read_jsonl(data / "gsm8k/test.jsonl")[:40]
    train = read_jsonl(data / "gsm8k/train_first500.jsonl")
    with FakeModelServer(answer="<think>hmm, 3?</think>She makes $18 a day.\n#### 18") as server:
        _samples, result = await run_config(
            {"type": "gsm8k", "params": {"limit_samples": 40, "extra": {"endpoint_type": "completions"}}},
            server.base_url,
            tmp_path,
            monkeypatch,
        )
    expected = sum(gold_answer(r["answer"]) == "18" for r in rows) / 40
    assert expected > 0
    assert score(result, "gsm8k", "exact_match__strict-match")["value"] == pytest.approx(expected)
    assert score(result, "gsm8k", "exact_match__flexible-extract")["value"] == pytest.approx(expected)
    prompt = server.requests[0]["prompt"]
    assert prompt.startswith(f"Question: {train[0]['question']}\nAnswer: {train[0]['answer']}\n\n")
    assert prompt.count("Question:") == 6 and prompt.endswith("Answer:")
    assert server.requests[0]["stop"] == ["Question:", "</s>", "<|im_end|>"]
    assert result["tasks"]["gsm8k"]["data"]["truncated"] == 0


@pytest.mark.slow
async def test_gsm8k_reads_every_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = need_data("gsm8k/test.jsonl")
    rows = read_jsonl(data / "gsm8k/test.jsonl")
    with FakeModelServer(answer="#### 3") as server:
        samples, result = await run_config(
            {"type": "gsm8k", "params": {"parallelism": 32, "extra": {"num_fewshot": 0}}},
            server.base_url,
            tmp_path,
            monkeypatch,
        )
    assert len(samples["gsm8k"]) == len(rows) == 1319
    assert score(result, "gsm8k", "exact_match__strict-match")["stats"]["count"] == 1319
    want = sum(gold_answer(r["answer"]) == "3" for r in rows) / len(rows)
    assert score(result, "gsm8k", "exact_match__strict-match")["value"] == pytest.approx(want)


@pytest.mark.parametrize(
    ("bench", "path", "count"),
    [
        ("boolq", "boolq/dev.jsonl", 10),
        ("hellaswag", "hellaswag/val.jsonl", 10),
        ("truthfulqa", "truthfulqa/TruthfulQA.csv", 10),
        ("arc_challenge", "arc/arc_challenge_test.jsonl", 10),
        ("xsum", "xsum/test.jsonl", 5),
        ("wmt22_en_de", "wmt22/en-de.src.en", 8),
    ],
)
async def test_other_benchmarks_run_on_chat(
    bench: str, path: str, count: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_data(path)
    with FakeModelServer(answer="Yes. The answer is (B): a short sentence.") as server:
        samples, result = await run_config(
            {"type": bench, "params": {"limit_samples": count}}, server.base_url, tmp_path, monkeypatch
        )
    assert len(samples[bench]) == count
    assert all(s.error is None for s in samples[bench])
    metrics = result["tasks"][bench]["metrics"]
    assert metrics, result
    for metric in metrics.values():
        for entry in metric["scores"].values():
            assert entry["value"] is not None
    assert len(server.requests) == count


async def test_wmt_echo_scores_the_source_against_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sacrebleu

    data = need_data("wmt22/en-de.src.en", "wmt22/en-de.ref.de")
    refs = (data / "wmt22/en-de.ref.de").read_text(encoding="utf-8").split("\n")[:6]
    with FakeModelServer(answer=lambda prompt: refs[0]) as server:
        _, result = await run_config(
            {"type": "wmt22_en_de", "params": {"limit_samples": 6}}, server.base_url, tmp_path, monkeypatch
        )
    want = sacrebleu.corpus_bleu([refs[0]] * 6, [refs]).score
    assert score(result, "wmt22_en_de", "bleu")["value"] == pytest.approx(want)


async def test_missing_dataset_names_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evalstack.config import Settings
    from evalstack.engine.benchmarks import compile_academic_plan
    from evalstack.errors import NotFoundError
    from evalstack.inference.base import ModelEndpoint

    monkeypatch.setenv("EVALSTACK_DATA_DIR", str(tmp_path / "nowhere"))
    # Offline for this test only: huggingface_hub reads the environment once, at import, so setting
    # HF_HUB_OFFLINE here would leak into every later test if this were its first import.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    settings = Settings(data_dir=tmp_path, data_roots=[tmp_path], hf_endpoint="http://127.0.0.1:9")
    endpoint = ModelEndpoint(kind="openai", model="m", base_url="http://127.0.0.1:9/v1")
    plan = await compile_academic_plan({"type": "boolq"}, endpoint, settings=settings, clients=None)
    with pytest.raises(NotFoundError) as info:
        await plan.tasks[0].rows()
    message = info.value.message
    assert str(tmp_path / "nowhere" / "boolq" / "dev.jsonl") in message
    assert "EVALSTACK_DATA_DIR" in message and "files_url" in message
