"""Comparisons and gate results as a terminal table, Markdown and self-contained HTML.

HTML goes through Jinja2 with autoescaping on, so nothing a model or a user wrote (task names,
metric names, item fields) can become markup; charts are inline SVG on the viewer's chart geometry
(:mod:`evalstack.viewer.charts`), styles inline CSS, and there is no script. Markdown escapes the
characters that would change a table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from jinja2 import Environment, PackageLoader, StrictUndefined

from evalstack.viewer.charts import ForestRow, forest_plot

if TYPE_CHECKING:
    from rich.table import Table

    from evalstack.analysis.compare import Comparison, MetricComparison
    from evalstack.analysis.gate import GateResult

_ENVIRONMENT: list[Environment] = []  # built once, on first use (a cache, not state)


def environment() -> Environment:
    """The Jinja2 environment of the report templates (autoescape always on)."""
    if not _ENVIRONMENT:
        env = Environment(
            loader=PackageLoader("evalstack.analysis", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["num"] = number
        env.filters["signed"] = signed
        env.filters["pvalue"] = pvalue
        _ENVIRONMENT.append(env)
    return _ENVIRONMENT[0]


# ---- numbers ----------------------------------------------------------------------------------------


def number(value: float | None, digits: int = 4) -> str:
    """A figure for people: ``digits`` significant digits, '-' for a missing one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}" if abs(value) >= 1e-4 or value == 0 else f"{value:.2e}"


