"""Job labels, headline scores and the listing parameters shared by the JSON listings and the viewer."""

from __future__ import annotations

import pytest

from evalstack import browse
from evalstack.errors import InvalidInputError
from evalstack.store.records import JobRecord, SampleFilter, SampleKey


def llama_job(**result: object) -> JobRecord:
    spec = {
        "benchmark": {"identifier": "capitals"},
        "benchmark_config": {"eval_candidate": {"type": "model", "model": "llama-8b"}},
    }
    return JobRecord(
        id="j", front="llama_stack", spec=spec, benchmark_id="capitals", result=dict(result) or None
    )


def test_labels_of_a_llama_stack_job_are_its_benchmark_and_candidate_model() -> None:
    assert browse.job_labels(llama_job()) == browse.JobLabels("capitals", "llama-8b")


def test_labels_of_an_agent_candidate_name_the_agents_model() -> None:
    spec = {
        "benchmark": {"identifier": "capitals"},
        "benchmark_config": {"eval_candidate": {"type": "agent", "config": {"model": "llama-70b"}}},
    }
    job = JobRecord(id="j", front="llama_stack", spec=spec)
    assert browse.job_labels(job) == browse.JobLabels("capitals", "llama-70b")


@pytest.mark.parametrize(
    ("config", "target", "labels"),
    [
        ({"type": "mmlu", "name": "mmlu-5"}, {"type": "model", "model": "m1"}, ("mmlu-5 (mmlu)", "m1")),
        (
            {"type": "gsm8k"},
            {"type": "model", "model": {"api_endpoint": {"model_id": "m2"}}},
            ("gsm8k", "m2"),
        ),
        ({"type": "custom", "tasks": {"qa": {}, "sum": {}}}, {"type": "model"}, ("custom: qa, sum", None)),
        ({"type": "custom", "name": "mine", "tasks": {"qa": {}}}, {}, ("mine", None)),
    ],
)
def test_labels_of_a_nemo_job_come_from_its_config_and_target(
    config: dict[str, object], target: dict[str, object], labels: tuple[str, str | None]
) -> None:
    job = JobRecord(id="j", front="nemo", spec={"config": config, "target": target})
    assert browse.job_labels(job) == browse.JobLabels(*labels)


def test_headline_of_a_nemo_result_prefers_the_first_group_and_keeps_its_interval() -> None:
    score = {"value": 0.6, "stats": {"count": 200, "stderr": 0.03}, "ci": {"lower": 0.55, "upper": 0.66}}
    result = {
        "tasks": {"mmlu_anatomy": {"metrics": {"acc": {"scores": {"acc": {"value": 0.1, "stats": {}}}}}}},
        "groups": {"mmlu": {"metrics": {"acc": {"scores": {"acc": score}}}}},
    }
    job = JobRecord(id="j", front="nemo", spec={}, result=result)
    assert browse.headline(job) == browse.Headline("mmlu · acc", 0.6, 0.55, 0.66, 200)


def test_headline_without_an_interval_uses_the_standard_error() -> None:
    result = {
        "tasks": {"qa": {"metrics": {"m": {"scores": {"s": {"value": 0.5, "stats": {"stderr": 0.1}}}}}}}
    }
    top = browse.headline(JobRecord(id="j", front="nemo", spec={}, result=result))
    assert top is not None and top.ci_low == pytest.approx(0.304) and top.ci_high == pytest.approx(0.696)


def test_headline_of_a_llama_stack_accuracy_is_a_proportion_with_its_normal_interval() -> None:
    job = llama_job(
        scores={"basic::equality": {"aggregated_results": {"accuracy": {"accuracy": 0.5, "num_total": 100}}}}
    )
    top = browse.headline(job)
    assert top is not None and top.name == "basic::equality · accuracy" and top.n == 100
    assert top.ci_low == pytest.approx(0.5 - 1.96 * 0.05) and top.ci_high == pytest.approx(0.5 + 1.96 * 0.05)
    assert browse.headline(llama_job()) is None


def test_sample_filter_round_trips_through_url_parameters() -> None:
    params = {
        "task": "t",
        "metric": "accuracy/string-check",
        "outcome": "wrong",
        "min": "0.25",
        "max": "1",
        "error": "none",
        "unparsed": "1",
        "truncated": "true",
        "q": " cats ",
    }
    flt = browse.parse_sample_filter(params)
    assert flt == SampleFilter(
        "t", "accuracy", "string-check", "wrong", 0.25, 1.0, "none", True, True, "cats"
    )
    assert browse.parse_sample_filter(browse.filter_params(flt)) == flt
    assert browse.parse_sample_filter({"metric": "acc"}).score == "acc"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"outcome": "maybe", "metric": "m"}, "outcome must be one of right, wrong, got 'maybe'"),
        ({"error": "oops"}, "error must be one of any, none, inference, invalid"),
        ({"outcome": "right"}, "need a metric"),
        ({"metric": "m", "min": "low"}, "min must be a number, got 'low'"),
        ({"metric": "m", "max": "inf"}, "max must be a finite number"),
        ({"unparsed": "perhaps"}, "unparsed must be 1 or 0"),
    ],
)
def test_bad_sample_filters_say_what_is_accepted(params: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(")):
        browse.parse_sample_filter(params)


def test_sample_keys_hold_any_task_name() -> None:
    key = SampleKey("mmlu:anatomy/1", 12)
    assert browse.parse_key("after", browse.key_param(key)) == key
    assert browse.parse_key("after", None) is None
    with pytest.raises(InvalidInputError, match="after must be a sample key 'index:task'"):
        browse.parse_key("after", "twelve:t")


def test_job_query_checks_statuses_fronts_and_paging() -> None:
    query = browse.parse_job_query({"benchmark": "b", "page": "2", "limit": "10"}, ["running", "completed"])
    assert query == browse.JobQuery(("running", "completed"), None, "b", None, 2, 10)
    assert query.params(page=3) == "status=running&status=completed&benchmark=b&page=3&limit=10"
    with pytest.raises(InvalidInputError, match="'done' is not a job status; accepted: created"):
        browse.parse_job_query({}, ["done"])
    with pytest.raises(InvalidInputError, match="front must be 'llama_stack' or 'nemo'"):
        browse.parse_job_query({"front": "x"})
    with pytest.raises(InvalidInputError, match="limit must be at least 1 and at most 500, got 501"):
        browse.parse_job_query({"limit": "501"})
