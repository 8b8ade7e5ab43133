"""lm-eval tasks on our engine give, document by document, what lm-eval's own ``simple_evaluate`` gives.

Both run against our deterministic fake model server (generated text derived from the prompt, echo
log-probabilities derived from the token ids) with local data through include-path override YAMLs
and a tokenizer built here: gsm8k on a completions endpoint, gsm8k with the chat template and
few-shot turns on a chat endpoint, arc_easy and hellaswag by log-likelihood, and a three-subject
MMLU group with size-weighted aggregation. Every (task, doc_id, filter) must have the same prompt,
the same filtered response and the same metric values; task and group metrics agree to 1e-9.

lm-eval runs as it is: its own TaskManager (not our cached index) and its own ``apply_template`` (not
our compiled-template one). Ours runs twice, with its caches cold and then warm (the requests read
back from the cache, never built), and both runs must give the same records.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import lm_eval.utils
import pytest
from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks import TaskManager
from tests.fakes.lm_eval_fixtures import (
    MMLU_SUBJECTS,
    build_tokenizer,
    gsm8k_answerer,
    run_ours,
    write_tasks,
    write_wikitext,
)
from tests.fakes.model_server import FakeModelServer

from evalstack.engine.lm_eval import score_name
from evalstack.engine.lm_eval.plan import jsonable, lm_eval_arguments
from evalstack.store.records import SampleRecord

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (DATA / "gsm8k" / "test.jsonl").exists(), reason=f"benchmark data not found at {DATA}"
    ),
]


class Env:
    def __init__(self, root: Path, server: FakeModelServer) -> None:
        corpus = [
            json.loads(line)["question"]
            for line in (DATA / "gsm8k/test.jsonl").read_text().split("\n")[:300]
            if line
        ]
        self.tokenizer = str(build_tokenizer(root / "tokenizer", corpus))
        self.include = str(write_tasks(root / "tasks", DATA))
        answers = [
            json.loads(line)["answer"]
            for line in (DATA / "gsm8k/train_first500.jsonl").read_text().split("\n")[:60]
            if line
        ]
        # wikitext-style pages: one of 40 solutions (far longer than max_length), then short ones
        pages = [" = Solutions = \n\n " + " \n ".join(answers[:40]) + " \n"]
        pages += [f" = Problem {i} = \n\n {answer} \n" for i, answer in enumerate(answers[40:46])]
        self.wikitext = write_wikitext(root / "tasks", pages)
        self.server = server
        self.manager = TaskManager(include_path=self.include, include_defaults=False)

    def lm_eval(
        self, tasks: list[str], *, chat: bool = False, limit: int | None = None, **kwargs: Any
    ) -> Any:
        from lm_eval import simple_evaluate

        model_args = kwargs.pop("model_args", {})
        if chat:
            model, args = "local-chat-completions", {"base_url": self.server.base_url + "/chat/completions"}
            kwargs |= {"apply_chat_template": True, "fewshot_as_multiturn": True}
        else:
            model = "local-completions"
            args = {
                "base_url": self.server.base_url + "/completions",
                "tokenizer": self.tokenizer,
                "tokenizer_backend": "huggingface",
            }
        args["model"] = "fake"
        args |= model_args
        lm_eval_own = getattr(lm_eval.utils.apply_template, "__wrapped__", lm_eval.utils.apply_template)
        with mock.patch.object(lm_eval.utils, "apply_template", lm_eval_own):
            return simple_evaluate(
                model=model,
                model_args=args,
                tasks=tasks,
                limit=limit,
                task_manager=self.manager,
                log_samples=True,
                **kwargs,
            )

    def ours(self, config: dict[str, Any]) -> tuple[dict[str, list[SampleRecord]], dict[str, Any]]:
        """Our records and results, from a cold run (requests built) and a warm one (read back)."""
        cold = self.run_ours(config)
        with mock.patch.object(ConfigurableTask, "build_all_requests", side_effect=AssertionError("a miss")):
            warm = self.run_ours(config)
        for task, records in cold[0].items():
            by_index = {r.index: r.extra["lm_eval"] for r in records}
            assert {r.index: r.extra["lm_eval"] for r in warm[0][task]} == by_index, task
        assert warm[1] == cold[1]
        return cold

    def run_ours(self, config: dict[str, Any]) -> tuple[dict[str, list[SampleRecord]], dict[str, Any]]:
        return run_ours(config, self.server.base_url)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from transformers import AutoTokenizer

    with FakeModelServer(answer=gsm8k_answerer(DATA), model_id="fake", apply_stop=True) as server:
        environment = Env(tmp_path_factory.mktemp("lm_eval"), server)
        tokenizer = AutoTokenizer.from_pretrained(environment.tokenizer)
        server.decode = tokenizer.decode
        yield environment


def params(env: Env, limit: int | None, chat: bool = False, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"include_path": env.include, **extra}
    if chat:
        out |= {"endpoint_type": "chat", "apply_chat_template": True}
    else:
        out |= {"endpoint_type": "completions", "tokenizer": env.tokenizer}
    return {"extra": out, **({"limit_samples": limit} if limit else {})}


def assert_same_samples(theirs: dict[str, Any], ours: dict[str, list[SampleRecord]]) -> int:
    """Every (task, doc_id, filter) of lm-eval's log has our prompt, filtered response and metrics."""
    compared = 0
    for task, logged in theirs["samples"].items():
        by_doc = {record.extra["lm_eval"]["doc_id"]: record for record in ours[task]}
        assert len(by_doc) == len({s["doc_id"] for s in logged}), task
        for sample in logged:
            record = by_doc[sample["doc_id"]]
            assert record.error is None, record.error
            mine = record.extra["lm_eval"]
            assert lm_eval_arguments(record) == jsonable(sample["arguments"]), (task, sample["doc_id"])
            key = sample["filter"]
            assert mine["filtered_resps"][key] == jsonable(sample["filtered_resps"]), (
                task,
                sample["doc_id"],
                key,
            )
            for metric in sample["metrics"]:
                assert mine["metrics"][key][metric] == jsonable(sample[metric]), (
                    task,
                    sample["doc_id"],
                    metric,
                )
            compared += 1
    return compared


