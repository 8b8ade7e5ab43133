"""The exact zero-shot prompts multiple-choice benchmarks send, in lm-evaluation-harness's format.

Our own small MMLU and BoolQ files (``dataset.files_url``), so the expected text is written out here
from the rows; what the fake server received is compared whole, request settings included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evalstack.engine.benchmarks.multiple_choice import answer_index
from evalstack.errors import InvalidInputError
from evalstack.store.records import SampleRecord
from tests.fakes.model_server import FakeModelServer
from tests.unit.engine.benchmarks.helpers import run_config, score

MMLU_ROWS: list[dict[str, Any]] = [
    {
        "id": "a-0",
        "subject": "anatomy",
        "question": " Which bone? ",
        "choices": [" femur", "ulna "],
        "answer": 1,
    },
    {
        "id": "a-1",
        "subject": "anatomy",
        "question": "Which organ?",
        "choices": ["heart", "lung", "skin"],
        "answer": "C",
    },
]
BOOLQ_ROWS: list[dict[str, Any]] = [
    {"idx": 7, "question": "is the sky blue", "passage": "The sky is blue.", "answer": True},
    {"idx": 8, "question": "is grass red?", "passage": "Grass is green.", "answer": "False"},
]
DESCRIPTION = "The following are multiple choice questions (with answers) about anatomy.\n\n"
MMLU_BODIES = ["Which bone?\nA. femur\nB. ulna", "Which organ?\nA. heart\nB. lung\nC. skin"]
MMLU_INSTRUCTIONS = [
    "Answer with the letter of the correct option (A or B).",
    "Answer with the letter of the correct option (A, B or C).",
]
BOOLQ_BODIES = ["The sky is blue.\nQuestion: is the sky blue?", "Grass is green.\nQuestion: is grass red?"]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as fake:
        yield fake


def write(tmp_path: Path, rows: list[dict[str, Any]]) -> str:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


async def run(
    bench: str,
    rows: list[dict[str, Any]],
    extra: dict[str, Any],
    server: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[dict[str, Any]], list[SampleRecord], dict[str, Any]]:
    """The request bodies the fake server received, in row order, the recorded samples of the (single)
    task in row order, and the results."""
    server.reset_stats()
    task = {"type": bench, "dataset": {"files_url": write(tmp_path, rows)}, "params": {"extra": extra}}
    samples, result = await run_config(
        {"type": bench, "tasks": {bench: task}}, server.base_url, tmp_path, monkeypatch
    )
    second = ("organ", "grass")  # words only the second row has
    bodies = sorted(server.requests, key=lambda body: any(word in json.dumps(body) for word in second))
    return bodies, [s for records in samples.values() for s in records], result


async def test_mmlu_on_chat(server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.set_answer(lambda prompt: "B" if "bone" in prompt else "The answer is (C).")
    bodies, _, result = await run("mmlu", MMLU_ROWS, {}, server, tmp_path, monkeypatch)
    assert [body["messages"] for body in bodies] == [
        [{"role": "user", "content": f"{DESCRIPTION}{body}\n\n{instruction}"}]
        for body, instruction in zip(MMLU_BODIES, MMLU_INSTRUCTIONS, strict=True)
    ]
    assert all((b["max_tokens"], b["temperature"], "stop" in b) == (256, 0.0, False) for b in bodies)
    assert (
        score(result, "mmlu_anatomy", "exact_match__strict-match")["value"] == 0.5
    )  # "B" is the letter alone
    assert score(result, "mmlu_anatomy", "exact_match__flexible-extract")["value"] == 1.0


async def test_mmlu_generating_on_completions(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.set_answer(" A")
    extra = {"endpoint_type": "completions", "mc_method": "generate"}
    bodies, _, result = await run("mmlu", MMLU_ROWS, extra, server, tmp_path, monkeypatch)
    assert [body["prompt"] for body in bodies] == [f"{DESCRIPTION}{body}\nAnswer:" for body in MMLU_BODIES]
    assert all((b["max_tokens"], b["temperature"], b["stop"]) == (8, 0.0, ["\n"]) for b in bodies)
    assert score(result, "mmlu_anatomy", "exact_match__strict-match")["value"] == 0.0  # gold: B, then C


async def test_boolq_on_chat_and_completions(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.set_answer("yes")
    bodies, _, result = await run("boolq", BOOLQ_ROWS, {}, server, tmp_path, monkeypatch)
    assert [body["messages"] for body in bodies] == [
        [{"role": "user", "content": f"{body}\n\nAnswer with yes or no."}] for body in BOOLQ_BODIES
    ]
    assert score(result, "boolq", "exact_match__strict-match")["value"] == 0.5  # gold: yes, then no
    extra = {"endpoint_type": "completions", "mc_method": "generate"}
    bodies, _, _ = await run("boolq", BOOLQ_ROWS, extra, server, tmp_path, monkeypatch)
    assert [body["prompt"] for body in bodies] == [f"{body}\nAnswer:" for body in BOOLQ_BODIES]


async def test_an_answer_regex_replaces_the_flexible_extraction(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MMLU's golds are B and C; the regex finds " ( b ) " and "(C)": the letter inside, upper-cased
    server.set_answer(lambda prompt: "FINAL: ( b ) " if "bone" in prompt else "FINAL:(C)")
    _, _, result = await run(
        "mmlu", MMLU_ROWS, {"answer_regex": r"FINAL:(.*)"}, server, tmp_path, monkeypatch
    )
    assert score(result, "mmlu_anatomy", "exact_match__flexible-extract")["value"] == 1.0
    server.set_answer("no final answer, though (B) looks right")  # the regex, not the usual reading
    _, samples, result = await run(
        "mmlu", MMLU_ROWS, {"answer_regex": r"FINAL:(.*)"}, server, tmp_path, monkeypatch
    )
    assert score(result, "mmlu_anatomy", "exact_match__flexible-extract")["value"] == 0.0
    assert [s.scores["parsed"]["flexible-extract"] for s in samples] == [0.0, 0.0]  # nothing found
    assert result["tasks"]["mmlu_anatomy"]["data"]["unparsed"]["flexible-extract"] == 2
    # With 24 options the letter X is an answer too (only spaces and brackets are taken off).
    many = [MMLU_ROWS[0] | {"choices": [f"bone {i}" for i in range(24)], "answer": "X"}]
    server.set_answer("FINAL: (X)")
    _, _, result = await run("mmlu", many, {"answer_regex": r"FINAL:(.*)"}, server, tmp_path, monkeypatch)
    assert score(result, "mmlu_anatomy", "exact_match__flexible-extract")["value"] == 1.0
    server.set_answer(
        lambda prompt: "FINAL: YES" if "sky" in prompt else "FINAL: (No)"
    )  # yes/no: lower-cased
    _, _, result = await run(
        "boolq", BOOLQ_ROWS, {"answer_regex": r"FINAL:(.*)"}, server, tmp_path, monkeypatch
    )
    assert score(result, "boolq", "exact_match__flexible-extract")["value"] == 1.0


async def test_yes_no_replies_scored_and_counted_unparsed(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        *BOOLQ_ROWS,
        {"idx": 9, "question": "is fire cold", "passage": "Fire is hot.", "answer": False},
    ]
    replies = {"sky": "yes", "grass": "Maybe.", "fire": "no"}  # golds: yes, no, no
    server.set_answer(lambda prompt: next(reply for word, reply in replies.items() if word in prompt.lower()))
    _, samples, result = await run("boolq", rows, {}, server, tmp_path, monkeypatch)
    by_question = {s.item["question"]: s for s in samples}
    assert [by_question[r["question"]].scores for r in rows] == [
        {
            "exact_match": {"exact_match__strict-match": 1.0, "exact_match__flexible-extract": 1.0},
            "parsed": {"strict-match": 1.0, "flexible-extract": 1.0},
        },
        {  # no answer read: wrong, even though the gold is "no"
            "exact_match": {"exact_match__strict-match": 0.0, "exact_match__flexible-extract": 0.0},
            "parsed": {"strict-match": 0.0, "flexible-extract": 0.0},
        },
        {
            "exact_match": {"exact_match__strict-match": 1.0, "exact_match__flexible-extract": 1.0},
            "parsed": {"strict-match": 1.0, "flexible-extract": 1.0},
        },
    ]
    assert [by_question[r["question"]].extra["extracted"] for r in rows] == [  # what the viewer shows
        {"exact_match": {"strict-match": "yes", "flexible-extract": "yes"}},
        {"exact_match": {"strict-match": None, "flexible-extract": None}},
        {"exact_match": {"strict-match": "no", "flexible-extract": "no"}},
    ]
    assert score(result, "boolq", "exact_match__strict-match")["value"] == pytest.approx(2 / 3)
    assert result["tasks"]["boolq"]["data"]["unparsed"] == {"strict-match": 1, "flexible-extract": 1}


async def test_a_reply_naming_an_option_by_its_text_is_read_flexibly(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # golds: B (" ulna") and C ("skin"); the replies name them without a letter
    server.set_answer(lambda prompt: "It is the ulna." if "bone" in prompt else "Surely skin")
    _, samples, result = await run("mmlu", MMLU_ROWS, {}, server, tmp_path, monkeypatch)
    assert [s.scores["parsed"] for s in samples] == [{"strict-match": 0.0, "flexible-extract": 1.0}] * 2
    assert score(result, "mmlu_anatomy", "exact_match__flexible-extract")["value"] == 1.0
    assert score(result, "mmlu_anatomy", "exact_match__strict-match")["value"] == 0.0


async def test_a_row_without_a_question_is_a_clear_error_naming_the_benchmark(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"id": "x", "subject": "anatomy", "choices": ["a", "b"], "answer": 0}]
    with pytest.raises(InvalidInputError) as info:
        await run("mmlu", rows, {}, server, tmp_path, monkeypatch)
    assert (
        "mmlu: row 0 does not have the expected fields (KeyError: 'question'); fields found: id, subject, "
        in str(info.value)
    )


@pytest.mark.parametrize(
    ("value", "count", "index"),
    [
        (1, 2, 1),
        (0, 4, 0),
        ("C", 4, 2),
        ("c", 4, 2),
        (" B ", 2, 1),
        ("2", 4, 1),
        ("1", 4, 0),
        ("Y", 26, 24),
        ("Z", 26, 25),
    ],
)
def test_a_gold_answer_as_an_index_a_letter_or_a_one_based_digit(
    value: object, count: int, index: int
) -> None:
    assert answer_index(value, count) == index


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "answer True is not a choice"),
        (4, "answer 4 is not one of the 4 choices"),
        (-1, "answer -1 is not one of the 4 choices"),
        ("E", "answer 'E' is not one of the 4 choices"),
        ("5", "answer '5' is not one of the 4 choices"),
        ("0", "answer '0' is not one of the 4 choices"),
        ("", "answer '' is not a choice index, letter or 1-based number"),
        ("AB", "answer 'AB' is not a choice index, letter or 1-based number"),
        ("?", "answer '?' is not a choice index, letter or 1-based number"),
        ("_", "answer '_' is not a choice index, letter or 1-based number"),
    ],
)
def test_a_gold_answer_outside_the_choices_is_refused(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        answer_index(value, 4)
    assert str(info.value) == message
