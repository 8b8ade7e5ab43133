"""The ``evalstack`` command line: ``serve``, ``view``, ``run``, ``models``, ``jobs``, ``keys`` and ``cache``;
``compare``, ``gate`` and ``report`` live in :mod:`evalstack.cli_analysis`.

Heavy modules (the server, the engine, httpx) are imported inside the commands so that
``evalstack --help`` stays fast.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from evalstack.cli_analysis import add_analysis_commands

if TYPE_CHECKING:
    from rich.console import Console

    from evalstack.local_run import RunOutcome

app = typer.Typer(
    name="evalstack",
    help="An evaluation service for language models: the Llama Stack Eval API and the NeMo Evaluator API.",
    no_args_is_help=True,
    add_completion=False,
)
jobs_app = typer.Typer(help="Jobs held by a running server.", invoke_without_command=True)
app.add_typer(jobs_app, name="jobs")
keys_app = typer.Typer(help="API keys for the server's auth settings.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
cache_app = typer.Typer(
    help="The response cache in the store (see `evalstack run --cache`).", no_args_is_help=True
)
app.add_typer(cache_app, name="cache")

GRACEFUL_SHUTDOWN_S = 5  # how long SIGTERM waits for open requests before stopping the jobs
DEFAULT_URL = "http://127.0.0.1:8321"
URL_OPTION = typer.Option(
    DEFAULT_URL, "--url", envvar="EVALSTACK_URL", help="Base URL of a running evalstack server."
)
EXECUTOR_OPTION = typer.Option(
    None,
    "--executor",
    help="Where jobs run: 'local' (this process) or 'ray' (sharded over the Ray cluster at RAY_ADDRESS, "
    "or the settings' executor.address, else a new local Ray instance) [default: the settings' executor].",
)


def _executor_name(value: str | None) -> str | None:
    if value is not None and value not in ("local", "ray"):
        raise typer.BadParameter(
            f"{value!r} is not an executor; accepted: local, ray", param_hint="--executor"
        )
    return value


@app.command()
def serve(
    config: Path | None = typer.Option(
        None, "--config", "-c", exists=True, dir_okay=False, help="Settings file (YAML or JSON)."
    ),
    host: str | None = typer.Option(None, help="Interface to listen on [default: 127.0.0.1]."),
    port: int | None = typer.Option(None, help="Port to listen on [default: 8321]."),
    db: str | None = typer.Option(
        None, "--db", help="SQLAlchemy database URL [default: sqlite file in the data directory]."
    ),
    log_level: str = typer.Option("info", help="Log level: debug, info, warning, error."),
    insecure_no_auth: bool = typer.Option(
        False, "--insecure-no-auth", help="Serve without authentication on a non-loopback address."
    ),
    executor: str | None = EXECUTOR_OPTION,
) -> None:
    """Start the HTTP server."""
    import uvicorn

    from evalstack.auth import check_exposure
    from evalstack.config import load_settings
    from evalstack.server import create_app

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if db is not None:
        overrides["db_url"] = db
    overrides["executor"] = _executor_name(executor)
    from evalstack.errors import EvalstackError

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(config, **overrides)
        check_exposure(settings.host, settings.auth is not None, insecure_no_auth)
        application = create_app(settings)
    except (EvalstackError, ValueError, OSError) as exc:  # bad settings: say what is wrong, no traceback
        typer.secho(f"Invalid settings: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    # What was loaded to build the app lives as long as the server: out of the garbage collector's
    # sight, a full collection scans only what came later (a pause of tens of ms, not hundreds).
    gc.collect()
    gc.freeze()
    # SIGTERM: stop accepting, give open requests a few seconds, then stop the jobs (their finished
    # samples are flushed and their leases released, so another process takes them over at once).
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level=log_level.lower(),
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


# ---- evalstack view -----------------------------------------------------------------------------


@app.command()
def view(
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        exists=True,
        dir_okay=False,
        help="Settings file (YAML or JSON): its db_url and auth are the server's.",
    ),
    db: str | None = typer.Option(
        None,
        "--db",
        help="SQLAlchemy database URL [default: the settings' or a sqlite file in the data directory].",
    ),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8322, help="Port to listen on."),
    log_level: str = typer.Option("warning", help="Log level: debug, info, warning, error."),
    insecure_no_auth: bool = typer.Option(
        False, "--insecure-no-auth", help="Serve the viewer without authentication on a non-loopback address."
    ),
) -> None:
    """Browse a store's jobs and samples in the web viewer (http://HOST:PORT/ui/), with the server's auth."""
    import uvicorn

    from evalstack.auth import check_exposure
    from evalstack.config import load_settings
    from evalstack.errors import EvalstackError
    from evalstack.viewer.app import create_viewer_app

    try:
        settings = load_settings(config, db_url=db)
        check_exposure(host, settings.auth is not None, insecure_no_auth)
        application = create_viewer_app(settings)
    except (EvalstackError, ValueError, OSError) as exc:
        typer.secho(f"Invalid settings: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"evalstack viewer on http://{host}:{port}/ui/")
    uvicorn.run(application, host=host, port=port, log_level=log_level.lower())


# ---- evalstack run ------------------------------------------------------------------------------


@app.command()
def run(
    benchmark_file: str = typer.Argument(
        ...,
        help="A benchmark file (YAML or JSON), a NeMo Evaluator config, the name of a native benchmark "
        "(gsm8k, mmlu, arc_challenge, ...), or lm-eval:TASK[,TASK...] (lm-evaluation-harness tasks or "
        "groups by name).",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="A registered model name, 'embedded', or an OpenAI-compatible base URL "
        "(http://host:8000/v1, or http://host:8000/v1#model-name) [default: the embedded model].",
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Evaluate only the first N rows."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the full result as JSON here."),
    config: Path | None = typer.Option(
        None, "--config", "-c", exists=True, dir_okay=False, help="Settings file (YAML or JSON)."
    ),
    db: str | None = typer.Option(
        None, "--db", help="SQLAlchemy database URL [default: sqlite file in the data directory]."
    ),
    adaptive_concurrency: bool = typer.Option(
        False,
        "--adaptive-concurrency",
        help="Back off on 429s and rising latency, grow again while the endpoint keeps up (AIMD).",
    ),
    max_outage: float | None = typer.Option(
        None,
        "--max-outage",
        min=0.001,
        help="Seconds to wait for an unreachable model endpoint before the job fails, keeping its samples "
        "(resume it with 'evalstack resume') [default: the max_outage setting, 900].",
    ),
    executor: str | None = EXECUTOR_OPTION,
    extra: list[str] = typer.Option(
        [],
        "--extra",
        "-x",
        help="For lm-eval:TASK, a params.extra setting KEY=VALUE (repeatable), e.g. num_fewshot=5, "
        "tokenizer=NAME, endpoint_type=chat, apply_chat_template=true, include_path=DIR.",
    ),
    cache: bool = typer.Option(
        False, "--cache", help="Reuse model answers from the response cache and keep new ones there."
    ),
) -> None:
    """Run one benchmark in-process, on the same engine and store as the server."""
    import asyncio

    from rich.console import Console

    from evalstack.config import load_settings
    from evalstack.errors import EvalstackError
    from evalstack.local_run import lm_eval_document, run_file

    console = Console()
    try:
        document = lm_eval_document(benchmark_file, extra) if benchmark_file.startswith("lm-eval:") else None
        path = Path(benchmark_file)  # a file, or a native benchmark's name (run_file tells them apart)
        settings = load_settings(
            config,
            db_url=db,
            adaptive_concurrency=adaptive_concurrency or None,
            executor=_executor_name(executor),
        )
        outcome = asyncio.run(
            run_file(
                path,
                settings=settings,
                model=model,
                limit=limit,
                console=console,
                max_outage=max_outage,
                document=document,
                cache=cache,
            )
        )
    except EvalstackError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    _report(outcome, output, console)


@app.command()
def resume(
    job_id: str = typer.Argument(..., help="The id of a failed or cancelled job in the database."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the full result as JSON here."),
    config: Path | None = typer.Option(
        None, "--config", "-c", exists=True, dir_okay=False, help="Settings file (YAML or JSON)."
    ),
    db: str | None = typer.Option(
        None, "--db", help="SQLAlchemy database URL [default: sqlite file in the data directory]."
    ),
) -> None:
    """Finish a failed or cancelled job in-process: only the samples it has not recorded are run."""
    import asyncio

    from rich.console import Console

    from evalstack.config import load_settings
    from evalstack.errors import EvalstackError
    from evalstack.local_run import resume_job

    console = Console()
    try:
        settings = load_settings(config, db_url=db)
        outcome = asyncio.run(resume_job(job_id, settings=settings, console=console))
    except EvalstackError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    _report(outcome, output, console)


def _report(outcome: RunOutcome, output: Path | None, console: Console) -> None:
    """Write the JSON result if asked, then the metrics table, or why the job did not complete (exit 1)."""
    from evalstack.local_run import render_table, write_output

    if output is not None:
        write_output(outcome, output)
        console.print(f"Full result written to {output}")
    if outcome.job.status != "completed":
        reason = outcome.job.error or "no reason recorded"
        message = f"Job {outcome.job.id} ended {outcome.job.status}: {reason}"
        typer.secho(message, fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    console.print(render_table(outcome))


# -------------------------------------------------------------------------------------------------


def _get(
    url: str, path: str, params: dict[str, Any] | None = None, *, method: str = "GET", body: Any = None
) -> Any:
    """Send ``method`` to ``url + path`` (with a JSON ``body``; ``EVALSTACK_API_KEY`` as the bearer key, if
    set); the JSON body.

    Exits with a readable message on any failure.
    """
    import httpx

    key = os.environ.get("EVALSTACK_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.request(
            method, url.rstrip("/") + path, params=params, json=body, headers=headers, timeout=30.0
        )
    except httpx.HTTPError as exc:
        typer.secho(f"Cannot reach the evalstack server at {url}: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from exc
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except Exception:
            message = response.text
        typer.secho(f"{response.status_code}: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    return response.json()


@app.command()
def models(url: str = URL_OPTION) -> None:
    """List the models a running server knows."""
    from rich.console import Console
    from rich.table import Table

    data = _get(url, "/v1/models").get("data", [])
    table = Table(title=f"Models ({len(data)})")
    for column in ("identifier", "provider model id", "provider", "base url"):
        table.add_column(column)
    for model in data:
        meta = model.get("metadata") or {}
        table.add_row(
            str(model.get("identifier") or model.get("id")),
            str(model.get("provider_resource_id") or ""),
            str(model.get("provider_id") or ""),
            str(meta.get("base_url") or ""),
        )
    Console().print(table)


@app.command()
def benchmarks(
    search: str | None = typer.Option(
        None, "--search", "-s", help="Keep names (or descriptions) containing WORD."
    ),
    include_path: Path | None = typer.Option(
        None, "--include-path", exists=True, file_okay=False, help="A folder of your own lm-eval task YAMLs."
    ),
) -> None:
    """List what evalstack can run: native benchmarks and lm-eval tasks, groups and tags."""
    from rich.console import Console
    from rich.table import Table

    from evalstack.engine.catalog import catalog

    entries = catalog(search, include_path=str(include_path) if include_path else None)
    table = Table(title=f"Benchmarks ({len(entries)})")
    for column in ("name", "runs on", "kind", "output type", "description"):
        table.add_column(column)
    for entry in entries:
        table.add_row(entry.name, entry.path, entry.kind, entry.output_type or "", entry.description)
    Console().print(table)


def _progress_text(progress: dict[str, Any]) -> str:
    from rich.markup import escape

    done, total = progress.get("samples_processed"), progress.get("samples_total")
    if done is None:
        return ""
    text = f"{done}/{total}" if total else str(done)
    if progress.get("errors"):
        text += f" ({progress['errors']} errors)"
    cache = progress.get("cache")
    if cache:
        text += f", cache {cache.get('hits', 0)} hits / {cache.get('misses', 0)} misses"
    outage = progress.get("outage")
    if isinstance(outage, dict):
        text += f"; waiting for {outage.get('endpoint')}, unreachable for {outage.get('unreachable_s')}s"
    return escape(text)


@jobs_app.callback()
def jobs_default(ctx: typer.Context, url: str = URL_OPTION) -> None:
    """List jobs (the default), or show one with `jobs show ID`."""
    ctx.obj = url
    if ctx.invoked_subcommand is None:
        list_jobs(ctx, url=url, limit=50)


def _jobs_url(ctx: typer.Context, url: str) -> str:
    """The subcommand's --url, else the one given before it (`evalstack jobs --url U show ID`)."""
    parent = ctx.obj if isinstance(ctx.obj, str) else None
    return parent if url == DEFAULT_URL and parent else url