def assert_same_aggregates(theirs: dict[str, Any], ours: dict[str, Any], *, section: str = "results") -> int:
    compared = 0
    where = "tasks" if section == "results" else "groups"
    for name, values in theirs.get(section, {}).items():
        if name not in ours[where]:
            continue
        for key, value in values.items():
            if "," not in key or "_stderr," in key or not isinstance(value, int | float):
                continue
            metric, filter_key = key.split(",", 1)
            label = score_name(metric, filter_key)
            entry = ours[where][name]["metrics"][label]["scores"][label]
            assert math.isclose(entry["value"], value, rel_tol=0, abs_tol=1e-9), (name, key)
            stderr = values.get(f"{metric}_stderr,{filter_key}")
            if isinstance(stderr, int | float):
                assert math.isclose(entry["stats"]["stderr"], stderr, rel_tol=0, abs_tol=1e-9), (name, key)
            compared += 1
    return compared


def test_gsm8k_on_completions_matches_lm_eval_per_document(env: Env) -> None:
    theirs = env.lm_eval(["gsm8k"], limit=24)
    records, ours = env.ours({"type": "gsm8k", "params": params(env, 24)})
    assert assert_same_samples(theirs, records) == 48  # 24 documents, two filters
    assert assert_same_aggregates(theirs, ours) == 2
    strict = ours["tasks"]["gsm8k"]["metrics"]["exact_match__strict-match"]["scores"][
        "exact_match__strict-match"
    ]
    flexible = ours["tasks"]["gsm8k"]["metrics"]["exact_match__flexible-extract"]
    assert (
        0 < strict["value"] < 1 and "ci" in strict
    )  # the fake's replies are neither all right nor all wrong
    assert flexible["scores"]["exact_match__flexible-extract"]["value"] != strict["value"]
    prompt = lm_eval_arguments(records["gsm8k"][0])[0][0]
    assert prompt.count("Question:") == 6  # five few-shot examples, then the question


def test_generate_task_with_the_chat_template_matches_lm_eval(env: Env) -> None:
    theirs = env.lm_eval(["gsm8k_chat"], chat=True, limit=12, num_fewshot=2)
    config = {"type": "gsm8k_chat", "params": params(env, 12, chat=True, num_fewshot=2)}
    records, ours = env.ours(config)
    assert assert_same_samples(theirs, records) == 24
    assert assert_same_aggregates(theirs, ours) == 2
    messages = json.loads(lm_eval_arguments(records["gsm8k_chat"][0])[0][0][0])
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]


def test_arc_easy_and_hellaswag_by_loglikelihood_match_lm_eval(env: Env) -> None:
    theirs = env.lm_eval(["arc_easy", "hellaswag"], limit=20)
    config = {
        "type": "lm-eval",
        "tasks": {"arc": {"type": "arc_easy"}, "hellaswag": {"type": "hellaswag"}},
        "params": params(env, 20),
    }
    records, ours = env.ours(config)
    assert assert_same_samples(theirs, records) == 40
    assert assert_same_aggregates(theirs, ours) == 4
    accs = {
        task: ours["tasks"][task]["metrics"]["acc"]["scores"]["acc"]["value"]
        for task in ("arc_easy", "hellaswag")
    }
    assert all(0 < acc < 1 for acc in accs.values()), accs


def test_mmlu_subset_group_is_weighted_by_size_as_lm_eval_does(env: Env) -> None:
    theirs = env.lm_eval(["local_mmlu"])
    records, ours = env.ours({"type": "local_mmlu", "params": params(env, None)})
    assert assert_same_samples(theirs, records) == sum(MMLU_SUBJECTS.values())
    assert assert_same_aggregates(theirs, ours) == len(MMLU_SUBJECTS)
    assert assert_same_aggregates(theirs, ours, section="groups") == 1
    group = ours["groups"]["local_mmlu"]["metrics"]["acc"]["scores"]["acc"]["value"]
    sizes = list(MMLU_SUBJECTS.values())
    tasks = [
        ours["tasks"][f"local_mmlu_{s}"]["metrics"]["acc"]["scores"]["acc"]["value"] for s in MMLU_SUBJECTS
    ]
    assert math.isclose(
        group, sum(a * n for a, n in zip(tasks, sizes, strict=True)) / sum(sizes), abs_tol=1e-12
    )


def test_perplexity_by_rolling_windows_matches_lm_eval(env: Env) -> None:
    from transformers import AutoTokenizer

    max_length = 64
    theirs = env.lm_eval([env.wikitext], model_args={"max_length": max_length})
    config = {"type": env.wikitext, "params": params(env, None, max_length=max_length)}
    records, ours = env.ours(config)
    assert assert_same_samples(theirs, records) == 7
    assert assert_same_aggregates(theirs, ours) == 3
    longest = max(records[env.wikitext], key=lambda r: len(r.item["doc"]["page"]))
    tokens = len(AutoTokenizer.from_pretrained(env.tokenizer)(longest.item["doc"]["page"]).input_ids)
    assert tokens > 10 * max_length  # so this document took more than ten windows
    metrics = ours["tasks"][env.wikitext]["metrics"]
    assert set(metrics) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    assert metrics["word_perplexity"]["scores"]["word_perplexity"]["value"] > 1
