"""End to end: ``evalstack run`` as a user runs it, in a subprocess, against our fake model server.

Each run gets its own working directory, data directory and ``--db sqlite:///...`` file. The fake
model answers from a table written here, so every expected score is computed in the test from the
same table (BLEU with sacrebleu called directly), never read back from evalstack.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sacrebleu
import yaml
from tests.fakes import squares
from tests.fakes.model_server import FakeModelServer
from tests.fakes.serving import free_port

from evalstack.benchmark_file import parse_benchmark_file, read_document
from evalstack.store.repository import Store

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_FILE = REPO_ROOT / "examples" / "demo.yaml"
RUN_TIMEOUT = 60.0

# ---- the fake model's answers --------------------------------------------------------------------

CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Peru", "Lima"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
]


def capital_question(country: str) -> str:
    return f"What is the capital of {country}?"


def capital_reply(index: int, capital: str) -> str:
    """Terse and right, wordy and right, or lost, by position."""
    return [capital, f"The capital is {capital}.", "I am not sure."][index % 3]


CAPITAL_ROWS = [
    {"input_query": capital_question(country), "expected_answer": capital} for country, capital in CAPITALS
]

QA_ROWS = [
    {"question": "What colour is a clear sky?", "answer": "A clear sky is blue during the day."},
    {"question": "How many legs does a spider have?", "answer": "A spider has eight legs."},
    {"question": "Which planet is the largest?", "answer": "Jupiter is the largest planet."},
    {"question": "What do bees make?", "answer": "Bees make honey from nectar."},
    {"question": "Where do penguins live?", "answer": "Penguins live in the southern hemisphere."},
]
QA_REPLIES = {
    QA_ROWS[0]["question"]: "A clear sky is blue during the day.",  # exact
    QA_ROWS[1]["question"]: "  A spider has eight legs.\n",  # exact once trimmed
    QA_ROWS[2]["question"]: "Jupiter is the biggest planet.",  # close
    QA_ROWS[3]["question"]: "Bees make honey.",  # partial
    QA_ROWS[4]["question"]: "zzz qqq",  # nothing in common
}

REPLIES: dict[str, str] = {
    **{capital_question(country): capital_reply(i, capital) for i, (country, capital) in enumerate(CAPITALS)},
    **QA_REPLIES,
}
UNKNOWN_REPLY = "I do not know."


def reply(prompt: str) -> str:
    return REPLIES.get(prompt.strip(), UNKNOWN_REPLY)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def expected_accuracy(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Accuracy of basic::equality and basic::subset_of on ``rows``, from their definitions."""
    pairs = [(reply(row["input_query"]), row["expected_answer"]) for row in rows]
    return {
        "basic::equality": mean([float(generated == expected) for generated, expected in pairs]),
        "basic::subset_of": mean([float(expected in generated) for generated, expected in pairs]),
    }


# ---- running the command --------------------------------------------------------------------------


def evalstack_command() -> list[str]:
    """The installed ``evalstack`` script next to this interpreter, else ``python -m evalstack.cli``."""
    script = Path(sys.executable).parent / "evalstack"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "evalstack.cli"]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def table(self) -> list[list[str]]:
        """The body rows of the closing rich table, as stripped cells."""
        return [
            [cell.strip() for cell in line.strip().strip("│").split("│")]
            for line in self.stdout.splitlines()
            if line.strip().startswith("│")
        ]

    def value(self, source: str, metric: str) -> float:
        """The ``value`` cell of the table line for ``source`` and ``metric``."""
        found = [row for row in self.table() if row[:2] == [source, metric]]
        assert len(found) == 1, f"no single table line {source} / {metric} in:\n{self.stdout}"
        return float(found[0][2])


