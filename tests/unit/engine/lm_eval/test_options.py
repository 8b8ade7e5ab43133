"""NeMo-style params map onto lm-eval's settings; bad ones get a clear error naming what is accepted."""

from __future__ import annotations

import pytest

from evalstack.engine.lm_eval.model import LmEvalModel, ModelSettings
from evalstack.engine.lm_eval.options import parse_options
from evalstack.errors import InvalidInputError
from evalstack.inference.base import ModelEndpoint
from evalstack.local_run import lm_eval_document

ENDPOINT = ModelEndpoint(kind="openai", model="org/model", base_url="http://127.0.0.1:9/v1")


def test_params_become_gen_kwargs_limit_and_model_arguments() -> None:
    params = {
        "limit_samples": 50,
        "max_tokens": 512,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": "\n\n",
        "parallelism": 32,
        "extra": {
            "num_fewshot": 3,
            "tokenizer": "gpt2",
            "include_path": "tasks",
            "fewshot_as_multiturn": False,
        },
    }
    options = parse_options(["gsm8k"], ENDPOINT, [params])
    assert (
        options.tasks.limit == 50 and options.tasks.num_fewshot == 3 and options.tasks.include_path == "tasks"
    )
    assert dict(options.tasks.gen_kwargs) == {
        "max_gen_toks": 512,
        "temperature": 0.5,
        "top_p": 0.9,
        "until": ["\n\n"],
    }
    assert options.tasks.apply_chat_template is False and options.tasks.fewshot_as_multiturn is False
    assert options.model.endpoint == "completion" and options.model.tokenizer == "gpt2"
    assert options.parallelism == 32


def test_task_params_override_config_params() -> None:
    options = parse_options(
        ["x"], ENDPOINT, [{"max_tokens": 10, "extra": {"num_fewshot": 1}}, {"max_tokens": 20}]
    )
    assert dict(options.tasks.gen_kwargs) == {"max_gen_toks": 20} and options.tasks.num_fewshot == 1


def test_a_completions_endpoint_defaults_its_tokenizer_to_the_model_name_as_lm_eval_does() -> None:
    assert parse_options(["x"], ENDPOINT, []).model.tokenizer == "org/model"


def test_a_chat_endpoint_applies_the_chat_template_and_needs_no_tokenizer() -> None:
    options = parse_options(["x"], ENDPOINT, [{"extra": {"endpoint_type": "chat", "tokenizer": "gpt2"}}])
    assert options.model.endpoint == "chat" and options.model.tokenizer is None
    assert options.tasks.apply_chat_template is True
    chat_url = ModelEndpoint(kind="openai", model="m", base_url="http://h/v1/chat/completions")
    assert parse_options(["x"], chat_url, []).model.endpoint == "chat"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"extra": {"num_shots": 5}},
            "unknown params.extra key(s) 'num_shots' for an lm-eval task; accepted: num_fewshot",
        ),
        ({"max_new_tokens": 5}, "unknown params key(s) 'max_new_tokens'; accepted: parallelism"),
        ({"limit_samples": 0}, "params.limit_samples must be an integer of at least 1, got 0"),
        ({"extra": {"endpoint_type": "rpc"}}, "params.extra.endpoint_type must be 'chat' or 'completions'"),
        ({"extra": {"endpoint_type": "chat", "apply_chat_template": False}}, "apply_chat_template cannot be"),
        ({"stop": 3}, "params.stop must be a string or a list of strings"),
    ],
)
def test_bad_params_name_what_is_wrong_and_what_is_accepted(params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_options(["x"], ENDPOINT, [params])
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("request_type", "arguments"),
    [("loglikelihood", ("Question: 1+1?\nAnswer:", " 2")), ("loglikelihood_rolling", ("A whole page.",))],
)
def test_loglikelihood_on_a_chat_endpoint_is_refused_with_the_way_out(
    request_type: str, arguments: tuple[str, ...]
) -> None:
    model = LmEvalModel(ModelSettings(endpoint="chat", model="m"))
    with pytest.raises(InvalidInputError) as caught:
        model.prepare(request_type, arguments)
    assert "needs a completions endpoint" in caught.value.message
    assert "endpoint_type to 'completions'" in caught.value.message


def test_a_completions_endpoint_without_a_tokenizer_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="need a tokenizer"):
        LmEvalModel(ModelSettings(endpoint="completion", model=""))


def test_chat_generation_requests_are_lm_eval_payloads() -> None:
    from lm_eval.models.api_models import JsonChatStr

    model = LmEvalModel(ModelSettings(endpoint="chat", model="m"))
    context = JsonChatStr('[{"role": "user", "content": "2+2?"}]')
    prepared = model.prepare(
        "generate_until", (context, {"until": ["Q:"], "max_gen_toks": 7, "do_sample": False})
    )
    (only,) = prepared
    request = only.inference
    assert request.kind == "chat" and request.messages == [{"role": "user", "content": "2+2?"}]
    assert request.params == {"max_tokens": 7, "temperature": 0, "stop": ["Q:"], "seed": 1234}


def test_cli_reference_becomes_an_lm_eval_config() -> None:
    config = lm_eval_document(
        "lm-eval:gsm8k,arc_easy", ["num_fewshot=5", "apply_chat_template=true", "tokenizer=gpt2"]
    )
    assert config == {
        "type": "lm-eval",
        "tasks": {"gsm8k": {"type": "gsm8k"}, "arc_easy": {"type": "arc_easy"}},
        "params": {"extra": {"num_fewshot": 5, "apply_chat_template": True, "tokenizer": "gpt2"}},
    }
    with pytest.raises(InvalidInputError, match="KEY=VALUE"):
        lm_eval_document("lm-eval:gsm8k", ["num_fewshot"])
    with pytest.raises(InvalidInputError, match="needs a task"):
        lm_eval_document("lm-eval:", [])
