"""Reading results: paired comparison of two jobs, a regression gate, and reports of one job.

``paired`` holds the statistics (pure functions on arrays), ``compare`` pairs two jobs' samples
through the store and computes a :class:`Comparison`, ``gate`` judges a comparison against a
policy, ``report`` summarises one job as Markdown, HTML, JSON or CSV, and ``render`` shows
comparisons and gate results as terminal tables, Markdown and HTML.
"""

from evalstack.analysis.compare import (
    Comparison,
    JobRef,
    MetricComparison,
    UnmatchedItem,
    compare_jobs,
    flipped_samples,
)

__all__ = [
    "Comparison",
    "JobRef",
    "MetricComparison",
    "UnmatchedItem",
    "compare_jobs",
    "flipped_samples",
]
