"""What the academic benchmarks share: options, data loading, few-shot selection, requests.

Options come from the NeMo config: config ``params``, overridden by task ``params`` (``limit_samples``,
``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``parallelism``, ``max_retries``,
``request_timeout``) and their ``extra`` (``num_fewshot``, ``fewshot_seed``, ``fewshot_sampler``,
``endpoint_type``, ``mc_method``, ``n_samples``, ``system_prompt``, ``hf_token``, ``use_greedy``,
``sandbox_timeout``, ``answer_regex``, ``top_k``, ``seed``...).

Data, first found wins:

1. the task's ``dataset.files_url``: a file (read as is) or a folder laid out like the data directory;
2. the data directory: ``Settings.benchmark_data_dir`` when the settings have it, else the environment
   variable ``EVALSTACK_DATA_DIR``; files under ``<dir>/<benchmark>/...`` (e.g. ``mmlu/test.jsonl``);
3. the benchmark's canonical dataset on the Hugging Face Hub (``hf://datasets/...``, cached).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from evalstack.engine.datasets import load_rows
from evalstack.errors import EvalstackError, InvalidInputError, NotFoundError
from evalstack.inference.base import InferenceRequest, ModelEndpoint
from evalstack.limits import MAX_LIMIT_SAMPLES, MAX_N_SAMPLES

if TYPE_CHECKING:
    from evalstack.config import Settings

DATA_DIR_ENV = "EVALSTACK_DATA_DIR"
EndpointType = Literal["chat", "completion"]
McMethod = Literal["generate", "loglikelihood"]

PARAM_KEYS = (
    "parallelism",
    "limit_samples",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "max_retries",
    "request_timeout",
    "extra",
)
SAMPLING_EXTRA = ("top_k", "min_p", "seed", "frequency_penalty", "presence_penalty", "repetition_penalty")


@dataclass
class Options:
    """The settings of one academic task, merged from config and task params."""

    endpoint_type: EndpointType = "chat"
    mc_method: McMethod = "generate"
    limit: int | None = None
    num_fewshot: int | None = None
    fewshot_seed: int = 1234
    fewshot_sampler: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None
    n_samples: int = 1
    sandbox_timeout: float = 10.0
    files_url: str | None = None
    hf_endpoint: str | None = None
    hf_token: str | None = None
    parallelism: int | None = None
    max_retries: int | None = None
    request_timeout: float | None = None
    answer_regex: re.Pattern[str] | None = None  # replaces the flexible extraction (extract.extract_regex)


def _number(
    value: Any, key: str, kind: type, minimum: float | None = None, maximum: float | None = None
) -> Any:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (kind is int and not isinstance(value, int))
    ):
        raise InvalidInputError(
            f"params.{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}"
        )
    if minimum is not None and value < minimum:
        raise InvalidInputError(f"params.{key} must be at least {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise InvalidInputError(f"params.{key} must be at most {maximum}, got {value!r}")
    return kind(value)


def endpoint_type_of(endpoint: ModelEndpoint, requested: Any, default: EndpointType = "chat") -> EndpointType:
    """``chat`` or ``completion``: from a full route in the URL, else ``extra.endpoint_type``, else
    ``default``."""
    url = (endpoint.base_url or "").rstrip("/")
    if url.endswith("/chat/completions"):
        return "chat"
    if url.endswith("/completions"):
        return "completion"
    if requested is None:
        return default
    value = str(requested).strip().lower()
    if value in ("chat", "chat-completion", "chat_completion", "chat-completions", "chat_completions"):
        return "chat"
    if value in ("completion", "completions", "text", "text-completion"):
        return "completion"
    raise InvalidInputError(f"params.extra.endpoint_type must be 'chat' or 'completions', got {requested!r}")


def merge_param_layers(
    layers: Sequence[Mapping[str, Any] | None],
    accepted: Sequence[str],
    *,
    extra_keys: Sequence[str] | None = None,
    extra_owner: str = "",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge NeMo ``params`` layers (config first, then task): the keys set, and the merged ``extra``.

    ``None`` means "not set". An unknown key, or with ``extra_keys`` an unknown ``extra`` key, raises
    InvalidInputError naming the accepted ones (``extra_owner`` says for what, e.g. " for an lm-eval task").
    """
    merged: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for layer in layers:
        if not layer:
            continue
        if not isinstance(layer, Mapping):
            raise InvalidInputError(f"params must be an object, got {type(layer).__name__}")
        unknown = [k for k in layer if k not in accepted]
        if unknown:
            raise InvalidInputError(
                f"unknown params key(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(accepted)}"
            )
        for key, value in layer.items():
            if key == "extra" and value is not None:
                if not isinstance(value, Mapping):
                    raise InvalidInputError("params.extra must be an object")
                bad = [k for k in value if extra_keys is not None and k not in extra_keys]
                if bad:
                    raise InvalidInputError(
                        f"unknown params.extra key(s) {', '.join(map(repr, bad))}{extra_owner}; "
                        f"accepted: {', '.join(extra_keys or ())}"
                    )
                extra.update({k: v for k, v in value.items() if v is not None})
            elif value is not None:
                merged[key] = value
    return merged, extra


