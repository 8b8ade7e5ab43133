"""lm-eval tasks marked ``unsafe_code`` score model-written code in our sandbox, never in this process.

lm-eval's own humaneval YAML (through an include-path override on the local HumanEval file) runs as
an evalstack plan and through lm-eval's ``simple_evaluate(..., confirm_run_unsafe_code=True)``; the
per-document results agree. The ``code_eval`` metric comes from a Hugging Face modules cache built
here (a user offline has the real one there after one online run). Then completions that write
outside their folder, open a socket, loop forever or check which process runs them show what the
sandbox contains: each is scored as a failure, leaves nothing behind, and none ran in this process.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.test_lm_eval_identity import assert_same_aggregates, assert_same_samples
from tests.fakes import hf_code_eval
from tests.fakes.lm_eval_fixtures import build_tokenizer, run_ours, write_humaneval
from tests.fakes.model_server import FakeModelServer

from evalstack.store.records import SampleRecord

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
DOCS = 6

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DATA / "humaneval" / "HumanEval.jsonl.gz").exists(), reason=f"HumanEval data not found at {DATA}"
    ),
]


def problems() -> list[dict[str, str]]:
    with gzip.open(DATA / "humaneval/HumanEval.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()][:DOCS]


class Env:
    def __init__(self, root: Path, server: FakeModelServer) -> None:
        self.root = root
        self.server = server
        self.problems = problems()
        self.tokenizer = str(build_tokenizer(root / "tokenizer", [p["prompt"] for p in self.problems]))
        self.include = str(root / "tasks")
        self.task = write_humaneval(root / "tasks", DATA)
        self.answers: dict[str, str] = {}

    def answer(self, prompt: str) -> str:
        return self.answers.get(prompt, "    return None\n")

    def params(self) -> dict[str, Any]:
        extra = {
            "include_path": self.include,
            "include_defaults": False,  # index only the override folder: seconds faster
            "endpoint_type": "completions",
            "tokenizer": self.tokenizer,
        }
        return {"limit_samples": DOCS, "extra": extra}

    def ours(self) -> tuple[dict[str, list[SampleRecord]], dict[str, Any]]:
        return run_ours({"type": self.task, "params": self.params()}, self.server.base_url)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    import evaluate.config
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("lm_eval_unsafe")
    hf_code_eval.install(root / "modules")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_MODULES_CACHE", str(root / "modules"))
        patch.setenv("HF_EVALUATE_OFFLINE", "1")
        patch.setenv("HF_ALLOW_CODE_EVAL", "1")  # what lm-eval's humaneval asks its users to set
        patch.setattr(evaluate.config, "HF_MODULES_CACHE", root / "modules")
        holder: dict[str, Env] = {}
        with FakeModelServer(
            answer=lambda prompt: holder["env"].answer(prompt), model_id="fake", apply_stop=True
        ) as server:
            holder["env"] = Env(root, server)
            server.decode = AutoTokenizer.from_pretrained(holder["env"].tokenizer).decode
            yield holder["env"]


def test_humaneval_scored_in_the_sandbox_matches_lm_eval(env: Env) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    # even documents get the canonical solution, odd ones a wrong body
    env.answers = {
        p["prompt"]: p["canonical_solution"] if i % 2 == 0 else "    return None\n"
        for i, p in enumerate(env.problems)
    }
    theirs = simple_evaluate(
        model="local-completions",
        model_args={
            "base_url": env.server.base_url + "/completions",
            "tokenizer": env.tokenizer,
            "tokenizer_backend": "huggingface",
            "model": "fake",
        },
        tasks=[env.task],
        limit=DOCS,
        task_manager=TaskManager(include_path=env.include, include_defaults=False),
        log_samples=True,
        confirm_run_unsafe_code=True,
    )
    records, ours = env.ours()
    assert assert_same_samples(theirs, records) == DOCS
    assert assert_same_aggregates(theirs, ours) == 1
    passed = [
        r.extra["lm_eval"]["metrics"]["create_test"]["pass@1"]
        for r in sorted(records[env.task], key=lambda r: r.index)
    ]
    assert passed == [1.0, 0.0] * (DOCS // 2)


def test_hostile_code_is_contained_and_scored_as_a_failure(env: Env, tmp_path: Path) -> None:
    marker = tmp_path / "escaped"
    here = os.getpid()
    hostile = [
        f"    open({str(marker)!r}, 'w').write(str(__import__('os').getpid()))\n",
        f"    __import__('socket').create_connection(('127.0.0.1', {env.server.port}), timeout=2)\n",
        "    while True:\n        pass\n",
        f"    import os\n    assert {here} not in (os.getpid(), os.getppid())\n",
    ]
    env.answers = {
        p["prompt"]: code + p["canonical_solution"] for p, code in zip(env.problems, hostile, strict=False)
    }
    records, _ = env.ours()
    by_index = {r.index: r for r in records[env.task]}
    passed = [by_index[i].extra["lm_eval"]["metrics"]["create_test"]["pass@1"] for i in range(4)]
    assert all(by_index[i].error is None for i in range(4))
    # the escape attempts fail; the last one, which only checks it is elsewhere, passes: it ran in a
    # process that is neither this one nor a child of it
    assert passed == [0.0, 0.0, 0.0, 1.0]
    assert not marker.exists()
