"""webhook_delivery.endpoint_id may be null: a delivery without an endpoint is a usage record's CloudEvent for the
operator's usage exporter (``CLOUDEASYML_USAGE_EXPORT__URL``), delivered through the same outbox as webhooks; due
deliveries are indexed apart for the two (partial indexes).

Revision ID: f3b6d2a8c914
Revises: b8e4a2c6d017
Create Date: 2026-12-02 03:20:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f3b6d2a8c914"
down_revision: str | None = "b8e4a2c6d017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_DUE = "ix_webhook_delivery_status_next_attempt_at"
_EXPORT_DUE = "ix_webhook_delivery_export_status_next_attempt_at"


def upgrade() -> None:
    """Apply."""
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.alter_column("endpoint_id", existing_type=sa.Uuid(), nullable=True)
    # Due deliveries indexed apart: webhooks (an endpoint) and usage exports (none), so neither claim walks the other's.
    op.drop_index(_DUE, table_name="webhook_delivery")
    for name, where in ((_DUE, "endpoint_id IS NOT NULL"), (_EXPORT_DUE, "endpoint_id IS NULL")):
        op.create_index(
            name,
            "webhook_delivery",
            ["status", "next_attempt_at"],
            unique=False,
            sqlite_where=sa.text(where),
            postgresql_where=sa.text(where),
        )


def downgrade() -> None:
    """Revert: the usage exports still in the outbox are dropped (the earlier schema cannot hold them)."""
    op.execute(
        "DELETE FROM webhook_event WHERE id IN (SELECT event_id FROM webhook_delivery WHERE endpoint_id IS NULL)"
    )
    op.execute("DELETE FROM webhook_delivery WHERE endpoint_id IS NULL")
    op.drop_index(_EXPORT_DUE, table_name="webhook_delivery")
    op.drop_index(_DUE, table_name="webhook_delivery")
    op.create_index(_DUE, "webhook_delivery", ["status", "next_attempt_at"], unique=False)
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.alter_column("endpoint_id", existing_type=sa.Uuid(), nullable=False)
