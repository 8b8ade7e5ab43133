"""Snapshots of configured lm-eval tasks: a run with the same settings restores its tasks instead of
loading them (no task index, no dataset, no ``datasets`` import), and they behave exactly as loaded ones.

Edited YAMLs and data files are misses too; ``test_cache`` checks those (a rebuild is counted there).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from evalstack.engine.lm_eval import tasks as tasks_module
from evalstack.engine.lm_eval.model import LmEvalModel, ModelSettings
from evalstack.engine.lm_eval.plan import summarize_lm_eval
from evalstack.engine.lm_eval.snapshot import SnapshotTask, _data_files
from evalstack.engine.lm_eval.tasks import LoadedTasks, TaskSettings, load_tasks
from evalstack.store.records import SampleRecord
from tests.unit.engine.lm_eval.conftest import RequestsEnv, needs_data

REPO = Path(__file__).resolve().parents[4]
REPLIES = ("The answer is 18.", "#### 3", "no number at all", "#### 1,200 then 7")


@pytest.fixture
def managers(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The include paths a task manager (lm-eval's index and task loading) was asked for."""
    calls: list[str | None] = []
    real = tasks_module.task_manager

    def counted(include_path: str | None, include_defaults: bool = True) -> Any:
        calls.append(include_path)
        return real(include_path, include_defaults)

    monkeypatch.setattr(tasks_module, "task_manager", counted)
    return calls


def requests_of(loaded: LoadedTasks, task: str = "gsm8k") -> list[Any]:
    return [
        (i.request_type, i.doc_id, i.idx, i.arguments, i.metadata, i.doc)
        for by_doc in loaded.instances[task].values()
        for i in by_doc
    ]


def filtered(loaded: LoadedTasks, reply: str) -> list[list[Any]]:
    """Every filter's output for every instance answered with ``reply``."""
    out = []
    for ensemble in loaded.tasks["gsm8k"]._filters:
        instances = [
            dataclasses.replace(i, resps=[reply], filtered_resps={})
            for by_doc in loaded.instances["gsm8k"].values()
            for i in by_doc
        ]
        ensemble.apply(instances)
        out.append([i.filtered_resps for i in instances])
    return out


def records(loaded: LoadedTasks) -> list[SampleRecord]:
    """Per-document records scored by the loaded task (the same reply for each filter)."""
    task = loaded.tasks["gsm8k"]
    out = []
    for index, (doc_id, doc) in enumerate(loaded.docs["gsm8k"].items()):
        reply = REPLIES[index % len(REPLIES)]
        metrics = {key: task.process_results(doc, [reply]) for key in ("strict-match", "flexible-extract")}
        out.append(SampleRecord("gsm8k", index, {"doc_id": doc_id}, extra={"lm_eval": {"metrics": metrics}}))
    return out


@needs_data
def test_a_second_load_is_restored_and_behaves_as_the_loaded_tasks(
    requests_env: RequestsEnv, cache_dir: Path, managers: list[str | None]
) -> None:
    first = requests_env.loaded()
    assert len(list((cache_dir / "snapshots").iterdir())) == 1
    assert len(managers) == 1
    second = requests_env.loaded()
    assert len(managers) == 1 and len(requests_env.builds) == 1  # no index, no task load, no build
    loaded, restored = first.tasks["gsm8k"], second.tasks["gsm8k"]
    assert type(restored) is SnapshotTask and restored.dataset is None
    assert restored.dump_config() == loaded.dump_config()
    assert requests_of(second) == requests_of(first)
    assert second.docs == first.docs
    for doc in first.docs["gsm8k"].values():
        for reply in (*REPLIES, loaded.doc_to_target(doc)):
            assert restored.process_results(doc, [reply]) == loaded.process_results(doc, [reply])
            assert restored.doc_to_target(doc) == loaded.doc_to_target(doc)
    for reply in REPLIES:
        assert filtered(second, reply) == filtered(first, reply)
    ours, theirs = (
        summarize_lm_eval([second], {"gsm8k": records(second)}),
        summarize_lm_eval([first], {"gsm8k": records(first)}),
    )
    assert ours == theirs
    assert theirs["lm_eval"]["n-samples"]["gsm8k"] == {"original": 20, "effective": 6}  # all 20, 6 run


