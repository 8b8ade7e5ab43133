"""The regression gate: policy validation, which row a policy metric names, verdicts and tiers."""

from __future__ import annotations

from typing import Any

import pytest

from evalstack.analysis import Comparison, JobRef, MetricComparison
from evalstack.analysis.gate import EXIT_CODES, evaluate_gate, parse_policy
from evalstack.errors import InvalidInputError


def row(name: str, metric: str, low: float, high: float, **changes: Any) -> MetricComparison:
    values: dict[str, Any] = {
        "scope": "task", "name": name, "metric": metric, "kind": "binary", "n": 200,
        "baseline_mean": 0.5, "candidate_mean": 0.5 + (low + high) / 2, "delta": (low + high) / 2,
        "se": (high - low) / 3.92, "ci_low": low, "ci_high": high, "clustered": False, "clusters": 0,
        "bootstrap_ci_low": low - 0.001, "bootstrap_ci_high": high + 0.001, "n10": 10, "n01": 12,
        "flip_rate": 0.11, "p_value": 0.5, "p_holm": 0.5, "test": "mcnemar_exact", "mde": 0.04,
    }  # fmt: skip
    values.update(changes)
    return MetricComparison(**values)


def comparison(*rows: MetricComparison) -> Comparison:
    ref = JobRef(id="a", front="nemo", status="completed", benchmark="b", model="m", label="b on m")
    return Comparison(
        baseline=ref,
        candidate=ref.model_copy(update={"id": "b"}),
        cluster=None,
        confidence=0.95,
        resamples=10_000,
        seed=0,
        warnings=[],
        matched=200,
        unmatched_count=0,
        unmatched=[],
        rows=list(rows),
    )


def policy(*metrics: dict[str, Any], **top: Any) -> Any:
    return parse_policy({"metrics": list(metrics), **top})


def test_unknown_keys_are_rejected_naming_the_accepted_ones() -> None:
    with pytest.raises(InvalidInputError, match=r"metrics\.0\.treshold.*accepted: metric, task, direction"):
        policy({"metric": "acc", "max_drop": 0.01, "treshold": 1})
    with pytest.raises(InvalidInputError, match=r"alpha.*accepted: interval, metrics"):
        policy({"metric": "acc", "max_drop": 0.01}, alpha=0.1)
    with pytest.raises(InvalidInputError, match=r"max_drop.*greater than or equal to 0"):
        policy({"metric": "acc", "max_drop": -0.01})
    with pytest.raises(InvalidInputError, match=r"tier.*'critical', 'supporting' or 'advisory'"):
        policy({"metric": "acc", "max_drop": 0.01, "tier": "high"})
    with pytest.raises(InvalidInputError, match="metrics"):
        parse_policy({"metrics": []})
    with pytest.raises(InvalidInputError, match="must be a mapping"):
        parse_policy(["acc"])


@pytest.mark.parametrize(
    ("low", "high", "verdict"),
    [
        (-0.009, 0.03, "PASS"),
        (-0.05, -0.011, "BREACH"),
        (-0.02, 0.01, "INSUFFICIENT_EVIDENCE"),
        (-0.01, 0.02, "INSUFFICIENT_EVIDENCE"),  # on the line is not above it
    ],
)
def test_the_whole_interval_decides_against_minus_max_drop(low: float, high: float, verdict: str) -> None:
    result = evaluate_gate(
        comparison(row("qa", "acc", low, high)), policy({"metric": "acc", "max_drop": 0.01})
    )
    assert result.metrics[0].verdict == verdict
    overall = {"PASS": "GO", "BREACH": "NO-GO", "INSUFFICIENT_EVIDENCE": "INCONCLUSIVE"}[verdict]
    assert result.verdict == overall and result.exit_code == EXIT_CODES[overall]


def test_lower_is_better_judges_an_increase_as_the_drop() -> None:
    rows = comparison(row("qa", "error_rate", 0.02, 0.05))  # the error rate went up by 2 to 5 points
    result = evaluate_gate(
        rows, policy({"metric": "error_rate", "max_drop": 0.01, "direction": "lower_is_better"})
    )
    assert result.metrics[0].verdict == "BREACH" and result.verdict == "NO-GO"
    assert "improvement (-Δ) -0.05 to -0.02" in result.metrics[0].reason


