"""usage_record.kind: online requests and shadow copies, billed apart.

Revision ID: d5a8e3f1c702
Revises: c41f7a2e9b13
Create Date: 2026-12-02 01:00:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d5a8e3f1c702"
down_revision: str | None = "c41f7a2e9b13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply. Existing usage records were all answered to their clients: ``online``."""
    with op.batch_alter_table("usage_record", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), server_default="online", nullable=False))


def downgrade() -> None:
    """Revert. Shadow records stay, indistinguishable from online ones (their cost was billed)."""
    with op.batch_alter_table("usage_record", schema=None) as batch_op:
        batch_op.drop_column("kind")
