"""Secrets never leave the service: the one list of secret keys, and the two ways to hide their values.

A key is secret when its name, in any case and with ``-`` read as ``_``, is one of
:data:`SECRET_KEYS` (``api_key``, ``Authorization``, ``HF_TOKEN``, ``client-secret``...). Both
functions look through nested mappings and lists and return copies; the input is never changed.

- :func:`redact` keeps the shape and replaces each non-empty secret value with :data:`REDACTED`:
  for typed wire shapes whose clients expect the field (NeMo targets, configs and jobs, result
  archives, error bodies, log lines).
- :func:`drop_secrets` removes secret keys altogether: for free-form maps where an absent key is
  the natural answer (Llama Stack model metadata and provider configs).

A client that reads a masked entity and sends it back unchanged keeps its secrets:
:func:`restore_redacted` puts the stored value back wherever the update still says :data:`REDACTED`.

Free text (a job's error, its log lines) can quote a secret anywhere: :func:`scrub` replaces every
occurrence of the secrets a job carried (:func:`secret_values` of its spec) in any string.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

REDACTED = "*****"
"""What a secret value is shown as."""

SECRET_KEYS: frozenset[str] = frozenset(
    {
        "api_key",
        "apikey",
        "api-key",
        "x-api-key",
        "authorization",
        "proxy-authorization",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth_token",
        "bearer_token",
        "hf_token",
        "secret",
        "client_secret",
        "secret_key",
        "secret_access_key",
        "aws_secret_access_key",
        "password",
        "passwd",
    }
)
"""Names of keys whose values are secrets (compared case-insensitively, ``-`` and ``_`` alike)."""

_NORMALIZED = frozenset(key.replace("-", "_") for key in SECRET_KEYS)

MIN_SCRUBBED_LENGTH = 6
"""Shorter secret values are not searched for in free text (they would mangle ordinary words)."""


def is_secret_key(key: object) -> bool:
    """Whether a mapping key names a secret."""
    return isinstance(key, str) and key.lower().replace("-", "_") in _NORMALIZED


def redact(value: Any) -> Any:
    """A copy of ``value`` with every non-empty secret value replaced by :data:`REDACTED`, at any depth."""
    if isinstance(value, Mapping):
        return {k: (REDACTED if is_secret_key(k) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def drop_secrets(value: Any) -> Any:
    """A copy of ``value`` without any secret key, at any depth."""
    if isinstance(value, Mapping):
        return {k: drop_secrets(v) for k, v in value.items() if not is_secret_key(k)}
    if isinstance(value, list | tuple):
        return [drop_secrets(v) for v in value]
    return value


def restore_redacted(value: Any, stored: Any) -> Any:
    """``value`` with each secret still reading :data:`REDACTED` put back from ``stored`` (same place)."""
    if isinstance(value, Mapping) and isinstance(stored, Mapping):
        return {
            k: stored[k]
            if is_secret_key(k) and v == REDACTED and k in stored
            else restore_redacted(v, stored.get(k))
            for k, v in value.items()
        }
    if isinstance(value, list) and isinstance(stored, list) and len(value) == len(stored):
        return [restore_redacted(v, s) for v, s in zip(value, stored, strict=True)]
    return value


def secret_values(value: Any) -> frozenset[str]:
    """The non-empty string values of every secret key in ``value``, at any depth."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, item in node.items():
                if is_secret_key(key) and isinstance(item, str) and item:
                    found.add(item)
                else:
                    walk(item)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)

    walk(value)
    return frozenset(found)


def scrub(value: Any, secrets: Collection[str]) -> Any:
    """A copy of ``value`` in which every string has each of ``secrets`` replaced by :data:`REDACTED`."""
    needles = sorted((s for s in secrets if len(s) >= MIN_SCRUBBED_LENGTH), key=len, reverse=True)
    if not needles:
        return value

    def clean(node: Any) -> Any:
        if isinstance(node, str):
            for needle in needles:
                node = node.replace(needle, REDACTED)
            return node
        if isinstance(node, Mapping):
            return {k: clean(v) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [clean(v) for v in node]
        return node

    return clean(value)
