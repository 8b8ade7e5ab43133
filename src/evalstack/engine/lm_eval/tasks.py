"""Load lm-eval tasks and groups by name and build their requests, configured as lm-eval's evaluator does.

``simple_evaluate`` merges the command line's ``--gen_kwargs`` into each generate task's
``generation_kwargs``, overrides ``num_fewshot`` (unless the task pins it to 0; a task without one gets
0), sets the few-shot seed (1234 by default), then ``build_all_requests`` renders every document's
prompt, with the chat template and ``fewshot_as_multiturn`` where asked. We do exactly that, once per
plan, with lm-eval's own objects; the prompts are what lm-eval would send.

Start-up is most of a run's time, so four things are kept: the task index and each task's built
requests on disk (``cache``), the configured tasks themselves (``snapshot``: a run with the same
settings then neither indexes, loads a dataset nor imports Hugging Face ``datasets``), and, in the
process, every Jinja template lm-eval compiles (its ``apply_template`` compiles the template string
again for every document and field).
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalstack.engine.lm_eval.importing import import_lm_eval
from evalstack.engine.lm_eval.model import LmEvalModel
from evalstack.engine.lm_eval.unsafe import allow_code_eval_here
from evalstack.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from evalstack.engine.lm_eval.cache import TaskIndexView

logger = logging.getLogger(__name__)

DEFAULT_FEWSHOT_SEED = 1234
"""lm-eval's default ``fewshot_random_seed``."""


@dataclass(frozen=True)
class TaskSettings:
    """How the evaluator configures each task (lm-eval's ``simple_evaluate`` arguments)."""

    names: tuple[str, ...]
    include_path: str | None = None
    include_defaults: bool = True
    limit: int | None = None
    num_fewshot: int | None = None
    fewshot_seed: int = DEFAULT_FEWSHOT_SEED
    gen_kwargs: tuple[tuple[str, Any], ...] = ()
    apply_chat_template: bool = False
    fewshot_as_multiturn: bool = True
    system_instruction: str | None = None


@dataclass
class LoadedTasks:
    """Tasks (by name, in lm-eval's order) with their requests built, and groups."""

    tasks: dict[str, Any]
    groups: dict[str, Any]
    # task name -> doc_id -> that document's Instances, in request order
    instances: dict[str, dict[int, list[Any]]] = field(default_factory=dict)
    docs: dict[str, dict[int, Any]] = field(default_factory=dict)


@functools.cache
def compile_templates_once() -> None:
    """Make lm-eval's ``apply_template`` reuse each compiled Jinja template (process-wide, idempotent).

    lm-eval renders ``doc_to_text``, ``doc_to_target`` and ``doc_to_choice`` with
    ``env.from_string(template).render(**doc)``, compiling the same string for every document (most of
    building and scoring a task). The replacement renders the very template ``env.from_string`` compiles,
    once per distinct string; the original stays at ``apply_template.__wrapped__``.
    """
    from lm_eval import utils

    original = utils.apply_template
    if hasattr(original, "__wrapped__"):  # another thread got here first
        return
    compiled = functools.lru_cache(maxsize=4096)(utils.env.from_string)

    @functools.wraps(original)
    def apply_template(template: str, doc: dict[str, Any]) -> str:
        return str(compiled(template).render(**doc))

    utils.apply_template = apply_template


@functools.lru_cache(maxsize=8)
def task_manager(include_path: str | None, include_defaults: bool = True) -> Any:
    """lm-eval's TaskManager over its index of task YAMLs (``cache.load_index``: from disk when current).

    ``include_defaults=False`` indexes the include path only (its YAMLs may still ``include:`` built-in
    files by path).
    """
    import_lm_eval()
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    from evalstack.engine.lm_eval.cache import load_index

    if include_path is not None and not Path(include_path).is_dir():
        raise InvalidInputError(
            f"params.extra.include_path {include_path!r} is not a folder; name a folder of lm-eval task YAMLs"
        )
    if include_path is None and not include_defaults:
        raise InvalidInputError("params.extra.include_defaults false needs params.extra.include_path")
    roots = [Path(lm_eval.tasks.__file__).parent] if include_defaults else []
    roots += [Path(include_path)] if include_path is not None else []
    manager = TaskManager(include_defaults=False)  # indexes nothing: the index is installed below
    _install_index(manager, load_index(roots))
    manager.include_path = include_path
    return manager


def _install_index(manager: Any, index: TaskIndexView) -> None:
    """Give ``manager`` the index it would have built itself, and the name lists it derives from one."""
    kinds = {name: index.kind_of(name) for name in index}
    manager._index = index
    manager._all_tasks = sorted(kinds)
    manager._all_subtasks = sorted(n for n, kind in kinds.items() if kind in ("TASK", "PY_TASK"))
    manager._all_groups = sorted(n for n, kind in kinds.items() if kind == "GROUP")
    manager._all_tags = sorted(n for n, kind in kinds.items() if kind == "TAG")


def known_name(name: str, include_path: str | None = None) -> bool:
    """Whether lm-eval knows ``name`` as a task, group or tag."""
    return name in task_manager(include_path).all_tasks


def _datasets_of(manager: Any, names: tuple[str, ...]) -> list[str]:
    """The Hugging Face datasets the tasks ``names`` read (``dataset_path`` and ``dataset_name``)."""
    from lm_eval.tasks._yaml_loader import load_yaml  # as TaskManager reads a task's YAML for its listing

    found = []
    for name in names:
        try:
            config = load_yaml(manager.task_index[name].yaml_path, resolve_func=False, recursive=True)
        except Exception:  # a group, a Python task or an unreadable YAML: the error text still helps
            continue
        if config.get("dataset_path"):
            dataset = str(config["dataset_path"])
            found.append(f"{dataset} ({config['dataset_name']})" if config.get("dataset_name") else dataset)
    return found


