"""A regression gate: judge a :class:`Comparison` against a policy of metrics, tolerances and tiers.

A policy (YAML or JSON; unknown keys are rejected)::

    interval: paired            # paired (t, clustered where the comparison is) or bootstrap
    metrics:
      - metric: acc             # a metric as the comparison names it
        task: mmlu              # optional: a task or group; default the metric's widest row
        direction: higher_is_better   # or lower_is_better
        max_drop: 0.01          # the largest tolerated worsening, in the metric's units
        tier: critical          # critical, supporting or advisory

Each metric's verdict compares the confidence interval of its change (Δ, signed so that positive is
better) with ``-max_drop``: **PASS** when the whole interval lies above it, **BREACH** when the whole
interval lies below it, **INSUFFICIENT_EVIDENCE** otherwise. The overall verdict:

- **NO-GO** when a critical or supporting metric is in BREACH;
- else **INCONCLUSIVE** when a critical metric has INSUFFICIENT_EVIDENCE (a critical metric must show
  that it did not regress; a supporting one blocks only on evidence that it did);
- else **GO**. Advisory metrics are reported and never block.

Exit codes for CI pipelines: 0 GO, 1 NO-GO, 2 INCONCLUSIVE (:data:`EXIT_CODES`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from evalstack.analysis.compare import Comparison, JobRef, MetricComparison
from evalstack.errors import InvalidInputError

Verdict = Literal["PASS", "BREACH", "INSUFFICIENT_EVIDENCE"]
Overall = Literal["GO", "NO-GO", "INCONCLUSIVE"]
EXIT_CODES: dict[str, int] = {"GO": 0, "NO-GO": 1, "INCONCLUSIVE": 2}
"""The gate command's exit code per overall verdict (3 means the gate could not run)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GateMetric(_Strict):
    """One metric the gate checks."""

    metric: str = Field(min_length=1)
    task: str | None = None
    direction: Literal["higher_is_better", "lower_is_better"] = "higher_is_better"
    max_drop: float = Field(ge=0.0)
    tier: Literal["critical", "supporting", "advisory"] = "critical"


class GatePolicy(_Strict):
    """The metrics to check and which confidence interval to check them with."""

    interval: Literal["paired", "bootstrap"] = "paired"
    metrics: list[GateMetric] = Field(min_length=1)


class MetricVerdict(BaseModel):
    """The verdict on one policy metric, with the figures it rests on and the reason in words."""

    metric: str
    scope: Literal["task", "group"]
    name: str
    tier: Literal["critical", "supporting", "advisory"]
    direction: Literal["higher_is_better", "lower_is_better"]
    max_drop: float
    n: int
    baseline_mean: float
    candidate_mean: float
    delta: float
    ci_low: float
    ci_high: float
    mde: float
    verdict: Verdict
    reason: str


class GateResult(BaseModel):
    """The overall verdict, why, and every metric's verdict."""

    baseline: JobRef
    candidate: JobRef
    verdict: Overall
    exit_code: int
    reasons: list[str]
    interval: Literal["paired", "bootstrap"]
    confidence: float
    metrics: list[MetricVerdict]
    warnings: list[str]


_ACCEPTED: dict[tuple[str, ...], type[BaseModel]] = {(): GatePolicy, ("metrics",): GateMetric}


def parse_policy(document: Any, source: str = "policy") -> GatePolicy:
    """Validate a policy, naming each wrong field and, for an unknown key, the keys accepted there."""
    if not isinstance(document, dict):
        raise InvalidInputError(f"{source} must be a mapping with 'metrics', not {type(document).__name__}")
    try:
        return GatePolicy.model_validate(document)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            where = ".".join(str(part) for part in loc) or "(top level)"
            problem = f"{where}: {err['msg']}"
            if err["type"] == "extra_forbidden":
                model = _ACCEPTED.get(tuple(p for p in loc[:-1] if isinstance(p, str)))
                if model is not None:
                    problem += f" (accepted: {', '.join(model.model_fields)})"
            problems.append(problem)
        raise InvalidInputError(f"{source}: {'; '.join(problems)}") from exc


def read_policy(path: Path) -> GatePolicy:
    """Read and validate a policy file (YAML or JSON)."""
    from evalstack.benchmark_file import read_document

    return parse_policy(read_document(path), str(path))


