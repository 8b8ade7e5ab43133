"""lm-eval's API model classes as our request builder: the same tokens, payloads and parsing, our transport.

lm-eval's ``local-completions`` and ``local-chat-completions`` models decide how a request looks:
tokenisation (the tokenizer the config names, trailing spaces of a context moved to the
continuation, left truncation to ``max_length``), the payload (``max_tokens`` from ``max_gen_toks``,
the EOS string added to ``stop``, ``seed``), and how a response is read (the continuation's
log-likelihood is the sum of the echoed ``token_logprobs[ctxlen:-1]``). We instantiate those very
classes and use their methods, so a request is byte for byte what lm-eval would send; the request
itself goes through our HTTP client (concurrency, retries, store, resume).

One lm-eval request may take several HTTP requests: a ``loglikelihood_rolling`` request (perplexity)
is cut into disjoint windows of at most ``max_length`` tokens by lm-eval's own window utilities, one
completion each, and its value is the sum of the windows' log-likelihoods, as ``local-completions``
computes it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Literal

from evalstack.engine.lm_eval.importing import import_lm_eval
from evalstack.errors import InvalidInputError
from evalstack.inference.base import InferenceRequest, InferenceResult

EndpointKind = Literal["chat", "completion"]


@dataclass(frozen=True)
class ModelSettings:
    """The lm-eval model arguments a job sets (``--model_args`` of lm-eval's command line)."""

    endpoint: EndpointKind
    model: str
    tokenizer: str | None = None
    max_length: int = 2048
    max_gen_toks: int = 256
    seed: int = 1234
    add_bos_token: bool = False
    eos_string: str | None = None


@dataclass
class PreparedRequest:
    """One lm-eval request as we send it, and what reading its answer needs (``ctxlen``, the tokens)."""

    request_type: str
    inference: InferenceRequest
    ctxlen: int | None = None
    tokens: list[int] | None = None


def _load_model(settings: ModelSettings) -> Any:
    """lm-eval's model object for ``settings`` (no request is sent; a tokenizer may be loaded)."""
    import_lm_eval()
    from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI

    common: dict[str, Any] = {
        "model": settings.model,
        "base_url": "http://unused.invalid/v1",
        "max_length": settings.max_length,
        "max_gen_toks": settings.max_gen_toks,
        "seed": settings.seed,
        "eos_string": settings.eos_string,
    }
    if settings.endpoint == "chat":
        return LocalChatCompletion(**common)
    if not settings.tokenizer:
        raise InvalidInputError(
            "lm-eval tasks on a completions endpoint need a tokenizer (as lm-eval's local-completions does): "
            "set params.extra.tokenizer to a Hugging Face tokenizer name or a local folder"
        )
    try:
        return LocalCompletionsAPI(
            tokenizer=settings.tokenizer,
            tokenizer_backend="huggingface",
            add_bos_token=settings.add_bos_token,
            **common,
        )
    except (OSError, ValueError) as exc:
        raise InvalidInputError(
            f"params.extra.tokenizer {settings.tokenizer!r} could not be loaded ({exc}); name a Hugging Face "
            "tokenizer (the Hub or its offline cache) or a local folder holding tokenizer files"
        ) from exc


class LmEvalModel:
    """Turns lm-eval ``Instance`` arguments into our requests and our responses into lm-eval results."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.lm = _load_model(settings)

    @property
    def chat_template(self) -> Any:
        """The ``chat_template`` of ``build_all_requests``: lm-eval passes ``lm.apply_chat_template``."""
        return self.lm.apply_chat_template

    @property
    def tokenizer_name(self) -> str:
        return str(self.lm.tokenizer_name)

    def prepare(self, request_type: str, arguments: tuple[Any, ...]) -> list[PreparedRequest]:
        """The requests lm-eval would send for one ``Instance`` (``request_type``, ``arguments``).

        One request, except for ``loglikelihood_rolling``: one per window. :meth:`combine` makes the
        instance's value of their answers.
        """
        if request_type == "generate_until":
            return [self._generate(arguments)]
        if request_type == "loglikelihood":
            self._refuse_chat_loglikelihood()
            context, continuation = arguments
            return [self._loglikelihood(*self._encode_pair(context, continuation))]
        if request_type == "loglikelihood_rolling":
            self._refuse_chat_loglikelihood()
            return self._rolling(arguments[0])
        raise InvalidInputError(
            f"lm-eval request type {request_type!r} is not supported on the engine; supported: "
            "generate_until, loglikelihood (multiple_choice), loglikelihood_rolling"
        )

    @staticmethod
    def combine(request_type: str, values: list[Any]) -> Any:
        """An instance's value from the values :meth:`read` gave for its requests."""
        if request_type == "loglikelihood_rolling":
            return sum(value[0] for value in values)  # in window order, the is_greedy flags dropped
        (value,) = values
        return value

    def _generate(self, arguments: tuple[Any, ...]) -> PreparedRequest:
        context, gen_kwargs = arguments[0], arguments[1]
        if len(arguments) > 2:
            raise InvalidInputError("multimodal lm-eval tasks are not supported")
        lm = self.lm
        if lm.tokenized_requests:
            encoding = lm.tok_encode([context], add_special_tokens=lm.add_bos_token)[0]
            max_gen_toks = gen_kwargs.get("max_gen_toks", lm._max_gen_toks)
            message: Any = encoding[-(lm.max_length - max_gen_toks) :]
        else:
            message = context
        payload = lm._create_payload(
            lm.create_message([message], generate=True),
            generate=True,
            gen_kwargs=copy.deepcopy(gen_kwargs),
            seed=lm._seed,
            eos=lm.eos_string,
        )
        return PreparedRequest("generate_until", self._inference(payload))

    def _refuse_chat_loglikelihood(self) -> None:
        if self.settings.endpoint == "chat":
            raise InvalidInputError(
                "log-likelihood (loglikelihood, multiple_choice and loglikelihood_rolling tasks) needs a "
                "completions endpoint that echoes prompt logprobs; chat endpoints cannot score a given "
                "text (lm-eval refuses it too): set params.extra.endpoint_type to 'completions' and name a "
                "tokenizer"
            )

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        lm = self.lm
        if context == "":
            continuation_enc = lm.tok_encode(continuation, add_special_tokens=False)
            if lm.prefix_token_id != continuation_enc[0]:
                return [lm.prefix_token_id], continuation_enc
            return continuation_enc[:1], continuation_enc[1:]
        context_enc, continuation_enc = lm._encode_pair(context, continuation)
        return context_enc, continuation_enc

    def _rolling(self, text: str) -> list[PreparedRequest]:
        """lm-eval's disjoint rolling windows over ``text``: ``max_length`` tokens each, one of context."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        lm = self.lm
        windows = get_rolling_token_windows(
            token_list=lm.tok_encode(text),
            prefix_token=lm.prefix_token_id,
            max_seq_len=lm.max_length - 1,
            context_len=1,
        )
        return [self._loglikelihood(*make_disjoint_window(window)) for window in windows]

    def _loglikelihood(self, context_enc: list[int], continuation_enc: list[int]) -> PreparedRequest:
        lm = self.lm
        inputs, ctxlens, _ = lm.batch_loglikelihood_requests([[(None, context_enc, continuation_enc)]])
        payload = lm._create_payload(lm.create_message(inputs, generate=False), generate=False, seed=lm._seed)
        return PreparedRequest("loglikelihood", self._inference(payload), ctxlen=ctxlens[0], tokens=inputs[0])

    def _inference(self, payload: dict[str, Any]) -> InferenceRequest:
        params = {k: v for k, v in payload.items() if k not in ("model", "messages", "prompt")}
        if "messages" in payload:
            return InferenceRequest(kind="chat", messages=payload["messages"], params=params)
        return InferenceRequest(kind="completion", prompt=payload["prompt"], params=params)

    def read(self, prepared: PreparedRequest, result: InferenceResult) -> Any:
        """lm-eval's reading of one answer: the generated text, or ``(loglikelihood, is_greedy)``."""
        body = result.raw
        try:
            if prepared.request_type == "loglikelihood":
                parsed = self.lm.parse_logprobs(
                    outputs=body, tokens=[prepared.tokens], ctxlens=[prepared.ctxlen]
                )
            else:
                parsed = self.lm.parse_generations(outputs=body)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            what = "echoed prompt logprobs" if prepared.request_type == "loglikelihood" else "a generation"
            raise InvalidInputError(
                f"the endpoint's answer has no {what} where lm-eval reads it ({type(exc).__name__}: {exc}); "
                f"answer: {json.dumps(body)[:300]}"
            ) from exc
        if not parsed:
            raise InvalidInputError("the endpoint's answer has no choices")
        value = parsed[0]
        if value is None:
            from lm_eval.models.api_models import LMEVAL_MODEL_NONE_ANSWER_PLACEHOLDER

            return LMEVAL_MODEL_NONE_ANSWER_PLACEHOLDER
        return value
