"""The exact few-shot prompts multiple-choice benchmarks send, and TruthfulQA's seeded option order.

The shared data has no few-shot splits, so each test lays out a small data folder of its own (a test
split and, where the benchmark has one, a few-shot split) and compares what the fake server received,
whole. Expected prompts are written out from the rows; expected shot choices and option orders for a
seed are written out too, so a change to the seeding (or a seed that differs between processes) fails.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.model_server import FakeModelServer, prompt_of
from tests.unit.engine.benchmarks.helpers import run_config, score

MMLU_TEST = [
    {"id": "t-0", "subject": "anatomy", "question": "Which bone is longest?", "choices": ["femur", "ulna"]}
    | {"answer": 0},
    {
        "id": "t-1",
        "subject": "anatomy",
        "question": "Which organ pumps?",
        "choices": ["lung", "heart", "skin"],
    }
    | {"answer": "B"},
]
MMLU_DEV = [  # the virology row is another subject's: never a shot for anatomy
    {"id": "v-0", "subject": "virology", "question": "What is a virion?", "choices": ["a", "b"], "answer": 0},
    {"id": "d-0", "subject": "anatomy", "question": "Where is the heart?", "choices": ["chest", "foot"]}
    | {"answer": 0},
    {"id": "d-1", "subject": "anatomy", "question": "How many lungs?", "choices": ["one", "two", "three"]}
    | {"answer": "B"},
    {"id": "d-2", "subject": "anatomy", "question": "What bends a knee?", "choices": ["muscle", "hair"]}
    | {"answer": 0},
    {"id": "d-3", "subject": "anatomy", "question": "Where is the tibia?", "choices": ["arm", "leg"]}
    | {"answer": 1},
]
ABOUT = "The following are multiple choice questions (with answers) about anatomy.\n\n"
SHOT = {  # each dev row as a worked example: the question, its lettered options, "Answer:"
    "d-0": "Where is the heart?\nA. chest\nB. foot\nAnswer:",
    "d-1": "How many lungs?\nA. one\nB. two\nC. three\nAnswer:",
    "d-2": "What bends a knee?\nA. muscle\nB. hair\nAnswer:",
    "d-3": "Where is the tibia?\nA. arm\nB. leg\nAnswer:",
}
GOLD = {"d-0": "A", "d-1": "B", "d-2": "A", "d-3": "B"}
QUESTION = {
    "t-0": "Which bone is longest?\nA. femur\nB. ulna",
    "t-1": "Which organ pumps?\nA. lung\nB. heart\nC. skin",
}
INSTRUCTION = {
    "t-0": "Answer with the letter of the correct option (A or B).",
    "t-1": "Answer with the letter of the correct option (A, B or C).",
}

BOOLQ_TEST = [{"idx": 7, "question": "is the sky blue", "passage": "The sky is blue.", "answer": True}]
BOOLQ_TRAIN = [
    {"idx": 1, "question": "is water wet?", "passage": "Water is wet.", "answer": True},
    {"idx": 2, "question": "is fire cold", "passage": "Fire is hot.", "answer": "False"},
]

# TruthfulQA's CSV: the best answer is listed first among the choices, so options are shuffled.
TRUTHFULQA_ROWS = [
    ("What colour is the sky?", "Blue", "Blue; Azure", "Green; Red"),
    ("How many legs has a cat?", "Four", "Four", "Two; Three; Five"),
    ("What is ice?", "Frozen water", "Frozen water", "Hot steam; Sand; Glass; Salt"),
]
# The options each question shows (best answer marked *), for fewshot_seed 1234 (the default) and 7.
TRUTHFULQA_SHOWN = {
    1234: [
        ["Green", "Red", "*Blue"],
        ["Two", "Three", "*Four", "Five"],
        ["Salt", "Sand", "Hot steam", "*Frozen water", "Glass"],
    ],
    7: [
        ["Red", "*Blue", "Green"],
        ["Five", "Two", "*Four", "Three"],
        ["Hot steam", "Glass", "Sand", "Salt", "*Frozen water"],
    ],
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as fake:
        yield fake


def lay_out(folder: Path, files: dict[str, list[dict[str, Any]]]) -> Path:
    """A data folder holding each file (relative path -> rows, one JSON object per line)."""
    for relative, rows in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return folder


def truthfulqa_folder(folder: Path) -> Path:
    path = folder / "truthfulqa" / "TruthfulQA.csv"
    path.parent.mkdir(parents=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Question", "Best Answer", "Correct Answers", "Incorrect Answers"])
        writer.writerows(TRUTHFULQA_ROWS)
    return folder


async def run(
    bench: str,
    extra: dict[str, Any],
    data: Path,
    server: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The request bodies the fake server received and the result of running ``bench`` on ``data``."""
    server.reset_stats()
    config = {"type": bench, "params": {"extra": extra}}
    _, result = await run_config(config, server.base_url, tmp_path, monkeypatch, data_dir=data)
    return list(server.requests), result


