"""A run's configured lm-eval tasks kept on disk, so that the same run again starts in a fraction of the time.

Loading a task the usual way imports Hugging Face ``datasets`` (with pandas and pyarrow), reads lm-eval's
task index, builds the task from its YAML files and loads its dataset: most of a fresh process's
start-up, with the same result every time. After such a load, the configured tasks are pickled
without their data (:func:`~evalstack.engine.lm_eval.unsafe.without_data`: no dataset, no built
requests, no few-shot sampler) and with the documents the run evaluates, as
``snapshots/<key>.pickle`` beside the other caches (:func:`~evalstack.engine.lm_eval.cache.cache_dir`).
A later run with the same settings restores them: every behaviour (filters, ``process_results``,
aggregation, configuration) is still lm-eval's own, and the requests come from the requests cache.

The key is everything a run's settings say (the task names, include path, few-shot settings, chat
template, limit, model settings) with the lm-eval, evalstack and Python versions. A snapshot also
records the files its tasks were built from, and is used only while all of them are unchanged (path,
mtime, size): every task and group YAML with the YAMLs it includes, the Python files beside them,
every YAML of the include path (a new one may take a task's name), and the data files.

Only tasks whose data is local files (``dataset_path: json``, ``csv``, ``parquet``, ``text`` or
``arrow`` with ``data_files``) are kept: a dataset from the Hugging Face Hub is looked up there (or in
its cache) on every run, as lm-eval does. Nor are tasks with their own Python class, or tasks that
run model code (their scoring runs in the sandbox, which imports lm-eval only). A snapshot is a
pickle in the user's own cache folder, as lm-eval's ``--cache_requests`` and the ``datasets`` cache
are; an unreadable, stale or foreign one is a miss.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import pickle
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import evalstack
from evalstack.engine.lm_eval.cache import (
    cache_dir,
    digest,
    folder_state,
    load_requests,
    template_identity,
    write_atomic,
)
from evalstack.engine.lm_eval.importing import import_lm_eval
from evalstack.engine.lm_eval.unsafe import is_unsafe, without_data

import_lm_eval()

from lm_eval.api.task import ConfigurableTask  # noqa: E402  (after import_lm_eval: datasets deferred)

if TYPE_CHECKING:
    from evalstack.engine.lm_eval.model import LmEvalModel
    from evalstack.engine.lm_eval.tasks import LoadedTasks, TaskSettings

logger = logging.getLogger(__name__)

FORMAT = 1
"""Bumped when a snapshot's shape changes; part of the key."""

LOCAL_BUILDERS = frozenset({"json", "csv", "parquet", "text", "arrow"})
"""``dataset_path`` values that read the ``data_files`` a task names (Hugging Face packaged builders)."""


class EvalDocs(Sequence[Any]):
    """A restored task's evaluation documents: those the run evaluates (by doc_id), and the number of
    all of them (lm-eval reports it as the task's original sample count)."""

    def __init__(self, docs: Mapping[int, Any], size: int) -> None:
        self.docs = docs
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, int) and index in self.docs:
            return self.docs[index]
        raise LookupError(f"a restored lm-eval task holds only the documents it evaluates, not {index!r}")

    def __iter__(self) -> Iterator[Any]:
        return iter(self.docs.values())


class SnapshotTask(ConfigurableTask):
    """A configured lm-eval task restored without its dataset; all but ``eval_docs`` is lm-eval's own."""

    snapshot_docs: dict[int, Any]
    snapshot_size: int

    @property
    def eval_docs(self) -> EvalDocs:
        return EvalDocs(self.snapshot_docs, self.snapshot_size)


def snapshot_path(settings: TaskSettings, model: LmEvalModel) -> Path | None:
    """Where the snapshot of a run with ``settings`` on ``model`` lives (None when caching is off).

    Its name is the digest of what the settings say about the tasks and their prompts, with the
    versions of what builds them.
    """
    import lm_eval

    folder = cache_dir()
    if folder is None:
        return None
    key = digest(
        [
            FORMAT,
            str(lm_eval.__version__),
            evalstack.__version__,
            list(sys.version_info[:2]),
            dataclasses.asdict(settings),
            dataclasses.asdict(model.settings),
            template_identity(model) if settings.apply_chat_template else None,
        ]
    )
    return folder / "snapshots" / f"{key}.pickle"


def _file_state(path: str) -> list[Any] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [path, stat.st_mtime_ns, stat.st_size]