@dataclass
class Workspace:
    root: Path
    cwd: Path
    db_path: Path

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.db_path}"

    def run(
        self, *args: str, db: bool = True, command: str = "run", env_extra: dict[str, str] | None = None
    ) -> Run:
        """``evalstack <command> *args`` in this workspace (``--db`` added unless ``db=False``)."""
        env = {
            **os.environ,
            "EVALSTACK_DATA_HOME": str(self.root / "home"),
            "HF_HUB_OFFLINE": "1",
            "COLUMNS": "200",
            "PYTHONIOENCODING": "utf-8",
        }
        for name in ("NVIDIA_EVALUATOR_URL", "EVALSTACK_DB_URL", "HF_ENDPOINT"):
            env.pop(name, None)
        env.update(env_extra or {})
        argv = [*evalstack_command(), *command.split(), *args]
        if db:
            argv += ["--db", self.db_url]
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=self.cwd, timeout=RUN_TIMEOUT
        )
        return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeModelServer]:
    with FakeModelServer(answer=reply, model_id="table-model") as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeModelServer) -> FakeModelServer:
    fake_server.reset_stats()
    return fake_server


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    cwd = tmp_path / "work"
    cwd.mkdir()
    return Workspace(root=tmp_path, cwd=cwd, db_path=tmp_path / "x.db")


def model_url(fake: FakeModelServer) -> str:
    return f"{fake.base_url}#{fake.model_id}"


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def stored_job(db_url: str, job_id: str) -> Any:
    async def read() -> Any:
        store = Store(db_url)
        await store.open()
        try:
            return await store.get_job(job_id), await store.count_samples(job_id)
        finally:
            await store.close()

    return asyncio.run(read())


# ---- (a) our benchmark format, inline rows ------------------------------------------------------------


@pytest.mark.slow
def test_inline_rows_print_the_accuracy_of_each_scoring_function(
    ws: Workspace, fake: FakeModelServer
) -> None:
    bench = ws.cwd / "capitals.yaml"
    bench.write_text(
        yaml.safe_dump(
            {
                "benchmark_id": "capitals",
                "dataset": {"rows": CAPITAL_ROWS},
                "scoring_functions": ["basic::equality", "basic::subset_of"],
                "sampling_params": {"strategy": {"type": "greedy"}, "max_tokens": 16},
                "system_message": "Answer briefly.",
            }
        ),
        encoding="utf-8",
    )
    out = ws.cwd / "results.json"
    run = ws.run("capitals.yaml", "--model", model_url(fake), "--output", str(out))
    assert run.returncode == 0, run.stdout + run.stderr

    replies = [reply(row["input_query"]) for row in CAPITAL_ROWS]
    expected = expected_accuracy(CAPITAL_ROWS)
    assert 0 < expected["basic::equality"] < expected["basic::subset_of"] < 1  # the rule tells them apart
    for fn_id, accuracy in expected.items():
        assert run.value(fn_id, "accuracy") == pytest.approx(accuracy, abs=1e-4)

    # Every row was asked once, with the file's system message and sampling parameters.
    assert sorted(fake.paths) == ["/v1/chat/completions"] * len(CAPITAL_ROWS)
    for body in fake.requests:
        assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
        assert body["max_tokens"] == 16
        assert body["model"] == fake.model_id
    assert sorted(body["messages"][-1]["content"] for body in fake.requests) == sorted(
        row["input_query"] for row in CAPITAL_ROWS
    )

    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["status"] == "completed"
    assert [g["generated_answer"] for g in document["result"]["generations"]] == replies
    for fn_id, accuracy in expected.items():
        scored = document["result"]["scores"][fn_id]
        assert scored["aggregated_results"]["accuracy"]["accuracy"] == pytest.approx(accuracy)
        assert len(scored["score_rows"]) == len(CAPITAL_ROWS)
        (line,) = [s for s in document["summary"] if s["source"] == fn_id and s["metric"] == "accuracy"]
        assert line["value"] == pytest.approx(accuracy)
        assert line["count"] == len(CAPITAL_ROWS)

    # The run went through the store named by --db: the job and its samples are there.
    job, samples = stored_job(ws.db_url, document["job_id"])
    assert job is not None and job.status == "completed"
    assert samples == len(CAPITAL_ROWS)