@jobs_app.command("list")
def list_jobs(
    ctx: typer.Context,
    url: str = URL_OPTION,
    limit: int = typer.Option(50, min=1, help="Show at most this many jobs, newest first."),
) -> None:
    """List jobs, newest first."""
    from rich.console import Console
    from rich.table import Table

    data = _get(_jobs_url(ctx, url), "/v1/evalstack/jobs", {"limit": limit}).get("data", [])
    table = Table(title=f"Jobs ({len(data)})")
    for column in ("id", "front", "status", "benchmark", "provider", "progress", "created"):
        table.add_column(column)
    for job in data:
        table.add_row(
            str(job["id"]),
            str(job.get("front") or ""),
            str(job.get("status") or ""),
            str(job.get("benchmark_id") or ""),
            str(job.get("provider_id") or ""),
            _progress_text(job.get("progress") or {}),
            str(job.get("created_at") or "")[:19],
        )
    Console().print(table)


def _run_again(ctx: typer.Context, url: str, job_id: str, action: str) -> None:
    """POST the job's ``resume`` or ``retry`` and say its new status."""
    job = _get(_jobs_url(ctx, url), f"/v1/evalstack/jobs/{job_id}/{action}", method="POST")
    typer.echo(f"Job {job['id']} is {job['status']} again")