def _row_for(spec: GateMetric, rows: list[MetricComparison]) -> MetricComparison:
    """The comparison row a policy metric names: its task or group, else the metric's widest row."""
    candidates = [r for r in rows if r.metric == spec.metric]
    if spec.task is not None:
        candidates = [r for r in candidates if r.name == spec.task]
    if not candidates:
        available = sorted({f"{r.metric} in {r.name}" for r in rows})
        where = f" in {spec.task!r}" if spec.task is not None else ""
        raise InvalidInputError(
            f"The comparison has no metric {spec.metric!r}{where}; "
            f"it has: {', '.join(available) or 'nothing'}."
        )
    groups = [r for r in candidates if r.scope == "group"]
    if spec.task is None and not groups and len(candidates) > 1:
        names = ", ".join(r.name for r in candidates)
        raise InvalidInputError(
            f"Metric {spec.metric!r} is compared in several tasks ({names}); name one with 'task'."
        )
    return max(groups or candidates, key=lambda r: r.n)


def _judge(spec: GateMetric, row: MetricComparison, interval: str, confidence: float) -> MetricVerdict:
    low, high = (
        (row.ci_low, row.ci_high) if interval == "paired" else (row.bootstrap_ci_low, row.bootstrap_ci_high)
    )
    better_low, better_high = (low, high) if spec.direction == "higher_is_better" else (-high, -low)
    floor = -spec.max_drop
    level = f"{confidence:.0%} CI"
    change = "Δ" if spec.direction == "higher_is_better" else "improvement (-Δ)"
    figures = f"{change} {better_low:+.4g} to {better_high:+.4g} ({level}, n={row.n})"
    verdict: Verdict
    if better_low > floor:
        verdict, reason = "PASS", f"{figures} lies wholly above -max_drop = {floor:+.4g}"
    elif better_high < floor:
        verdict, reason = "BREACH", f"{figures} lies wholly below -max_drop = {floor:+.4g}"
    else:
        verdict = "INSUFFICIENT_EVIDENCE"
        reason = f"{figures} straddles -max_drop = {floor:+.4g}"
        if row.mde > spec.max_drop:
            reason += (
                f"; with these samples only changes of about {row.mde:.3g} or more are detectable "
                f"(MDE at 80% power), more than max_drop {spec.max_drop:.3g}: evaluate more items"
            )
    return MetricVerdict(
        metric=spec.metric,
        scope=row.scope,
        name=row.name,
        tier=spec.tier,
        direction=spec.direction,
        max_drop=spec.max_drop,
        n=row.n,
        baseline_mean=row.baseline_mean,
        candidate_mean=row.candidate_mean,
        delta=row.delta,
        ci_low=low,
        ci_high=high,
        mde=row.mde,
        verdict=verdict,
        reason=reason,
    )


def evaluate_gate(comparison: Comparison, policy: GatePolicy) -> GateResult:
    """Each policy metric's verdict and the overall one (see the module docstring).

    Raises InvalidInputError when the policy names a metric the comparison does not have.
    """
    verdicts = [
        _judge(spec, _row_for(spec, comparison.rows), policy.interval, comparison.confidence)
        for spec in policy.metrics
    ]
    breaches = [v for v in verdicts if v.verdict == "BREACH" and v.tier != "advisory"]
    unproven = [v for v in verdicts if v.verdict == "INSUFFICIENT_EVIDENCE" and v.tier == "critical"]
    overall: Overall
    if breaches:
        overall = "NO-GO"
        reasons = [f"{v.tier} metric {v.metric} ({v.name}) regressed: {v.reason}." for v in breaches]
    elif unproven:
        overall = "INCONCLUSIVE"
        reasons = [
            f"critical metric {v.metric} ({v.name}) is not shown to be within tolerance: {v.reason}."
            for v in unproven
        ]
    else:
        overall = "GO"
        blocking = [v for v in verdicts if v.tier != "advisory"]
        reasons = [
            f"no critical or supporting metric regressed beyond its max_drop ({len(blocking)} checked)."
        ]
    advisory = [v for v in verdicts if v.tier == "advisory" and v.verdict != "PASS"]
    reasons += [f"advisory, does not block: {v.metric} ({v.name}) {v.verdict}: {v.reason}." for v in advisory]
    return GateResult(
        baseline=comparison.baseline,
        candidate=comparison.candidate,
        verdict=overall,
        exit_code=EXIT_CODES[overall],
        reasons=reasons,
        interval=policy.interval,
        confidence=comparison.confidence,
        metrics=verdicts,
        warnings=comparison.warnings,
    )