# ---- (b) a JSONL file beside the benchmark file, and --limit ----------------------------------------


@pytest.mark.slow
def test_dataset_path_beside_the_file_and_limit(ws: Workspace, fake: FakeModelServer) -> None:
    folder = ws.root / "bench"
    write_jsonl(folder / "capitals.jsonl", CAPITAL_ROWS)
    (folder / "capitals.json").write_text(
        json.dumps(
            {
                "dataset": {"path": "capitals.jsonl"},
                "scoring_functions": {"basic::subset_of": None},
                "num_examples": 5,
            }
        ),
        encoding="utf-8",
    )
    out = ws.cwd / "out.json"
    # Run from another folder: the path is relative to the benchmark file, not the working directory.
    run = ws.run(str(folder / "capitals.json"), "--model", model_url(fake), "--limit", "2", "-o", str(out))
    assert run.returncode == 0, run.stdout + run.stderr

    assert len(fake.requests) == 2  # --limit wins over num_examples
    asked = sorted(body["messages"][-1]["content"] for body in fake.requests)
    assert asked == sorted(row["input_query"] for row in CAPITAL_ROWS[:2])
    accuracy = expected_accuracy(CAPITAL_ROWS[:2])["basic::subset_of"]
    assert run.value("basic::subset_of", "accuracy") == pytest.approx(accuracy, abs=1e-4)
    document = json.loads(out.read_text(encoding="utf-8"))
    assert len(document["result"]["generations"]) == 2
    aggregated = document["result"]["scores"]["basic::subset_of"]["aggregated_results"]
    assert aggregated["accuracy"]["num_total"] == 2


# ---- (c) a NeMo Evaluator custom config, JSON and YAML ------------------------------------------------


def nemo_config(files_url: str) -> dict[str, Any]:
    return {
        "type": "custom",
        "params": {"parallelism": 4},
        "tasks": {
            "qa": {
                "type": "chat-completion",
                "params": {
                    "template": {
                        "messages": [
                            {"role": "system", "content": "Answer in one sentence."},
                            {"role": "user", "content": "{{item.question}}"},
                        ]
                    },
                    "max_tokens": 40,
                },
                "dataset": {"files_url": files_url},
                "metrics": {
                    "match": {
                        "type": "string-check",
                        "params": {"check": ["{{sample.output_text | trim}}", "equals", "{{item.answer}}"]},
                    },
                    "bleu": {"type": "bleu", "params": {"references": ["{{answer}}"]}},
                },
            }
        },
    }


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["json", "yaml"])
def test_nemo_config_prints_each_task_metric_and_score(
    ws: Workspace, fake: FakeModelServer, suffix: str
) -> None:
    folder = ws.root / "nemo"
    write_jsonl(folder / "qa.jsonl", QA_ROWS)
    config = nemo_config("qa.jsonl")
    path = folder / f"config.{suffix}"
    path.write_text(json.dumps(config) if suffix == "json" else yaml.safe_dump(config), encoding="utf-8")
    out = ws.cwd / "out.json"
    run = ws.run(str(path), "--model", model_url(fake), "--output", str(out))
    assert run.returncode == 0, run.stdout + run.stderr

    hypotheses = [reply(row["question"]) for row in QA_ROWS]
    references = [row["answer"] for row in QA_ROWS]
    pairs = list(zip(hypotheses, references, strict=True))
    match = mean([float(h.strip() == r) for h, r in pairs])
    sentence = mean([sacrebleu.sentence_bleu(h, [r]).score for h, r in pairs])
    corpus = sacrebleu.corpus_bleu(hypotheses, [references]).score
    assert 0 < match < 1 and 0 < sentence < 100 and 0 < corpus < 100  # not a degenerate case

    assert run.value("task qa", "match.string-check") == pytest.approx(match, abs=1e-4)
    assert run.value("task qa", "bleu.sentence") == pytest.approx(sentence, abs=1e-4)
    assert run.value("task qa", "bleu.corpus") == pytest.approx(corpus, abs=1e-4)

    assert len(fake.requests) == len(QA_ROWS)
    for body in fake.requests:
        assert body["messages"][0] == {"role": "system", "content": "Answer in one sentence."}
        assert body["max_tokens"] == 40

    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["status"] == "completed"
    metrics = document["result"]["tasks"]["qa"]["metrics"]
    assert metrics["match"]["scores"]["string-check"]["value"] == pytest.approx(match)
    assert metrics["bleu"]["scores"]["sentence"]["value"] == pytest.approx(sentence)
    assert metrics["bleu"]["scores"]["corpus"]["value"] == pytest.approx(corpus)
    assert metrics["match"]["scores"]["string-check"]["stats"]["count"] == len(QA_ROWS)


