"""The ZIP files of ``download-results`` and ``logs``, built from the job record and its per-sample records.

``download-results`` holds::

    config.json                   the config the job ran, secrets (judge api keys, hf_token) redacted
    target.json                   the target, api keys redacted
    results.json                  the aggregate result (tasks, groups), when the job completed
    results/<task>/results.json   per-sample outputs: {"<task>": [{item, sample, metrics}, ...]}
    logs/evaluation.log           the job's log

A client globbing ``**/results.json`` finds both flavours; the per-sample files are keyed by task name.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from evalstack.api.nemo.models import isoformat
from evalstack.redaction import redact, scrub, secret_values
from evalstack.store.records import JobRecord, SampleRecord

LOG_NAME = "logs/evaluation.log"


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as null, so that the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def sample_entry(sample: SampleRecord) -> dict[str, Any]:
    """One per-sample output as NeMo writes it: ``{item, sample: {output_text, response}, metrics}``."""
    metrics = {
        metric: {"scores": {score: {"value": value} for score, value in scores.items()}}
        for metric, scores in sample.scores.items()
    }
    entry: dict[str, Any] = {
        "item": sample.item,
        "sample": {"output_text": sample.output_text, "response": sample.response},
        "metrics": metrics,
    }
    if sample.error:
        entry["error"] = sample.error
    return json_safe(entry)


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^\w.\-]+", "_", name).strip("._")
    return cleaned or "task"


def _dump(value: Any) -> str:
    return json.dumps(json_safe(value), indent=2, ensure_ascii=False, default=str)


def job_log_lines(job: JobRecord, samples: Sequence[SampleRecord]) -> list[str]:
    """The job's log: lifecycle lines from the record, any lines the worker kept, and each failed sample.

    Any secret the job's spec carries is masked wherever a line quotes it.
    """
    created = isoformat(job.created_at) or "-"
    updated = isoformat(job.updated_at) or "-"
    progress = job.progress or {}
    spec_config = job.spec.get("config") or {}
    spec_target = job.spec.get("target") or {}
    lines = [
        f"{created} INFO job {job.id} created (config type {spec_config.get('type')!r}, "
        f"target type {spec_target.get('type')!r})"
    ]
    for entry in progress.get("log") or []:
        lines.append(entry if isinstance(entry, str) else json.dumps(entry, default=str))
    for task, status in sorted((progress.get("task_status") or {}).items()):
        lines.append(f"{updated} INFO task {task}: {status}")
    for sample in samples:
        if sample.error:
            lines.append(f"{updated} ERROR task {sample.task} sample {sample.index}: {sample.error}")
    processed = progress.get("samples_processed", len(samples))
    if "errors" in progress:
        errors = int(progress.get("errors") or 0) + int(progress.get("invalid") or 0)
    else:
        errors = sum(1 for s in samples if s.error)
    lines.append(f"{updated} INFO status {job.status}: {processed} samples processed, {errors} failed")
    if job.error:
        lines.append(f"{updated} ERROR {job.error}")
    return scrub(lines, secret_values(job.spec))


def _zip(files: Iterable[tuple[str, str]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in files:
            archive.writestr(name, text)
    return buffer.getvalue()


def results_zip(
    *,
    config: Mapping[str, Any],
    target: Mapping[str, Any],
    result: Mapping[str, Any] | None,
    samples: Sequence[SampleRecord],
    log_lines: Sequence[str],
) -> bytes:
    """The ``download-results`` archive (see the module docstring for its layout)."""
    files: list[tuple[str, str]] = [
        ("config.json", _dump(redact(config))),
        ("target.json", _dump(redact(target))),
    ]
    if result is not None:
        files.append(("results.json", _dump(result)))
    by_task: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        by_task.setdefault(sample.task, []).append(sample_entry(sample))
    used: set[str] = set()
    for task, entries in by_task.items():
        folder = _safe_name(task)
        while folder in used:
            folder += "_"
        used.add(folder)
        files.append((f"results/{folder}/results.json", _dump({task: entries})))
    files.append((LOG_NAME, "\n".join(log_lines) + "\n"))
    return _zip(files)


def logs_zip(log_lines: Sequence[str]) -> bytes:
    """The ``logs`` archive: the job's log as one file."""
    return _zip([(LOG_NAME, "\n".join(log_lines) + "\n")])