@jobs_app.command("resume")
def resume_server_job(
    ctx: typer.Context, job_id: str = typer.Argument(..., help="The job id."), url: str = URL_OPTION
) -> None:
    """Run a failed or cancelled job again on the server, from the samples it already recorded."""
    _run_again(ctx, url, job_id, "resume")


@jobs_app.command("retry")
def retry_server_job(
    ctx: typer.Context, job_id: str = typer.Argument(..., help="The job id."), url: str = URL_OPTION
) -> None:
    """Run a finished job's samples that failed on infrastructure again, keeping the finished ones."""
    _run_again(ctx, url, job_id, "retry")


@jobs_app.command("show")
def show_job(
    ctx: typer.Context, job_id: str = typer.Argument(..., help="The job id."), url: str = URL_OPTION
) -> None:
    """Show one job: status, progress, error and its aggregated results."""
    from rich.console import Console
    from rich.table import Table

    job = _get(_jobs_url(ctx, url), f"/v1/evalstack/jobs/{job_id}")
    console = Console()
    table = Table(show_header=False, title=f"Job {job['id']}")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in ("front", "status", "benchmark_id", "provider_id", "created_at", "updated_at"):
        table.add_row(key, str(job.get(key) or ""))
    table.add_row("progress", _progress_text(job.get("progress") or {}))
    table.add_row("samples recorded", str(job.get("samples_recorded", "")))
    if job.get("error"):
        table.add_row("error", f"[red]{job['error']}[/red]")
    console.print(table)
    result = job.get("result")
    if result:
        console.print(_results_table(result) or json.dumps(result, indent=2)[:4000])