# ---- (d) bad input ------------------------------------------------------------------------------------


def write_bench(ws: Workspace, name: str, text: str) -> str:
    (ws.cwd / name).write_text(text, encoding="utf-8")
    return name


GOOD_DATASET = 'dataset: {rows: [{input_query: "What is the capital of France?", expected_answer: Paris}]}\n'


@pytest.mark.slow
def test_unknown_key_names_the_key_and_the_accepted_keys(ws: Workspace, fake: FakeModelServer) -> None:
    name = write_bench(ws, "typo.yaml", GOOD_DATASET + "scoring_fns: [basic::equality]\n")
    run = ws.run(name, "--model", model_url(fake))
    assert run.returncode == 2, run.stdout + run.stderr
    assert "scoring_fns" in run.stderr
    for key in (
        "benchmark_id",
        "dataset",
        "scoring_functions",
        "sampling_params",
        "system_message",
        "num_examples",
        "parallelism",
    ):
        assert key in run.stderr, run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert fake.requests == []


@pytest.mark.slow
def test_unknown_nested_keys_name_the_keys_accepted_there(ws: Workspace, fake: FakeModelServer) -> None:
    name = write_bench(
        ws,
        "nested.yaml",
        "dataset: {rowz: [{input_query: q, expected_answer: a}]}\n"
        "scoring_functions: [basic::equality]\n"
        "sampling_params: {temperature: 0.7, max_tokens: 8}\n",
    )
    run = ws.run(name, "--model", model_url(fake))
    assert run.returncode == 2, run.stdout + run.stderr
    # Each wrong key is named with what is accepted at its own level.
    assert "dataset.rowz" in run.stderr and "rows, path, uri" in run.stderr, run.stderr
    assert "temperature" in run.stderr and "max_tokens" in run.stderr and "strategy" in run.stderr, run.stderr
    assert fake.requests == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("broken.yaml", "dataset: [unclosed\n  : : {\n", "broken.yaml is not valid YAML"),
        ("broken.json", '{"dataset": {"rows": []},}', "broken.json is not valid JSON"),
        ("list.yaml", "- a\n- b\n", "must hold a mapping at the top level"),
    ],
)
def test_a_file_that_is_not_a_benchmark_is_refused(
    ws: Workspace, fake: FakeModelServer, name: str, text: str, message: str
) -> None:
    run = ws.run(write_bench(ws, name, text), "--model", model_url(fake))
    assert run.returncode == 2, run.stdout + run.stderr
    assert message in run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert fake.requests == []


@pytest.mark.slow
def test_unknown_model_name_is_a_clear_error(ws: Workspace, fake: FakeModelServer) -> None:
    name = write_bench(ws, "one.yaml", GOOD_DATASET + "scoring_functions: [basic::equality]\n")
    run = ws.run(name, "--model", "no-such-model")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Model 'no-such-model' not found" in run.stderr
    assert "evalstack models" in run.stderr
    assert "Traceback" not in run.stdout + run.stderr


