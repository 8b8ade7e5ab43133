"""Compare two jobs item by item: paired differences per metric, task and group, with flips and tests.

Samples are paired on ``(task, index)`` and must be the same item: the SHA-256 of the stored item
(canonical JSON) must match. Pairs whose items differ, that only one job has, or where a sample
failed on either side are left out and listed. A metric is compared on the pairs where both
scores are numbers. A metric is ``binary`` when every paired score is 0 or 1, else
``continuous``.

Rows come per task and per group. Groups are the job's MMLU-style groups (a benchmark and its
categories, from the task data of the stored result), the groups a NeMo custom config names, and,
for a job with several tasks and no group spanning them all, ``all``. The cluster for clustered
standard errors is the item field ``cluster`` names, else ``subject`` when the items have one
(MMLU); a scope with fewer than two clusters falls back to the plain paired standard error.

Every p-value is Holm-adjusted across all rows of the comparison.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel

from evalstack.analysis import paired
from evalstack.errors import InvalidInputError, NotFoundError
from evalstack.store.records import JobRecord, SampleRecord

if TYPE_CHECKING:
    from evalstack.store.repository import Store

PairKey = tuple[str, int]
ScoreKey = tuple[str, str]  # (metric, score) as a sample's ``scores`` holds them

AUTO_CLUSTER_FIELD = "subject"
"""The item field used as the cluster when none is named (MMLU's subject)."""

DIAGNOSTIC_METRICS = frozenset({"parsed"})
"""Per-sample metrics that are diagnostics, not scores (whether an answer could be extracted)."""

FEW_CLUSTERS = 5
"""Below this many clusters a scope's cluster-robust interval gets a warning (few degrees of freedom)."""

UNMATCHED_LISTED = 1000
"""At most this many unmatched items are listed; all are counted."""

_REASON_TEXT = {
    "missing": "recorded in one job only",
    "item_differs": "with a different item at the same position",
    "error": "failed in at least one job",
}
_BATCH = 2000
_DIFF_PATHS_SHOWN = 6


class JobRef(BaseModel):
    """Which job a side of the comparison is, and a label for it."""

    id: str
    front: str
    status: str
    benchmark: str | None
    model: str | None
    label: str


class UnmatchedItem(BaseModel):
    """An item left out of the comparison, and why."""

    task: str
    index: int
    side: Literal["baseline", "candidate", "both"]
    reason: Literal["missing", "item_differs", "error"]


class MetricComparison(BaseModel):
    """One metric in one task or group: means, paired difference, intervals, flips and tests."""

    scope: Literal["task", "group"]
    name: str
    metric: str
    kind: Literal["binary", "continuous"]
    n: int
    baseline_mean: float
    candidate_mean: float
    delta: float
    se: float
    ci_low: float
    ci_high: float
    clustered: bool
    clusters: int
    bootstrap_ci_low: float
    bootstrap_ci_high: float
    n10: int | None
    n01: int | None
    flip_rate: float | None
    p_value: float
    p_holm: float
    test: Literal["mcnemar_exact", "sign_flip_permutation"]
    mde: float


class Comparison(BaseModel):
    """Everything :func:`compare_jobs` found; ``model_dump()`` is the JSON the API and CLI return."""

    baseline: JobRef
    candidate: JobRef
    cluster: str | None
    confidence: float
    resamples: int
    seed: int
    warnings: list[str]
    matched: int
    unmatched_count: int
    unmatched: list[UnmatchedItem]
    rows: list[MetricComparison]


# ---- reading one job ------------------------------------------------------------------------------


def item_hash(item: Mapping[str, Any]) -> bytes:
    """SHA-256 of the item as canonical JSON: the identity two samples must share to be paired."""
    text = json.dumps(item, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).digest()


def _number(value: Any) -> float | None:
    """A score as a float, NaN for a missing one; None for a value that is not a score (text)."""
    if value is None:
        return math.nan
    if isinstance(value, bool | int | float):
        return float(value)
    return None


@dataclass
class _JobSamples:
    """What a comparison needs of one job's samples, read in batches: hashes, errors, scores."""

    hashes: dict[PairKey, bytes] = field(default_factory=dict)
    failed: set[PairKey] = field(default_factory=set)
    scores: dict[ScoreKey, dict[PairKey, float]] = field(default_factory=dict)
    clusters: dict[PairKey, str] = field(default_factory=dict)
    item_fields: set[str] = field(default_factory=set)

    def add(self, sample: SampleRecord, cluster_field: str) -> None:
        key = (sample.task, sample.index)
        self.hashes[key] = item_hash(sample.item)
        if len(self.item_fields) < 200:
            self.item_fields.update(sample.item)
        if cluster_field in sample.item:
            self.clusters[key] = str(sample.item[cluster_field])
        if sample.error is not None:
            self.failed.add(key)
            return
        for metric, values in sample.scores.items():
            if metric in DIAGNOSTIC_METRICS or not isinstance(values, Mapping):
                continue
            for name, value in values.items():
                number = _number(value)
                if number is not None:
                    self.scores.setdefault((metric, name), {})[key] = number


async def _read_job(store: Store, job_id: str, cluster_field: str, task: str | None = None) -> _JobSamples:
    samples = _JobSamples()
    if task is None:
        async for batch in store.iter_samples(job_id, batch_size=_BATCH, fields=("item", "scores", "error")):
            for sample in batch:
                samples.add(sample, cluster_field)
    else:
        for sample in await store.read_samples(job_id, task):
            samples.add(sample, cluster_field)
    return samples


async def _job(store: Store, job_id: str, role: str) -> JobRecord:
    job = await store.get_job(job_id)
    if job is None:
        raise NotFoundError(f"{role} job {job_id!r} not found")
    return job


def metric_labels(score_keys: Iterable[ScoreKey]) -> dict[ScoreKey, str]:
    """A readable name for each (metric, score): the metric's name when it has one score
    (``basic::equality``, a NeMo ``accuracy``), else the score's (``acc``, ``acc_norm``), qualified
    as ``metric.score`` only where two metrics share a score name."""
    keys = sorted(set(score_keys))
    per_metric: dict[str, int] = {}
    per_score: dict[str, int] = {}
    for metric, score in keys:
        per_metric[metric] = per_metric.get(metric, 0) + 1
        per_score[score] = per_score.get(score, 0) + 1
    labels: dict[ScoreKey, str] = {}
    for metric, score in keys:
        if per_metric[metric] == 1:
            labels[(metric, score)] = metric
        elif per_score[score] == 1 and score not in per_metric:
            labels[(metric, score)] = score
        else:
            labels[(metric, score)] = f"{metric}.{score}"
    return labels


# ---- describing jobs ------------------------------------------------------------------------------


def _model_of(job: JobRecord) -> str | None:
    spec = job.spec
    if job.front == "llama_stack":
        candidate = (spec.get("benchmark_config") or {}).get("eval_candidate") or {}
        model = candidate.get("model") or (candidate.get("config") or {}).get("model")
        return str(model) if model else None
    target = spec.get("target")
    if isinstance(target, str):
        return target
    if isinstance(target, Mapping):
        model = target.get("model")
        if isinstance(model, str):
            return model
        if isinstance(model, Mapping):
            endpoint = model.get("api_endpoint") or {}
            named = endpoint.get("model_id") or endpoint.get("url") or model.get("name")
            return str(named) if named else None
        return str(target.get("name") or target.get("id") or "") or None
    return None


def _benchmark_of(job: JobRecord) -> str | None:
    if job.benchmark_id:
        return job.benchmark_id
    config = job.spec.get("config")
    if isinstance(config, str):
        return config
    if isinstance(config, Mapping):
        named = config.get("name") or config.get("type")
        return str(named) if named else None
    return None


def job_ref(job: JobRecord) -> JobRef:
    """The job's id, front door, status, benchmark and model, and a short label of the two."""
    benchmark, model = _benchmark_of(job), _model_of(job)
    label = " on ".join(part for part in (benchmark, model) if part) or job.id
    return JobRef(
        id=job.id, front=job.front, status=job.status, benchmark=benchmark, model=model, label=label
    )


def _without_model(job: JobRecord) -> dict[str, Any]:
    """The job's spec with what names the model (and bookkeeping) taken out."""
    spec = json.loads(json.dumps(job.spec, default=str))
    if job.front == "llama_stack":
        candidate = (spec.get("benchmark_config") or {}).get("eval_candidate") or {}
        candidate.pop("model", None)
        (candidate.get("config") or {}).pop("model", None)
    else:
        spec.pop("target", None)
        spec.pop("meta", None)
    return {"front": job.front, **spec}


def _differences(left: Any, right: Any, path: str = "") -> list[str]:
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        out: list[str] = []
        for key in sorted(set(left) | set(right), key=str):
            out.extend(_differences(left.get(key), right.get(key), f"{path}.{key}" if path else str(key)))
        return out
    return [] if left == right else [path or "(whole config)"]


def config_differences(baseline: JobRecord, candidate: JobRecord) -> list[str]:
    """Where the two jobs' configs differ in anything but the model (dotted paths into the spec)."""
    return _differences(_without_model(baseline), _without_model(candidate))


# ---- groups ---------------------------------------------------------------------------------------


def _task_data(job: JobRecord) -> dict[str, Mapping[str, Any]]:
    tasks = (job.result or {}).get("tasks")
    if not isinstance(tasks, Mapping):
        return {}
    return {
        str(name): entry.get("data") or {}
        for name, entry in tasks.items()
        if isinstance(entry, Mapping) and isinstance(entry.get("data") or {}, Mapping)
    }


def task_groups(job: JobRecord, tasks: list[str]) -> dict[str, list[str]]:
    """Groups of ``tasks`` to compare pooled: benchmark and categories, configured groups, or ``all``."""
    groups: dict[str, list[str]] = {}
    for task, data in _task_data(job).items():
        subject, category = data.get("subject"), data.get("category")
        if task not in tasks or not isinstance(subject, str) or not task.endswith(f"_{subject}"):
            continue
        benchmark = task[: -len(subject) - 1]
        groups.setdefault(benchmark, []).append(task)
        if isinstance(category, str):
            groups.setdefault(f"{benchmark}_{category}", []).append(task)
    config = job.spec.get("config")
    configured = config.get("groups") if isinstance(config, Mapping) else None
    if isinstance(configured, Mapping):
        for name, group in configured.items():
            members = group.get("tasks") if isinstance(group, Mapping) else None
            chosen = [t for t in members or tasks if t in tasks]
            groups.setdefault(str(name), chosen)
    groups = {name: sorted(members) for name, members in groups.items() if len(members) >= 2}
    if len(tasks) >= 2 and not any(len(members) == len(tasks) for members in groups.values()):
        groups.setdefault("all", list(tasks))
    return groups


# ---- the comparison -------------------------------------------------------------------------------


@dataclass
class _Scope:
    scope: Literal["task", "group"]
    name: str
    keys: list[PairKey]


def _pairs(
    base: _JobSamples, cand: _JobSamples
) -> tuple[dict[str, list[PairKey]], list[UnmatchedItem], dict[str, int]]:
    """Matched keys per task, the unmatched items (up to the listed limit) and counts per reason."""
    matched: dict[str, list[PairKey]] = {}
    unmatched: list[UnmatchedItem] = []
    counts: dict[str, int] = {}

    def note(key: PairKey, side: Literal["baseline", "candidate", "both"], reason: Any) -> None:
        counts[reason] = counts.get(reason, 0) + 1
        if len(unmatched) < UNMATCHED_LISTED:
            unmatched.append(UnmatchedItem(task=key[0], index=key[1], side=side, reason=reason))

    for key in sorted(set(base.hashes) | set(cand.hashes)):
        if key not in cand.hashes:
            note(key, "baseline", "missing")  # only the baseline has it
        elif key not in base.hashes:
            note(key, "candidate", "missing")
        elif base.hashes[key] != cand.hashes[key]:
            note(key, "both", "item_differs")
        elif key in base.failed or key in cand.failed:
            if key in base.failed and key in cand.failed:
                note(key, "both", "error")
            else:
                note(key, "baseline" if key in base.failed else "candidate", "error")
        else:
            matched.setdefault(key[0], []).append(key)
    return matched, unmatched, counts


def _compare_scope(
    scope: _Scope,
    metric: str,
    base_scores: Mapping[PairKey, float],
    cand_scores: Mapping[PairKey, float],
    clusters: Mapping[PairKey, str],
    *,
    confidence: float,
    resamples: int,
    seed: int,
) -> MetricComparison | None:
    keys = [
        k
        for k in scope.keys
        if not math.isnan(base_scores.get(k, math.nan)) and not math.isnan(cand_scores.get(k, math.nan))
    ]
    if len(keys) < 2:
        return None
    baseline = np.array([base_scores[k] for k in keys], dtype=np.float64)
    candidate = np.array([cand_scores[k] for k in keys], dtype=np.float64)
    labels = None
    if clusters and all(k in clusters for k in keys):
        labels = paired.cluster_labels([clusters[k] for k in keys])
    diff = paired.paired_difference(baseline, candidate, labels, confidence=confidence)
    low, high = paired.bootstrap_interval(
        baseline, candidate, labels if diff.clustered else None,
        confidence=confidence, resamples=resamples, seed=seed,
    )  # fmt: skip
    binary = bool(np.isin(baseline, (0.0, 1.0)).all() and np.isin(candidate, (0.0, 1.0)).all())
    n10 = n01 = None
    flip_rate = None
    if binary:
        n10 = int(np.count_nonzero((baseline == 1.0) & (candidate == 0.0)))
        n01 = int(np.count_nonzero((baseline == 0.0) & (candidate == 1.0)))
        flip_rate = (n10 + n01) / diff.n
        p_value = paired.mcnemar_exact_p(n10, n01)
        mde_se = paired.binary_null_se(n10, n01, diff.n)
        plain_se = float(np.std(candidate - baseline, ddof=1)) / math.sqrt(diff.n)
        if diff.clustered and plain_se > 0:
            mde_se *= diff.se / plain_se  # the clustering's design effect
    else:
        p_value = paired.sign_flip_p(baseline, candidate, resamples=resamples, seed=seed)
        mde_se = diff.se
    return MetricComparison(
        scope=scope.scope,
        name=scope.name,
        metric=metric,
        kind="binary" if binary else "continuous",
        n=diff.n,
        baseline_mean=diff.baseline_mean,
        candidate_mean=diff.candidate_mean,
        delta=diff.delta,
        se=diff.se,
        ci_low=diff.ci_low,
        ci_high=diff.ci_high,
        clustered=diff.clustered,
        clusters=diff.clusters,
        bootstrap_ci_low=low,
        bootstrap_ci_high=high,
        n10=n10,
        n01=n01,
        flip_rate=flip_rate,
        p_value=p_value,
        p_holm=p_value,
        test="mcnemar_exact" if binary else "sign_flip_permutation",
        mde=paired.minimum_detectable_effect(mde_se, alpha=1.0 - confidence),
    )


async def compare_jobs(
    store: Store,
    baseline_id: str,
    candidate_id: str,
    *,
    cluster: str | None = None,
    resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Comparison:
    """Compare two jobs' stored samples (see the module docstring).

    Raises NotFoundError for an unknown job and InvalidInputError for a ``cluster`` field that no
    item has (naming the fields they have) or bad ``resamples``/``confidence``.
    """
    if resamples < 100:
        raise InvalidInputError(f"resamples must be at least 100, got {resamples}")
    if not 0.5 <= confidence < 1.0:
        raise InvalidInputError(f"confidence must be in [0.5, 1), got {confidence}")
    base_job = await _job(store, baseline_id, "baseline")
    cand_job = await _job(store, candidate_id, "candidate")
    cluster_field = cluster or AUTO_CLUSTER_FIELD
    base = await _read_job(store, baseline_id, cluster_field)
    cand = await _read_job(store, candidate_id, cluster_field)

    warnings: list[str] = []
    for role, job in (("baseline", base_job), ("candidate", cand_job)):
        if job.status != "completed":
            warnings.append(
                f"The {role} job {job.id} is {job.status}: only its recorded samples are compared."
            )
    if baseline_id == candidate_id:
        warnings.append("The baseline and the candidate are the same job.")
    diffs = config_differences(base_job, cand_job)
    if diffs:
        shown = ", ".join(diffs[:_DIFF_PATHS_SHOWN]) + (" ..." if len(diffs) > _DIFF_PATHS_SHOWN else "")
        warnings.append(f"The two jobs' configs differ in more than the model: {shown}.")
    if cluster is not None and not base.clusters:
        fields = ", ".join(sorted(base.item_fields)) or "none (no samples)"
        raise InvalidInputError(
            f"No item of job {baseline_id} has the field {cluster!r} to cluster on; item fields: {fields}."
        )
    used_cluster = cluster_field if base.clusters else None

    matched, unmatched, reasons = _pairs(base, cand)
    unmatched_count = sum(reasons.values())
    if unmatched_count:
        why = ", ".join(f"{count} {_REASON_TEXT[reason]}" for reason, count in sorted(reasons.items()))
        listed = f"; the first {UNMATCHED_LISTED} are listed" if unmatched_count > UNMATCHED_LISTED else ""
        warnings.append(f"{unmatched_count} item(s) could not be paired and are left out ({why}{listed}).")
    tasks = sorted(matched)
    scopes = [
        _Scope("group", name, [k for t in members for k in matched[t]])
        for name, members in sorted(task_groups(base_job, tasks).items())
    ]
    scopes += [_Scope("task", task, matched[task]) for task in tasks]
    labels = metric_labels([*base.scores, *cand.scores])
    in_both = [key for key in labels if key in base.scores and key in cand.scores]
    shared = sorted(in_both, key=labels.__getitem__)
    for key in sorted(set(labels) - set(shared)):
        side = "baseline" if key in base.scores else "candidate"
        warnings.append(f"Metric {labels[key]!r} is scored only in the {side} job; not compared.")

    def compute_rows() -> list[MetricComparison]:
        rows: list[MetricComparison] = []
        few: set[str] = set()
        for scope in scopes:
            for key in shared:
                row = _compare_scope(
                    scope, labels[key], base.scores[key], cand.scores[key], base.clusters,
                    confidence=confidence, resamples=resamples, seed=seed,
                )  # fmt: skip
                if row is not None:
                    rows.append(row)
                    if row.clustered and row.clusters < FEW_CLUSTERS and scope.name not in few:
                        few.add(scope.name)
                        warnings.append(
                            f"{scope.scope.capitalize()} {scope.name!r} has only {row.clusters} clusters of "
                            f"'{cluster_field}': its cluster-robust interval rests on {row.clusters - 1} "
                            "degree(s) of freedom and is wide; read its bootstrap interval with caution too."
                        )
                elif scope.scope == "task" and any(k in base.scores[key] for k in scope.keys):
                    warnings.append(
                        f"Task {scope.name!r}, metric {labels[key]!r}: fewer than 2 paired scores; "
                        "not compared."
                    )
        for row, adjusted in zip(rows, paired.holm_adjust([r.p_value for r in rows]), strict=True):
            row.p_holm = adjusted
        return rows

    rows = await asyncio.to_thread(compute_rows)  # numpy work stays off the event loop
    return Comparison(
        baseline=job_ref(base_job),
        candidate=job_ref(cand_job),
        cluster=used_cluster,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        warnings=warnings,
        matched=sum(len(keys) for keys in matched.values()),
        unmatched_count=unmatched_count,
        unmatched=unmatched,
        rows=rows,
    )


async def flipped_samples(
    store: Store,
    baseline_id: str,
    candidate_id: str,
    *,
    task: str,
    metric: str,
    direction: Literal["n10", "n01"],
) -> list[int]:
    """Indices of the paired samples of ``task`` that ``metric`` flipped, in index order.

    ``n10``: right (1) in the baseline, wrong (0) in the candidate; ``n01``: the reverse. Only
    samples paired as :func:`compare_jobs` pairs them count. Raises InvalidInputError for a metric
    the task does not score in both jobs (naming those it does) or another direction.
    """
    if direction not in ("n10", "n01"):
        raise InvalidInputError(f"direction must be 'n10' or 'n01', got {direction!r}")
    await _job(store, baseline_id, "baseline")
    await _job(store, candidate_id, "candidate")
    base = await _read_job(store, baseline_id, AUTO_CLUSTER_FIELD, task)
    cand = await _read_job(store, candidate_id, AUTO_CLUSTER_FIELD, task)
    labels = metric_labels([*base.scores, *cand.scores])
    keys = [k for k, label in labels.items() if label == metric and k in base.scores and k in cand.scores]
    if not keys:
        known = sorted({labels[k] for k in labels if k in base.scores and k in cand.scores})
        raise InvalidInputError(
            f"Task {task!r} has no metric {metric!r} scored in both jobs; "
            f"metrics: {', '.join(known) or 'none'}."
        )
    base_scores, cand_scores = base.scores[keys[0]], cand.scores[keys[0]]
    matched, _, _ = _pairs(base, cand)
    want = (1.0, 0.0) if direction == "n10" else (0.0, 1.0)
    return [
        index
        for pair_task, index in matched.get(task, [])
        if (base_scores.get((pair_task, index)), cand_scores.get((pair_task, index))) == want
    ]