def _json_option(value: str | None, option: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        typer.secho(f"{option} is not valid JSON: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


@jobs_app.command("rescore")
def rescore_job(
    ctx: typer.Context,
    job_id: str = typer.Argument(..., help="A completed job whose stored outputs are scored again."),
    metrics: str | None = typer.Option(
        None,
        "--metrics",
        help="Scoring function ids, comma-separated (Llama Stack jobs), or a JSON object: scoring "
        "function id -> params, or NeMo metrics by name (custom configs); default: the job's own.",
    ),
    params: str | None = typer.Option(
        None,
        "--params",
        help='JSON merged into a NeMo config\'s params, e.g. \'{"extra": {"answer_regex": "is ([A-D])"}}\'.',
    ),
    url: str = URL_OPTION,
) -> None:
    """Score a finished job's stored outputs again, as a new job; no model request is sent."""
    body: dict[str, Any] = {}
    if metrics is not None:
        stripped = metrics.strip()
        body["metrics"] = (
            _json_option(stripped, "--metrics")
            if stripped.startswith("{")
            else [name.strip() for name in stripped.split(",") if name.strip()]
        )
    if params is not None:
        body["params"] = _json_option(params, "--params")
    job = _get(_jobs_url(ctx, url), f"/v1/evalstack/jobs/{job_id}/rescore", method="POST", body=body)
    typer.echo(f"Job {job['id']} re-scores {job_id}; `evalstack jobs show {job['id']}` shows its result.")


def _results_table(result: dict[str, Any]) -> Any:
    """Aggregated metrics of a Llama Stack result (``scores``) as a table; ``None`` for other shapes."""
    from rich.table import Table

    scores = result.get("scores")
    if not isinstance(scores, dict):
        return None
    table = Table(title="Results")
    for column in ("scoring function", "aggregation", "value"):
        table.add_column(column)
    for fn_id, scored in scores.items():
        aggregated = (scored or {}).get("aggregated_results", {}) if isinstance(scored, dict) else {}
        for name, value in aggregated.items():
            table.add_row(fn_id, name, json.dumps(value) if not isinstance(value, str) else value)
    return table


# ---- evalstack keys ----------------------------------------------------------------------------


@keys_app.command("new")
def new_api_key(
    name: str = typer.Argument(..., help="Who holds the key; recorded on everything it creates."),
    scopes: str = typer.Option("read", "--scopes", help="Comma-separated scopes: read, run, admin."),
) -> None:
    """Print a fresh API key and the settings entry (its SHA-256 digest) to add under auth.api_keys."""
    import yaml

    from evalstack.auth import SCOPES, key_settings_entry, new_key

    chosen = [s.strip() for s in scopes.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown or not chosen:
        typer.secho(
            f"Unknown scope(s) {', '.join(unknown) or '(none given)'}; accepted: {', '.join(SCOPES)}",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    key = new_key()
    typer.echo(f"API key (shown once; only its digest is stored): {key}")
    typer.echo("Add this entry under auth.api_keys in the server settings:")
    typer.echo(yaml.safe_dump([key_settings_entry(name, key, chosen)], sort_keys=False).rstrip())


# ---- evalstack cache ----------------------------------------------------------------------------

CACHE_CONFIG_OPTION = typer.Option(
    None, "--config", "-c", exists=True, dir_okay=False, help="Settings file (YAML or JSON)."
)
CACHE_DB_OPTION = typer.Option(
    None, "--db", help="SQLAlchemy database URL [default: sqlite file in the data directory]."
)


def _with_store(config: Path | None, db: str | None, work: Any) -> Any:
    """Open the store the settings name, run ``await work(store, settings)``, close it."""
    import asyncio

    from evalstack.config import load_settings
    from evalstack.errors import EvalstackError
    from evalstack.store.repository import Store

    async def main() -> Any:
        settings = load_settings(config, db_url=db)
        async with Store(settings.db_url) as store:
            return await work(store, settings)

    try:
        return asyncio.run(main())
    except EvalstackError as exc:
        typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


@cache_app.command("stats")
def cache_stats(config: Path | None = CACHE_CONFIG_OPTION, db: str | None = CACHE_DB_OPTION) -> None:
    """How many answers the cache holds and their size, per model."""
    from rich.console import Console
    from rich.table import Table

    summary = _with_store(config, db, lambda store, settings: store.cache_summary(settings.cache_ttl))
    table = Table(title=f"Response cache: {summary.entries:,} answers, {summary.bytes:,} bytes")
    for column in ("model", "answers", "bytes"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for model, counts in sorted(summary.models.items()):
        table.add_row(model, f"{counts['entries']:,}", f"{counts['bytes']:,}")
    console = Console()
    console.print(table)
    if summary.entries:
        console.print(
            f"oldest {summary.oldest:%Y-%m-%d %H:%M:%S}, newest {summary.newest:%Y-%m-%d %H:%M:%S} (UTC)"
        )
    if summary.expired:
        console.print(
            f"{summary.expired:,} expired (older than cache_ttl); "
            "`evalstack cache clear --expired` deletes them"
        )


@cache_app.command("clear")
def cache_clear(
    model: str | None = typer.Option(
        None, "--model", help="Only this model identity, as `evalstack cache stats` lists it."
    ),
    expired: bool = typer.Option(False, "--expired", help="Only answers older than the settings' cache_ttl."),
    config: Path | None = CACHE_CONFIG_OPTION,
    db: str | None = CACHE_DB_OPTION,
) -> None:
    """Delete cached answers (all of them unless narrowed)."""

    async def clear(store: Any, settings: Any) -> int:
        if expired and settings.cache_ttl is None:
            typer.secho(
                "--expired needs cache_ttl in the settings; nothing deleted", fg=typer.colors.RED, err=True
            )
            raise typer.Exit(2)
        return int(await store.clear_cache(model=model, max_age=settings.cache_ttl if expired else None))

    deleted = _with_store(config, db, clear)
    typer.echo(f"Deleted {deleted:,} cached answer{'s' if deleted != 1 else ''}.")


add_analysis_commands(app)  # compare, gate, report


def main() -> None:
    """The ``evalstack`` console script: the CLI, then an exit that skips the interpreter's teardown.

    A run imports thousands of modules (lm-eval, datasets, pandas); freeing them one by one at exit
    takes about half a second and does nothing a user needs. So the last exit handler, registered
    before any other, ends the process once every thread has been joined and every other handler
    (logging's, Ray's, the temporary folders') has run, after flushing the standard streams.

    The garbage collector's youngest generation is collected every 50,000 allocations instead of 700:
    a run allocates millions of short-lived objects (prompts, replies, lm-eval's per-document results)
    beside millions of long-lived ones (lm-eval, datasets and pandas), and at the default every
    collection that reaches the oldest generation walks them all (a sixth of a run's time).
    Unreachable cycles are still freed, a little later.
    """
    gc.set_threshold(50_000, 10, 10)
    code: list[int | str | None] = [0]
    atexit.register(_exit_now, code)  # the first registered runs last
    try:
        app()
    except SystemExit as done:
        code[0] = done.code
        raise
    except KeyboardInterrupt:
        code[0] = 130
        raise
    except BaseException:  # Python prints the traceback before the exit handlers run
        code[0] = 1
        raise


def _exit_now(code: list[int | str | None]) -> None:
    status = code[0]
    if not isinstance(status, int):  # sys.exit("message") has printed it; the status is 1 (None: 0)
        status = 0 if status is None else 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
