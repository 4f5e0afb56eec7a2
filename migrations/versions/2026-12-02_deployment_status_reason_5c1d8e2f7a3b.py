"""deployment.status is the last load's outcome (pending or failed) and deployment.status_reason says why one failed.

Until now every deployment was stored ``ready`` whether or not any process had loaded it. ``ready`` now means loaded
in the answering process and is never stored: existing rows become ``pending``.

Revision ID: 5c1d8e2f7a3b
Revises: c4d8e1f25a63
Create Date: 2026-12-02 00:30:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c1d8e2f7a3b"
down_revision: str | None = "c4d8e1f25a63"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_deployment = sa.table("deployment", sa.column("status", sa.String(20)))


def upgrade() -> None:
    """Apply: add the reason; stored ``ready`` (which nothing had checked) becomes ``pending``."""
    with op.batch_alter_table("deployment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status_reason", sa.String(length=1000), nullable=True))
    op.execute(_deployment.update().where(_deployment.c.status == "ready").values(status="pending"))


def downgrade() -> None:
    """Revert: the previous release stored ``ready`` for every deployment."""
    op.execute(_deployment.update().values(status="ready"))
    with op.batch_alter_table("deployment", schema=None) as batch_op:
        batch_op.drop_column("status_reason")
