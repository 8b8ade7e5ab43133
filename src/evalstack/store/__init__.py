"""Persistence: SQLAlchemy tables and the repository that uses them."""

from evalstack.store.records import JobRecord, SampleRecord

__all__ = ["JobRecord", "SampleRecord"]
