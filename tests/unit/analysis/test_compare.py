"""compare_jobs and flipped_samples on a real SQLite store holding two jobs built to differ in known ways.

Every expected figure is computed here from the same per-item scores with scipy, never read back
from evalstack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from evalstack.analysis import compare_jobs, flipped_samples
from evalstack.errors import InvalidInputError, NotFoundError
from evalstack.store.records import JobRecord, SampleRecord
from evalstack.store.repository import Store

N = 60
SUBJECTS = ["algebra", "biology", "chemistry", "law"]


def llama_spec(model: str, max_tokens: int = 16) -> dict[str, Any]:
    return {
        "benchmark": {"identifier": "qa", "dataset_id": "qa-dataset"},
        "benchmark_config": {
            "eval_candidate": {
                "type": "model",
                "model": model,
                "sampling_params": {"max_tokens": max_tokens},
            },
            "num_examples": None,
        },
    }


def item(index: int) -> dict[str, Any]:
    return {"question": f"q{index}", "subject": SUBJECTS[index % 4]}


def right_in_baseline(index: int) -> float:
    return float(index % 3 != 0)


def right_in_candidate(index: int) -> float:
    # three baseline-right items turn wrong (n10 = 3), eleven baseline-wrong items turn right (n01 = 11)
    if index in (1, 2, 4):
        return 0.0
    if index % 3 == 0 and index < 33:
        return 1.0
    return right_in_baseline(index)


def closeness(index: int, shift: float) -> float:
    return round(0.3 + 0.5 * ((index * 37) % 11) / 11 + shift * (index % 2), 6)


async def add_job(
    store: Store,
    job_id: str,
    spec: dict[str, Any],
    samples: list[SampleRecord],
    result: dict[str, Any] | None = None,
) -> None:
    await store.create_job(
        JobRecord(
            id=job_id, front="llama_stack", spec=spec, status="completed", benchmark_id="qa", result=result
        )
    )
    await store.add_samples(job_id, samples)


def scored(index: int, right: float, close: float, task: str = "qa") -> SampleRecord:
    return SampleRecord(
        task=task,
        index=index,
        item=item(index),
        output_text=f"answer {index}",
        scores={
            "basic::equality": {"score": right},
            "closeness": {"score": close, "note": "text is skipped"},
        },
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(f"sqlite:///{tmp_path / 'compare.db'}") as opened:
        baseline = [scored(i, right_in_baseline(i), closeness(i, 0.0)) for i in range(N)]
        candidate = [scored(i, right_in_candidate(i), closeness(i, 0.1)) for i in range(N)]
        # index 60 only in the baseline; 61 a different item; 62 failed in the candidate
        baseline += [scored(60, 1.0, 0.5), scored(61, 1.0, 0.5), scored(62, 1.0, 0.5)]
        other = scored(61, 1.0, 0.5)
        other.item = {"question": "something else", "subject": "law"}
        failed = SampleRecord(task="qa", index=62, item=item(62), error="model endpoint down")
        candidate += [other, failed]
        await add_job(opened, "base", llama_spec("model-a"), baseline)
        await add_job(opened, "cand", llama_spec("model-b"), candidate)
        yield opened


def paired_arrays(metric: str) -> tuple[np.ndarray, np.ndarray]:
    if metric == "basic::equality":
        return (
            np.array([right_in_baseline(i) for i in range(N)]),
            np.array([right_in_candidate(i) for i in range(N)]),
        )
    return np.array([closeness(i, 0.0) for i in range(N)]), np.array([closeness(i, 0.1) for i in range(N)])


async def test_binary_metric_counts_flips_and_matches_scipy(store: Store) -> None:
    comparison = await compare_jobs(store, "base", "cand")
    (row,) = [r for r in comparison.rows if r.metric == "basic::equality"]
    baseline, candidate = paired_arrays("basic::equality")
    assert (row.scope, row.name, row.kind, row.n) == ("task", "qa", "binary", N)
    assert (row.n10, row.n01) == (3, 11)
    assert row.flip_rate == pytest.approx(14 / N)
    assert row.delta == pytest.approx((11 - 3) / N)
    assert row.baseline_mean == pytest.approx(baseline.mean())
    assert row.candidate_mean == pytest.approx(candidate.mean())
    assert row.test == "mcnemar_exact"
    assert row.p_value == pytest.approx(stats.binomtest(3, 14, 0.5).pvalue)
    # one task, one cluster per subject: the interval is the cluster-robust one
    assert row.clustered and row.clusters == 4
    assert comparison.cluster == "subject"
    assert row.bootstrap_ci_low < row.delta < row.bootstrap_ci_high


async def test_continuous_metric_uses_the_paired_interval_and_sign_flips(store: Store) -> None:
    comparison = await compare_jobs(store, "base", "cand", cluster=None)
    (row,) = [r for r in comparison.rows if r.metric == "closeness"]
    baseline, candidate = paired_arrays("closeness")
    assert (row.kind, row.test, row.n10, row.n01, row.flip_rate) == (
        "continuous",
        "sign_flip_permutation",
        None,
        None,
        None,
    )
    assert row.delta == pytest.approx(float(np.mean(candidate - baseline)))
    reference = stats.permutation_test(
        (candidate - baseline,), np.mean, permutation_type="samples", n_resamples=10_000, rng=0
    ).pvalue
    assert row.p_value == pytest.approx(reference, abs=0.01)
    assert row.mde > 0


async def test_holm_adjusts_across_every_row(store: Store) -> None:
    comparison = await compare_jobs(store, "base", "cand")
    raw = sorted(r.p_value for r in comparison.rows)
    assert len(raw) == 2
    smallest = min(comparison.rows, key=lambda r: r.p_value)
    assert smallest.p_holm == pytest.approx(min(1.0, 2 * raw[0]))
    assert all(r.p_holm >= r.p_value for r in comparison.rows)


async def test_unmatched_items_are_counted_listed_and_explained(store: Store) -> None:
    comparison = await compare_jobs(store, "base", "cand")
    assert comparison.matched == N
    assert comparison.unmatched_count == 3
    listed = {(u.index, u.side, u.reason) for u in comparison.unmatched}
    assert listed == {(60, "baseline", "missing"), (61, "both", "item_differs"), (62, "candidate", "error")}
    assert any("3 item(s) could not be paired" in w for w in comparison.warnings)


async def test_only_the_model_differs_so_no_config_warning(store: Store) -> None:
    comparison = await compare_jobs(store, "base", "cand")
    assert not any("configs differ" in w for w in comparison.warnings)
    assert comparison.baseline.model == "model-a" and comparison.candidate.model == "model-b"
    assert comparison.baseline.label == "qa on model-a"


async def test_a_config_difference_beyond_the_model_is_named(store: Store) -> None:
    samples = await store.read_samples("base")
    await add_job(store, "longer", llama_spec("model-b", max_tokens=64), samples)
    comparison = await compare_jobs(store, "base", "longer")
    (warning,) = [w for w in comparison.warnings if "configs differ" in w]
    assert "benchmark_config.eval_candidate.sampling_params.max_tokens" in warning


async def test_identical_runs_show_no_difference(store: Store) -> None:
    comparison = await compare_jobs(store, "base", "base")
    assert comparison.rows
    for row in comparison.rows:
        assert (row.delta, row.ci_low, row.ci_high, row.p_value, row.p_holm) == (0.0, 0.0, 0.0, 1.0, 1.0)
    assert any("same job" in w for w in comparison.warnings)


async def test_cluster_on_a_named_item_field_or_say_which_fields_exist(store: Store) -> None:
    comparison = await compare_jobs(store, "base", "cand", cluster="question")
    assert comparison.cluster == "question"
    row = next(r for r in comparison.rows if r.metric == "basic::equality")
    assert row.clusters == N  # one question per cluster: the plain paired interval
    baseline, candidate = paired_arrays("basic::equality")
    interval = stats.ttest_rel(candidate, baseline).confidence_interval()
    assert (row.ci_low, row.ci_high) == pytest.approx((interval.low, interval.high))
    with pytest.raises(InvalidInputError, match=r"'topic'.*item fields: question, subject"):
        await compare_jobs(store, "base", "cand", cluster="topic")


async def test_unknown_jobs_are_named(store: Store) -> None:
    with pytest.raises(NotFoundError, match="candidate job 'nope'"):
        await compare_jobs(store, "base", "nope")


async def test_flipped_samples_lists_each_direction(store: Store) -> None:
    assert await flipped_samples(
        store, "base", "cand", task="qa", metric="basic::equality", direction="n10"
    ) == [
        1,
        2,
        4,
    ]
    n01 = await flipped_samples(store, "base", "cand", task="qa", metric="basic::equality", direction="n01")
    assert n01 == [i for i in range(0, 33, 3)]
    with pytest.raises(InvalidInputError, match="metrics: basic::equality, closeness"):
        await flipped_samples(store, "base", "cand", task="qa", metric="accuracy", direction="n10")


async def test_mmlu_style_tasks_are_pooled_into_their_benchmark_and_categories(tmp_path: Path) -> None:
    categories = {"algebra": "stem", "biology": "stem", "chemistry": "stem", "law": "humanities"}
    result = {
        "tasks": {
            f"mmlu_{s}": {"metrics": {}, "data": {"subject": s, "category": c}} for s, c in categories.items()
        },
        "groups": {},
    }

    def records(right: Any) -> list[SampleRecord]:
        return [
            SampleRecord(
                task=f"mmlu_{s}",
                index=i,
                item={"question": f"{s} {i}", "subject": s},
                scores={"loglikelihood": {"acc": right(s, i), "acc_norm": right(s, i)}},
            )
            for s in categories
            for i in range(10)
        ]

    async with Store(f"sqlite:///{tmp_path / 'mmlu.db'}") as store:
        await add_job(store, "a", llama_spec("m"), records(lambda s, i: float(i % 2)), result)
        await add_job(store, "b", llama_spec("m"), records(lambda s, i: float(i % 2 or (s == "law"))), result)
        comparison = await compare_jobs(store, "a", "b")
    groups = {(r.name, r.metric): r for r in comparison.rows if r.scope == "group"}
    assert set(groups) == {(g, m) for g in ("mmlu", "mmlu_stem") for m in ("acc", "acc_norm")}
    overall = groups[("mmlu", "acc")]
    assert (overall.n, overall.n01, overall.n10) == (40, 5, 0)
    assert overall.clustered and overall.clusters == 4
    assert groups[("mmlu_stem", "acc")].delta == 0.0
    few = sorted(w.split(" has only")[0] for w in comparison.warnings if "clusters of 'subject'" in w)
    assert few == ["Group 'mmlu'", "Group 'mmlu_stem'"]  # 4 and 3 subjects: once per scope, not per metric
    tasks = {r.name for r in comparison.rows if r.scope == "task"}
    assert tasks == {f"mmlu_{s}" for s in categories}