@pytest.mark.slow
def test_unknown_scoring_function_is_rejected_before_any_job(ws: Workspace, fake: FakeModelServer) -> None:
    name = write_bench(ws, "one.yaml", GOOD_DATASET + "scoring_functions: [basic::no-such-function]\n")
    run = ws.run(name, "--model", fake.base_url)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "basic::no-such-function" in run.stderr
    assert "basic::equality" in run.stderr  # the message lists what exists
    assert "Traceback" not in run.stdout + run.stderr
    assert fake.requests == []


@pytest.mark.slow
def test_model_url_nobody_listens_on_fails_the_job_after_max_outage_with_the_url(ws: Workspace) -> None:
    port = free_port()  # nothing listens there
    write_jsonl(ws.cwd / "qa.jsonl", QA_ROWS[:2])
    config = nemo_config("qa.jsonl")
    config["params"]["max_retries"] = 0  # fail fast; retries are tested elsewhere
    (ws.cwd / "down.json").write_text(json.dumps(config), encoding="utf-8")
    out = ws.cwd / "out.json"
    model = f"http://127.0.0.1:{port}/v1#m"
    started = time.monotonic()
    run = ws.run("down.json", "--model", model, "--output", str(out), "--max-outage", "2")
    assert time.monotonic() - started < 2 + 15  # the interpreter's start-up, then two seconds of waiting
    assert run.returncode == 1, run.stdout + run.stderr
    assert "failed" in run.stderr and f"127.0.0.1:{port}" in run.stderr, run.stderr
    assert "max_outage is 2.0s" in run.stderr and "resume" in run.stderr, run.stderr
    assert f"Model endpoint http://127.0.0.1:{port}/v1 is unreachable" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["status"] == "failed"
    assert f"127.0.0.1:{port}" in document["error"]
    assert document["progress"]["task_status"] == {"qa": "failed"}
    # The failed job is recorded; its samples were never answered, so none is recorded as an error.
    job, samples = stored_job(ws.db_url, document["job_id"])
    assert job is not None and job.status == "failed"
    assert samples == 0


# ---- (e) the shipped demo benchmark -------------------------------------------------------------------


def test_demo_benchmark_parses_and_validates() -> None:
    spec = parse_benchmark_file(read_document(DEMO_FILE), DEMO_FILE)
    assert spec.dataset.rows is not None and len(spec.dataset.rows) >= 24  # a few dozen
    for row in spec.dataset.rows:
        assert isinstance(row.get("input_query"), str) and row["input_query"].strip(), row
        assert isinstance(row.get("expected_answer"), str) and row["expected_answer"].strip(), row
    assert list(spec.scoring_params()) == ["basic::subset_of"]  # a metric the embedded model can meet
    assert spec.sampling_params.max_tokens is not None


@pytest.mark.slow
def test_demo_benchmark_runs_against_a_model_url(ws: Workspace, fake: FakeModelServer) -> None:
    """The demo file goes through the whole run (its scoring functions must exist), on the fake."""
    spec = parse_benchmark_file(read_document(DEMO_FILE), DEMO_FILE)
    assert spec.dataset.rows is not None
    run = ws.run(str(DEMO_FILE), "--model", model_url(fake), "--limit", "3")
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(fake.requests) == 3
    expected = expected_accuracy(spec.dataset.rows[:3])["basic::subset_of"]
    assert run.value("basic::subset_of", "accuracy") == pytest.approx(expected, abs=1e-4)
    for body in fake.requests:
        assert body["max_tokens"] == spec.sampling_params.max_tokens
        assert body["messages"][0] == {"role": "system", "content": spec.system_message}


# ---- (f) native benchmarks by name, and the response cache -----------------------------------------


