"""A built-in lm-eval task runs offline from the Hugging Face datasets cache; without it, a clear error.

A user who ran lm-eval once online has ``openai/gsm8k`` in their Hugging Face cache. The cache is
built here with the ``datasets`` library's own builder in the layout ``load_dataset`` leaves (the Hub is
out of reach), under a fresh ``HF_HOME``; ``evalstack run lm-eval:gsm8k`` (the built-in task, no
include path) then runs with ``HF_DATASETS_OFFLINE=1`` and ``HF_HUB_OFFLINE=1``. With an empty cache
the run fails with an error that names the dataset and says how to point at local files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.e2e.test_cli_run import Workspace
from tests.fakes.lm_eval_fixtures import build_datasets_cache, gsm8k_answerer
from tests.fakes.model_server import FakeModelServer

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DATA / "gsm8k" / "test.jsonl").exists(), reason=f"benchmark data not found at {DATA}"
    ),
]

OPTIONS = ["-x", "endpoint_type=chat", "-x", "apply_chat_template=true", "-x", "num_fewshot=2"]


def offline(hf_home: Path) -> dict[str, str]:
    return {"HF_HOME": str(hf_home), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def first_questions(path: Path, count: int) -> list[str]:
    lines = [line for line in path.read_text().split("\n") if line.strip()][:count]
    return [json.loads(line)["question"] for line in lines]


def test_a_built_in_task_runs_from_the_datasets_cache_offline(tmp_path: Path) -> None:
    hf_home = tmp_path / "hf"
    build_datasets_cache(
        hf_home,
        "openai/gsm8k",
        "main",
        {"train": DATA / "gsm8k/train_first500.jsonl", "test": DATA / "gsm8k/test.jsonl"},
    )
    ws = Workspace(root=tmp_path, cwd=tmp_path, db_path=tmp_path / "x.db")
    out = tmp_path / "out.json"
    with FakeModelServer(answer=gsm8k_answerer(DATA), model_id="fake", apply_stop=True) as fake:
        run = ws.run(
            "lm-eval:gsm8k",
            "-m",
            f"{fake.base_url}#fake",
            "--limit",
            "4",
            *OPTIONS,
            "-o",
            str(out),
            env_extra=offline(hf_home),
        )
        assert run.returncode == 0, run.stdout + run.stderr
        prompts = [json.dumps(request["messages"]) for request in fake.requests]
    result = json.loads(out.read_text())["result"]
    assert result["tasks"]["gsm8k"]["data"]["samples"] == 4
    # the questions are the cached test split's, the few-shot examples its train split's
    for question in first_questions(DATA / "gsm8k/test.jsonl", 4):
        assert sum(json.dumps(question)[1:-1] in prompt for prompt in prompts) == 1
    shots = first_questions(DATA / "gsm8k/train_first500.jsonl", 500)
    assert all(sum(json.dumps(q)[1:-1] in prompt for q in shots) == 2 for prompt in prompts)


def test_missing_data_names_the_dataset_and_how_to_use_local_files(tmp_path: Path) -> None:
    ws = Workspace(root=tmp_path, cwd=tmp_path, db_path=tmp_path / "x.db")
    run = ws.run(
        "lm-eval:gsm8k",
        "-m",
        "http://127.0.0.1:9/v1#fake",
        "--limit",
        "2",
        *OPTIONS,
        env_extra=offline(tmp_path / "empty"),
    )
    assert run.returncode != 0
    said = " ".join((run.stdout + run.stderr).split())
    assert "the dataset openai/gsm8k (main) could not be loaded" in said
    assert "HF_DATASETS_OFFLINE=1" in said  # where an offline run looks
    assert "include_path" in said and "dataset_path: json" in said and "data_files" in said
