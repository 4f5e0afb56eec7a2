"""plan: price plans as data (prices per model, a per-key rate limit, default caps, deployment limits).

Revision ID: b8e4a2c6d017
Revises: f2b6d8a4c913
Create Date: 2026-12-02 03:45:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b8e4a2c6d017"
down_revision: str | None = "f2b6d8a4c913"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply."""
    op.create_table(
        "plan",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("prices", sa.JSON(), nullable=False),
        sa.Column("rate_limit_per_minute", sa.Integer(), nullable=True),
        sa.Column("spend_cap", sa.BigInteger(), nullable=True),
        sa.Column("request_cap", sa.Integer(), nullable=True),
        sa.Column("max_deployments", sa.Integer(), nullable=True),
        sa.Column("max_loaded_deployments", sa.Integer(), nullable=True),
        sa.Column("bill_shadow", sa.Boolean(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_plan")),
    )


def downgrade() -> None:
    """Revert."""
    op.drop_table("plan")
