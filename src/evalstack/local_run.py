"""`evalstack run`: one benchmark file, run in-process on the same engine and store as the server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from evalstack.benchmark_file import BenchmarkFile, is_nemo_config, parse_benchmark_file, read_document
from evalstack.config import Settings
from evalstack.engine.aggregate.stats import score_stats
from evalstack.engine.spec import LlamaStackRunSpec, NemoRunSpec, new_job
from evalstack.engine.types import Benchmark, BenchmarkConfig, EvaluateResponse, ModelCandidate, SystemMessage
from evalstack.errors import InvalidInputError, NotFoundError
from evalstack.registry import EMBEDDED_MODEL_ID
from evalstack.resources import DatasetRegistration, RowsDataSource, URIDataSource
from evalstack.services import Services, build_services
from evalstack.store.records import JobRecord


@dataclass
class MetricLine:
    """One line of the final table: where the figure comes from, its value and standard error."""

    source: str
    metric: str
    value: float | None
    stderr: float | None
    count: int | None = None


@dataclass
class RunOutcome:
    """What a run produced: the job, its native result and the lines of the summary table."""

    job: JobRecord
    result: dict[str, Any]
    lines: list[MetricLine] = field(default_factory=list)


def mean_and_stderr(values: Sequence[Any]) -> tuple[float | None, float | None, int]:
    """Mean and standard error (population stddev / sqrt(n)) of the numeric, non-NaN values."""
    stats = score_stats([v for v in values if isinstance(v, int | float) and not isinstance(v, bool)])
    count = int(stats["count"] or 0)
    return stats["mean"], stats["stderr"], count


def llama_stack_lines(response: EvaluateResponse) -> list[MetricLine]:
    """Every aggregated figure of a Llama Stack result, with the standard error of its score rows."""
    lines: list[MetricLine] = []
    for fn_id, scoring in response.scores.items():
        _, stderr, count = mean_and_stderr([row.get("score") for row in scoring.score_rows])
        for aggregation, values in scoring.aggregated_results.items():
            if not isinstance(values, dict):
                continue
            for name, value in values.items():
                if (
                    isinstance(value, int | float)
                    and not isinstance(value, bool)
                    and name
                    in (
                        aggregation,
                        "accuracy",
                        "average",
                        "median",
                        "weighted_average",
                    )
                ):
                    lines.append(MetricLine(fn_id, name, float(value), stderr, count))
                elif isinstance(value, dict):
                    lines.append(MetricLine(fn_id, name, None, None, sum(int(v) for v in value.values())))
    return lines


def nemo_lines(result: dict[str, Any]) -> list[MetricLine]:
    """Every score of a NeMo results object (tasks, then groups) with its statistics."""
    lines: list[MetricLine] = []
    for level in ("tasks", "groups"):
        for owner, body in (result.get(level) or {}).items():
            for metric, metric_body in (body.get("metrics") or {}).items():
                for score, score_body in (metric_body.get("scores") or {}).items():
                    stats = score_body.get("stats") or {}
                    lines.append(
                        MetricLine(
                            f"{level[:-1]} {owner}",
                            f"{metric}.{score}",
                            score_body.get("value"),
                            stats.get("stderr"),
                            stats.get("count"),
                        )
                    )
    return lines


def _dataset_source(spec: BenchmarkFile, base: Path) -> RowsDataSource | URIDataSource:
    """Inline rows, a file next to the benchmark file, or a URI."""
    if spec.dataset.rows is not None:
        return RowsDataSource(rows=spec.dataset.rows)
    if spec.dataset.path is not None:
        path = (base / spec.dataset.path).resolve()
        if not path.is_file():
            raise InvalidInputError(f"dataset.path {spec.dataset.path!r}: no such file ({path})")
        return URIDataSource(uri=path.as_uri())
    assert spec.dataset.uri is not None
    return URIDataSource(uri=spec.dataset.uri)


async def _check_model(services: Services, model: str) -> None:
    """Resolve ``--model`` now, with a hint that fits the command line."""
    try:
        await services.registry.resolve_model(model)
    except NotFoundError as exc:
        raise NotFoundError(
            f"Model {model!r} not found. Pass 'embedded', an OpenAI-compatible base URL "
            "(http://host:8000/v1, or http://host:8000/v1#model-name), "
            "or a name listed by 'evalstack models'."
        ) from exc


async def _submit_benchmark_file(
    services: Services,
    spec: BenchmarkFile,
    source: Path,
    model: str,
    limit: int | None,
    max_outage: float | None = None,
) -> JobRecord:
    benchmark_id = spec.benchmark_id or source.stem
    dataset = await services.registry.register_dataset(
        DatasetRegistration(
            purpose="eval/question-answer",
            source=_dataset_source(spec, source.parent),
            dataset_id=f"{benchmark_id}-dataset",
        )
    )
    scoring = spec.scoring_params()
    benchmark = Benchmark(
        identifier=benchmark_id,
        provider_resource_id=benchmark_id,
        provider_id="local",
        dataset_id=dataset.identifier,
        scoring_functions=list(scoring),
    )
    await services.registry.put_benchmark(benchmark)
    config = BenchmarkConfig(
        eval_candidate=ModelCandidate(
            model=model,
            sampling_params=spec.sampling_params,
            system_message=SystemMessage(content=spec.system_message) if spec.system_message else None,
        ),
        scoring_params={fn: params for fn, params in scoring.items() if params is not None},
        num_examples=limit or spec.num_examples,
    )
    for fn_id, params in scoring.items():  # an unknown function or bad params: say so before any job exists
        await services.scoring.metric(fn_id, params)
    await _check_model(services, model)
    job_spec = LlamaStackRunSpec(
        benchmark=benchmark,
        benchmark_config=config,
        parallelism=spec.parallelism,
        max_outage=max_outage or spec.max_outage,
    )
    return await services.worker.submit(new_job(job_spec, benchmark_id=benchmark_id, provider_id="local"))


async def _submit_nemo_config(
    services: Services, config: dict[str, Any], model: str, limit: int | None, max_outage: float | None = None
) -> JobRecord:
    if limit is not None:
        config = {**config, "params": {**(config.get("params") or {}), "limit_samples": limit}}
    await _check_model(services, model)
    spec = NemoRunSpec(
        config=config,
        target={"type": "model", "model": model},
        meta={"source": "evalstack run"},
        max_outage=max_outage or None,
    )
    return await services.worker.submit(new_job(spec))


def outage_line(progress: dict[str, Any]) -> str:
    """What the progress bar says while the job waits for an unreachable endpoint ("" otherwise)."""
    outage = progress.get("outage")
    if not isinstance(outage, dict):
        return ""
    down = f"{outage.get('unreachable_s', 0):.0f}s"
    text = (
        f"waiting for {outage.get('endpoint')}: unreachable for {down} "
        f"(gives up after {outage.get('max_outage_s', 0):.0f}s); last error: {outage.get('last_error')}"
    )
    return f"[yellow]{escape(text)}"  # the error text comes from the server: never read as markup


async def _follow(services: Services, job_id: str, console: Console) -> JobRecord:
    """Show a progress bar (samples done, rate, errors, an endpoint outage) until the job ends."""
    latest: dict[str, Any] = {}

    def listen(listened_id: str, progress: dict[str, Any]) -> None:
        if listened_id == job_id:
            latest.clear()
            latest.update(progress)

    remove = services.worker.add_progress_listener(listen)
    started = time.monotonic()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:.1f} samples/s"),
        TextColumn("errors: {task.fields[errors]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[outage]}"),
    )
    try:
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("evaluating", total=None, rate=0.0, errors=0, outage="")
            wait = asyncio.ensure_future(services.worker.wait(job_id))
            shown_outage: str | None = None  # the endpoint whose outage was announced
            while not wait.done():
                down = latest.get("outage")
                endpoint = down.get("endpoint") if isinstance(down, dict) else None
                if endpoint != shown_outage:
                    if endpoint is not None:
                        message = f"Model endpoint {endpoint} is unreachable; the job waits for it"
                    else:
                        message = f"Model endpoint {shown_outage} is reachable again; the job goes on"
                    bar.console.print(escape(message))
                    shown_outage = endpoint
                done = int(latest.get("samples_processed", 0))
                total = latest.get("samples_total") or None
                elapsed = max(time.monotonic() - started, 1e-6)
                errors = int(latest.get("errors", 0)) + int(latest.get("invalid", 0))
                bar.update(
                    task,
                    completed=done,
                    total=total,
                    rate=done / elapsed,
                    errors=errors,
                    outage=outage_line(latest),
                )
                await asyncio.wait({wait}, timeout=0.2)
            job = wait.result()
            done = int(job.progress.get("samples_processed", latest.get("samples_processed", 0)))
            total = job.progress.get("samples_total") or done
            errors = int(job.progress.get("errors", 0)) + int(job.progress.get("invalid", 0))
            elapsed = max(time.monotonic() - started, 1e-6)
            bar.update(task, completed=done, total=total, rate=done / elapsed, errors=errors, outage="")
            return job
    finally:
        remove()


def lm_eval_document(reference: str, extra: Sequence[str] = ()) -> dict[str, Any]:
    """The NeMo config of ``lm-eval:TASK[,TASK...]`` with ``KEY=VALUE`` settings of ``params.extra``."""
    names = [n.strip() for n in reference.removeprefix("lm-eval:").split(",") if n.strip()]
    if not names:
        raise InvalidInputError("lm-eval:TASK needs a task or group name, e.g. lm-eval:gsm8k")
    settings: dict[str, Any] = {}
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidInputError(f"--extra takes KEY=VALUE, got {item!r}")
        settings[key.strip()] = yaml.safe_load(value) if value.strip() else None
    config: dict[str, Any] = {"type": "lm-eval", "tasks": {name: {"type": name} for name in names}}
    if settings:
        config["params"] = {"extra": settings}
    return config


async def run_file(
    path: Path,
    *,
    settings: Settings,
    model: str | None,
    limit: int | None,
    console: Console,
    max_outage: float | None = None,
    document: dict[str, Any] | None = None,
) -> RunOutcome:
    """Run one benchmark file (ours or a NeMo config), or ``document`` named ``path``; return its result.

    ``max_outage`` (seconds) overrides how long the job waits for an unreachable model endpoint.
    """
    document = read_document(path) if document is None else document
    # The user named this file: the files beside it may be read, whatever the server's data roots.
    folder = path.resolve().parent
    if folder not in settings.data_roots:
        settings = settings.model_copy(update={"data_roots": [*settings.data_roots, folder]})
    services = build_services(settings)
    await services.start()
    try:
        chosen_model = model or EMBEDDED_MODEL_ID
        if is_nemo_config(document):
            job = await _submit_nemo_config(services, document, chosen_model, limit, max_outage)
        else:
            spec = parse_benchmark_file(document, path)
            job = await _submit_benchmark_file(services, spec, path, chosen_model, limit, max_outage)
        console.print(f"Job [bold]{job.id}[/bold]: {path.name} on model [bold]{chosen_model}[/bold]")
        return await _outcome(services, await _follow(services, job.id, console))
    finally:
        await services.stop()


async def resume_job(job_id: str, *, settings: Settings, console: Console) -> RunOutcome:
    """Run a failed or cancelled job of the store again, from the samples it already recorded."""
    services = build_services(settings)
    await services.start()
    try:
        job = await services.worker.resume(job_id)
        done = (job.progress or {}).get("samples_processed", 0)
        console.print(f"Resuming job [bold]{job.id}[/bold] ({done} samples already recorded)")
        return await _outcome(services, await _follow(services, job.id, console))
    finally:
        await services.stop()


async def _outcome(services: Services, job: JobRecord) -> RunOutcome:
    """The result and summary lines of a finished job (none unless it completed)."""
    if job.status != "completed":
        return RunOutcome(job=job, result={})
    if job.front == "nemo":
        result = job.result or {}
        return RunOutcome(job=job, result=result, lines=nemo_lines(result))
    provider = services.providers["local"]
    response = await provider.job_result(job.benchmark_id or "", job.id)
    return RunOutcome(job=job, result=response.model_dump(mode="json"), lines=llama_stack_lines(response))


def render_table(outcome: RunOutcome) -> Table:
    """The closing table: every metric with its standard error."""
    table = Table(title=f"Results of {outcome.job.id}")
    table.add_column("source")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("± stderr", justify="right")
    table.add_column("n", justify="right")
    for line in outcome.lines:
        table.add_row(
            line.source,
            line.metric,
            "-" if line.value is None else f"{line.value:.4f}",
            "-" if line.stderr is None else f"{line.stderr:.4f}",
            "-" if line.count is None else str(line.count),
        )
    return table


def write_output(outcome: RunOutcome, output: Path) -> None:
    """Write the job, its full result and the summary lines as JSON."""
    document = {
        "job_id": outcome.job.id,
        "status": outcome.job.status,
        "error": outcome.job.error,
        "progress": outcome.job.progress,
        "summary": [line.__dict__ for line in outcome.lines],
        "result": outcome.result,
    }
    output.write_text(json.dumps(document, indent=2, default=str), encoding="utf-8")
