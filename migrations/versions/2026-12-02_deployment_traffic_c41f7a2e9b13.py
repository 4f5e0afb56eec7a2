"""deployment.traffic: the versions that serve a deployment, with their shares.

Revision ID: c41f7a2e9b13
Revises: b7e2c41d9a05
Create Date: 2026-12-02 00:30:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c41f7a2e9b13"
down_revision: str | None = "b7e2c41d9a05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply. Existing deployments get no traffic (null): their ``model_version`` serves all of it."""
    with op.batch_alter_table("deployment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("traffic", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Revert. A deployment with a split keeps its first live version (``model_version``) and loses the rest."""
    with op.batch_alter_table("deployment", schema=None) as batch_op:
        batch_op.drop_column("traffic")