GSM8K_ROWS = [
    {
        "question": "Tom has 2 apples and buys 3 more. How many apples does he have?",
        "answer": "2 + 3 = 5\n#### 5",
    },
    {"question": "A box holds 4 pens. How many pens are in 2 boxes?", "answer": "4 * 2 = 8\n#### 8"},
    {"question": "Sam had 10 sweets and ate 4. How many are left?", "answer": "10 - 4 = 6\n#### 6"},
]

# One question answered right; the others get UNKNOWN_REPLY.
REPLIES[f"Question: {GSM8K_ROWS[0]['question']}\nAnswer:"] = "2 + 3 = 5 apples.\n#### 5"


@pytest.mark.slow
def test_a_native_benchmark_runs_by_name_without_a_file(ws: Workspace, fake: FakeModelServer) -> None:
    data = ws.root / "data"
    write_jsonl(data / "gsm8k" / "test.jsonl", GSM8K_ROWS)
    write_jsonl(data / "gsm8k" / "train_first500.jsonl", GSM8K_ROWS)
    run = ws.run("gsm8k", "-m", model_url(fake), "--limit", "2", env_extra={"EVALSTACK_DATA_DIR": str(data)})
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(fake.requests) == 2
    assert "Question: Tom has 2 apples" in json.dumps(fake.requests)
    strict = "exact_match__strict-match"
    assert run.value("task gsm8k", f"{strict}.{strict}") == 0.5  # one right, one "I do not know."


@pytest.mark.parametrize(("name", "nearest"), [("gsm8kk", "gsm8k"), ("MMLU-pro", "mmlu"), ("arc", None)])
def test_an_unknown_benchmark_name_lists_the_choices_and_the_nearest(
    ws: Workspace, fake: FakeModelServer, name: str, nearest: str | None
) -> None:
    run = ws.run(name, "--model", model_url(fake))
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"{name!r} is neither a benchmark file nor a native benchmark" in run.stderr
    assert "arc_challenge, arc_easy" in run.stderr and "mmlu" in run.stderr
    if nearest is not None:
        assert f"Did you mean {nearest!r}?" in run.stderr
    assert "Traceback" not in run.stderr
    missing = ws.run("no-such-file.yaml", "--model", model_url(fake))
    assert missing.returncode == 2 and "cannot read no-such-file.yaml" in missing.stderr


@pytest.mark.slow
def test_run_with_cache_twice_asks_the_model_once_and_cache_commands_manage_it(
    ws: Workspace, fake: FakeModelServer
) -> None:
    name = write_bench(
        ws,
        "caps.yaml",
        yaml.safe_dump({"dataset": {"rows": CAPITAL_ROWS}, "scoring_functions": ["basic::subset_of"]}),
    )
    first = ws.run(name, "--model", model_url(fake), "--cache")
    assert first.returncode == 0, first.stdout + first.stderr
    assert len(fake.requests) == len(CAPITAL_ROWS)
    assert f"0 answers reused, {len(CAPITAL_ROWS)} asked" in first.stdout
    fake.reset_stats()
    second = ws.run(name, "--model", model_url(fake), "--cache")
    assert second.returncode == 0, second.stdout + second.stderr
    assert fake.requests == []
    assert f"{len(CAPITAL_ROWS)} answers reused, 0 asked" in second.stdout
    assert second.value("basic::subset_of", "accuracy") == first.value("basic::subset_of", "accuracy")

    stats = ws.run(command="cache stats")
    assert stats.returncode == 0, stats.stdout + stats.stderr
    assert f"Response cache: {len(CAPITAL_ROWS)} answers" in stats.stdout
    assert f"{fake.base_url}#{fake.model_id}" in stats.stdout
    expired = ws.run("--expired", command="cache clear")
    assert expired.returncode == 2 and "cache_ttl" in expired.stderr
    cleared = ws.run(command="cache clear")
    assert cleared.returncode == 0 and f"Deleted {len(CAPITAL_ROWS)} cached answers." in cleared.stdout
    third = ws.run(name, "--model", model_url(fake))  # no --cache: asks again, keeps nothing
    assert third.returncode == 0 and len(fake.requests) == len(CAPITAL_ROWS)
    assert "Response cache: 0 answers" in ws.run(command="cache stats").stdout


