"""Domain errors, raised below the API layer and mapped to status codes once per API family."""

from __future__ import annotations


class EvalstackError(Exception):
    """Base class of every error evalstack raises on purpose."""

    def __init__(self, message: str, *, detail: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class NotFoundError(EvalstackError):
    """An id or reference names nothing that exists."""


class InvalidInputError(EvalstackError):
    """An input is malformed or inconsistent; the message says what is accepted."""


class ForbiddenError(EvalstackError):
    """The caller may not do this (deleting what someone else created without the admin scope)."""


class ConflictError(EvalstackError):
    """Something with the same identity already exists."""


class UnsupportedError(EvalstackError):
    """The operation is not supported by this provider or configuration."""


class UpstreamError(EvalstackError):
    """A remote service (model endpoint, NeMo Evaluator) failed or could not be reached."""


class UpstreamTimeoutError(UpstreamError):
    """A remote service did not answer in time."""


class StorageFullError(EvalstackError):
    """evalstack's database has no room left (a full disk, or a size limit); nothing was written."""