def test_tiers_advisory_never_blocks_supporting_blocks_only_on_a_breach() -> None:
    rows = comparison(row("a", "acc", -0.05, -0.02), row("b", "f1", -0.03, 0.02), row("c", "em", 0.0, 0.02))
    advisory = policy(
        {"metric": "acc", "max_drop": 0.01, "tier": "advisory"},
        {"metric": "f1", "max_drop": 0.01, "tier": "supporting"},
        {"metric": "em", "max_drop": 0.01, "tier": "critical"},
    )
    result = evaluate_gate(rows, advisory)
    assert [m.verdict for m in result.metrics] == ["BREACH", "INSUFFICIENT_EVIDENCE", "PASS"]
    assert result.verdict == "GO" and result.exit_code == 0
    assert any(r.startswith("advisory, does not block: acc") for r in result.reasons)
    supporting_breach = policy({"metric": "acc", "max_drop": 0.01, "tier": "supporting"})
    assert evaluate_gate(rows, supporting_breach).verdict == "NO-GO"
    critical_unproven = policy({"metric": "f1", "max_drop": 0.01, "tier": "critical"})
    result = evaluate_gate(rows, critical_unproven)
    assert result.verdict == "INCONCLUSIVE" and "not shown to be within tolerance" in result.reasons[0]


def test_an_unproven_metric_says_when_too_few_items_were_evaluated() -> None:
    wide = comparison(row("qa", "acc", -0.08, 0.06, mde=0.07))
    result = evaluate_gate(wide, policy({"metric": "acc", "max_drop": 0.02}))
    assert (
        "MDE at 80% power" in result.metrics[0].reason and "evaluate more items" in result.metrics[0].reason
    )


def test_bootstrap_interval_on_request() -> None:
    edge = comparison(row("qa", "acc", -0.0095, 0.03, bootstrap_ci_low=-0.0105))
    assert evaluate_gate(edge, policy({"metric": "acc", "max_drop": 0.01})).verdict == "GO"
    bootstrap = policy({"metric": "acc", "max_drop": 0.01}, interval="bootstrap")
    assert evaluate_gate(edge, bootstrap).verdict == "INCONCLUSIVE"


def test_the_default_row_is_the_widest_group_and_a_task_can_be_named() -> None:
    rows = comparison(
        row("mmlu", "acc", 0.0, 0.02, scope="group", n=1000),
        row("mmlu_stem", "acc", -0.2, -0.1, scope="group", n=300),
        row("mmlu_law", "acc", -0.2, -0.1, n=50),
    )
    assert evaluate_gate(rows, policy({"metric": "acc", "max_drop": 0.01})).metrics[0].name == "mmlu"
    named = evaluate_gate(rows, policy({"metric": "acc", "task": "mmlu_law", "max_drop": 0.01}))
    assert (named.metrics[0].name, named.verdict) == ("mmlu_law", "NO-GO")


def test_an_unknown_or_ambiguous_metric_is_an_error_that_lists_the_choices() -> None:
    rows = comparison(row("t1", "acc", 0.0, 0.1), row("t2", "acc", 0.0, 0.1))
    with pytest.raises(InvalidInputError, match=r"several tasks \(t1, t2\); name one with 'task'"):
        evaluate_gate(rows, policy({"metric": "acc", "max_drop": 0.01}))
    with pytest.raises(InvalidInputError, match=r"no metric 'f1'; it has: acc in t1, acc in t2"):
        evaluate_gate(rows, policy({"metric": "f1", "max_drop": 0.01}))
    with pytest.raises(InvalidInputError, match=r"no metric 'acc' in 't3'"):
        evaluate_gate(rows, policy({"metric": "acc", "task": "t3", "max_drop": 0.01}))


def test_the_example_policy_in_the_readme_is_valid() -> None:
    from pathlib import Path

    from evalstack.analysis.gate import read_policy

    example = read_policy(Path(__file__).resolve().parents[3] / "examples" / "gate.yaml")
    assert [(m.metric, m.tier) for m in example.metrics] == [
        ("basic::equality", "critical"),
        ("basic::subset_of", "supporting"),
    ]
