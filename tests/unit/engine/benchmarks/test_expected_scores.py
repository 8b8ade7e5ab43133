"""Exact scores of each academic benchmark on ../shared/data, computed here from the fake server's answers.

On chat endpoints the fake model answers the letter of the option whose text has the largest SHA-256
(a choice that is right for some questions and wrong for others, whatever order the options are
shown in), so the expected accuracy follows from the data alone. On completions endpoints the
choices are scored by log-likelihood, and the fake server's log-probabilities are known per token.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evalstack.engine.benchmarks.hellaswag import hellaswag_clean
from tests.fakes.model_server import FakeModelServer, default_logprob, fake_tokens
from tests.unit.engine.benchmarks.helpers import need_data, read_jsonl, run_config, score

COUNT = 12
OPTION = re.compile(r"(?m)^([A-Z])\. (.*)$")


@pytest.fixture(scope="module")
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as fake:
        yield fake


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def favourite_letter(prompt: str) -> str:
    """The fake model's pick: the letter of the shown option whose text has the largest digest."""
    options = OPTION.findall(prompt)
    return max(options, key=lambda option: digest(option[1]))[0]


def picks_gold(choices: list[str], gold: int) -> bool:
    texts = [c.strip() for c in choices]
    return max(texts, key=digest) == texts[gold]


def loglikelihood(continuation: str) -> float:
    return sum(default_logprob(token) for token in fake_tokens(continuation))