def signed(value: float | None, digits: int = 4) -> str:
    """Like :func:`number`, with a sign."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.{digits}g}" if abs(value) >= 1e-4 or value == 0 else f"{value:+.2e}"


def pvalue(value: float) -> str:
    """A p-value: four decimals, or '<0.0001'."""
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def markdown_cell(text: object) -> str:
    """Text safe inside a Markdown table cell: pipes, backslashes, angle brackets and newlines escaped."""
    out = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(out.split())


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; every cell escaped."""
    lines = ["| " + " | ".join(markdown_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ---- comparisons ------------------------------------------------------------------------------------


def _significant(row: MetricComparison) -> str:
    if row.p_holm >= 0.05:
        return "none"
    return "better" if row.delta > 0 else "worse"


def _interval(low: float, high: float) -> str:
    return f"[{signed(low)}, {signed(high)}]"


def _short(value: float, sign: bool = False) -> str:
    """Three decimals for the terminal (a tiny non-zero value in scientific notation)."""
    if value != 0 and abs(value) < 0.001:
        return f"{value:+.1e}" if sign else f"{value:.1e}"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def comparison_table(comparison: Comparison, *, compact: bool = False) -> Table:
    """The comparison as a rich table for the terminal (groups in bold; every figure is in the JSON).

    ``compact`` leaves out the two means, for terminals under about 110 columns.
    """
    from rich import box
    from rich.table import Table

    table = Table(
        title=f"{comparison.candidate.label} ({comparison.candidate.id}) vs "
        f"{comparison.baseline.label} ({comparison.baseline.id})",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("task / group", overflow="fold", min_width=12)
    table.add_column("metric", overflow="fold", min_width=8)
    means = () if compact else ("base", "cand")
    for column in ("n", *means, "Δ", f"{comparison.confidence:.0%} CI", "n10/n01", "p Holm", "MDE"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in comparison.rows:
        style = {"better": "green", "worse": "red"}.get(_significant(row))
        table.add_row(
            f"[bold]{row.name}[/bold]" if row.scope == "group" else row.name,
            row.metric,
            str(row.n),
            *(() if compact else (_short(row.baseline_mean), _short(row.candidate_mean))),
            _short(row.delta, sign=True),
            f"[{_short(row.ci_low, True)}, {_short(row.ci_high, True)}]" + ("c" if row.clustered else ""),
            f"{row.n10}/{row.n01}" if row.n10 is not None else "-",
            pvalue(row.p_holm),
            _short(row.mde),
            style=style,
        )
    return table


def comparison_notes(comparison: Comparison) -> list[str]:
    """Lines under the table: pairing, clustering and warnings."""
    notes = [
        f"Paired on {comparison.matched} items; {comparison.unmatched_count} unpaired. "
        f"Δ = candidate - baseline; CI t-based"
        + (f", cluster-robust by '{comparison.cluster}' where marked c" if comparison.cluster else "")
        + "; groups in bold"
        + f"; bootstrap {comparison.resamples} resamples (seed {comparison.seed}); "
        "p: exact McNemar (0/1 metrics) or sign-flip permutation; Holm-adjusted across all rows; "
        "MDE at 80% power, two-sided 5%."
    ]
    return notes + [f"Warning: {w}" for w in comparison.warnings]


def comparison_markdown(comparison: Comparison) -> str:
    """The comparison as Markdown: header, warnings, one table row per metric and scope."""
    level = f"{comparison.confidence:.0%}"
    header = [
        "scope", "name", "metric", "kind", "n", "baseline", "candidate", "Δ", f"{level} CI",
        "bootstrap CI", "n10", "n01", "p", "p (Holm)", "test", "MDE",
    ]  # fmt: skip
    rows = [
        [
            r.scope, r.name, r.metric, r.kind, r.n, number(r.baseline_mean), number(r.candidate_mean),
            signed(r.delta), _interval(r.ci_low, r.ci_high) + (" (clustered)" if r.clustered else ""),
            _interval(r.bootstrap_ci_low, r.bootstrap_ci_high),
            "-" if r.n10 is None else r.n10, "-" if r.n01 is None else r.n01,
            pvalue(r.p_value), pvalue(r.p_holm), r.test, number(r.mde, 3),
        ]
        for r in comparison.rows
    ]  # fmt: skip
    parts = [
        f"# Comparison: {markdown_cell(comparison.candidate.label)} "
        f"vs {markdown_cell(comparison.baseline.label)}",
        "",
        f"- Baseline: `{comparison.baseline.id}` ({markdown_cell(comparison.baseline.label)})",
        f"- Candidate: `{comparison.candidate.id}` ({markdown_cell(comparison.candidate.label)})",
        "",
    ]
    parts += [f"> {markdown_cell(note)}" for note in comparison_notes(comparison)]
    parts += ["", markdown_table(header, rows) if rows else "_No metric could be compared._", ""]
    return "\n".join(parts)


def comparison_html(comparison: Comparison) -> str:
    """The comparison as one self-contained HTML page (inline CSS and SVG, no script)."""
    tone = {"better": "good", "worse": "bad", "none": "neutral"}
    plot = forest_plot(
        [
            ForestRow(
                label=f"{r.name} · {r.metric}", value=r.delta, low=r.ci_low, high=r.ci_high,
                group=r.scope == "group", tone=tone[_significant(r)],
            )
            for r in comparison.rows
        ],
        centre_zero=True,
    )  # fmt: skip
    return (
        environment()
        .get_template("comparison.html.j2")
        .render(
            comparison=comparison,
            notes=comparison_notes(comparison),
            plot=plot,
            rows=[(r, tone[_significant(r)]) for r in comparison.rows],
        )
    )


# ---- gate -------------------------------------------------------------------------------------------


def gate_table(result: GateResult) -> Table:
    """The gate's per-metric verdicts as a rich table (Δ signed so that positive is better, ↓ marking a
    lower-is-better metric); the reasons, with the MDE where it matters, go under it."""
    from rich import box
    from rich.table import Table

    table = Table(title=f"Gate: {result.verdict}", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    table.add_column("tier", no_wrap=True)
    table.add_column("metric (scope)", overflow="fold", min_width=10)
    for column in ("Δ", "CI", "-max_drop"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    colours = {"PASS": "green", "BREACH": "red", "INSUFFICIENT_EVIDENCE": "yellow"}
    for v in result.metrics:
        flip = 1.0 if v.direction == "higher_is_better" else -1.0
        low, high = sorted((flip * v.ci_low, flip * v.ci_high))
        table.add_row(
            v.tier,
            f"{v.metric} ({v.name})" + ("" if flip > 0 else " ↓"),
            _short(flip * v.delta, sign=True),
            f"[{_short(low, True)}, {_short(high, True)}]",
            _short(-v.max_drop, sign=True),
            f"[{colours[v.verdict]}]{v.verdict}[/]",
        )
    return table


def gate_markdown(result: GateResult) -> str:
    """The gate result as Markdown: the verdict, why, and a table of metrics."""
    rows = [
        [v.tier, v.metric, v.name, v.direction, number(v.max_drop), signed(v.delta),
         _interval(v.ci_low, v.ci_high), number(v.mde, 3), v.verdict, v.reason]
        for v in result.metrics
    ]  # fmt: skip
    parts = [
        f"# Gate: {result.verdict}",
        "",
        f"Candidate `{result.candidate.id}` ({markdown_cell(result.candidate.label)}) against baseline "
        f"`{result.baseline.id}` ({markdown_cell(result.baseline.label)}), "
        f"{result.interval} {result.confidence:.0%} confidence intervals.",
        "",
        *[f"- {markdown_cell(reason)}" for reason in result.reasons],
        *[f"- Warning: {markdown_cell(w)}" for w in result.warnings],
        "",
        markdown_table(
            ["tier", "metric", "scope", "direction", "max_drop", "Δ", "CI", "MDE", "verdict", "why"], rows
        ),
        "",
    ]
    return "\n".join(parts)
