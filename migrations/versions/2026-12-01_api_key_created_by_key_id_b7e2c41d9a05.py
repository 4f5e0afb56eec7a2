"""api_key.created_by_key_id: the key that created a key.

Revision ID: b7e2c41d9a05
Revises: 3fa78f7cfddf
Create Date: 2026-12-01 21:30:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7e2c41d9a05"
down_revision: str | None = "3fa78f7cfddf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply. Existing keys get no parent (as if made by the operator)."""
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_by_key_id", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_api_key_created_by_key_id"), ["created_by_key_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_api_key_created_by_key_id_api_key"),
            "api_key",
            ["created_by_key_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("api_key", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_api_key_created_by_key_id_api_key"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_api_key_created_by_key_id"))
        batch_op.drop_column("created_by_key_id")
