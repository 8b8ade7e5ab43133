"""SQLAlchemy tables. Only store/ imports this module; everything else sees plain records.

Generic column types only (``JSON``, ``String``, ``Integer``, ``DateTime``), so any SQLAlchemy
database works: SQLite by default, PostgreSQL too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Long enough for Hugging Face URIs used as ids and for NeMo "namespace/name" keys.
KEY_LENGTH = 512


class Base(DeclarativeBase):
    """Declarative base of every evalstack table."""


class ResourceRow(Base):
    """One registered thing (model, dataset, benchmark, scoring function, NeMo config or target).

    ``seq`` keeps the order of first registration, so lists come back oldest first even when an
    entry is later replaced.
    """

    __tablename__ = "resources"
    __table_args__ = (UniqueConstraint("kind", "key", name="uq_resources_kind_key"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(KEY_LENGTH))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DatasetRowRow(Base):
    """One row of a dataset whose rows live in the store (``rows`` source, or appended rows).

    Positions are contiguous from 0, so a page is a range scan on the primary key.
    """

    __tablename__ = "dataset_rows"

    dataset_id: Mapped[str] = mapped_column(String(KEY_LENGTH), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class JobRow(Base):
    """A job: its spec, status, progress and cached result (see ``records.JobRecord``)."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_front_seq", "front", "seq"),
        Index("ix_jobs_status", "status"),
    )

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    front: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON)
    benchmark_id: Mapped[str | None] = mapped_column(String(KEY_LENGTH), nullable=True)
    provider_id: Mapped[str | None] = mapped_column(String(KEY_LENGTH), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SampleRow(Base):
    """One finished sample of one task of one job (see ``records.SampleRecord``).

    The unique index on ``(job_id, task, index)`` makes writes idempotent and serves reading a
    job's samples in order, listing recorded indices and counting, all as index range scans.
    """

    __tablename__ = "samples"
    __table_args__ = (UniqueConstraint("job_id", "task", "index", name="uq_samples_job_task_index"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(KEY_LENGTH))
    index: Mapped[int] = mapped_column(Integer)
    item: Mapped[dict[str, Any]] = mapped_column(JSON)
    output_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON)


class JobLeaseRow(Base):
    """Which worker process runs a job, and until when its claim holds (see ``Store.claim_job``).

    A separate table (not columns of ``jobs``), so databases made before leases existed get it
    from ``create_all`` without a migration.
    """

    __tablename__ = "job_leases"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(KEY_LENGTH))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
