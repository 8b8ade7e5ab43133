"""Load lm-eval tasks and groups by name and build their requests, configured as lm-eval's evaluator does.

``simple_evaluate`` merges the command line's ``--gen_kwargs`` into each generate task's
``generation_kwargs``, overrides ``num_fewshot`` (unless the task pins it to 0; a task without one gets
0), sets the few-shot seed (1234 by default), then ``build_all_requests`` renders every document's
prompt, with the chat template and ``fewshot_as_multiturn`` where asked. We do exactly that, once per
plan, with lm-eval's own objects; the prompts are what lm-eval would send.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalstack.engine.lm_eval.model import LmEvalModel
from evalstack.engine.lm_eval.unsafe import allow_code_eval_here
from evalstack.errors import InvalidInputError, NotFoundError

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


@functools.lru_cache(maxsize=8)
def task_manager(include_path: str | None, include_defaults: bool = True) -> Any:
    """lm-eval's TaskManager (it indexes every task YAML once, seconds: cached per include path).

    ``include_defaults=False`` indexes the include path only (its YAMLs may still ``include:`` built-in
    files by path), which is much faster.
    """
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise InvalidInputError(
            f"params.extra.include_path {include_path!r} is not a folder; name a folder of lm-eval task YAMLs"
        )
    if include_path is None and not include_defaults:
        raise InvalidInputError("params.extra.include_defaults false needs params.extra.include_path")
    return TaskManager(include_path=include_path, include_defaults=include_defaults)


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


def load_tasks(settings: TaskSettings, model: LmEvalModel) -> LoadedTasks:
    """Load, configure and build the requests of ``settings.names`` (blocking: run it in a thread)."""
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
    for name, task in tasks.items():
        limit = settings.limit
        task.build_all_requests(
            limit=limit,
            rank=0,
            world_size=1,
            system_instruction=settings.system_instruction,
            apply_chat_template=settings.apply_chat_template,
            fewshot_as_multiturn=settings.fewshot_as_multiturn,
            chat_template=model.chat_template if settings.apply_chat_template else None,
            tokenizer_name=model.tokenizer_name if settings.apply_chat_template else "",
        )
        by_doc: dict[int, list[Any]] = defaultdict(list)
        for instance in task.instances:
            by_doc[instance.doc_id].append(instance)
        for group in by_doc.values():
            group.sort(key=lambda inst: inst.idx)
        result.instances[name] = dict(by_doc)
        result.docs[name] = {
            doc_id: doc for doc_id, doc in task.doc_iterator(rank=0, limit=limit, world_size=1)
        }
    return result
