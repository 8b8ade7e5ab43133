"""Secrets never leave the server: redaction of nested keys, lists and mixed case, and the results archive."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest

from evalstack.api.nemo.archive import REDACTED, job_log_lines, redact, results_zip
from evalstack.store.records import JobRecord, SampleRecord

SECRET = "sk-live-0123456789"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"api_key": SECRET}, {"api_key": REDACTED}),
        ({"API_KEY": SECRET, "Api_Key": SECRET}, {"API_KEY": REDACTED, "Api_Key": REDACTED}),
        ({"apikey": SECRET, "ApiKey": SECRET}, {"apikey": REDACTED, "ApiKey": REDACTED}),
        ({"api-key": SECRET, "Api-Key": SECRET}, {"api-key": REDACTED, "Api-Key": REDACTED}),
        ({"X-Api-Key": SECRET, "x_api_key": SECRET}, {"X-Api-Key": REDACTED, "x_api_key": REDACTED}),
        ({"hf_token": SECRET, "HF_TOKEN": SECRET}, {"hf_token": REDACTED, "HF_TOKEN": REDACTED}),
        ({"token": SECRET, "access_token": SECRET}, {"token": REDACTED, "access_token": REDACTED}),
        ({"Authorization": f"Bearer {SECRET}"}, {"Authorization": REDACTED}),
        ({"password": SECRET, "Secret": SECRET}, {"password": REDACTED, "Secret": REDACTED}),
        # nested in objects and lists, at any depth
        (
            {"target": {"model": {"api_endpoint": {"url": "http://m", "api_key": SECRET}}}},
            {"target": {"model": {"api_endpoint": {"url": "http://m", "api_key": REDACTED}}}},
        ),
        (
            {"judges": [{"name": "a", "api_key": SECRET}, [{"token": SECRET}], "plain"]},
            {"judges": [{"name": "a", "api_key": REDACTED}, [{"token": REDACTED}], "plain"]},
        ),
        ([{"api_key": SECRET}], [{"api_key": REDACTED}]),
        # a secret key holding an object is replaced whole
        ({"secret": {"nested": SECRET}}, {"secret": REDACTED}),
        # what is not a secret is kept as is, also keys that merely contain a secret word
        (
            {"max_tokens": 5, "tokenizer": "gpt2", "url": "http://m", "n": None, "ok": [1, 2.5, True]},
            {"max_tokens": 5, "tokenizer": "gpt2", "url": "http://m", "n": None, "ok": [1, 2.5, True]},
        ),
        # an empty secret has nothing to hide and stays visible as empty
        ({"api_key": "", "token": None}, {"api_key": "", "token": None}),
        ("plain text", "plain text"),
        (42, 42),
    ],
)
def test_redact(given: Any, expected: Any) -> None:
    original = json.loads(json.dumps(given))
    assert redact(given) == expected
    assert given == original  # the input is not changed


def archive_files(content: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


def test_the_results_archive_holds_no_secret_and_keeps_the_rest() -> None:
    config = {
        "type": "custom",
        "params": {"extra": {"hf_token": SECRET}},
        "tasks": {
            "qa": {
                "type": "chat-completion",
                "metrics": {
                    "judge": {
                        "type": "llm-judge",
                        "params": {"model": {"api_endpoint": {"url": "http://judge", "API_KEY": SECRET}}},
                    }
                },
            }
        },
    }
    target = {"type": "model", "model": {"api_endpoint": {"url": "http://m/v1", "api_key": SECRET}}}
    sample = SampleRecord(
        task="qa", index=0, item={"q": "hi"}, output_text="hello", scores={"judge": {"s": 1.0}}
    )
    job = JobRecord(id="eval-1", front="nemo", spec={"config": config, "target": target}, status="completed")
    content = results_zip(
        config=config,
        target=target,
        result={"tasks": {}},
        samples=[sample],
        log_lines=job_log_lines(job, [sample]),
    )
    files = archive_files(content)
    assert sorted(files) == [
        "config.json",
        "logs/evaluation.log",
        "results.json",
        "results/qa/results.json",
        "target.json",
    ]
    for name, text in files.items():
        assert SECRET not in text, name
    stored_config = json.loads(files["config.json"])
    assert stored_config["params"]["extra"]["hf_token"] == REDACTED
    judge_endpoint = stored_config["tasks"]["qa"]["metrics"]["judge"]["params"]["model"]["api_endpoint"]
    assert judge_endpoint == {"url": "http://judge", "API_KEY": REDACTED}
    assert json.loads(files["target.json"])["model"]["api_endpoint"] == {
        "url": "http://m/v1",
        "api_key": REDACTED,
    }
    assert json.loads(files["results/qa/results.json"])["qa"][0]["sample"]["output_text"] == "hello"
