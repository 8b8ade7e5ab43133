"""Bounds on what one request may ask for, so that no input can exhaust the server.

Each bound is checked where the input is parsed, with an error that names the bound.
The request body itself is bounded by ``Settings.max_body_bytes`` (413).
"""

from __future__ import annotations

from evalstack.errors import InvalidInputError

MAX_INLINE_ROWS = 100_000
"""Rows one request may carry inline (a ``rows`` dataset, appended rows, a NeMo ``rows`` target)."""

MAX_TEMPLATE_CHARS = 200_000
"""Characters in one Jinja template."""

MAX_LIMIT_SAMPLES = 10_000_000
"""The largest ``limit_samples``."""

MAX_N_SAMPLES = 1_000
"""The most completions per problem (``params.extra.n_samples``; pass@k reports k up to 100)."""

MAX_ROW_INDEX = 2**53 - 1
"""The largest row index or page size a request may name (``start_index``, ``limit`` of a rows page):
JSON's exact integer range, far below what a database integer holds."""


def check_inline_rows(count: int, what: str) -> None:
    """Raise InvalidInputError when ``count`` inline rows exceed :data:`MAX_INLINE_ROWS`."""
    if count > MAX_INLINE_ROWS:
        raise InvalidInputError(
            f"{what} holds {count} rows; at most {MAX_INLINE_ROWS} can be sent inline. "
            "Register larger datasets by URL or file path instead."
        )