def by_question(bodies: list[dict[str, Any]], questions: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each request body under the key of the question it asks (the one its last message ends with)."""
    out: dict[str, dict[str, Any]] = {}
    for body in bodies:
        text = prompt_of(body)
        key = max(questions, key=lambda k: text.rfind(questions[k].split("\n")[0]))
        assert key not in out, f"two requests ask {key}"
        out[key] = body
    return out


def mmlu_data(tmp_path: Path) -> Path:
    return lay_out(tmp_path / "data", {"mmlu/test.jsonl": MMLU_TEST, "mmlu/dev.jsonl": MMLU_DEV})


async def test_mmlu_few_shot_chat_turns(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.set_answer(lambda prompt: "B" if "bone" in prompt else "C")  # golds: A, then B
    extra = {"num_fewshot": 2, "fewshot_sampler": "first_n", "system_prompt": "Be exact."}
    bodies, result = await run("mmlu", extra, mmlu_data(tmp_path), server, tmp_path, monkeypatch)
    asked = by_question(bodies, QUESTION)
    assert set(asked) == {"t-0", "t-1"}
    for key, body in asked.items():
        assert body["messages"] == [
            {"role": "system", "content": "Be exact."},
            {"role": "user", "content": ABOUT + SHOT["d-0"]},  # the subject's description once, first
            {"role": "assistant", "content": "A"},
            {"role": "user", "content": SHOT["d-1"]},
            {"role": "assistant", "content": "B"},
            {"role": "user", "content": f"{QUESTION[key]}\n\n{INSTRUCTION[key]}"},
        ]
    assert score(result, "mmlu_anatomy", "exact_match__strict-match")["value"] == 0.0
    assert result["tasks"]["mmlu_anatomy"]["data"] == {
        "samples": 2,
        "samples_failed": 0,
        "unparsed": {"strict-match": 0, "flexible-extract": 0},
        "truncated": 0,
        "benchmark": "mmlu",
        "method": "generate",
        "endpoint_type": "chat",
        "num_fewshot": 2,
        "subject": "anatomy",
        "category": "stem",
    }


async def test_mmlu_few_shot_completion_prompt_generating(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.set_answer(" A")
    extra = {
        "endpoint_type": "completions",
        "mc_method": "generate",
        "num_fewshot": 2,
        "fewshot_sampler": "first_n",
    }
    bodies, result = await run("mmlu", extra, mmlu_data(tmp_path), server, tmp_path, monkeypatch)
    shots = f"{SHOT['d-0']} A\n\n{SHOT['d-1']} B\n\n"
    assert {key: body["prompt"] for key, body in by_question(bodies, QUESTION).items()} == {
        key: f"{ABOUT}{shots}{question}\nAnswer:" for key, question in QUESTION.items()
    }
    assert score(result, "mmlu_anatomy", "exact_match__strict-match")["value"] == 0.5  # gold A, then B


@pytest.mark.parametrize("system_prompt", [None, "Be exact."])
async def test_mmlu_few_shot_loglikelihood_contexts(
    system_prompt: str | None, server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = {"endpoint_type": "completions", "num_fewshot": 2, "fewshot_sampler": "first_n"}
    if system_prompt:
        extra["system_prompt"] = system_prompt
    bodies, result = await run("mmlu", extra, mmlu_data(tmp_path), server, tmp_path, monkeypatch)
    context = ("Be exact.\n\n" if system_prompt else "") + f"{ABOUT}{SHOT['d-0']} A\n\n{SHOT['d-1']} B\n\n"
    expected = [f"{context}{QUESTION['t-0']}\nAnswer: {letter}" for letter in "AB"]
    expected += [f"{context}{QUESTION['t-1']}\nAnswer: {letter}" for letter in "ABC"]
    assert sorted(body["prompt"] for body in bodies) == sorted(expected)  # one request per choice
    assert result["tasks"]["mmlu_anatomy"]["data"]["method"] == "loglikelihood"


@pytest.mark.parametrize(
    ("seed", "shots"),
    [
        # What the seeded sample picks from the four anatomy dev rows, per question.
        (1234, {"t-0": ["d-0", "d-1"], "t-1": ["d-0", "d-3"]}),
        (7, {"t-0": ["d-1", "d-3"], "t-1": ["d-2", "d-1"]}),
    ],
)
async def test_random_shots_are_a_seeded_sample_the_same_in_every_run(
    seed: int,
    shots: dict[str, list[str]],
    server: FakeModelServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.set_answer("A")
    extra = {"endpoint_type": "completions", "mc_method": "generate", "num_fewshot": 2}
    if seed != 1234:
        extra["fewshot_seed"] = seed
    bodies, _ = await run("mmlu", extra, mmlu_data(tmp_path), server, tmp_path, monkeypatch)
    assert {key: body["prompt"] for key, body in by_question(bodies, QUESTION).items()} == {
        key: ABOUT + "".join(f"{SHOT[d]} {GOLD[d]}\n\n" for d in shots[key]) + f"{QUESTION[key]}\nAnswer:"
        for key in QUESTION
    }


async def test_boolq_few_shot_prompts(
    server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = lay_out(tmp_path / "data", {"boolq/dev.jsonl": BOOLQ_TEST, "boolq/train.jsonl": BOOLQ_TRAIN})
    server.set_answer("yes")
    extra: dict[str, Any] = {"num_fewshot": 2, "fewshot_sampler": "first_n"}
    bodies, result = await run("boolq", extra, data, server, tmp_path, monkeypatch)
    assert [body["messages"] for body in bodies] == [
        [
            {"role": "user", "content": "Water is wet.\nQuestion: is water wet?\nAnswer:"},
            {"role": "assistant", "content": "yes"},
            {"role": "user", "content": "Fire is hot.\nQuestion: is fire cold?\nAnswer:"},
            {"role": "assistant", "content": "no"},
            {
                "role": "user",
                "content": "The sky is blue.\nQuestion: is the sky blue?\n\nAnswer with yes or no.",
            },
        ]
    ]
    assert score(result, "boolq", "exact_match__strict-match")["value"] == 1.0
    extra |= {"endpoint_type": "completions", "mc_method": "generate"}
    bodies, _ = await run("boolq", extra, data, server, tmp_path, monkeypatch)
    assert [body["prompt"] for body in bodies] == [
        "Water is wet.\nQuestion: is water wet?\nAnswer: yes\n\n"
        "Fire is hot.\nQuestion: is fire cold?\nAnswer: no\n\n"
        "The sky is blue.\nQuestion: is the sky blue?\nAnswer:"
    ]


def shown_options(prompt: str) -> list[str]:
    return [text for _, text in re.findall(r"(?m)^([A-Z])\. (.*)$", prompt)]


def lettered(shown: list[str]) -> str:
    return "\n".join(f"{'ABCDE'[i]}. {text.lstrip('*')}" for i, text in enumerate(shown))


def best_letter(shown: list[str]) -> str:
    return "ABCDE"[[text.startswith("*") for text in shown].index(True)]


@pytest.mark.parametrize("seed", [1234, 7])
async def test_truthfulqa_options_are_shuffled_by_the_seed_and_question(
    seed: int, server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    questions = {str(i): f"Q: {row[0]}" for i, row in enumerate(TRUTHFULQA_ROWS)}
    shown = TRUTHFULQA_SHOWN[seed]
    best = {row[0]: row[1] for row in TRUTHFULQA_ROWS}

    def pick_best(prompt: str) -> str:  # the letter the best answer is shown under
        asked = re.findall(r"(?m)^Q: (.*)$", prompt)[-1]
        return "ABCDE"[shown_options(prompt).index(best[asked])]

    server.set_answer(pick_best)
    extra: dict[str, Any] = {} if seed == 1234 else {"fewshot_seed": seed}
    bodies, result = await run(
        "truthfulqa", extra, truthfulqa_folder(tmp_path / "data"), server, tmp_path, monkeypatch
    )
    asked = by_question(bodies, questions)
    for key, question in questions.items():
        options = shown[int(key)]
        count = len(options)
        letters = ", ".join("ABCDE"[: count - 1]) + f" or {'ABCDE'[count - 1]}"
        assert asked[key]["messages"] == [
            {
                "role": "user",
                "content": f"{question}\n{lettered(options)}\n\n"
                f"Answer with the letter of the correct option ({letters}).",
            }
        ]
    # the score reads the reply against the same shuffled order
    assert score(result, "truthfulqa", "exact_match__strict-match")["value"] == 1.0
    assert score(result, "truthfulqa", "exact_match__flexible-extract")["value"] == 1.0


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
async def test_truthfulqa_few_shot_examples_keep_their_own_shuffled_order(
    endpoint: str, server: FakeModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.set_answer("A")
    extra = {
        "num_fewshot": 1,
        "fewshot_sampler": "first_n",
        "endpoint_type": endpoint,
        "mc_method": "generate",
    }
    bodies, _ = await run(
        "truthfulqa", extra, truthfulqa_folder(tmp_path / "data"), server, tmp_path, monkeypatch
    )
    questions = {str(i): f"Q: {row[0]}" for i, row in enumerate(TRUTHFULQA_ROWS)}
    asked = by_question(bodies, questions)
    shown = TRUTHFULQA_SHOWN[1234]

    def body(i: int) -> str:
        return f"{questions[str(i)]}\n{lettered(shown[i])}"

    # TruthfulQA has no few-shot split: the examples are other test questions, never the item itself.
    # The first question's example is the second; the others' is the first.
    for key, example in (("0", 1), ("1", 0), ("2", 0)):
        if endpoint == "chat":
            assert asked[key]["messages"][:2] == [
                {"role": "user", "content": f"{body(example)}\nAnswer:"},
                {"role": "assistant", "content": best_letter(shown[example])},
            ]
        else:
            assert asked[key]["prompt"] == (
                f"{body(example)}\nAnswer: {best_letter(shown[example])}\n\n{body(int(key))}\nAnswer:"
            )
