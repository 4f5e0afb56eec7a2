"""idempotency_record (requests sent with an Idempotency-Key and their answers), invoice (frozen months) and
usage_daily (usage summed per day, filled from the usage records there are).

Revision ID: e7b3a9d15c42
Revises: e5a9d3c7f210
Create Date: 2026-12-02 01:00:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e7b3a9d15c42"
down_revision: str | None = "e5a9d3c7f210"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "idempotency_record",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("lock_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("headers", sa.JSON(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_idempotency_record_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "key", name=op.f("pk_idempotency_record")),
    )
    op.create_index("ix_idempotency_record_created_at", "idempotency_record", ["created_at"], unique=False)
    op.create_table(
        "invoice",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("plan", sa.String(length=50), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_invoice_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("tenant_id", "month", name=op.f("pk_invoice")),
    )

    op.create_table(
        "usage_daily",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("model_name", sa.String(length=100), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=False),
        sa.Column("api_key_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("processing_ms", sa.Double(), nullable=False),
        sa.Column("gpu_ms", sa.Double(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_usage_daily_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "day",
            "deployment_id",
            "model_name",
            "model_version",
            "api_key_id",
            "kind",
            name=op.f("pk_usage_daily"),
        ),
    )
    # The records already there, summed per day and kind.
    if op.get_bind().dialect.name == "postgresql":
        day = "date_trunc('day', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    else:
        day = "strftime('%Y-%m-%d 00:00:00.000000', created_at)"
    op.execute(
        "INSERT INTO usage_daily (tenant_id, day, deployment_id, model_name, model_version, api_key_id, kind, "
        "requests, items, processing_ms, gpu_ms, cost) "
        f"SELECT tenant_id, {day}, deployment_id, model_name, model_version, COALESCE(api_key_id, ''), kind, "
        "COUNT(*), SUM(items), SUM(processing_ms), SUM(gpu_ms), SUM(cost) FROM usage_record "
        f"GROUP BY tenant_id, {day}, deployment_id, model_name, model_version, COALESCE(api_key_id, ''), kind"
    )


def downgrade() -> None:
    """Revert."""
    op.drop_table("usage_daily")
    op.drop_table("invoice")
    op.drop_index("ix_idempotency_record_created_at", table_name="idempotency_record")
    op.drop_table("idempotency_record")