def _missing_data_error(manager: Any, names: tuple[str, ...], exc: BaseException) -> NotFoundError:
    from datasets import config as datasets_config

    datasets = _datasets_of(manager, names)
    which = f"the dataset {', '.join(datasets)}" if datasets else "the dataset"
    return NotFoundError(
        f"lm-eval task(s) {', '.join(names)}: {which} could not be loaded ({type(exc).__name__}: {exc}). "
        "lm-eval reads datasets from the Hugging Face Hub, or offline (HF_DATASETS_OFFLINE=1) from the "
        f"datasets cache ({datasets_config.HF_DATASETS_CACHE}, under HF_HOME); "
        "to use local files, put a task YAML in a folder named by params.extra.include_path that "
        "`include:`s the built-in task and sets `dataset_path: json` with `dataset_kwargs.data_files`"
    )


def instances_by_doc(instances: list[Any]) -> dict[int, list[Any]]:
    """A task's Instances by document, each document's in request order (``idx``)."""
    by_doc: dict[int, list[Any]] = defaultdict(list)
    for instance in instances:
        by_doc[instance.doc_id].append(instance)
    for group in by_doc.values():
        group.sort(key=lambda inst: inst.idx)
    return dict(by_doc)


def load_tasks(settings: TaskSettings, model: LmEvalModel) -> LoadedTasks:
    """Load, configure and build the requests of ``settings.names`` (blocking: run it in a thread).

    From the run's snapshot when there is a current one (``snapshot``); else as lm-eval's evaluator
    does, and a snapshot is kept for the next run.
    """
    from evalstack.engine.lm_eval.snapshot import load_snapshot, save_snapshot, snapshot_path

    compile_templates_once()
    snapshot = snapshot_path(settings, model)
    restored = load_snapshot(snapshot, settings) if snapshot is not None else None
    if restored is not None:
        return restored
    manager = task_manager(settings.include_path, settings.include_defaults)
    unknown = [n for n in settings.names if n not in manager.all_tasks]
    if unknown:
        raise InvalidInputError(
            f"unknown lm-eval task or group {', '.join(map(repr, unknown))}; see `evalstack benchmarks "
            f"--search WORD` for the names, or add a task YAML through params.extra.include_path"
        )
    allow_code_eval_here()  # unsafe tasks (humaneval) self-check code_eval at import; scoring is sandboxed
    try:
        loaded = manager.load(list(settings.names))
    except (FileNotFoundError, ConnectionError, OSError) as exc:
        if "module script" in str(exc):  # a Hugging Face evaluate metric (humaneval's code_eval)
            raise NotFoundError(
                f"lm-eval task(s) {', '.join(settings.names)}: a metric could not be loaded ({exc}); the "
                "evaluate library loads metrics from the Hugging Face Hub, or offline from its modules cache "
                "(HF_MODULES_CACHE, under HF_HOME), where one online run leaves them"
            ) from exc
        raise _missing_data_error(manager, settings.names, exc) from exc
    except Exception as exc:
        if "dataset" in type(exc).__name__.lower() or "Hub" in str(exc) or "offline" in str(exc).lower():
            raise _missing_data_error(manager, settings.names, exc) from exc
        raise InvalidInputError(f"lm-eval could not load {', '.join(settings.names)}: {exc}") from exc
    tasks: dict[str, Any] = loaded["tasks"]
    gen_kwargs = dict(settings.gen_kwargs)
    for task in tasks.values():
        if task.get_config("output_type") == "generate_until" and gen_kwargs:
            task.set_config(key="generation_kwargs", value=dict(gen_kwargs), update=True)
        if settings.num_fewshot is not None:
            if task.get_config("num_fewshot") != 0:
                task.set_config(key="num_fewshot", value=settings.num_fewshot)
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=settings.fewshot_seed)
    result = LoadedTasks(tasks=tasks, groups=loaded["groups"])
    request_keys: dict[str, str] = {}
    for name, task in tasks.items():
        docs = {doc_id: doc for doc_id, doc in task.doc_iterator(rank=0, limit=settings.limit, world_size=1)}
        key = _build_requests(task, settings, model, docs)
        if key is not None:
            request_keys[name] = key
        result.instances[name] = instances_by_doc(task.instances)
        result.docs[name] = docs
    if snapshot is not None:
        save_snapshot(snapshot, settings, manager, result, request_keys)
    return result


def _build_requests(
    task: Any, settings: TaskSettings, model: LmEvalModel, docs: dict[int, Any]
) -> str | None:
    """``task.build_all_requests`` as lm-eval's evaluator calls it, or its cached result (``cache``);
    the key they are cached under (None when they are not)."""
    from evalstack.engine.lm_eval.cache import load_requests, requests_key, save_requests

    key = requests_key(task, settings, model)
    cached = load_requests(key, docs) if key is not None else None
    if cached is not None:
        task._instances = cached  # where build_all_requests puts them
        return key
    task.build_all_requests(
        limit=settings.limit,
        rank=0,
        world_size=1,
        system_instruction=settings.system_instruction,
        apply_chat_template=settings.apply_chat_template,
        fewshot_as_multiturn=settings.fewshot_as_multiturn,
        chat_template=model.chat_template if settings.apply_chat_template else None,
        tokenizer_name=model.tokenizer_name if settings.apply_chat_template else "",
    )
    if key is not None and save_requests(key, task.instances):
        return key
    return None
