"""The on-disk caches of lm-eval's start-up: the task index and each task's built requests.

A hit must give exactly what lm-eval builds itself; anything that changes the answer (a YAML, an
include path, the lm-eval version, the task's settings or data) must miss, and a corrupt file is
rebuilt, never trusted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lm_eval
import pytest
from bench._common import write_gsm8k_override, write_task_override
from lm_eval.tasks import TaskManager
from lm_eval.tasks._index import TaskIndex

from evalstack.engine.lm_eval import cache
from evalstack.engine.lm_eval.tasks import compile_templates_once, task_manager
from tests.fakes.lm_eval_fixtures import BUILTIN_TASKS
from tests.unit.engine.lm_eval.conftest import DATA, RequestsEnv, needs_data


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts lm-eval's own index builds."""
    calls: list[int] = []
    real = TaskIndex.build

    def counted(paths: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(paths, **kwargs)

    monkeypatch.setattr(TaskIndex, "build", staticmethod(counted))
    return calls


def tasks_folder(root: Path, *names: str) -> Path:
    folder = root / "tasks"
    for name in names:
        write_task_override(folder, name, BUILTIN_TASKS / "gsm8k" / "gsm8k.yaml", {"test": "t.jsonl"})
    return folder


def view(index: dict[str, Any]) -> dict[str, Any]:
    return {n: (e.name, e.kind, str(e.yaml_path), sorted(e.tags)) for n, e in index.items()}


def test_a_second_index_comes_from_the_cache_and_equals_lm_evals_own(
    tmp_path: Path, cache_dir: Path, builds: list[int]
) -> None:
    roots = [tasks_folder(tmp_path / "one", "alpha", "beta"), tasks_folder(tmp_path / "two", "beta", "gamma")]
    first = cache.load_index(roots)
    second = cache.load_index(roots)
    assert len(builds) == 2  # once per folder
    assert view(second) == view(first) == view(TaskIndex.build(roots))
    assert str(second["beta"].yaml_path).startswith(str(roots[1]))  # the later folder's task wins
    assert {"alpha", "beta", "gamma"} <= set(second)


def test_an_edited_or_added_yaml_or_another_include_path_is_a_miss(
    tmp_path: Path, cache_dir: Path, builds: list[int]
) -> None:
    folder = tasks_folder(tmp_path, "alpha")
    cache.load_index([folder])
    path = folder / "alpha.yaml"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "task": "alpha_renamed"}))
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    assert "alpha_renamed" in cache.load_index([folder])
    write_task_override(folder, "gamma", BUILTIN_TASKS / "gsm8k" / "gsm8k.yaml", {"test": "t.jsonl"})
    assert "gamma" in cache.load_index([folder])
    other = tasks_folder(tmp_path / "more", "delta")
    assert {"alpha_renamed", "gamma", "delta"} <= set(cache.load_index([folder, other]))
    assert len(builds) == 4


def test_a_corrupt_or_foreign_index_file_is_rebuilt(
    tmp_path: Path, cache_dir: Path, builds: list[int]
) -> None:
    roots = [tasks_folder(tmp_path, "alpha")]
    cache.load_index(roots)
    (stored,) = (cache_dir / "index").iterdir()
    for broken in ('{"format": 1, "key": "x', json.dumps({"format": 1, "key": "another", "payload": []})):
        stored.write_text(broken)
        assert "alpha" in cache.load_index(roots)
    stored.write_text(json.dumps({"format": cache.FORMAT, "key": stored.stem, "payload": [{"name": 3}]}))
    assert "alpha" in cache.load_index(roots)
    unknown_kind = {
        "name": "alpha",
        "entry_name": "alpha",
        "kind": "NOPE",
        "yaml_path": None,
        "tags": [],
        "cfg": None,
    }
    stored.write_text(json.dumps({"format": cache.FORMAT, "key": stored.stem, "payload": [unknown_kind]}))
    assert cache.load_index(roots)["alpha"].kind.name == "TASK"
    assert len(builds) == 5
    assert "alpha" in cache.load_index(roots) and len(builds) == 5  # the last rebuild was written back


def test_another_lm_eval_version_is_a_miss(
    tmp_path: Path, cache_dir: Path, builds: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    roots = [tasks_folder(tmp_path, "alpha")]
    key = cache.index_key(roots)
    cache.load_index(roots)
    monkeypatch.setattr(lm_eval, "__version__", "9.9.9")
    assert cache.index_key(roots) != key
    cache.load_index(roots)
    assert len(builds) == 2


def test_caching_off_always_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builds: list[int]
) -> None:
    monkeypatch.setenv(cache.ENV_CACHE, "off")
    assert cache.cache_dir() is None
    roots = [tasks_folder(tmp_path, "alpha")]
    cache.load_index(roots)
    cache.load_index(roots)
    assert len(builds) == 2