def truthfulqa_rows(data: Path) -> list[dict[str, Any]]:
    """The TruthfulQA CSV as MC1 choices (the best answer first) and MC2 true/false answers."""

    def split(text: str) -> list[str]:
        return [part.strip() for part in text.split(";") if part.strip()]

    with (data / "truthfulqa/TruthfulQA.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))[:COUNT]
    out = []
    for row in rows:
        best = row["Best Answer"].strip()
        correct = split(row["Correct Answers"])
        incorrect = split(row["Incorrect Answers"])
        out.append(
            {
                "choices": [best, *incorrect],
                "true": correct if best in correct else [best, *correct],
                "false": incorrect,
            }
        )
    return out


async def run_chat(
    bench: str, server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    server.reset_stats()
    _, result = await run_config(
        {"type": bench, "params": {"limit_samples": COUNT}}, server.base_url, tmp_path, monkeypatch
    )
    assert len(server.requests) == COUNT
    return result


async def run_completions(
    bench: str, server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    server.set_answer(" next")  # one generated token after the echoed prompt
    _, result = await run_config(
        {"type": bench, "params": {"limit_samples": COUNT, "extra": {"endpoint_type": "completions"}}},
        server.base_url,
        tmp_path,
        monkeypatch,
    )
    return result


def assert_flexible_only(result: dict[str, Any], bench: str, expected: float) -> None:
    assert score(result, bench, "exact_match__flexible-extract")["value"] == pytest.approx(expected)
    assert score(result, bench, "exact_match__strict-match")["value"] == 0.0


async def test_arc_challenge_chat(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = read_jsonl(need_data("arc/arc_challenge_test.jsonl") / "arc/arc_challenge_test.jsonl")[:COUNT]
    server.set_answer(lambda prompt: f"Hmm.\nThe answer is ({favourite_letter(prompt)}).")
    result = await run_chat("arc_challenge", server, tmp_path, monkeypatch)
    right = [picks_gold(r["choices"], "ABCDE".index(r["answer"])) for r in rows]
    assert 0 < sum(right) < COUNT
    assert_flexible_only(result, "arc_challenge", sum(right) / COUNT)


async def test_hellaswag_chat(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = read_jsonl(need_data("hellaswag/val.jsonl") / "hellaswag/val.jsonl")[:COUNT]
    server.set_answer(lambda prompt: f"The answer is ({favourite_letter(prompt)}).")
    result = await run_chat("hellaswag", server, tmp_path, monkeypatch)
    right = [picks_gold([hellaswag_clean(e) for e in r["endings"]], int(r["label"])) for r in rows]
    assert 0 < sum(right) < COUNT
    assert_flexible_only(result, "hellaswag", sum(right) / COUNT)


async def test_truthfulqa_chat_with_shuffled_options(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = truthfulqa_rows(need_data("truthfulqa/TruthfulQA.csv"))
    server.set_answer(lambda prompt: f"The answer is ({favourite_letter(prompt)}).")
    result = await run_chat("truthfulqa", server, tmp_path, monkeypatch)
    right = [picks_gold(r["choices"], 0) for r in rows]
    assert 0 < sum(right) < COUNT
    assert_flexible_only(result, "truthfulqa", sum(right) / COUNT)
    # The options are shuffled per question: the best answer is not always shown first.
    firsts = {OPTION.findall(body["messages"][-1]["content"])[0][1] for body in server.requests}
    assert firsts != {r["choices"][0] for r in rows}


async def test_boolq_chat(server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = read_jsonl(need_data("boolq/dev.jsonl") / "boolq/dev.jsonl")[:COUNT]

    def says_yes(question: str) -> bool:
        return int(digest(question), 16) % 2 == 0

    def answer(prompt: str) -> str:
        question = re.search(r"(?m)^Question: (.*)$", prompt)
        assert question is not None
        return "Yes, it is." if says_yes(question.group(1)) else "No."

    server.set_answer(answer)
    result = await run_chat("boolq", server, tmp_path, monkeypatch)
    right = [says_yes(r["question"].rstrip("?") + "?") == (r["answer"] == "True") for r in rows]
    assert 0 < sum(right) < COUNT
    for name in ("exact_match__strict-match", "exact_match__flexible-extract"):
        assert score(result, "boolq", name)["value"] == pytest.approx(sum(right) / COUNT)


async def test_truthfulqa_mc1_and_mc2_by_loglikelihood(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = truthfulqa_rows(need_data("truthfulqa/TruthfulQA.csv"))
    result = await run_completions("truthfulqa", server, tmp_path, monkeypatch)
    mc1 = mc2 = 0.0
    for row in rows:
        lls = [loglikelihood(" " + c) for c in row["choices"]]
        mc1 += lls.index(max(lls)) == 0
        true_p = [math.exp(loglikelihood(" " + c)) for c in row["true"]]
        false_p = [math.exp(loglikelihood(" " + c)) for c in row["false"]]
        mc2 += sum(true_p) / (sum(true_p) + sum(false_p))
    assert score(result, "truthfulqa", "mc1")["value"] == pytest.approx(mc1 / COUNT)
    assert score(result, "truthfulqa", "mc2")["value"] == pytest.approx(mc2 / COUNT)
    assert 0 < mc2 / COUNT < 1


async def test_hellaswag_acc_and_acc_norm_by_loglikelihood(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = read_jsonl(need_data("hellaswag/val.jsonl") / "hellaswag/val.jsonl")[:COUNT]
    result = await run_completions("hellaswag", server, tmp_path, monkeypatch)
    acc = acc_norm = 0
    for row in rows:
        continuations = [" " + hellaswag_clean(e) for e in row["endings"]]
        lls = [loglikelihood(c) for c in continuations]
        norm = [ll / len(c.encode()) for ll, c in zip(lls, continuations, strict=True)]
        acc += lls.index(max(lls)) == int(row["label"])
        acc_norm += norm.index(max(norm)) == int(row["label"])
    assert score(result, "hellaswag", "acc")["value"] == pytest.approx(acc / COUNT)
    assert score(result, "hellaswag", "acc_norm")["value"] == pytest.approx(acc_norm / COUNT)


async def test_boolq_by_loglikelihood(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = read_jsonl(need_data("boolq/dev.jsonl") / "boolq/dev.jsonl")[:COUNT]
    result = await run_completions("boolq", server, tmp_path, monkeypatch)
    says_yes = loglikelihood(" yes") > loglikelihood(" no")
    expected = sum((r["answer"] == "True") == says_yes for r in rows) / COUNT
    assert score(result, "boolq", "acc")["value"] == pytest.approx(expected)


async def test_xsum_rouge(server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rouge_score import rouge_scorer

    rows = read_jsonl(need_data("xsum/test.jsonl") / "xsum/test.jsonl")[:COUNT]

    # The fake model "summarises" with the article's first 20 words.
    def lead(document: str) -> str:
        return " ".join(document.split()[:20])

    server.set_answer(lambda prompt: lead(prompt.partition("Article: ")[2].partition("\n\nSummarize")[0]))
    result = await run_chat("xsum", server, tmp_path, monkeypatch)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r["summary"], lead(r["document"])) for r in rows]
    for key in ("rouge1", "rouge2", "rougeL"):
        expected = sum(s[key].fmeasure for s in scores) / COUNT
        assert score(result, "xsum", key)["value"] == pytest.approx(expected)
        assert 0 < expected < 1
