"""On-disk caches of lm-eval's start-up work: the task index and each task's built requests.

lm-eval's TaskManager parses every task YAML (about 14,000) to learn which name is which file, and
``build_all_requests`` renders every document's prompt and few-shot context; both take seconds and give
the same answer run after run. Both are kept as JSON files under :func:`cache_dir`, beside the
snapshots of configured tasks:

- ``index/<key>.json``, one per folder indexed (lm-eval's built-in tasks, an include path): every
  task, group and tag name with its kind, YAML path and tags (plus the ``output_type`` and alias the
  catalogue shows). The key is the lm-eval version, the folder's path and the path, mtime and size of
  every YAML in it, so an edited, added or removed YAML is a different key. Tasks are still built
  from their YAML files by lm-eval, so the index only says where a name lives.
- ``requests/<key>.json``: a task's requests (arguments, ``idx``, ``repeats`` per document). The key
  is everything that changes them: the lm-eval version, the task's whole configuration (functions by
  name and the hash of their source file), the dataset splits' fingerprints (Hugging Face ``datasets``
  fingerprints a local data file by its mtime), ``num_fewshot``, the few-shot seed, the chat template,
  ``fewshot_as_multiturn``, the system instruction, the tokenizer and ``limit``. A request whose
  arguments would not come back identical from JSON is never cached.
- ``snapshots/<key>.pickle``: a run's configured tasks, without their data (``snapshot``).

A missing, unreadable, corrupt or foreign file is a miss: the work is redone and the file rewritten
(atomically). ``EVALSTACK_LM_EVAL_CACHE`` names the folder (``off`` turns them all off); the
default is ``$XDG_CACHE_HOME/evalstack/lm-eval`` (``~/.cache/evalstack/lm-eval``).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import tempfile
from collections.abc import Collection, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalstack.cache_dirs import user_cache_dir

if TYPE_CHECKING:
    from evalstack.engine.lm_eval.model import LmEvalModel
    from evalstack.engine.lm_eval.tasks import TaskSettings

logger = logging.getLogger(__name__)

ENV_CACHE = "EVALSTACK_LM_EVAL_CACHE"
FORMAT = 1
"""Bumped when the files' shape changes; part of every key."""

_IGNORED_DIRS = {"__pycache__", ".ipynb_checkpoints"}  # the folders lm-eval's index skips
_KEPT_CONFIG_KEYS = ("output_type", "task_alias", "group_alias")


def cache_dir() -> Path | None:
    """The cache folder, or None when ``EVALSTACK_LM_EVAL_CACHE`` turns caching off."""
    return user_cache_dir(ENV_CACHE, "lm-eval")