def _yaml_chain(path: Path, found: set[str]) -> None:
    """``path`` and every YAML it includes (as lm-eval resolves ``include:``), with the Python files
    beside each (where ``!function`` finds its modules)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    path = path.expanduser().resolve()
    if str(path) in found:
        return
    found.add(str(path))
    found.update(str(p) for p in path.parent.glob("*.py"))
    includes = load_yaml(path, resolve_func=False, recursive=False).get("include") or []
    for included in includes if isinstance(includes, list) else [includes]:
        _yaml_chain(path.parent / included if not Path(included).is_absolute() else Path(included), found)


def _data_files(task: Any) -> list[str] | None:
    """The local files a task's dataset is read from, or None when it is not read from local files."""
    config = task.config
    kwargs = config.dataset_kwargs or {}
    named = kwargs.get("data_files") if isinstance(kwargs, Mapping) else None
    if config.dataset_path not in LOCAL_BUILDERS or not named:
        return None
    values = named.values() if isinstance(named, Mapping) else [named]
    files = [f for value in values for f in (value if isinstance(value, list | tuple) else [value])]
    if not all(isinstance(f, str) and os.path.isfile(f) for f in files):
        return None
    return [os.path.abspath(f) for f in files]


def _dependencies(manager: Any, loaded: LoadedTasks) -> list[str] | None:
    """Every file the tasks were built from, or None when one of them cannot be kept (see the module)."""
    found: set[str] = set()
    for task in loaded.tasks.values():
        files = _data_files(task)
        if type(task) is not ConfigurableTask or is_unsafe(task) or files is None:
            return None
        found.update(files)
    for name in [*loaded.tasks, *loaded.groups]:
        entry = manager.task_index.get(name)
        if entry is not None and entry.yaml_path is not None:
            _yaml_chain(Path(entry.yaml_path), found)
    return sorted(found)


class _Pickler(pickle.Pickler):
    """Writes a task as its name when ``tasks`` holds it (groups refer to restored tasks) and never a
    Hugging Face dataset."""

    def __init__(self, file: io.BytesIO, tasks: Mapping[int, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.tasks = tasks
        datasets = sys.modules.get("datasets")  # none was loaded when the package was never imported
        self.datasets = (datasets.Dataset, datasets.DatasetDict) if datasets is not None else ()

    def persistent_id(self, obj: Any) -> Any:
        name = self.tasks.get(id(obj))
        if name is not None:
            return ("task", name)
        if self.datasets and isinstance(obj, self.datasets):
            return ("dataset", None)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, tasks: Mapping[str, Any]) -> None:
        super().__init__(io.BytesIO(data))
        self.tasks = tasks

    def persistent_load(self, pid: Any) -> Any:
        kind, name = pid
        return self.tasks[name] if kind == "task" else None


def _dumps(value: Any, tasks: Mapping[int, str]) -> bytes:
    out = io.BytesIO()
    _Pickler(out, tasks).dump(value)
    return out.getvalue()


def save_snapshot(
    path: Path,
    settings: TaskSettings,
    manager: Any,
    loaded: LoadedTasks,
    request_keys: Mapping[str, str],
) -> None:
    """Keep ``loaded`` (built by ``manager`` with ``settings``) at ``path`` when all its tasks can be
    kept; a snapshot that cannot be made (a function of a user's module does not pickle, a YAML cannot
    be read again) is logged and skipped, never a failed run."""
    if set(request_keys) != set(loaded.tasks):
        return
    try:
        files = _dependencies(manager, loaded)
        if files is None:
            return
        tasks: dict[str, Any] = {}
        for name, task in loaded.tasks.items():
            slim = without_data(task)
            slim.__class__ = SnapshotTask
            slim.snapshot_docs = loaded.docs[name]
            slim.snapshot_size = len(task.eval_docs)
            tasks[name] = slim
        originals = {id(task): name for name, task in loaded.tasks.items()}
        record = {
            "format": FORMAT,
            "files": [_file_state(f) for f in files],
            "include": folder_state(Path(settings.include_path)) if settings.include_path else None,
            "requests": dict(request_keys),
            "tasks": _dumps(tasks, {}),
            "groups": _dumps(loaded.groups, originals),
        }
    except Exception as exc:
        logger.info("lm-eval snapshot not kept: %s: %s", type(exc).__name__, exc)
        return
    write_atomic(path, pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))


def load_snapshot(path: Path, settings: TaskSettings) -> LoadedTasks | None:
    """The tasks kept at ``path`` by a run with these settings, when nothing they were built from changed."""
    from evalstack.engine.lm_eval.tasks import LoadedTasks, instances_by_doc

    if not path.is_file():
        return None
    try:
        record = pickle.loads(path.read_bytes())
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            return None
        if any(state is None or _file_state(state[0]) != state for state in record["files"]):
            return None
        include = folder_state(Path(settings.include_path)) if settings.include_path else None
        if include != record["include"]:
            return None
        tasks = _Unpickler(record["tasks"], {}).load()
        groups = _Unpickler(record["groups"], tasks).load()
        loaded = LoadedTasks(tasks=tasks, groups=groups)
        for name, task in tasks.items():
            instances = load_requests(record["requests"][name], task.snapshot_docs)
            if instances is None:
                return None
            task._instances = instances
            loaded.instances[name] = instances_by_doc(instances)
            loaded.docs[name] = task.snapshot_docs
    except Exception as exc:  # a snapshot that cannot be read back is a miss, whatever the reason
        logger.info("lm-eval snapshot %s could not be restored (%s: %s)", path.name, type(exc).__name__, exc)
        return None
    return loaded