def parse_options(
    endpoint: ModelEndpoint, layers: Sequence[Mapping[str, Any] | None], dataset: Any = None
) -> Options:
    """Merge ``params`` layers (config first, then task) into Options; InvalidInputError on bad values."""
    merged, extra = merge_param_layers(layers, PARAM_KEYS)
    opts = Options()
    opts.endpoint_type = endpoint_type_of(endpoint, extra.get("endpoint_type"))
    method = extra.get("mc_method")
    if method is None:
        opts.mc_method = "loglikelihood" if opts.endpoint_type == "completion" else "generate"
    elif method in ("generate", "loglikelihood"):
        if method == "loglikelihood" and opts.endpoint_type == "chat":
            raise InvalidInputError(
                "params.extra.mc_method 'loglikelihood' needs a completions endpoint that returns logprobs; "
                "set params.extra.endpoint_type to 'completions' or use mc_method 'generate'"
            )
        opts.mc_method = method
    else:
        raise InvalidInputError(
            f"params.extra.mc_method must be 'generate' or 'loglikelihood', got {method!r}"
        )
    if "limit_samples" in merged:
        opts.limit = _number(merged["limit_samples"], "limit_samples", int, 0, MAX_LIMIT_SAMPLES)
    if "max_tokens" in merged:
        opts.max_tokens = _number(merged["max_tokens"], "max_tokens", int, 1)
    if "temperature" in merged:
        opts.temperature = _number(merged["temperature"], "temperature", float, 0)
    if extra.get("use_greedy") is True:
        opts.temperature = 0.0
    if "top_p" in merged:
        opts.top_p = _number(merged["top_p"], "top_p", float, 0)
    if "stop" in merged:
        stop = merged["stop"]
        stop_list = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop_list, list) or not all(isinstance(s, str) for s in stop_list):
            raise InvalidInputError("params.stop must be a string or a list of strings")
        opts.stop = stop_list
    for key in ("parallelism", "max_retries"):
        if key in merged:
            setattr(opts, key, _number(merged[key], key, int, 0 if key == "max_retries" else 1))
    if "request_timeout" in merged:
        opts.request_timeout = _number(merged["request_timeout"], "request_timeout", float, 0)
    if extra.get("num_fewshot") is not None:
        opts.num_fewshot = _number(extra["num_fewshot"], "extra.num_fewshot", int, 0)
    if extra.get("fewshot_seed") is not None:
        opts.fewshot_seed = _number(extra["fewshot_seed"], "extra.fewshot_seed", int)
    if extra.get("fewshot_sampler") is not None:
        if extra["fewshot_sampler"] not in ("random", "first_n"):
            raise InvalidInputError("params.extra.fewshot_sampler must be 'random' or 'first_n'")
        opts.fewshot_sampler = extra["fewshot_sampler"]
    if extra.get("n_samples") is not None:
        opts.n_samples = _number(extra["n_samples"], "extra.n_samples", int, 1, MAX_N_SAMPLES)
    if extra.get("sandbox_timeout") is not None:
        opts.sandbox_timeout = _number(extra["sandbox_timeout"], "extra.sandbox_timeout", float, 0.1)
    if extra.get("answer_regex") is not None:
        try:
            opts.answer_regex = re.compile(str(extra["answer_regex"]))
        except re.error as exc:
            raise InvalidInputError(
                f"params.extra.answer_regex {extra['answer_regex']!r} is not a valid regular expression "
                f"({exc}); give one whose first group (or whole match) is the answer"
            ) from exc
    if extra.get("system_prompt") is not None:
        opts.system_prompt = str(extra["system_prompt"])
    if extra.get("hf_token") is not None:
        opts.hf_token = str(extra["hf_token"])
    opts.sampling = {k: extra[k] for k in SAMPLING_EXTRA if extra.get(k) is not None}
    if dataset is not None:
        if isinstance(dataset, str):
            opts.files_url = dataset
        elif isinstance(dataset, Mapping) and isinstance(dataset.get("files_url"), str):
            opts.files_url = dataset["files_url"]
            opts.hf_endpoint = dataset.get("hf_endpoint")
            if dataset.get("limit") is not None:
                limit = _number(dataset["limit"], "dataset.limit", int, 0)
                opts.limit = limit if opts.limit is None else min(opts.limit, limit)
        else:
            raise InvalidInputError("a task's dataset must be an object with files_url")
    return opts


# ------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DataSource:
    """Where one split of a benchmark lives: ``local`` under the data directory, ``hub`` on the Hub."""

    local: str
    hub: str
    reader: Literal["rows", "lines"] = "rows"


def data_dir(settings: Settings) -> Path | None:
    """The configured benchmark data directory: settings first, then ``EVALSTACK_DATA_DIR``."""
    configured = getattr(settings, "benchmark_data_dir", None)
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else None


_FILE_SUFFIXES = (".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet", ".gz", ".txt")


def _looks_like_file(url: str) -> bool:
    tail = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return tail.lower().endswith(_FILE_SUFFIXES)


