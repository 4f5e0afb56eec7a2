"""batch_file, batch_job and batch_chunk (batch inference); batch chunks are usage records of kind ``batch``.

Revision ID: d7a9c3e5b812
Revises: e7b3a9d15c42
Create Date: 2026-12-02 00:41:10.827250+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d7a9c3e5b812"
down_revision: str | None = "e7b3a9d15c42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "batch_file",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("created_by_key_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_batch_file_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_file")),
    )
    with op.batch_alter_table("batch_file", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batch_file_expires_at"), ["expires_at"], unique=False)
        batch_op.create_index("ix_batch_file_tenant_id_created_at", ["tenant_id", "created_at"], unique=False)

    op.create_table(
        "batch_job",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("deployment_name", sa.String(length=100), nullable=False),
        sa.Column("input_file_id", sa.String(length=40), nullable=False),
        sa.Column("output_file_id", sa.String(length=40), nullable=True),
        sa.Column("error_file_id", sa.String(length=40), nullable=True),
        sa.Column("endpoint", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("message", sa.String(length=500), nullable=True),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by_key_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_batch_job_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_job")),
    )
    with op.batch_alter_table("batch_job", schema=None) as batch_op:
        batch_op.create_index("ix_batch_job_status_last_claimed_at", ["status", "last_claimed_at"], unique=False)
        batch_op.create_index("ix_batch_job_tenant_id_created_at", ["tenant_id", "created_at"], unique=False)

    op.create_table(
        "batch_chunk",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("first_line", sa.Integer(), nullable=False),
        sa.Column("byte_start", sa.Integer(), nullable=False),
        sa.Column("byte_end", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.String(length=100), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["batch_job.id"], name=op.f("fk_batch_chunk_job_id_batch_job"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("job_id", "index", name=op.f("pk_batch_chunk")),
    )
    with op.batch_alter_table("batch_chunk", schema=None) as batch_op:
        batch_op.create_index("ix_batch_chunk_job_id_status", ["job_id", "status"], unique=False)


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("batch_chunk", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_chunk_job_id_status")

    op.drop_table("batch_chunk")
    with op.batch_alter_table("batch_job", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_job_tenant_id_created_at")
        batch_op.drop_index("ix_batch_job_status_last_claimed_at")

    op.drop_table("batch_job")
    with op.batch_alter_table("batch_file", schema=None) as batch_op:
        batch_op.drop_index("ix_batch_file_tenant_id_created_at")
        batch_op.drop_index(batch_op.f("ix_batch_file_expires_at"))

    op.drop_table("batch_file")