def digest(value: Any) -> str:
    """The SHA-256 of ``value`` as canonical JSON (callables by name and source hash)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=_stable)
    return hashlib.sha256(text.encode()).hexdigest()


def _read(path: Path, key: str) -> Any | None:
    """The payload stored under ``key`` at ``path``; None when missing, unreadable or not ours."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("key") != key:
        return None
    return data.get("payload")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` atomically (a reader sees the old file or the new one); failing costs only the cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except OSError as exc:
        logger.warning("lm-eval cache: could not write %s (%s)", path, exc)


def _write(path: Path, key: str, payload: Any) -> None:
    record = {"format": FORMAT, "key": key, "payload": payload}
    write_atomic(path, json.dumps(record, ensure_ascii=False).encode())


def _lm_eval_version() -> str:
    import lm_eval

    return str(lm_eval.__version__)


# --- the task index -------------------------------------------------------------------------------


def folder_state(root: Path) -> list[Any]:
    """Every YAML under ``root`` (as lm-eval's index walks it) with its mtime and size."""
    files: list[tuple[str, int, int]] = []
    start = len(os.path.join(root, ""))
    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders[:] = [d for d in subfolders if d not in _IGNORED_DIRS]
        for name in names:
            if name.endswith(".yaml"):
                path = os.path.join(folder, name)
                try:
                    stat = os.stat(path)
                except OSError:
                    continue
                files.append((path[start:], stat.st_mtime_ns, stat.st_size))
    return [str(root.resolve()), sorted(files)]


def index_key(roots: Sequence[Path]) -> str:
    """The key of the index of ``roots``: the lm-eval version and every YAML's path, mtime and size."""
    return digest([FORMAT, _lm_eval_version(), [folder_state(root) for root in roots]])


def _encode_index(index: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, entry in index.items():
        config = entry.cfg or {}
        kept = {k: config[k] for k in _KEPT_CONFIG_KEYS if isinstance(config.get(k), str)}
        out.append(
            {
                "name": name,
                "entry_name": entry.name,
                "kind": entry.kind.name,
                "yaml_path": str(entry.yaml_path) if entry.yaml_path is not None else None,
                "tags": sorted(entry.tags),
                "cfg": kept if entry.cfg is not None else None,
            }
        )
    return out


def _valid_item(item: Any, kinds: Collection[str]) -> bool:
    """Whether a stored index item has the shape ``_encode_index`` writes (checked for all on reading)."""
    return (
        isinstance(item, dict)
        and isinstance(item.get("name"), str)
        and isinstance(item.get("entry_name"), str)
        and isinstance(item.get("kind"), str)
        and item["kind"] in kinds
        and isinstance(item.get("yaml_path"), str | None)
        and isinstance(item.get("tags"), list)
        and all(isinstance(t, str) for t in item["tags"])
        and isinstance(item.get("cfg"), dict | None)
    )


def _entry(item: dict[str, Any]) -> Any:
    from lm_eval.tasks._index import Entry, Kind

    yaml_path = item["yaml_path"]
    return Entry(
        name=item["entry_name"],
        kind=Kind[item["kind"]],
        yaml_path=Path(yaml_path) if yaml_path is not None else None,
        cfg=item["cfg"],
        tags=set(item["tags"]),
    )


class TaskIndexView(MutableMapping[str, Any]):
    """lm-eval's task index (name -> ``Entry``), read from the cache: each Entry is made when first
    looked up, as a run looks up a handful of the ~14,700 names (making them all takes a fifth of a
    second or more). lm-eval's TaskManager reads and extends it like the dict its own index is.
    """

    def __init__(self, items: dict[str, Any]) -> None:
        self._items = items  # name -> a stored item (dict) or its Entry

    def __getitem__(self, name: str) -> Any:
        value = self._items[name]
        if isinstance(value, dict):
            value = self._items[name] = _entry(value)
        return value

    def __setitem__(self, name: str, entry: Any) -> None:
        self._items[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def kind_of(self, name: str) -> str:
        """The entry's kind by name (``TASK``, ``GROUP``...), without making the Entry."""
        value = self._items[name]
        return str(value["kind"] if isinstance(value, dict) else value.kind.name)

    def merge(self, other: Mapping[str, Any]) -> None:
        """Add ``other``'s names, replacing those already here (a later folder's names win)."""
        items = other._items if isinstance(other, TaskIndexView) else other
        for name in items:
            if name in self._items:
                logger.info("lm-eval task %r from %s replaces the one from %s", name,
                            _yaml_path(items[name]), _yaml_path(self._items[name]))  # fmt: skip
        self._items.update(items)


def _yaml_path(value: Any) -> Any:
    """The YAML path of a stored index item or of an Entry."""
    return value["yaml_path"] if isinstance(value, dict) else value.yaml_path


def _decode_index(payload: Any) -> TaskIndexView | None:
    from lm_eval.tasks._index import Kind

    kinds = Kind.__members__.keys()
    if not isinstance(payload, list) or not all(_valid_item(item, kinds) for item in payload):
        return None
    return TaskIndexView({item["name"]: item for item in payload})


def _root_index(root: Path, folder: Path | None) -> Mapping[str, Any]:
    from lm_eval.tasks._index import TaskIndex

    if folder is None:
        built: dict[str, Any] = TaskIndex.build([root])
        return built
    key = index_key([root])
    path = folder / "index" / f"{key}.json"
    cached = _decode_index(_read(path, key))
    if cached is not None:
        return cached
    built = TaskIndex.build([root])
    _write(path, key, _encode_index(built))
    return built


def load_index(roots: Sequence[Path]) -> TaskIndexView:
    """lm-eval's task index of ``roots``, as ``TaskIndex.build(roots)`` makes it: each folder's own index
    (from the cache when it is current), a later folder's names replacing an earlier one's.

    Each folder is cached on its own, so lm-eval's built-in tasks are indexed once whatever include
    path comes with them.
    """
    folder = cache_dir()
    index = TaskIndexView({})
    for root in roots:
        index.merge(_root_index(root, folder))
    return index


# --- built requests -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _file_digest(path: str, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _source_identity(obj: Any) -> str:
    """A function or class by name and the hash of the file that defines it."""
    try:
        source = inspect.getsourcefile(obj)
    except TypeError:
        source = None
    name = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
    if not source or not os.path.isfile(source):
        return name + ":" + repr(obj)  # a repr with an address changes every run: a miss, never a wrong hit
    return f"{name}:{_file_digest(source, os.stat(source).st_mtime_ns)}"


def _stable(value: Any) -> Any:
    """A JSON-able stand-in for a value of a task's configuration (``json.dumps`` default)."""
    if inspect.isfunction(value) or inspect.ismethod(value) or inspect.isclass(value):
        return _source_identity(value)
    if callable(value):
        return _source_identity(type(value)) + repr(value)
    if isinstance(value, set | frozenset):
        return sorted(map(repr, value))
    return repr(value)


def _dataset_fingerprints(task: Any) -> dict[str, str] | None:
    dataset = getattr(task, "dataset", None)
    if dataset is None or not hasattr(dataset, "items"):
        return None
    out = {}
    for split, data in dataset.items():
        fingerprint = getattr(data, "_fingerprint", None)
        if not isinstance(fingerprint, str):
            return None
        out[str(split)] = fingerprint
    return out


def template_identity(model: LmEvalModel) -> dict[str, Any]:
    """What of ``model`` shapes a chat-templated prompt: its class, tokenizer and chat template."""
    lm = model.lm
    tokenizer = getattr(lm, "tokenizer", None)
    return {
        "model": _source_identity(type(lm)),
        "tokenized": bool(getattr(lm, "tokenized_requests", False)),
        "backend": getattr(lm, "tokenizer_backend", None),
        "tokenizer": model.tokenizer_name,
        "chat_template": getattr(tokenizer, "chat_template", None),
    }


def requests_key(task: Any, settings: TaskSettings, model: LmEvalModel) -> str | None:
    """The key of a configured task's requests, or None when they cannot be cached safely."""
    fingerprints = _dataset_fingerprints(task)
    if fingerprints is None:
        return None
    parts = {
        "format": FORMAT,
        "lm_eval": _lm_eval_version(),
        "class": _source_identity(type(task)),
        "config": task.config.to_dict(keep_callable=True),
        "datasets": fingerprints,
        "num_fewshot": task.get_config("num_fewshot"),
        "fewshot_seed": settings.fewshot_seed,
        "apply_chat_template": settings.apply_chat_template,
        "fewshot_as_multiturn": settings.fewshot_as_multiturn,
        "system_instruction": settings.system_instruction,
        "template": template_identity(model) if settings.apply_chat_template else None,
        "limit": settings.limit,
    }
    return digest(parts)


def _encode_argument(value: Any) -> dict[str, Any]:
    from lm_eval.models.api_models import JsonChatStr

    if isinstance(value, JsonChatStr):
        return {"chat": value.prompt}
    if isinstance(value, str):
        return {"text": value}
    return {"json": value}


def _decode_argument(item: dict[str, Any]) -> Any:
    from lm_eval.models.api_models import JsonChatStr

    if "chat" in item:
        return JsonChatStr(item["chat"])
    if "text" in item:
        return item["text"]
    return item["json"]


def _identical(a: Any, b: Any) -> bool:
    """Equal values of the very same types, all the way down (JSON turns a tuple into a list)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _encode_instances(instances: Sequence[Any]) -> list[dict[str, Any]] | None:
    out = []
    for instance in instances:
        arguments = instance.arguments if isinstance(instance.arguments, tuple) else (instance.arguments,)
        encoded = [_encode_argument(a) for a in arguments]
        try:
            back = json.loads(json.dumps(encoded, ensure_ascii=False))
        except (TypeError, ValueError):
            return None
        if not _identical(tuple(_decode_argument(a) for a in back), arguments):
            return None
        out.append(
            {
                "request_type": instance.request_type,
                "doc_id": instance.doc_id,
                "idx": instance.idx,
                "arguments": encoded,
                "tuple": isinstance(instance.arguments, tuple),
                "metadata": list(instance.metadata),
            }
        )
    return out


def _decode_instances(payload: Any, docs: dict[int, Any]) -> list[Any] | None:
    from lm_eval.api.instance import Instance

    if not isinstance(payload, list) or not payload:
        return None
    out = []
    try:
        for item in payload:
            arguments = tuple(_decode_argument(a) for a in item["arguments"])
            task_name, doc_id, repeats = item["metadata"]
            out.append(
                Instance(
                    request_type=item["request_type"],
                    doc=docs[doc_id],
                    arguments=arguments if item["tuple"] else arguments[0],
                    idx=item["idx"],
                    metadata=(task_name, doc_id, repeats),
                )
            )
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return out


def load_requests(key: str, docs: dict[int, Any]) -> list[Any] | None:
    """The cached Instances of ``key`` (documents attached from ``docs``), or None on a miss."""
    folder = cache_dir()
    if folder is None:
        return None
    return _decode_instances(_read(folder / "requests" / f"{key}.json", key), docs)


def save_requests(key: str, instances: Sequence[Any]) -> bool:
    """Keep a task's built Instances under ``key``; False when they are not kept (caching is off, or an
    argument would not survive JSON)."""
    folder = cache_dir()
    if folder is None:
        return False
    encoded = _encode_instances(instances)
    if encoded is None:
        logger.info("lm-eval cache: these requests do not survive JSON unchanged; not cached")
        return False
    _write(folder / "requests" / f"{key}.json", key, encoded)
    return True