@needs_data
def test_the_task_manager_over_a_cached_index_lists_and_loads_what_lm_evals_does(
    tmp_path: Path, cache_dir: Path
) -> None:
    folder = tmp_path / "tasks"
    write_gsm8k_override(folder, DATA, BUILTIN_TASKS)
    write_gsm8k_override(folder, DATA, BUILTIN_TASKS, task="gsm8k_copy", tag=["copies"])
    (folder / "both.yaml").write_text(json.dumps({"group": "both", "task": ["gsm8k", "gsm8k_copy"]}))
    theirs = TaskManager(include_path=str(folder), include_defaults=False)
    for _ in range(2):  # built, then from the cache
        task_manager.cache_clear()
        ours = task_manager(str(folder), False)
        for listing in ("all_tasks", "all_groups", "all_subtasks", "all_tags"):
            assert getattr(ours, listing) == getattr(theirs, listing), listing
        assert view(ours.task_index) == view(theirs.task_index)
        loaded = ours.load(["both"])
        assert set(loaded["tasks"]) == {"gsm8k", "gsm8k_copy"}
        assert (
            loaded["tasks"]["gsm8k"].dump_config() == theirs.load(["gsm8k"])["tasks"]["gsm8k"].dump_config()
        )
    task_manager.cache_clear()


# --- built requests -------------------------------------------------------------------------------


@needs_data
def test_cached_requests_are_identical_to_built_ones(
    requests_env: RequestsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    for chat in (True, False):
        built = requests_env.load(chat=chat)
        cached = requests_env.load(chat=chat)
        with monkeypatch.context() as off:
            off.setenv(cache.ENV_CACHE, "off")
            fresh = requests_env.load(chat=chat)
        assert cached == built == fresh
        assert [type(r[3][0]) for r in cached] == [type(r[3][0]) for r in fresh]  # a chat prompt stays one
    assert len(requests_env.builds) == 4  # chat and completions built once each, and once uncached each


@needs_data
def test_every_setting_that_changes_the_requests_is_a_miss(requests_env: RequestsEnv) -> None:
    env = requests_env
    base = env.load()
    assert len(env.builds) == 1
    variants: list[dict[str, Any]] = [
        {"num_fewshot": 3},
        {"fewshot_seed": 7},
        {"fewshot_as_multiturn": False},
        {"system_instruction": "Be brief."},
        {"limit": 8},  # more documents than cached: only the key can tell
        {"gen_kwargs": (("max_gen_toks", 12),)},
        {"chat": False},
        {"chat": False, "apply_chat_template": True, "tokenizer": env.templated("<{{m.role}}>{{m.content}}")},
        {"chat": False, "apply_chat_template": True, "tokenizer": env.templated("{{m.role}}: {{m.content}}")},
    ]
    seen = [base]
    for number, variant in enumerate(variants, start=2):
        got = env.load(**variant)
        assert len(env.builds) == number, variant
        assert env.load(**variant) == got and len(env.builds) == number, variant  # and then a hit
        seen.append(got)
    assert all(a != b for i, a in enumerate(seen) for b in seen[i + 1 :])  # each setting changed them


@needs_data
def test_a_changed_task_yaml_or_data_file_is_a_miss(requests_env: RequestsEnv) -> None:
    env = requests_env
    env.load()
    path = env.folder / "gsm8k.yaml"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "doc_to_text": "Q: {{question}}\nA:"}))
    task_manager.cache_clear()
    changed = env.load()
    assert len(env.builds) == 2
    assert "Q: " in changed[0][3][0].prompt
    test_file = env.data / "gsm8k/test.jsonl"
    lines = test_file.read_text().split("\n")
    row = json.loads(lines[0])
    test_file.write_text("\n".join([json.dumps({**row, "question": "How many?"}), *lines[1:]]))
    os.utime(test_file, ns=(2, 2))
    edited = env.load()
    assert len(env.builds) == 3
    assert "How many?" in edited[0][3][0].prompt


@needs_data
def test_a_corrupt_requests_file_is_rebuilt(requests_env: RequestsEnv, cache_dir: Path) -> None:
    built = requests_env.load()
    (stored,) = (cache_dir / "requests").iterdir()
    payload = json.loads(stored.read_text())
    payload["payload"][0]["metadata"] = ["gsm8k", 999999, 1]  # a document that is not there
    for broken in ("not json", json.dumps(payload)):
        stored.write_text(broken)
        assert requests_env.load() == built
    assert len(requests_env.builds) == 3


def test_compiled_templates_render_exactly_what_lm_eval_renders() -> None:
    from lm_eval import utils

    compile_templates_once()
    compile_templates_once()
    original = utils.apply_template.__wrapped__  # type: ignore[attr-defined]
    assert original is not utils.apply_template
    docs = [
        {"question": "2+2?", "answer": "4", "choices": ["a", "b"], "x": "\u00e9\n"},
        {"question": "", "answer": "", "choices": [], "x": ""},
    ]
    templates = [
        "Question: {{question}}\nAnswer:",
        "{{answer.split('####')[-1].strip()}}",
        "{{choices}}",
        "{{x}}\n",
        "{{ x | regex_replace('\\n', ' ') }}",
    ]
    for template in templates:
        for doc in docs:
            assert utils.apply_template(template, doc) == original(template, doc)
    with pytest.raises(Exception) as caught:
        utils.apply_template("{{missing}}", docs[0])
    assert "missing" in str(caught.value)  # StrictUndefined, as lm-eval's own environment
