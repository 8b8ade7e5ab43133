"""The download-results archive: everything a job produced, and none of the secrets its spec carried."""

from __future__ import annotations

import io
import json
import zipfile

from evalstack.api.nemo.archive import job_log_lines, results_zip
from evalstack.redaction import REDACTED
from evalstack.store.records import JobRecord, SampleRecord

SECRET = "sk-live-0123456789"


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
    job = JobRecord(
        id="eval-1",
        front="nemo",
        spec={"config": config, "target": target},
        status="completed",
        progress={"log": [f"2026-01-01 WARNING retrying http://m/v1?key={SECRET}"]},
        error=f"judge said 401 for Bearer {SECRET}",
    )
    failed = SampleRecord(task="qa", index=1, item={"q": "x"}, error=f"HTTP 401: bad key {SECRET}")
    content = results_zip(
        config=config,
        target=target,
        result={"tasks": {}},
        samples=[sample],
        log_lines=job_log_lines(job, [sample, failed]),
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
    log = files["logs/evaluation.log"]  # the lines that quoted the secret are kept, masked
    assert f"retrying http://m/v1?key={REDACTED}" in log
    assert f"sample 1: HTTP 401: bad key {REDACTED}" in log
    assert f"judge said 401 for Bearer {REDACTED}" in log
