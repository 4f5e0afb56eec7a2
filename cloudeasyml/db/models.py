"""Tables. Every tenant-scoped table carries ``tenant_id``; queries on them always filter by it."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.base import Base
from cloudeasyml.db.types import Money, UTCDateTime

__all__ = ("ApiKey", "Deployment", "Feedback", "Outcome", "Tenant", "UsageRecord", "User")


class Tenant(Base):
    """An organisation: the unit of isolation and billing."""

    __tablename__ = "tenant"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    plan: Mapped[str] = mapped_column(String(50), default="default")
    spend_cap: Mapped[Decimal | None] = mapped_column(Money)
    """Most the tenant may spend per calendar month; None is unlimited."""
    request_cap: Mapped[int | None]
    """Most requests per calendar month; None is unlimited."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class User(Base):
    """A person in a tenant."""

    __tablename__ = "app_user"
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(20), default="member")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class ApiKey(Base):
    """An API key. Only the SHA-256 of its secret is stored; the full key is shown once, at creation."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """The public key id, ``sk_`` + 16 characters."""
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("app_user.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    rate_limit_per_minute: Mapped[int | None]
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    created_by_key_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("api_key.id", ondelete="CASCADE"), index=True
    )
    """The key that created this one through ``POST /api-keys`` (None: made by the operator, e.g. the owner key
    of ``cloudeasyml tenants create``). Revoking a key revokes every key below it; keys are never deleted alone,
    and when a tenant is deleted all its keys go with it, so the cascade only keeps the constraint satisfiable."""


class Deployment(Base):
    """A tenant's named, configured instance of one model version."""

    __tablename__ = "deployment"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    traffic: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """The versions that serve it, with their shares (``TrafficRoute`` as camelCase JSON); None: ``model_version``
    serves all of it. ``model_version`` is always the first live route's version."""
    status: Mapped[str] = mapped_column(String(20), default="ready")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class UsageRecord(Base):
    """One billed request. The request id is the primary key, so writing a record twice is harmless."""

    __tablename__ = "usage_record"
    __table_args__ = (Index("ix_usage_record_tenant_id_created_at", "tenant_id", "created_at"),)

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    api_key_id: Mapped[str | None] = mapped_column(String(32))
    # No foreign key: usage outlives the deployment it was billed to.
    deployment_id: Mapped[uuid.UUID]
    deployment_name: Mapped[str] = mapped_column(String(100))
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(100))
    items: Mapped[int]
    processing_ms: Mapped[float]
    gpu_ms: Mapped[float] = mapped_column(default=0.0)
    cost: Mapped[Decimal] = mapped_column(Money)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    kind: Mapped[str] = mapped_column(String(16), default="online", server_default="online")
    """``online``: a request answered to its client; ``shadow``: a shadow route's copy of one (spend, not a request)."""


class Outcome(Base):
    """What one version of a deployment with several routes answered to one request (live or shadow), kept for
    ``outcomes.retention_days`` to compare the versions (``GET /deployments/{id}/experiment``). Single-version
    deployments record none.
    """

    __tablename__ = "outcome"
    __table_args__ = (
        Index("ix_outcome_tenant_id_deployment_id_created_at", "tenant_id", "deployment_id", "created_at"),
        Index("ix_outcome_shadow_of", "shadow_of"),
        Index("ix_outcome_created_at", "created_at"),
    )

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    """The run's request id: a live request's is the client's ``requestId``; a shadow copy runs under its own."""
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    # No foreign key: outcomes stay for the retention period after their deployment is deleted, as usage does.
    deployment_id: Mapped[uuid.UUID]
    model_version: Mapped[str] = mapped_column(String(100))
    variant: Mapped[str | None] = mapped_column(String(20))
    mode: Mapped[str] = mapped_column(String(10))
    """``live`` or ``shadow``."""
    shadow_of: Mapped[str | None] = mapped_column(String(36))
    """A shadow copy's live request id."""
    items: Mapped[int]
    outputs: Mapped[list[Any] | None] = mapped_column(JSON)
    """The predictions as the client got them, the first items only (``outcomes.max_output_bytes``); None for a
    failed run or a protocol whose outputs are raw tensors too large to keep."""
    latency_ms: Mapped[float]
    error: Mapped[str | None] = mapped_column(String(100))
    """The error's type (``DeadlineExceededError``, ...) of a failed run; None when it answered."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class Feedback(Base):
    """The ground truth of one answered request (``POST /feedback``), kept as long as outcomes are."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_created_at", "created_at"),)

    request_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    label: Mapped[Any] = mapped_column(JSON, nullable=True)
    """A classifier's true label: one (a one-item request) or a list with one per item."""
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    """A regressor's true value (or a plugin's own truth): one, or a list with one per item."""
    api_key_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
