"""SQLAlchemy Core tables. Only store/ imports this module; everything else sees plain records.

Generic column types only (``JSON``, ``String``, ``Integer``, ``DateTime``), so any SQLAlchemy
database works: SQLite by default, PostgreSQL too. Core tables rather than ORM classes: the store
reads and writes rows as plain values, and the ORM's import alone would cost every ``evalstack``
command about a tenth of a second.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

# Long enough for Hugging Face URIs used as ids and for NeMo "namespace/name" keys.
KEY_LENGTH = 512

metadata = MetaData()
"""Every evalstack table; ``metadata.create_all`` makes the missing ones."""


resources = Table(
    "resources",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("key", String(KEY_LENGTH), nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(KEY_LENGTH), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("kind", "key", name="uq_resources_kind_key"),
)
"""One registered thing (model, dataset, benchmark, scoring function, NeMo config or target).

``seq`` keeps the order of first registration, so lists come back oldest first even when an entry
is later replaced."""

dataset_rows = Table(
    "dataset_rows",
    metadata,
    Column("dataset_id", String(KEY_LENGTH), primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("data", JSON, nullable=False),
)
"""One row of a dataset whose rows live in the store (``rows`` source, or appended rows).

Positions are contiguous from 0, so a page is a range scan on the primary key."""

jobs = Table(
    "jobs",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), unique=True, nullable=False),
    Column("front", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("error", Text, nullable=True),
    Column("result", JSON(none_as_null=True), nullable=True),
    Column("progress", JSON, nullable=False),
    Column("benchmark_id", String(KEY_LENGTH), nullable=True),
    Column("provider_id", String(KEY_LENGTH), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(KEY_LENGTH), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_jobs_front_seq", "front", "seq"),
    Index("ix_jobs_status", "status"),
)
"""A job: its spec, status, progress and cached result (see ``records.JobRecord``)."""

samples = Table(
    "samples",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(64), nullable=False),
    Column("task", String(KEY_LENGTH), nullable=False),
    Column("index", Integer, nullable=False),
    Column("item", JSON, nullable=False),
    Column("output_text", Text, nullable=True),
    Column("response", JSON(none_as_null=True), nullable=True),
    Column("finish_reason", Text, nullable=True),
    Column("scores", JSON, nullable=False),
    Column("error", Text, nullable=True),
    Column("extra", JSON, nullable=False),
    UniqueConstraint("job_id", "task", "index", name="uq_samples_job_task_index"),
)
"""One finished sample of one task of one job (see ``records.SampleRecord``).

The unique index on ``(job_id, task, index)`` makes writes idempotent and serves reading a job's
samples in order, listing recorded indices and counting, all as index range scans."""

job_leases = Table(
    "job_leases",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("owner", String(KEY_LENGTH), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
"""Which worker process runs a job, and until when its claim holds (see ``Store.claim_job``).

A separate table (not columns of ``jobs``), so databases made before leases existed get it from
``create_all`` without a migration."""
