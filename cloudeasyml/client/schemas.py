"""Typed results of the Python client: the API's JSON (camelCase) as msgspec Structs (snake_case).

These mirror the server's wire schemas without importing them (the client imports nothing of the server). They
ignore fields they do not know, so a newer server's additions never break an older client. Costs and prices are
exact ``Decimal``; times are aware ``datetime``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

__all__ = (
    "BATCH_FINAL_STATUSES",
    "ApiKey",
    "ApiKeyCreated",
    "Batch",
    "BatchCounts",
    "Deployment",
    "File",
    "Invoice",
    "InvoiceLine",
    "InvoiceSummary",
    "Model",
    "ModelLimits",
    "ModelUsage",
    "Prediction",
    "Pricing",
    "QualityMetric",
    "Quota",
    "Revision",
    "ServingConfig",
    "TensorSpec",
    "TrafficRoute",
    "Usage",
    "UsageGroup",
    "UsageRecord",
    "UsageRecordPage",
    "VersionUsage",
)


class Pricing(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """What one request costs: ``per_request`` once, plus ``per_second`` of processing and ``per_gpu_hour``."""

    per_request: Decimal = Decimal(0)
    per_second: Decimal = Decimal(0)
    per_gpu_hour: Decimal = Decimal(0)


class ServingConfig(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """How a deployment is served (a model's defaults, or a deployment's choice). See the README's Serving part."""

    max_batch_size: int
    max_batch_delay_ms: float
    device: str
    """``auto``, ``cpu`` or ``cuda``."""
    instances: int
    intra_op_threads: int
    max_queue_items: int
    """Items waiting beyond which requests are refused with 503 (``UnavailableError``)."""
    timeout_ms: float
    """Deadline of one request, queueing included; past it a 504 (``UnavailableError``)."""
    eager_load: bool
    variant: str
    """``float``, ``optimized`` or ``int8``."""


