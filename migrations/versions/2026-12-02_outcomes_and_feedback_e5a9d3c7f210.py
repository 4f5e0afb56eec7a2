"""outcome and feedback: what each version of a split answered, and the ground truth clients report.

Revision ID: e5a9d3c7f210
Revises: 5d2e8a7c3f61
Create Date: 2026-12-02 01:00:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e5a9d3c7f210"
down_revision: str | None = "5d2e8a7c3f61"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply. Both tables start empty: nothing was recorded before."""
    op.create_table(
        "outcome",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=False),
        sa.Column("variant", sa.String(length=20), nullable=True),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("shadow_of", sa.String(length=36), nullable=True),
        sa.Column("items", sa.Integer(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("error", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_outcome_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_outcome")),
    )
    with op.batch_alter_table("outcome", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outcome_tenant_id_deployment_id_created_at", ["tenant_id", "deployment_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_outcome_shadow_of", ["shadow_of"], unique=False)
        batch_op.create_index("ix_outcome_created_at", ["created_at"], unique=False)

    op.create_table(
        "feedback",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("label", sa.JSON(), nullable=True),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("api_key_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_feedback_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_feedback")),
    )
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.create_index("ix_feedback_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    """Revert: outcomes and feedback are dropped (experiments start over after an upgrade)."""
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_index("ix_feedback_created_at")
    op.drop_table("feedback")
    with op.batch_alter_table("outcome", schema=None) as batch_op:
        batch_op.drop_index("ix_outcome_created_at")
        batch_op.drop_index("ix_outcome_shadow_of")
        batch_op.drop_index("ix_outcome_tenant_id_deployment_id_created_at")
    op.drop_table("outcome")