@needs_data
def test_a_restoring_process_never_imports_datasets(requests_env: RequestsEnv, cache_dir: Path) -> None:
    requests_env.loaded(chat=False)  # keeps the snapshot
    script = textwrap.dedent(
        """
        import json, sys
        from evalstack.engine.lm_eval.model import LmEvalModel, ModelSettings
        from evalstack.engine.lm_eval.tasks import TaskSettings, load_tasks

        folder, tokenizer = sys.argv[1:3]
        model = LmEvalModel(ModelSettings(endpoint="completion", model="m", tokenizer=tokenizer))
        settings = TaskSettings(names=("gsm8k",), include_path=folder, include_defaults=False, limit=6,
                                num_fewshot=2, apply_chat_template=False)
        loaded = load_tasks(settings, model)
        print(json.dumps({"docs": len(loaded.docs["gsm8k"]), "kind": type(loaded.tasks["gsm8k"]).__name__,
                          "imported": [m for m in ("datasets", "pandas", "pyarrow", "requests", "sacrebleu")
                                       if m in sys.modules]}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(
        [sys.executable, "-c", script, str(requests_env.folder), requests_env.tokenizer],
        capture_output=True, text=True, env=env, check=True, timeout=120,
    )  # fmt: skip
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "docs": 6,
        "kind": "SnapshotTask",
        "imported": [],
    }


@needs_data
def test_another_setting_a_new_yaml_or_a_broken_snapshot_is_a_miss(
    requests_env: RequestsEnv, cache_dir: Path, managers: list[str | None]
) -> None:
    env = requests_env
    base = requests_of(env.loaded())
    requests_of(env.loaded(num_fewshot=1))
    assert len(managers) == 2  # another setting: loaded, then kept beside the first
    assert len(list((cache_dir / "snapshots").iterdir())) == 2
    (env.folder / "unrelated.yaml").write_text(json.dumps({"task": "unrelated", "dataset_path": "json"}))
    assert requests_of(env.loaded()) == base
    assert len(managers) == 3  # a new YAML in the include path may take a task's name
    for snapshot in (cache_dir / "snapshots").iterdir():
        snapshot.write_bytes(b"not a pickle")
    assert requests_of(env.loaded()) == base
    assert len(managers) == 4
    assert requests_of(env.loaded()) == base and len(managers) == 4  # and kept again


@needs_data
def test_a_task_with_a_function_of_the_include_path_loads_the_same_every_time(
    requests_env: RequestsEnv, cache_dir: Path
) -> None:
    folder = requests_env.folder
    (folder / "utils.py").write_text(
        "def target(doc):\n    return 'gold: ' + doc['answer'].split('####')[-1].strip()\n"
    )
    (folder / "gsm8k_fn.yaml").write_text(
        "include: gsm8k.yaml\ntask: gsm8k_fn\ndoc_to_target: !function utils.target\n"
    )
    model = LmEvalModel(ModelSettings(endpoint="chat", model="m"))
    settings = TaskSettings(names=("gsm8k_fn",), include_path=str(folder), include_defaults=False, limit=4)
    first, second = load_tasks(settings, model), load_tasks(settings, model)  # kept or not: never a failure
    for loaded in (first, second):
        task, docs = loaded.tasks["gsm8k_fn"], loaded.docs["gsm8k_fn"]
        assert all(task.doc_to_target(d).startswith("gold: ") for d in docs.values())
    assert requests_of(second, "gsm8k_fn") == requests_of(first, "gsm8k_fn")


def test_only_tasks_on_local_data_files_are_kept(tmp_path: Path) -> None:
    data = tmp_path / "test.jsonl"
    data.write_text("{}\n")

    def task(path: str, kwargs: Any) -> Any:
        return SimpleNamespace(config=SimpleNamespace(dataset_path=path, dataset_kwargs=kwargs))

    assert _data_files(task("json", {"data_files": {"test": str(data)}})) == [str(data)]
    assert _data_files(task("json", {"data_files": [str(data), str(data)]})) == [str(data), str(data)]
    assert _data_files(task("openai/gsm8k", None)) is None  # from the Hub: looked up every run
    assert _data_files(task("json", {"data_files": str(tmp_path / "*.jsonl")})) is None  # a pattern
    assert _data_files(task("json", {"data_files": "https://example.com/t.jsonl"})) is None
    assert _data_files(task("json", None)) is None


def test_lm_eval_is_imported_with_datasets_sacrebleu_and_requests_deferred_until_used() -> None:
    script = textwrap.dedent(
        """
        import sys
        from evalstack.engine.lm_eval.importing import import_lm_eval
        import_lm_eval()
        import lm_eval.api.task as task_module
        assert "lm_eval.api.task" in sys.modules and "datasets" not in sys.modules
        import lm_eval.api.metrics as metrics
        assert not {"datasets", "requests", "sacrebleu"} & set(sys.modules)
        mode = task_module.datasets.DownloadMode.REUSE_DATASET_IF_EXISTS  # the first use imports it
        import datasets
        assert sys.modules["datasets"] is datasets and type(datasets).__name__ == "module"
        assert mode is datasets.DownloadMode.REUSE_DATASET_IF_EXISTS
        assert round(metrics.bleu([("the cat sat on the mat", "the cat sat on the mat")]), 9) == 100.0
        assert "sacrebleu" in sys.modules and "requests" not in sys.modules
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
