"""The ``compare``, ``gate`` and ``report`` commands of the ``evalstack`` command line.

Each reads jobs either from a running server (``--url``, or ``EVALSTACK_URL``) or straight from a
store (``--db``, else the store of the settings: the same SQLite file ``evalstack run`` and
``evalstack serve`` use by default). Heavy modules are imported inside the commands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

if TYPE_CHECKING:
    from evalstack.analysis import Comparison
    from evalstack.store.repository import Store

T = TypeVar("T")

GATE_ERROR_EXIT = 3
"""Exit code of ``evalstack gate`` when it cannot judge (bad policy, unknown job or metric)."""

DB_OPTION = typer.Option(
    None, "--db", help="SQLAlchemy database URL of the store to read [default: the settings' store]."
)
URL_OPTION = typer.Option(
    None, "--url", envvar="EVALSTACK_URL", help="Base URL of a running evalstack server to ask instead."
)
CONFIG_OPTION = typer.Option(
    None, "--config", "-c", exists=True, dir_okay=False, help="Settings file (YAML or JSON) naming the store."
)
CLUSTER_OPTION = typer.Option(
    None,
    "--cluster",
    help="Item field to cluster standard errors on [default: 'subject' if items have it].",
)


def _fail(message: str, code: int) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _with_store(db: str | None, config: Path | None, work: Callable[[Store], Awaitable[T]], code: int) -> T:
    """Open the store named by ``--db`` (or the settings), run ``work`` on it, close it."""
    from evalstack.config import load_settings
    from evalstack.errors import EvalstackError
    from evalstack.store.repository import Store

    async def run() -> T:
        settings = load_settings(config, db_url=db)
        async with Store(settings.db_url) as store:
            return await work(store)

    try:
        return asyncio.run(run())
    except EvalstackError as exc:
        raise _fail(f"error: {exc.message}", code) from exc


def _request(url: str, path: str, params: dict[str, Any], code: int) -> Any:
    """GET from the server (``EVALSTACK_API_KEY`` as the bearer key, if set); the response, or exit."""
    import os

    import httpx

    key = os.environ.get("EVALSTACK_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(url.rstrip("/") + path, params=params, headers=headers, timeout=600.0)
    except httpx.HTTPError as exc:
        raise _fail(f"Cannot reach the evalstack server at {url}: {exc}", code) from exc
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except Exception:
            message = response.text
        raise _fail(f"{response.status_code}: {message}", code)
    return response


def _source(db: str | None, url: str | None, code: int = 2) -> None:
    if db is not None and url is not None:
        raise _fail("Give --db (read a store) or --url (ask a server), not both.", code)


def _comparison(
    baseline: str, candidate: str, cluster: str | None, db: str | None, url: str | None, config: Path | None,
    code: int,
) -> Comparison:  # fmt: skip
    from evalstack.analysis import Comparison, compare_jobs

    _source(db, url, code)
    if url is not None:
        params = {"baseline": baseline, "candidate": candidate, **({"cluster": cluster} if cluster else {})}
        return Comparison.model_validate(_request(url, "/v1/evalstack/compare", params, code).json())

    async def work(store: Store) -> Comparison:
        return await compare_jobs(store, baseline, candidate, cluster=cluster)

    return _with_store(db, config, work, code)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"Written to {output}", err=True)


def compare(
    baseline: str = typer.Argument(..., help="The baseline job id."),
    candidate: str = typer.Argument(..., help="The candidate job id."),
    cluster: str | None = CLUSTER_OPTION,
    output_format: str = typer.Option("table", "--format", "-f", help="table, json, md or html."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    db: str | None = DB_OPTION,
    url: str | None = URL_OPTION,
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Compare two jobs item by item: paired Δ with CIs, flips, exact tests, MDE, Holm-adjusted p."""
    from evalstack.analysis import render

    formats = ("table", "json", "md", "html")
    if output_format not in formats:
        raise _fail(f"Unknown --format {output_format!r}; accepted: {', '.join(formats)}", 2)
    comparison = _comparison(baseline, candidate, cluster, db, url, config, 2)
    if output_format == "table" and output is None:
        from rich.console import Console

        console = Console()
        console.print(render.comparison_table(comparison, compact=console.width < 110))
        for note in render.comparison_notes(comparison):
            console.print(note, style="yellow" if note.startswith("Warning") else "dim", highlight=False)
        return
    if output_format == "json":
        text = comparison.model_dump_json(indent=2)
    elif output_format == "html":
        text = render.comparison_html(comparison)
    else:
        text = render.comparison_markdown(comparison)
    _emit(text, output)