# ---- (f) the model server goes away mid-run -------------------------------------------------------------

FAST_BREAKER = "circuit_breaker: {failure_threshold: 3, probe_interval: 0.1, probe_interval_max: 0.5}\n"


def squares_file(ws: Workspace, rows: list[dict[str, Any]]) -> Path:
    dataset = write_jsonl(ws.cwd / "squares.jsonl", rows)
    path = ws.cwd / "squares.json"
    path.write_text(json.dumps(squares.squares_config(dataset, parallelism=4)), encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_brief_outage_mid_run_completes_with_the_results_of_an_uninterrupted_run(ws: Workspace) -> None:
    rows = squares.square_rows(80)
    bench = squares_file(ws, rows)
    settings = ws.cwd / "settings.yaml"
    settings.write_text(FAST_BREAKER, encoding="utf-8")
    with FakeModelServer(answer=squares.answer, latency=0.05) as model:
        url = f"{model.base_url}#{model.model_id}"
        clean_out = ws.cwd / "clean.json"
        clean = ws.run(str(bench), "--model", url, "--config", str(settings), "--output", str(clean_out))
        assert clean.returncode == 0, clean.stdout + clean.stderr
        model.reset_stats()

        def outage() -> None:
            deadline = time.monotonic() + RUN_TIMEOUT
            while len(model.requests) < 20 and time.monotonic() < deadline:
                time.sleep(0.005)
            model.go_down()
            time.sleep(3.0)
            model.come_back()

        breaker = threading.Thread(target=outage)
        breaker.start()
        out = ws.cwd / "out.json"
        run = ws.run(str(bench), "--model", url, "--config", str(settings), "--output", str(out))
        breaker.join()
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Model endpoint {model.base_url} is unreachable; the job waits for it" in run.stdout
    assert f"Model endpoint {model.base_url} is reachable again" in run.stdout
    document, clean_document = (json.loads(p.read_text(encoding="utf-8")) for p in (out, clean_out))
    assert document["progress"]["errors"] == 0 and document["progress"]["samples_processed"] == len(rows)
    assert document["result"]["tasks"] == clean_document["result"]["tasks"]
    accuracy = document["result"]["tasks"]["qa"]["metrics"]["accuracy"]["scores"]["string-check"]["value"]
    assert accuracy == pytest.approx(squares.expected_accuracy(rows))
    # Every row was answered once after the restart or before the stop: none was asked twice.
    asked = [body["messages"][-1]["content"] for body in model.requests]
    assert sorted(set(asked)) == sorted(row["question"] for row in rows)


@pytest.mark.slow
def test_a_run_that_gave_up_on_its_model_is_finished_by_evalstack_resume(ws: Workspace) -> None:
    rows = squares.square_rows(12)
    bench = squares_file(ws, rows)
    model = FakeModelServer(answer=squares.answer)  # not started: connections are refused
    url = f"{model.base_url}#{model.model_id}"
    out = ws.cwd / "out.json"
    failed = ws.run(str(bench), "--model", url, "--max-outage", "1", "--output", str(out))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    job_id = json.loads(out.read_text(encoding="utf-8"))["job_id"]
    assert f"Job {job_id} ended failed" in failed.stderr and "max_outage is 1.0s" in failed.stderr
    with model:
        resumed = ws.run(job_id, command="resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"Resuming job {job_id}" in resumed.stdout
    assert resumed.value("task qa", "accuracy.string-check") == pytest.approx(
        squares.expected_accuracy(rows), abs=1e-4
    )
    again = ws.run(job_id, command="resume")
    assert again.returncode == 2 and "only a failed or cancelled job can be resumed" in again.stderr
