"""usage_hourly: usage summed per hour (as usage_daily per day), filled from the usage records there are, so that
``GET /usage?groupBy=hour`` reads the rollup instead of every record of the period.

Revision ID: a9c4e7b2d516
Revises: f3b6d2a8c914
Create Date: 2026-12-02 03:40:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a9c4e7b2d516"
down_revision: str | None = "f3b6d2a8c914"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "usage_hourly",
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
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
            ["tenant_id"], ["tenant.id"], name=op.f("fk_usage_hourly_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "hour",
            "deployment_id",
            "model_name",
            "model_version",
            "api_key_id",
            "kind",
            name=op.f("pk_usage_hourly"),
        ),
    )
    # The records already there, summed per hour and kind.
    if op.get_bind().dialect.name == "postgresql":
        hour = "date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    else:
        hour = "strftime('%Y-%m-%d %H:00:00.000000', created_at)"
    op.execute(
        "INSERT INTO usage_hourly (tenant_id, hour, deployment_id, model_name, model_version, api_key_id, kind, "
        "requests, items, processing_ms, gpu_ms, cost) "
        f"SELECT tenant_id, {hour}, deployment_id, model_name, model_version, COALESCE(api_key_id, ''), kind, "
        "COUNT(*), SUM(items), SUM(processing_ms), SUM(gpu_ms), SUM(cost) FROM usage_record "
        f"GROUP BY tenant_id, {hour}, deployment_id, model_name, model_version, COALESCE(api_key_id, ''), kind"
    )


def downgrade() -> None:
    """Revert."""
    op.drop_table("usage_hourly")
