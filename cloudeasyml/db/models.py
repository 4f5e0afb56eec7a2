"""Tables. Every tenant-scoped table carries ``tenant_id``; queries on them always filter by it."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.base import Base
from cloudeasyml.db.types import Money, UTCDateTime

__all__ = (
    "ApiKey",
    "AuditEvent",
    "BatchChunk",
    "BatchFile",
    "BatchJob",
    "Deployment",
    "DeploymentRevision",
    "Feedback",
    "Outcome",
    "IdempotencyRecord",
    "Invoice",
    "OperatorKey",
    "Plan",
    "Tenant",
    "UsageDaily",
    "UsageHourly",
    "UsageRecord",
    "User",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
)


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
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When an operator suspended the tenant (None: active). While set, every key of the tenant is refused (403)."""
    suspended_reason: Mapped[str | None] = mapped_column(String(500))
    """What the operator gave as the reason, shown to the tenant's callers in the 403."""
    deletion_token_hash: Mapped[str | None] = mapped_column(String(64))
    """SHA-256 of the confirmation token the operator must send back to delete the tenant (None: none asked)."""
    deletion_token_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OperatorKey(Base):
    """A platform operator's API key (scope ``operator``): manages tenants, not a tenant's resources. It belongs
    to no tenant; ``cloudeasyml operators create`` makes one. Same format as tenant keys, only the hash is stored.
    """

    __tablename__ = "operator_key"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEvent(Base):
    """One change to a tenant, a plan, a key, a deployment or a webhook: who made it (key id), when, from which
    address, and what changed. Written in the transaction of the change; never updated. No secret is ever in it.
    """

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_tenant_id_id", "tenant_id", "id"),
        Index("ix_audit_event_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    """Increasing: the order of the log, and its cursor."""
    # No foreign key: the log of a tenant outlives it (its deletion is the last event).
    tenant_id: Mapped[uuid.UUID | None]
    """The tenant the change is about (None: not one tenant's, e.g. a plan)."""
    actor_key_id: Mapped[str | None] = mapped_column(String(32))
    """The key that made the change: a tenant's ``sk_...`` or an operator's ``op_...`` (None: the CLI)."""
    client_ip: Mapped[str | None] = mapped_column(String(64))
    """The address the request came from, as the server saw it (a proxy's, behind one)."""
    action: Mapped[str] = mapped_column(String(64))
    """``<resource>.<verb>``, e.g. ``key.created``, ``deployment.updated``, ``tenant.suspended``."""
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(64))
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)
    """``{field: {"from": old, "to": new}}`` (only ``to`` at creation, only ``from`` at deletion); secrets never."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class Plan(Base):
    """A price plan stored as data (``/plans``): prices per model, a per-key rate limit, default monthly caps and
    deployment limits. A plan not stored here is the code's (``CLOUDEASYML_LIMITS__PLANS``, the models' prices).
    """

    __tablename__ = "plan"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    prices: Mapped[dict[str, Any]] = mapped_column(JSON)
    """``{model name: {"perRequest", "perSecond", "perGpuHour"}}`` (decimal strings); a model not named here is
    priced by its plugin (and the ``cloudeasyml_adjust_pricing`` hooks)."""
    rate_limit_per_minute: Mapped[int | None]
    """Most requests per minute any one key of a tenant on the plan may make (None: the key's own limit only)."""
    spend_cap: Mapped[Decimal | None] = mapped_column(Money)
    """The monthly spend cap a tenant created on the plan gets when none is given."""
    request_cap: Mapped[int | None]
    """The monthly request cap a tenant created on the plan gets when none is given."""
    max_deployments: Mapped[int | None]
    max_loaded_deployments: Mapped[int | None]
    bill_shadow: Mapped[bool | None]
    """None: ``CLOUDEASYML_LIMITS__BILL_SHADOW``."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


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
    status: Mapped[str] = mapped_column(String(20), default="pending")
    """The last load's outcome, shared by every process: ``pending`` (none has failed since the deployment was made
    or last loaded) or ``failed``. Whether it is loading or loaded is each process's own (see
    ``cloudeasyml.domain.deployment_status``)."""
    status_reason: Mapped[str | None] = mapped_column(String(1000), default=None)
    """Why the last load failed (with ``status`` ``failed``); None otherwise."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    revision: Mapped[int] = mapped_column(default=1)
    """The number of the ``DeploymentRevision`` the row holds now (1 at creation; each change adds one)."""


