"""The engine's job spec: what front doors write, what the worker reads back, old versions included."""

from __future__ import annotations

from typing import Any

import pytest

from evalstack.engine.spec import SPEC_VERSION, LlamaStackRunSpec, NemoRunSpec, new_job, read_spec
from evalstack.engine.types import Benchmark, BenchmarkConfig, ModelCandidate, SamplingParams
from evalstack.errors import InvalidInputError
from evalstack.store.records import JobRecord

BENCHMARK = Benchmark(
    identifier="qa", provider_id="local", dataset_id="qa-rows", scoring_functions=["basic::equality"]
)
CONFIG = BenchmarkConfig(
    eval_candidate=ModelCandidate(model="m", sampling_params=SamplingParams(max_tokens=8))
)
NEMO_CONFIG: dict[str, Any] = {"type": "gsm8k", "params": {"limit_samples": 5}}
NEMO_TARGET: dict[str, Any] = {"type": "model", "model": "m"}


def test_a_new_job_stores_its_spec_with_front_and_version_and_reads_back_equal() -> None:
    spec = LlamaStackRunSpec(benchmark=BENCHMARK, benchmark_config=CONFIG, parallelism=3)
    job = new_job(spec, benchmark_id="qa", provider_id="local")
    assert job.front == "llama_stack"
    assert (job.benchmark_id, job.provider_id) == ("qa", "local")
    assert job.spec["spec_version"] == SPEC_VERSION
    assert read_spec(job) == spec

    nemo = NemoRunSpec(config=NEMO_CONFIG, target=NEMO_TARGET, meta={"namespace": "team"})
    nemo_job = new_job(nemo)
    assert nemo_job.front == "nemo"
    assert read_spec(nemo_job) == nemo


def test_version_1_specs_the_dict_dumps_of_earlier_builds_still_read() -> None:
    llama_stack = JobRecord(
        id="j1",
        front="llama_stack",
        spec={
            "benchmark": BENCHMARK.model_dump(mode="json"),
            "benchmark_config": CONFIG.model_dump(mode="json"),
        },
    )
    spec = read_spec(llama_stack)
    assert isinstance(spec, LlamaStackRunSpec)
    assert spec.benchmark == BENCHMARK and spec.benchmark_config == CONFIG and spec.parallelism is None

    nemo = JobRecord(id="j2", front="nemo", spec={"config": NEMO_CONFIG, "target": NEMO_TARGET})
    nemo_spec = read_spec(nemo)
    assert isinstance(nemo_spec, NemoRunSpec)
    assert (nemo_spec.config, nemo_spec.target, nemo_spec.meta) == (NEMO_CONFIG, NEMO_TARGET, {})


def test_a_spec_of_an_unknown_version_is_refused_with_the_versions_this_build_reads() -> None:
    job = JobRecord(id="j3", front="nemo", spec={"spec_version": 99, "config": {}, "target": {}})
    with pytest.raises(
        InvalidInputError, match=r"Job j3 has a spec of version 99; this build reads versions 1 and 2"
    ):
        read_spec(job)


def test_a_spec_whose_front_differs_from_the_record_is_refused() -> None:
    spec = NemoRunSpec(config=NEMO_CONFIG, target=NEMO_TARGET).model_dump(mode="json")
    with pytest.raises(InvalidInputError, match="created through 'llama_stack' but its spec is for 'nemo'"):
        read_spec(JobRecord(id="j4", front="llama_stack", spec=spec))


def test_an_invalid_spec_names_the_job_and_the_field() -> None:
    job = JobRecord(id="j5", front="llama_stack", spec={"benchmark": BENCHMARK.model_dump(mode="json")})
    with pytest.raises(
        InvalidInputError, match=r"^The spec of job j5 is invalid: benchmark_config: Field required$"
    ):
        read_spec(job)