class ModelLimits(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """What one request to a model may hold."""

    max_items_per_request: int
    max_batch_items: int
    max_characters_per_item: int | None = None
    max_tokens_per_item: int | None = None


class TensorSpec(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One input or output tensor of a model's exported graph."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    dynamic_axes: tuple[str, ...] = ()


class QualityMetric(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """What "better" means for a model's answers: ``accuracy`` (classifiers), ``regression`` (RMSE and MAE) or a
    plugin's own ``score``.
    """

    kind: str
    field: str | None = None
    """The prediction's field holding the label or value; None: the prediction itself."""
    name: str = ""
    higher_is_better: bool = True


class Model(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """An installed model (``GET /models``)."""

    name: str
    version: str
    versions: list[str]
    """The shipped version first, then trained ones."""
    description: str
    task: str
    plugin: str
    source: str
    input_schema: dict[str, Any]
    """JSON Schema of one element of a prediction's ``inputs``."""
    output_schema: dict[str, Any]
    """JSON Schema of one element of a prediction's ``predictions``."""
    example_input: Any
    """A valid input, ready to send."""
    pricing: Pricing
    serving: ServingConfig
    limits: ModelLimits
    input_tensors: list[TensorSpec] = msgspec.field(default_factory=list)
    output_tensors: list[TensorSpec] = msgspec.field(default_factory=list)
    quality_metric: QualityMetric | None = None
    """What ``POST /feedback`` takes for the model and how the experiment report scores it; None: not declared."""


class TrafficRoute(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One version (and variant) of a deployment's model with its share of the requests."""

    model_version: str
    weight: int
    """Live: percent of the deployment's requests; shadow: percent of the requests copied to it."""
    variant: str | None = None
    """The graph that serves this route; None: the deployment's ``config.variant``."""
    mode: str = "live"
    """``live`` answers requests; ``shadow`` gets copies, after the answer, and never answers."""


class Deployment(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A deployment of a model, owned by the caller's tenant."""

    id: uuid.UUID
    name: str
    model_name: str
    model_version: str
    """The first live route's version (see ``traffic``)."""
    config: ServingConfig
    traffic: list[TrafficRoute] = msgspec.field(default_factory=list)
    """The versions that serve it, with their shares: one live route at weight 100 for a single version."""
    revision: int = 1
    """The revision it is at (1 at creation; each change, rollback, promote or abort adds one)."""
    status: str
    """``pending`` (not loaded in the answering process), ``loading``, ``ready`` or ``failed`` (``status_reason``)."""
    loaded: bool
    """Whether the answering process holds the model in memory (it loads on first use unless ``eager_load``)."""
    created_at: datetime
    status_reason: str | None = None
    """Why the last load failed, with status ``failed``."""
    variant_report: dict[str, Any] | None = None


class Prediction(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """The answer to a prediction: one element of ``predictions`` per input, in order."""

    predictions: list[Any]
    model_name: str
    model_version: str
    deployment_id: uuid.UUID
    processing_time_ms: float
    """This request's share of its batch's processing time: what it is billed for."""
    request_id: str


class ApiKey(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """An API key as listed: never its secret."""

    key_id: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    rate_limit_per_minute: int | None = None
    created_by_key_id: str | None = None


class ApiKeyCreated(ApiKey, rename="camel", frozen=True, kw_only=True):
    """A new key, with the full ``key`` shown this once: store it now."""

    key: str


class ModelUsage(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One model's share of a usage period."""

    requests: int
    items: int
    cost: Decimal
    processing_time_ms: float


class VersionUsage(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One model version's share of a period, online or shadow."""

    model_name: str
    model_version: str
    kind: str
    requests: int
    items: int
    cost: Decimal
    processing_time_ms: float


class UsageGroup(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One ``groupBy`` combination's sums: ``key`` maps each grouping asked for to its value."""

    key: dict[str, str]
    requests: int
    items: int
    cost: Decimal
    processing_time_ms: float


class Usage(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """The tenant's usage and cost over ``[start, end)``, by model."""

    tenant_id: uuid.UUID
    start: datetime
    end: datetime
    total_cost: Decimal
    total_requests: int
    total_items: int
    by_model: dict[str, ModelUsage]
    shadow: ModelUsage | None = None
    """Shadow copies' usage (billed compute, not requests); None when there were none."""
    by_version: list[VersionUsage] | None = None
    """Each model version's usage, online and shadow apart (asked for with ``groupBy=version``)."""
    groups: list[UsageGroup] | None = None
    """Sums per ``groupBy`` combination, when asked for."""
    by_kind: dict[str, ModelUsage] = msgspec.field(default_factory=dict)
    """The same period by kind: ``online`` requests, ``shadow`` copies and ``batch`` job chunks."""


class Quota(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """This month's caps (None: no cap), what has been used of them and what is left."""

    month_start: datetime
    resets_at: datetime
    spend_cap: Decimal | None
    request_cap: int | None
    spent: Decimal
    requests: int
    remaining_spend: Decimal | None
    remaining_requests: int | None


class Revision(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One revision of a deployment: the state it was in from ``created_at`` until the next revision."""

    number: int
    action: str
    """``create``, ``update``, ``rollback``, ``promote`` or ``abort``."""
    model_version: str
    config: ServingConfig
    traffic: list[TrafficRoute]
    changes: dict[str, Any]
    """What differs from the revision before (``{"traffic": {"from", "to"}}``, ``{"config": {field: {...}}}``)."""
    created_by_key_id: str | None = None
    """The API key that made it."""
    created_at: datetime
    requests: int
    """Answered requests billed to the deployment while it was current (as flushed to the database)."""
    current: bool


class File(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A stored JSON Lines file: a batch job's input (``purpose`` ``batch``), output or errors."""

    id: str
    object: str = "file"
    filename: str
    purpose: str
    """``batch`` (an input), ``batch_output`` or ``batch_error``."""
    bytes: int
    lines: int
    """Non-blank lines."""
    created_at: datetime
    expires_at: datetime


class BatchCounts(msgspec.Struct, frozen=True, kw_only=True):
    """Lines of a job's input: all of them, those done and those that failed (in the error file)."""

    total: int
    completed: int
    failed: int


BATCH_FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired"})
"""The statuses a batch job never leaves."""


class Batch(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A batch job: every line of an input file run on a deployment, in the background, at the batch price."""

    id: str
    object: str = "batch"
    status: str
    """``validating``, ``queued``, ``running``, ``cancelling``, or a final one: ``completed``, ``failed``,
    ``cancelled``, ``expired``."""
    deployment_id: uuid.UUID
    deployment_name: str
    input_file_id: str
    output_file_id: str | None = None
    """The answers, one line per input line that completed, in input order (once the job has ended)."""
    error_file_id: str | None = None
    """The lines that failed, with their line number, ``customId`` and problem details."""
    counts: BatchCounts
    message: str | None = None
    """Why the job failed, or why it is paused (a monthly cap reached: it resumes by itself)."""
    paused_until: datetime | None = None
    metadata: dict[str, str] | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancelled_at: datetime | None = None
    expires_at: datetime

    @property
    def done(self) -> bool:
        """Whether the job has reached a final status (``BATCH_FINAL_STATUSES``)."""
        return self.status in BATCH_FINAL_STATUSES


class InvoiceSummary(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A month (``YYYY-MM``, UTC) with usage: its total and request count."""

    month: str
    total: Decimal
    requests: int


class InvoiceLine(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One model version's usage of one kind (``online``, ``batch``, ``shadow``) in an invoice's month."""

    model: str
    model_version: str
    kind: str
    requests: int
    items: int
    processing_seconds: Decimal
    gpu_seconds: Decimal
    unit_prices: Pricing | None = None
    """The plan's prices for the model version; None once the model is uninstalled."""
    amount: Decimal


class Invoice(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A month's invoice: ``open`` until an hour after the month ends, then ``final`` (frozen)."""

    tenant_id: uuid.UUID
    month: str
    period_start: datetime
    period_end: datetime
    status: str
    """``open`` (may still grow) or ``final``."""
    plan: str
    lines: list[InvoiceLine]
    subtotal: Decimal
    total: Decimal
    issued_at: datetime | None = None
    """When it was frozen (``final``)."""


class UsageRecord(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One billed request, as metered."""

    request_id: str
    created_at: datetime
    deployment_id: uuid.UUID
    deployment_name: str
    model_name: str
    model_version: str
    api_key_id: str | None = None
    items: int
    processing_ms: float
    gpu_ms: float
    cost: Decimal


class UsageRecordPage(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """A page of usage records, oldest first; ``next_cursor`` fetches the next (None: this is the last)."""

    records: list[UsageRecord]
    next_cursor: str | None = None
