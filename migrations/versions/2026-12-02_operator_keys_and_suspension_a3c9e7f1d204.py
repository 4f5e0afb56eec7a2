"""Operator keys (``operator_key``) and tenant suspension and deletion confirmation (``tenant`` columns).

Revision ID: a3c9e7f1d204
Revises: d7a9c3e5b812
Create Date: 2026-12-02 03:15:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a3c9e7f1d204"
down_revision: str | None = "d7a9c3e5b812"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply: the operator's keys; a tenant's suspension and pending deletion token."""
    op.create_table(
        "operator_key",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_key")),
    )
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("suspended_reason", sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column("deletion_token_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("deletion_token_expires_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Revert: suspended tenants become active again; operator keys are dropped."""
    with op.batch_alter_table("tenant", schema=None) as batch_op:
        batch_op.drop_column("deletion_token_expires_at")
        batch_op.drop_column("deletion_token_hash")
        batch_op.drop_column("suspended_reason")
        batch_op.drop_column("suspended_at")
    op.drop_table("operator_key")
