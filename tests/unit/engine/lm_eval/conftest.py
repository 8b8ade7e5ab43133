"""Fixtures of the lm-eval cache and snapshot tests: a cache folder, and gsm8k on local data loaded
through :func:`~evalstack.engine.lm_eval.tasks.load_tasks` with its request builds counted."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench._common import SHARED, write_gsm8k_override

from evalstack.engine.lm_eval import cache
from evalstack.engine.lm_eval.model import LmEvalModel, ModelSettings
from evalstack.engine.lm_eval.tasks import LoadedTasks, TaskSettings, load_tasks, task_manager
from tests.fakes.lm_eval_fixtures import BUILTIN_TASKS, build_tokenizer

DATA = SHARED / "data"
needs_data = pytest.mark.skipif(
    not (DATA / "gsm8k" / "test.jsonl").exists(), reason=f"benchmark data not found at {DATA}"
)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache.ENV_CACHE, str(folder))
    return folder


@dataclasses.dataclass
class RequestsEnv:
    folder: Path
    data: Path
    tokenizer: str
    builds: list[int]

    def templated(self, template: str) -> str:
        """A copy of the tokenizer with a chat template (each message through ``template``)."""
        folder = Path(self.tokenizer).parent / f"templated-{len(list(Path(self.tokenizer).parent.iterdir()))}"
        shutil.copytree(self.tokenizer, folder)
        config_file = folder / "tokenizer_config.json"
        config = json.loads(config_file.read_text())
        config["chat_template"] = "{% for m in messages %}" + template + "\n{% endfor %}"
        config_file.write_text(json.dumps(config))
        return str(folder)

    def loaded(self, *, chat: bool = True, tokenizer: str | None = None, **settings: Any) -> LoadedTasks:
        """gsm8k (6 documents, 2-shot, the chat template on a chat endpoint unless ``settings`` say else)."""
        model = LmEvalModel(
            ModelSettings(endpoint="chat", model="m")
            if chat
            else ModelSettings(endpoint="completion", model="m", tokenizer=tokenizer or self.tokenizer)
        )
        defaults: dict[str, Any] = {"limit": 6, "num_fewshot": 2, "apply_chat_template": chat}
        return load_tasks(
            TaskSettings(
                names=("gsm8k",), include_path=str(self.folder), include_defaults=False, **defaults | settings
            ),
            model,
        )

    def load(self, **settings: Any) -> list[Any]:
        """The requests of :meth:`loaded`: (request type, doc_id, idx, arguments, metadata, doc) each."""
        loaded = self.loaded(**settings)
        return [
            (i.request_type, i.doc_id, i.idx, i.arguments, i.metadata, i.doc)
            for by_doc in loaded.instances["gsm8k"].values()
            for i in by_doc
        ]


@pytest.fixture
def requests_env(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RequestsEnv]:
    from lm_eval.api.task import ConfigurableTask

    data = tmp_path / "data"
    (data / "gsm8k").mkdir(parents=True)
    lines = (DATA / "gsm8k/test.jsonl").read_text().split("\n")
    (data / "gsm8k/test.jsonl").write_text("\n".join(lines[:20]) + "\n")
    train = (DATA / "gsm8k/train_first500.jsonl").read_text().split("\n")
    (data / "gsm8k/train_first500.jsonl").write_text("\n".join(train[:40]) + "\n")
    folder = write_gsm8k_override(tmp_path / "tasks", data, BUILTIN_TASKS).parent
    corpus = [json.loads(line)["question"] for line in lines[:100] if line]
    tokenizer = str(build_tokenizer(tmp_path / "tokenizer", corpus))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    builds: list[int] = []
    real = ConfigurableTask.build_all_requests

    def counted(self: Any, **kwargs: Any) -> None:
        builds.append(1)
        real(self, **kwargs)

    monkeypatch.setattr(ConfigurableTask, "build_all_requests", counted)
    yield RequestsEnv(folder, data, tokenizer, builds)
    task_manager.cache_clear()
