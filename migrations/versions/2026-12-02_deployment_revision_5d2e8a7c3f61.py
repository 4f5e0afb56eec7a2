"""deployment_revision: every state a deployment was in; deployment.revision: the one it is in now.

Revision ID: 5d2e8a7c3f61
Revises: d5a8e3f1c702
Create Date: 2026-12-02 01:00:00.000000+00:00
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d2e8a7c3f61"
down_revision: str | None = "d5a8e3f1c702"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_deployment = sa.table(
    "deployment",
    sa.column("id", sa.Uuid()),
    sa.column("tenant_id", sa.Uuid()),
    sa.column("model_version", sa.String()),
    sa.column("config", sa.JSON()),
    sa.column("traffic", sa.JSON()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)
_revision = sa.table(
    "deployment_revision",
    sa.column("id", sa.Uuid()),
    sa.column("deployment_id", sa.Uuid()),
    sa.column("tenant_id", sa.Uuid()),
    sa.column("number", sa.Integer()),
    sa.column("model_version", sa.String()),
    sa.column("config", sa.JSON()),
    sa.column("traffic", sa.JSON()),
    sa.column("changes", sa.JSON()),
    sa.column("action", sa.String()),
    sa.column("created_by_key_id", sa.String()),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    """Apply. Every existing deployment gets revision 1, equal to its row (made by nobody known, when the
    deployment was created), and ``deployment.revision`` 1.
    """
    op.create_table(
        "deployment_revision",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("deployment_id", sa.Uuid(), nullable=False),
        sa.Column("tenant_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("traffic", sa.JSON(), nullable=True),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("created_by_key_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployment.id"],
            name=op.f("fk_deployment_revision_deployment_id_deployment"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenant.id"], name=op.f("fk_deployment_revision_tenant_id_tenant"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_revision")),
        sa.UniqueConstraint("deployment_id", "number", name=op.f("uq_deployment_revision_deployment_id")),
    )
    with op.batch_alter_table("deployment_revision", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deployment_revision_tenant_id"), ["tenant_id"], unique=False)
    with op.batch_alter_table("deployment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default=sa.text("1")))

    connection = op.get_bind()
    rows = connection.execute(
        sa.select(
            _deployment.c.id,
            _deployment.c.tenant_id,
            _deployment.c.model_version,
            _deployment.c.config,
            _deployment.c.traffic,
            _deployment.c.created_at,
        )
    ).all()
    if rows:
        connection.execute(
            _revision.insert(),
            [
                {
                    "id": uuid.uuid4(),
                    "deployment_id": row.id,
                    "tenant_id": row.tenant_id,
                    "number": 1,
                    "model_version": row.model_version,
                    "config": row.config,
                    "traffic": row.traffic,
                    "changes": {},
                    "action": "create",
                    "created_by_key_id": None,
                    "created_at": row.created_at,
                }
                for row in rows
            ],
        )


def downgrade() -> None:
    """Revert. Deployments keep their current state (their row); the history of earlier revisions is lost."""
    with op.batch_alter_table("deployment", schema=None) as batch_op:
        batch_op.drop_column("revision")
    with op.batch_alter_table("deployment_revision", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployment_revision_tenant_id"))
    op.drop_table("deployment_revision")