class DeploymentRevision(Base):
    """One state a deployment was in: its version, config and traffic from ``created_at`` until the next revision.

    Written with every change (``PATCH``, rollback, promote, abort) and at creation (number 1), in the transaction
    that changes the deployment row; never updated. Deleted with its deployment.
    """

    __tablename__ = "deployment_revision"
    __table_args__ = (UniqueConstraint("deployment_id", "number"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    deployment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("deployment.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    number: Mapped[int]
    """1, 2, ... per deployment."""
    model_version: Mapped[str] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    traffic: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """As ``Deployment.traffic``: None when ``model_version`` serves all of it."""
    changes: Mapped[dict[str, Any]] = mapped_column(JSON)
    """What changed from the revision before: ``{field: {"from": old, "to": new}}`` over ``modelVersion``,
    ``config`` (its changed fields only) and ``traffic``; empty for revision 1."""
    action: Mapped[str] = mapped_column(String(20))
    """``create``, ``update``, ``rollback``, ``promote`` or ``abort``."""
    created_by_key_id: Mapped[str | None] = mapped_column(String(32))
    """The API key that made the change (None: before revisions existed, or the operator). No foreign key: the
    history names a key as it was."""
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
    """``online``: a request answered to its client; ``shadow``: a shadow route's copy of one (spend, not a request);
    ``batch``: one chunk of a batch job, billed at the batch price."""


class UsageDaily(Base):
    """Usage records summed per tenant, UTC day, deployment, model version, API key and kind: kept current by the
    meter in the transaction that writes the records, so reports over whole days read a few rows, not every record.
    """

    __tablename__ = "usage_daily"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    """The day's first instant (UTC midnight)."""
    deployment_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(100), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """The key id, or ``""`` for usage billed without one (a key column cannot be null)."""
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    requests: Mapped[int]
    items: Mapped[int]
    processing_ms: Mapped[float]
    gpu_ms: Mapped[float]
    cost: Mapped[Decimal] = mapped_column(Money)


class UsageHourly(Base):
    """Usage records summed per tenant, UTC hour, deployment, model version, API key and kind, as ``UsageDaily`` per
    day: kept current by the meter in the same transaction, so reports grouped by hour read a few rows per hour.
    """

    __tablename__ = "usage_hourly"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    """The hour's first instant (UTC)."""
    deployment_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(100), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """The key id, or ``""`` for usage billed without one."""
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    requests: Mapped[int]
    items: Mapped[int]
    processing_ms: Mapped[float]
    gpu_ms: Mapped[float]
    cost: Mapped[Decimal] = mapped_column(Money)


class WebhookEndpoint(Base):
    """A URL a tenant asked to receive events at, and the secret that signs them (docs/webhooks.md)."""

    __tablename__ = "webhook_endpoint"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500), default="")
    events: Mapped[list[str]] = mapped_column(JSON)
    """The event types it receives."""
    enabled: Mapped[bool] = mapped_column(default=True)
    secret: Mapped[str] = mapped_column(String(100))
    """``whsec_`` + base64 of the signing key. Stored as is: signing needs it (as every Standard Webhooks sender)."""
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    """The secret before the last rotation; it signs too until ``previous_secret_expires_at``."""
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    """Why the platform disabled it (None: enabled, or disabled by the tenant)."""
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """The first failed attempt since its last successful one (None: the last attempt succeeded)."""
    # No foreign key: the endpoint outlives nothing of the key, and keys are never deleted alone.
    created_by_key_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class WebhookEvent(Base):
    """The outbox: one event, written in the transaction of the change that caused it."""

    __tablename__ = "webhook_event"
    __table_args__ = (Index("ix_webhook_event_tenant_id_created_at", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """``msg_`` + 32 hex digits: the ``webhook-id`` of every attempt, random or derived from what the event is about
    (then writing it twice, from two processes, is one event)."""
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    """The body as sent, JSON text: every attempt signs the same bytes."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class WebhookDelivery(Base):
    """One event to one endpoint (or to the usage exporter): its attempts so far and the last one's outcome."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        # Partial: webhook claims and usage-export claims each walk their own index of due deliveries, so a backlog
        # of exports never lies in the path of the webhooks' claim (or the reverse).
        Index(
            "ix_webhook_delivery_status_next_attempt_at",
            "status",
            "next_attempt_at",
            sqlite_where=text("endpoint_id IS NOT NULL"),
            postgresql_where=text("endpoint_id IS NOT NULL"),
        ),
        Index(
            "ix_webhook_delivery_export_status_next_attempt_at",
            "status",
            "next_attempt_at",
            sqlite_where=text("endpoint_id IS NULL"),
            postgresql_where=text("endpoint_id IS NULL"),
        ),
        Index("ix_webhook_delivery_endpoint_id_created_at", "endpoint_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    """The tenant's endpoint; None: the operator's usage exporter (``UsageExportSettings``; the event is a usage
    record's CloudEvent)."""
    event_id: Mapped[str] = mapped_column(String(64), ForeignKey("webhook_event.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """``pending`` (an attempt is due at ``next_attempt_at``), ``succeeded`` or ``failed`` (given up)."""
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    """When the next attempt is due; while an attempt runs, when its claim lapses (a process that died)."""
    retry_until: Mapped[datetime] = mapped_column(UTCDateTime)
    """A failed attempt after this marks the delivery ``failed``: the retry window from the event (or from a manual
    retry)."""
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    response_status: Mapped[int | None]
    latency_ms: Mapped[float | None]
    response_body: Mapped[str | None] = mapped_column(String(1024))
    """The first 1 KB of the last answer (decoded leniently); nothing more of it is read or kept."""
    error: Mapped[str | None] = mapped_column(String(500))
    """Why the last attempt failed, when it got no answer (a refused address, a timeout, ...)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


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


class IdempotencyRecord(Base):
    """A request sent with an ``Idempotency-Key``, and its answer once it has one (``cloudeasyml.api.idempotency``).
    Kept for the idempotency window (24 h by default), then purged.
    """

    __tablename__ = "idempotency_record"
    __table_args__ = (Index("ix_idempotency_record_created_at", "created_at"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    """The client's ``Idempotency-Key``: keys are per tenant."""
    request_hash: Mapped[str] = mapped_column(String(64))
    """SHA-256 (hex) of the API key id, method, path, query string and body: a retry must match it."""
    state: Mapped[str] = mapped_column(String(16))
    """``running`` (the first request has no answer yet) or ``done``."""
    lock_id: Mapped[str] = mapped_column(String(32))
    """Who runs (or ran) the request: only that attempt may store its answer or give the key up."""
    status: Mapped[int | None]
    headers: Mapped[list[list[str]] | None] = mapped_column(JSON)
    """The answer's headers as the app sent them (latin-1 text pairs)."""
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The answer's body, encrypted with a key derived from the caller's API key secret (never stored), so the
    table does not hold secrets shown once (``POST /api-keys``) or predictions in the clear."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class Invoice(Base):
    """A closed month's invoice, frozen the first time it was read (``cloudeasyml.domain.invoices``)."""

    __tablename__ = "invoice"

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    """``YYYY-MM`` (UTC)."""
    plan: Mapped[str] = mapped_column(String(50))
    total: Mapped[Decimal] = mapped_column(Money)
    body: Mapped[str] = mapped_column(Text)
    """The invoice as served (JSON): lines, unit prices and amounts as they were when it was frozen."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class BatchFile(Base):
    """A JSON Lines file in the artifact store's ``files/`` directory: a batch's input, output or errors."""

    __tablename__ = "batch_file"
    __table_args__ = (Index("ix_batch_file_tenant_id_created_at", "tenant_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    """``file-`` + 24 hex digits (OpenAI's shape)."""
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    """``batch`` (an input), ``batch_output`` or ``batch_error`` (a job's results)."""
    bytes: Mapped[int]
    lines: Mapped[int]
    created_by_key_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class BatchJob(Base):
    """A batch job: one input file run on one deployment, in chunks (``BatchChunk``) that workers claim."""

    __tablename__ = "batch_job"
    __table_args__ = (
        Index("ix_batch_job_tenant_id_created_at", "tenant_id", "created_at"),
        Index("ix_batch_job_status_last_claimed_at", "status", "last_claimed_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    """``batch_`` + 24 hex digits."""
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id", ondelete="CASCADE"))
    # No foreign key: the job (and its bill) outlives a deleted deployment; it then fails its remaining chunks.
    deployment_id: Mapped[uuid.UUID]
    deployment_name: Mapped[str] = mapped_column(String(100))
    input_file_id: Mapped[str] = mapped_column(String(40))
    output_file_id: Mapped[str | None] = mapped_column(String(40))
    error_file_id: Mapped[str | None] = mapped_column(String(40))
    endpoint: Mapped[str | None] = mapped_column(String(64))
    """``/v1/embeddings`` for a job made through the OpenAI-compatible API (its lines are OpenAI requests)."""
    status: Mapped[str] = mapped_column(String(16), default="queued")
    total: Mapped[int] = mapped_column(default=0)
    completed: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    message: Mapped[str | None] = mapped_column(String(500))
    """Why the job failed, or why it is paused (a monthly cap reached); None otherwise."""
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When a worker last claimed one of its chunks (None: never): workers serve a job never claimed first, then
    the one claimed longest ago (round-robin between jobs)."""
    created_by_key_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """When it reached completed, failed, cancelled or expired."""
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class BatchChunk(Base):
    """A run of consecutive lines of a job's input: claimed by one worker at a time under a lease, checkpointed
    (``done``) once its output part is written and its usage journaled.
    """

    __tablename__ = "batch_chunk"
    __table_args__ = (Index("ix_batch_chunk_job_id_status", "job_id", "status"),)

    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("batch_job.id", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(primary_key=True)
    first_line: Mapped[int]
    """1-based number of its first line in the input file."""
    byte_start: Mapped[int]
    byte_end: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """``pending``, ``running`` (claimed until ``lease_until``) or ``done``."""
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    worker: Mapped[str | None] = mapped_column(String(100))
    """``host:pid`` of the process that claimed it last (for operators: which pods share a job)."""
    attempts: Mapped[int] = mapped_column(default=0)
    completed: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
