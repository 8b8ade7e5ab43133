"""Make the README's viewer screenshots: two MMLU runs on two fake models, the job and compare pages.

    python docs/screenshots.py [--limit 10]

Needs the MMLU data (``../shared/data/mmlu/test.jsonl``, or ``EVALSTACK_DATA_DIR``), a system
Chromium and the dev extra (playwright). Model A answers right about 55% of the time, model B
about 62%, decided by a hash of the question, so both runs see the same items and pair up.
Writes ``docs/viewer-job.png`` and ``docs/viewer-compare.png``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.fakes.browser import chromium  # noqa: E402
from tests.fakes.model_server import FakeModelServer  # noqa: E402
from tests.fakes.serving import BackgroundServer, free_port  # noqa: E402

from evalstack.config import Settings  # noqa: E402
from evalstack.server import create_app  # noqa: E402

DATA = Path(os.environ.get("EVALSTACK_DATA_DIR") or REPO.parent / "shared" / "data")


def load_answers() -> dict[str, str]:
    answers = {}
    for line in (DATA / "mmlu" / "test.jsonl").read_text(encoding="utf-8").split("\n"):
        if line.strip():
            row = json.loads(line)
            answers[row["question"].strip()[:200]] = row["answer"]
    return answers


def model(answers: dict[str, str], skill: float, seed: str) -> object:
    def answer(prompt: str) -> str:
        block = prompt.rsplit("\n\n", 1)[-1] if "\nA. " in prompt.rsplit("\n\n", 1)[-1] else prompt
        question = block.split("\nA. ")[0].strip()
        gold = next((a for q, a in answers.items() if question.endswith(q[:120])), "A")
        roll = int(hashlib.sha256((seed + question).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        if roll < skill:
            return gold if roll < skill / 2 else f"The answer is ({gold})."
        wrong = "ABCD"[(int(roll * 1000) + 1) % 4]
        return f"The answer is ({wrong})." if roll < 0.93 else "I am not sure."

    return answer


def run(client: httpx.Client, fake: FakeModelServer, name: str, limit: int) -> str:
    target = {
        "type": "model",
        "model": {"api_endpoint": {"url": f"{fake.base_url}/chat/completions", "model_id": name}},
    }
    config = {"type": "mmlu", "name": "mmlu", "params": {"limit_samples": limit, "parallelism": 32}}
    job_id = str(client.post("/v1/evaluation/jobs", json={"config": config, "target": target}).json()["id"])
    while client.get(f"/v1/evaluation/jobs/{job_id}").json()["status"] in ("created", "pending", "running"):
        time.sleep(0.5)
    return job_id


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=10, help="questions per subject")
    args = parser.parse_args()
    answers = load_answers()
    os.environ.setdefault("EVALSTACK_DATA_DIR", str(DATA))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = Path(tempfile.mkdtemp())
    settings = Settings(data_dir=folder, embedded_model=False, data_roots=[folder, DATA])
    with (
        FakeModelServer(answer=model(answers, 0.55, "a")) as model_a,
        FakeModelServer(answer=model(answers, 0.62, "b")) as model_b,
        BackgroundServer(create_app(settings), free_port(), start_timeout=30) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        baseline = run(client, model_a, "llama-3.1-8b-ckpt-1000", args.limit)
        candidate = run(client, model_b, "llama-3.1-8b-ckpt-2000", args.limit)
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1180, "height": 900}, device_scale_factor=1)
            page.goto(f"{server.url}/ui/jobs/{baseline}")
            page.screenshot(
                path=str(REPO / "docs" / "viewer-job.png"),
                clip={"x": 0, "y": 0, "width": 1180, "height": 900},
            )
            page.goto(f"{server.url}/ui/compare?baseline={baseline}&candidate={candidate}")
            page.screenshot(
                path=str(REPO / "docs" / "viewer-compare.png"),
                clip={"x": 0, "y": 0, "width": 1180, "height": 900},
            )
    print("wrote docs/viewer-job.png and docs/viewer-compare.png")


if __name__ == "__main__":
    main()