async def _read_lines(path: Path) -> list[str]:
    def read() -> list[str]:
        text = path.read_text(encoding="utf-8")  # split on newlines only: segments may hold U+2028
        lines = [line.removesuffix("\r") for line in text.split("\n")]
        return lines[:-1] if lines and lines[-1] == "" else lines

    return await asyncio.to_thread(read)


async def _load_local(path: Path, source: DataSource, settings: Settings) -> list[dict[str, Any]]:
    if source.reader == "lines":
        return [{"text": line} for line in await _read_lines(path)]
    roots = [*settings.data_roots, path.parent]
    trusted = settings.model_copy(update={"data_roots": roots})
    return await load_rows(str(path), settings=trusted)


async def load_split(
    bench: str, source: DataSource, opts: Options, settings: Settings, *, use_files_url: bool = True
) -> list[dict[str, Any]]:
    """The raw rows of one split (see the module docstring for the order); NotFoundError naming every
    place looked at and how to point elsewhere."""
    looked: list[str] = []
    if use_files_url and opts.files_url:
        url = opts.files_url
        # A data: URL is a whole file (no "://" either): never a folder to look into.
        is_local = url.startswith("file:") or ("://" not in url and not url.startswith("data:"))
        if is_local and not _looks_like_file(url):
            url = url.rstrip("/") + "/" + source.local
        if source.reader == "lines":
            if not is_local:
                raise InvalidInputError(
                    f"{bench}: dataset.files_url must name a local folder for this benchmark"
                )
            return [{"text": line} for line in await _read_lines(Path(url.removeprefix("file://")))]
        return await load_rows(url, settings=settings, hf_endpoint=opts.hf_endpoint, hf_token=opts.hf_token)
    directory = data_dir(settings)
    if directory is not None:
        path = directory / source.local
        if path.is_file():
            return await _load_local(path, source, settings)
        looked.append(str(path))
    try:
        return await load_rows(source.hub, settings=settings, hf_token=opts.hf_token)
    except EvalstackError as exc:
        looked.append(f"{source.hub} ({exc.message})")
    raise NotFoundError(
        f"{bench}: dataset not found; looked at: {'; '.join(looked)}. Point {DATA_DIR_ENV} (or the "
        f"benchmark_data_dir setting) at a folder holding {source.local}, give the task a dataset.files_url, "
        "or let the server reach the Hugging Face Hub (HF_ENDPOINT for a mirror)."
    )


class Memo:
    """Loads something once per plan, however many tasks ask for it."""

    def __init__(self, load: Callable[[], Awaitable[Any]]) -> None:
        self._load = load
        self._future: asyncio.Future[Any] | None = None

    async def get(self) -> Any:
        if self._future is None:
            self._future = asyncio.ensure_future(self._load())
        return await asyncio.shield(self._future)


# --------------------------------------------------------------------------------------- few-shot


def stable_seed(*parts: Any) -> int:
    """A seed that is the same in every process (``hash()`` is not)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def select_fewshot(
    pool: Sequence[dict[str, Any]],
    k: int,
    *,
    seed: int,
    key: str,
    sampler: str = "random",
    exclude: Callable[[dict[str, Any]], bool] | None = None,
) -> list[dict[str, Any]]:
    """``k`` examples from ``pool``: the first ``k`` (``first_n``) or a sample seeded by ``seed`` and
    the item's ``key`` (the same examples for the same item in every run), never the item itself."""
    if k <= 0 or not pool:
        return []
    candidates = [row for row in pool if exclude is None or not exclude(row)]
    if sampler == "first_n":
        return list(candidates[:k])
    rng = random.Random(stable_seed(seed, key))
    return rng.sample(candidates, min(k, len(candidates)))


# --------------------------------------------------------------------------------------- requests


def request_params(
    opts: Options, *, max_tokens: int, stop: list[str] | None, temperature: float = 0.0
) -> dict[str, Any]:
    """OpenAI request fields: the benchmark's defaults overridden by the config."""
    params: dict[str, Any] = {
        "max_tokens": opts.max_tokens if opts.max_tokens is not None else max_tokens,
        "temperature": opts.temperature if opts.temperature is not None else temperature,
    }
    if opts.top_p is not None:
        params["top_p"] = opts.top_p
    chosen_stop = opts.stop if opts.stop is not None else stop
    if chosen_stop:
        params["stop"] = chosen_stop[:4]
    params.update(opts.sampling)
    return params


def chat_request(
    opts: Options, turns: Sequence[tuple[str, str]], user: str, params: dict[str, Any]
) -> InferenceRequest:
    """A chat request: optional system prompt, few-shot turns (user, assistant), then the question."""
    messages: list[dict[str, Any]] = []
    if opts.system_prompt:
        messages.append({"role": "system", "content": opts.system_prompt})
    for question, answer in turns:
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": user})
    return InferenceRequest(kind="chat", messages=messages, params=params)


def completion_request(opts: Options, prompt: str, params: dict[str, Any]) -> InferenceRequest:
    """A completion request; a system prompt, if set, goes first followed by a blank line."""
    if opts.system_prompt:
        prompt = f"{opts.system_prompt}\n\n{prompt}"
    return InferenceRequest(kind="completion", prompt=prompt, params=params)