def gate(
    baseline: str = typer.Argument(..., help="The baseline job id."),
    candidate: str = typer.Argument(..., help="The candidate job id."),
    policy: Path = typer.Option(
        ..., "--policy", "-p", exists=True, dir_okay=False, help="Gate policy (YAML/JSON)."
    ),
    cluster: str | None = CLUSTER_OPTION,
    output_format: str = typer.Option("table", "--format", "-f", help="table, md or json."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Also write the report here (.json, else md)."
    ),
    db: str | None = DB_OPTION,
    url: str | None = URL_OPTION,
    config: Path | None = CONFIG_OPTION,
) -> None:
    """Judge a candidate against a baseline with a policy. Exit 0 GO, 1 NO-GO, 2 INCONCLUSIVE, 3 error."""
    from evalstack.analysis import render
    from evalstack.analysis.gate import evaluate_gate, read_policy
    from evalstack.errors import EvalstackError

    formats = ("table", "md", "json")
    if output_format not in formats:
        raise _fail(f"Unknown --format {output_format!r}; accepted: {', '.join(formats)}", GATE_ERROR_EXIT)
    try:
        rules = read_policy(policy)
        comparison = _comparison(baseline, candidate, cluster, db, url, config, GATE_ERROR_EXIT)
        result = evaluate_gate(comparison, rules)
    except EvalstackError as exc:
        raise _fail(f"error: {exc.message}", GATE_ERROR_EXIT) from exc
    markdown = render.gate_markdown(result)
    if output_format == "json":
        typer.echo(result.model_dump_json(indent=2))
    elif output_format == "md":
        typer.echo(markdown)
    else:
        from rich.console import Console

        console = Console()
        console.print(render.gate_table(result))
        for reason in result.reasons:
            console.print(f"- {reason}", highlight=False)
        for warning in result.warnings:
            console.print(f"Warning: {warning}", style="yellow", highlight=False)
        console.print(f"Verdict: {result.verdict}", style="bold")
    if output is not None:
        output.write_text(result.model_dump_json(indent=2) if output.suffix == ".json" else markdown, "utf-8")
    raise typer.Exit(result.exit_code)


def report(
    job_id: str = typer.Argument(..., help="The job id."),
    output_format: str = typer.Option("md", "--format", "-f", help="md, html, json or csv."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    db: str | None = DB_OPTION,
    url: str | None = URL_OPTION,
    config: Path | None = CONFIG_OPTION,
) -> None:
    """A report of one job: metrics with 95% CIs and counts (CSV: one row per sample and score)."""
    from evalstack.analysis.report import REPORT_FORMATS, render_report

    if output_format not in REPORT_FORMATS:
        raise _fail(f"Unknown --format {output_format!r}; accepted: {', '.join(REPORT_FORMATS)}", 2)
    _source(db, url)
    sink = output.open("w", encoding="utf-8", newline="") if output is not None else None
    try:
        if url is not None:
            response = _request(url, f"/v1/evalstack/jobs/{job_id}/report", {"format": output_format}, 2)
            _write(sink, response.text)
        else:

            async def work(store: Store) -> None:
                async for chunk in render_report(store, job_id, output_format):
                    _write(sink, chunk)

            _with_store(db, config, work, 2)
    except BaseException:
        if sink is not None and output is not None:
            sink.close()
            output.unlink(missing_ok=True)  # no half-written report left behind
        raise
    finally:
        if sink is not None:
            sink.close()
    if output is not None:
        typer.echo(f"Written to {output}", err=True)


def _write(sink: Any, text: str) -> None:
    if sink is None:
        typer.echo(text, nl=False)
    else:
        sink.write(text)


def add_analysis_commands(app: typer.Typer) -> None:
    """Register ``compare``, ``gate`` and ``report`` on the command line."""
    app.command()(compare)
    app.command()(gate)
    app.command()(report)
