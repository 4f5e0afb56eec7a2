"""Settings: one frozen Struct per concern, read once from ``CLOUDEASYML_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import msgspec

__all__ = (
    "BatchSettings",
    "DatabaseSettings",
    "IdempotencySettings",
    "LimitsSettings",
    "PlanLimits",
    "MeteringSettings",
    "OpenInferenceSettings",
    "OperatorSettings",
    "OutcomeSettings",
    "PluginSettings",
    "QuotaSettings",
    "RedisSettings",
    "RuntimeSettings",
    "ServerSettings",
    "Settings",
    "TenantLimits",
    "UsageExportSettings",
    "WebhookSettings",
    "load_settings",
)

PREFIX = "CLOUDEASYML_"


def _data_dir() -> Path:
    return Path(os.environ.get("CLOUDEASYML_HOME", Path.home() / ".cloudeasyml"))


class DatabaseSettings(msgspec.Struct, frozen=True):
    """Where tenants, keys, deployments and usage live."""

    url: str = ""
    """SQLAlchemy async URL. Empty means a SQLite file under ``CLOUDEASYML_HOME`` (``~/.cloudeasyml``).
    PostgreSQL: ``postgresql+asyncpg://user:pass@host/db``."""
    echo: bool = False
    """Log every SQL statement (noisy; for debugging)."""
    pool_size: int = 10
    """Connections per process (PostgreSQL)."""
    connect_timeout_seconds: float = 5.0
    """How long opening a connection may take (PostgreSQL) before the request gets 503 instead of waiting."""


class ServerSettings(msgspec.Struct, frozen=True):
    """The HTTP server."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_body_bytes: int = 10 * 1024 * 1024
    """Requests with a larger body get 413."""
    fast_path: bool = True
    """Serve ``POST /predict`` ahead of Litestar's router (``cloudeasyml.api.fast_path``), where the app's
    configuration allows it; false sends it through the router like every other request (same answers, more
    event-loop CPU per prediction)."""
    key_cache_seconds: float = 5.0
    """How long a verified API key is trusted without a database read. Revocation through this process takes
    effect at once; through another process, within this many seconds. Unknown key ids are remembered as long."""
    max_header_bytes: int = 32 * 1024
    """Most bytes of a request's line and headers; past it the request gets 431 and its connection is closed."""
    max_headers: int = 100
    """Most header lines in a request; past it the request gets 431 and its connection is closed."""
    header_timeout_seconds: float = 10.0
    """A request whose line and headers are not complete this long after the connection opened (or, on a kept-alive
    connection, after the request's first byte) gets 408 and its connection is closed. A deadline, not an idle
    timeout: trickling one header line at a time does not extend it."""
    body_timeout_seconds: float = 15.0
    """A request body that receives no bytes for this long (while the application waits for it) gets 408 and its
    connection is closed, so a client that stalls mid-body cannot hold a request, a worker or a shutdown."""
    keep_alive_timeout_seconds: float = 5.0
    """An idle kept-alive connection is closed after this long. Overrides uvicorn's ``--timeout-keep-alive``."""
    max_connections: int = 1000
    """Open HTTP connections per process; a connection past it is answered 503 at once and closed, while those
    already open are served as before. Lowered, when needed, to the process's open-file limit less 100 descriptors
    kept for the database, model files and logs."""
    graceful_shutdown_seconds: float = 25.0
    """On SIGTERM, how long requests in flight may run before they are cancelled and the process exits. Keep it
    below the Kubernetes ``terminationGracePeriodSeconds`` less the ``preStop`` sleep (40 s - 5 s in deploy/k8s)."""
    access_log: bool = True
    """One log line per request (logger ``cloudeasyml.access``, on standard error): method, route, status, latency,
    tenant, deployment, model, items and request id; never a key, a hash or a body."""
    log_format: Literal["auto", "json", "text"] = "auto"
    """``json``: one JSON object a line; ``text``: readable lines; ``auto``: text on a terminal, JSON otherwise."""
    unknown_key_cache_entries: int = 10_000
    """Most unknown API key ids remembered per process (least recently used forgotten first, about 200 bytes
    each), so that repeating an unknown id does not query the database every time. 0 remembers none. As many answers
    of the ``cloudeasyml_authenticate`` plugins (tokens that are not API keys, by their digest) are remembered, for
    ``key_cache_seconds``."""
    cache_entries: int = 100_000
    """Most entries in each of the process's other caches: verified API keys, deployments (by id and by name),
    tenants' quota caps and, without Redis, per-key rate-limit buckets. Past it the least recently used is
    forgotten (read again on its next use; a dropped rate-limit bucket starts full, so keep it above the number of
    rate-limited keys active in a minute). 0 caches nothing (the rate limiter still keeps one bucket)."""


class RuntimeSettings(msgspec.Struct, frozen=True):
    """Model loading and the artifact store."""

    artifact_dir: str = ""
    """Directory of exported ONNX artifacts, shareable by pods. Empty means ``CLOUDEASYML_HOME/artifacts``."""
    export_on_load: bool = True
    """Export a model on first load when it has no artifact and torch is installed."""
    memory_budget_mb: float = 0
    """Most memory loaded models may take in one process (estimated by their ONNX files' size); past it the least
    recently used are unloaded and load again on their next request. 0 means derived: ``memory_budget_fraction``
    of the memory this process may use (the container's cgroup limit, else physical memory) divided by
    ``server.workers``."""
    memory_budget_fraction: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5
    """The share of the process's memory limit that loaded models may take when ``memory_budget_mb`` is 0; 0 here
    too means no budget at all."""
    eager_load_on_start: bool = True
    """Load every ``eagerLoad`` deployment when the process starts; ``/health/ready`` answers 503 until done."""


class TenantLimits(msgspec.Struct, frozen=True):
    """The limits of one tenant, its plan's overrides applied. 0 means no limit."""

    max_deployments: int
    """Deployments the tenant may have; creating one more is refused with 409."""
    max_loaded_deployments: int
    """The tenant's deployments loaded at once in one process; loading one more first unloads the tenant's least
    recently used one (never another tenant's)."""
    bill_shadow: bool = True
    """Whether shadow copies of the tenant's requests are metered to it (usage of ``kind`` shadow, counted in its
    spend) or run free."""


class PlanLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One plan's overrides of the default limits; a field left out (None) keeps the default."""

    max_deployments: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Overrides ``LimitsSettings.max_deployments``."""
    max_loaded_deployments: Annotated[int, msgspec.Meta(ge=0)] | None = None
    """Overrides ``LimitsSettings.max_loaded_deployments``."""
    bill_shadow: bool | None = None
    """Overrides ``LimitsSettings.bill_shadow``."""


class LimitsSettings(msgspec.Struct, frozen=True):
    """What one tenant may claim, by plan (a tenant's ``plan`` column). 0 means no limit."""

    max_deployments: Annotated[int, msgspec.Meta(ge=0)] = 50
    """Deployments per tenant; creating one more is refused with 409 until one is deleted."""
    max_loaded_deployments: Annotated[int, msgspec.Meta(ge=0)] = 8
    """A tenant's deployments loaded at once in one process (each holds one onnxruntime session, shared with
    deployments of the same artifact, variant, device and threads); past it the tenant's least recently used one
    is unloaded, never another tenant's."""
    bill_shadow: bool = True
    """Meter shadow copies (a deployment's ``"mode": "shadow"`` routes) to the tenant as usage of ``kind`` shadow,
    counted in its spend (never as requests against its request cap); false: shadow compute is not billed."""
    max_shadow_in_flight: Annotated[int, msgspec.Meta(ge=0)] = 16
    """Shadow copies running at once in one process, all tenants together; past it new copies are shed (counted in
    ``cloudeasyml_shadow_copies_total{outcome="shed"}``). 0: no shadow copies run at all."""
    shadow_queue_fraction: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.25
    """No shadow copy starts while the live unit that answered, or the shadow unit, has more than this fraction of
    its ``max_queue_items`` waiting: shadow traffic is shed first under load."""
    plans: dict[str, PlanLimits] = {}
    """Per-plan overrides, JSON in the environment:
    ``CLOUDEASYML_LIMITS__PLANS='{"free": {"max_deployments": 3, "max_loaded_deployments": 1}}'``."""

    def for_plan(self, plan: str) -> TenantLimits:
        """The limits of a tenant on ``plan``: the plan's overrides, else the defaults above."""
        override = self.plans.get(plan, PlanLimits())
        return TenantLimits(
            max_deployments=_first(override.max_deployments, self.max_deployments),
            max_loaded_deployments=_first(override.max_loaded_deployments, self.max_loaded_deployments),
            bill_shadow=self.bill_shadow if override.bill_shadow is None else override.bill_shadow,
        )


def _first(value: int | None, default: int) -> int:
    return default if value is None else value


class PluginSettings(msgspec.Struct, frozen=True):
    """Which installed plugins to load."""

    blocked: tuple[str, ...] = ()
    """Entry-point names to skip, comma-separated in the environment (``CLOUDEASYML_PLUGINS__BLOCKED=a,b``)."""


class RedisSettings(msgspec.Struct, frozen=True):
    """Redis, for what several server processes (workers, pods) must share."""

    url: str = ""
    """``redis://host:6379/0``. When set, per-key rate limits and tenants' quotas are shared by every process using
    this Redis, and a key revoked or a deployment deleted through one process is dropped at once from every
    process's caches. Empty: each process keeps its own limits and quota counts, and other processes see a
    revocation or a deletion within
    ``server.key_cache_seconds``."""


class QuotaSettings(msgspec.Struct, frozen=True):
    """Monthly spend and request caps per tenant (``cloudeasyml tenants set-caps``)."""

    refresh_seconds: float = 5.0
    """Caps (and, without Redis, the database's month-to-date usage) are read again when older than this, before
    the request if the tenant was idle: a changed cap applies to the first request after this many seconds."""
    reservation_seconds: float = 900.0
    """With Redis: how long a request's reservation counts against the caps if its process dies before settling
    it (a live process commits or releases it when the request ends). Keep it above the longest request."""


class OpenInferenceSettings(msgspec.Struct, frozen=True):
    """Bounds on the tensors of an Open Inference Protocol (V2) request, checked while the request is decoded,
    before any array is allocated: past one, the request is a 400.
    """

    max_tensor_elements: Annotated[int, msgspec.Meta(ge=1)] = 4_194_304
    """Most elements (the product of the shape) in one input tensor: 16 MiB of FP32."""
    max_request_elements: Annotated[int, msgspec.Meta(ge=1)] = 8_388_608
    """Most elements in all the input tensors of one request together."""
    max_tensor_dims: Annotated[int, msgspec.Meta(ge=1, le=32)] = 8
    """Most dimensions of one input tensor; ``data`` may be nested at most this deep. Every dimension is at
    least 1."""


class MeteringSettings(msgspec.Struct, frozen=True):
    """Usage metering: the journal that every usage record is appended to before its answer is sent, and the
    writer that copies the journal into the database.
    """

    journal_dir: str = ""
    """Directory of the usage journal. Empty means ``CLOUDEASYML_HOME/journal``. Each server process writes its own
    files there; put it on a volume that outlives the process (on Kubernetes, at least the container)."""
    flush_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    """How often the writer copies journaled usage into the database."""
    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 1000
    """Records per database transaction. Memory holds at most this many recent records (the rest wait in the journal
    on disk) plus the batch being written."""
    segment_bytes: Annotated[int, msgspec.Meta(ge=4096)] = 8 * 1024 * 1024
    """Journal files are closed past this size and deleted once the database has every record in them."""
    flush_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """How long a reader of usage (``GET /usage``, quota checks) waits for the writer before answering 503."""


class WebhookSettings(msgspec.Struct, frozen=True):
    """Webhook delivery (docs/webhooks.md): where endpoints may point, how long deliveries may take, how often they
    are retried.
    """

    allow_http: bool = False
    """Accept ``http://`` endpoint URLs as well as ``https://`` (for a test or a private network; signatures still
    authenticate the sender, but the body travels in the clear)."""
    allowed_networks: tuple[str, ...] = ()
    """Networks (CIDR, comma-separated in the environment: ``10.0.0.0/8,127.0.0.1/32``) that endpoints may resolve
    to although they are private, loopback, link-local or otherwise not public. Empty: public addresses only."""
    connect_timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """How long connecting to an endpoint (DNS, TCP, TLS) may take before the attempt fails."""
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    """How long one attempt may take in all (connect, send, the answer's first 1 KB) before it fails."""
    poll_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    """How often each server process looks for deliveries that are due."""
    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 20
    """Most deliveries one process claims and sends at once."""
    retry_base_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """The wait before the second attempt; each later wait doubles, up to ``retry_max_delay_seconds``, less up to
    ``retry_jitter`` of it at random (so that many deliveries that failed together do not come back together)."""
    retry_max_delay_seconds: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    """The longest wait between two attempts."""
    retry_jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.2
    """The share of each wait taken off at random."""
    retry_window_seconds: Annotated[float, msgspec.Meta(gt=0)] = 86400.0
    """How long after the event a delivery is retried; an attempt that fails later marks it ``failed``."""
    disable_after_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5 * 86400.0
    """An endpoint whose attempts have all failed for this long is disabled, and the tenant's other endpoints get an
    ``endpoint.disabled`` event."""
    scan_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    """How often each server process looks for keys that expire within ``key_expiring_days`` (``key.expiring``)."""
    key_expiring_days: Annotated[float, msgspec.Meta(gt=0)] = 7.0
    """How long before a key's expiry its ``key.expiring`` event is sent."""
    retention_days: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    """Events (and their delivery log) older than this are deleted."""
    max_endpoints: Annotated[int, msgspec.Meta(ge=0)] = 20
    """Endpoints per tenant; creating one more is refused with 409. 0: no limit."""
    enabled: bool = True
    """Run the dispatcher in this server process. Off, events are still recorded (and delivered by the processes
    where it is on)."""


class UsageExportSettings(msgspec.Struct, frozen=True):
    """The usage exporter (docs/billing.md): every usage record as a CloudEvent, POSTed in batches to an operator's
    endpoint (OpenMeter's ingest API, say) at least once, through the webhook outbox and dispatcher (so the webhook
    settings' URL guard, timeouts and backoff apply to it too).
    """

    url: str = ""
    """Where the batches are POSTed (e.g. ``https://openmeter.example.com/api/v1/events``); checked by the webhook
    URL guard (https unless ``webhooks.allow_http``; public addresses unless ``webhooks.allowed_networks``). Empty:
    no export (records written meanwhile are not exported later)."""
    auth_header: str = "Authorization"
    """The header that carries ``auth_value``."""
    auth_value: str = ""
    """The credential sent in ``auth_header`` with every batch (``Bearer <token>`` for OpenMeter). Empty: none."""
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    """Most CloudEvents per POST (``application/cloudevents-batch+json``)."""
    source: str = "cloudeasyml"
    """The CloudEvents ``source`` of every event (a URI-reference naming this installation)."""
    retry_window_seconds: Annotated[float, msgspec.Meta(gt=0)] = 7 * 86400.0
    """How long a record's export is retried (with the webhooks' backoff) before it is marked ``failed``. Keep it
    below ``webhooks.retention_days``: older outbox rows are deleted."""

    @property
    def enabled(self) -> bool:
        """Whether usage is exported."""
        return bool(self.url)


class OutcomeSettings(msgspec.Struct, frozen=True):
    """Outcomes (what each version of a deployment with several routes answered) and feedback (``POST /feedback``),
    the material of the experiment report (``GET /deployments/{id}/experiment``). Outcomes are written behind the
    answers in batches from memory, not journaled: a process that crashes loses those it had not written yet (at
    most ``flush_interval_seconds`` of them), which an experiment can afford; usage is never lost that way.
    """

    retention_days: Annotated[int, msgspec.Meta(ge=1)] = 30
    """Outcomes and feedback older than this are deleted; feedback is accepted for requests answered within it."""
    flush_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    """How often recorded outcomes are written to the database."""
    batch_size: Annotated[int, msgspec.Meta(ge=1)] = 500
    """Outcomes per database transaction."""
    max_pending: Annotated[int, msgspec.Meta(ge=1)] = 5000
    """Most outcomes waiting in memory for the writer; past it new ones are dropped (and counted) until it catches
    up, so a slow database never grows the process."""
    max_items: Annotated[int, msgspec.Meta(ge=0)] = 16
    """Most predictions of one request kept (the first ones): enough to score against feedback and to compare a
    shadow with the live answer, and a bound on memory and rows (an embedding is kept whole)."""
    max_output_bytes: Annotated[int, msgspec.Meta(ge=0)] = 64 * 1024
    """Most bytes of JSON kept of one request's predictions: the first items that fit."""
    purge_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    """How often outcomes and feedback past ``retention_days`` are deleted."""
    report_max_rows: Annotated[int, msgspec.Meta(ge=1)] = 200_000
    """Most outcomes one experiment report reads (the latest ones); the counts of requests and errors are exact
    whatever it is, latencies and quality come from those rows."""


class IdempotencySettings(msgspec.Struct, frozen=True):
    """``Idempotency-Key`` on POST requests (docs/billing.md)."""

    ttl_seconds: Annotated[float, msgspec.Meta(gt=0)] = 86400.0
    """How long a key's answer is kept and replayed; after it, the key is free again (and purged)."""
    lock_seconds: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    """How long a key whose first request has no answer yet refuses retries with 409; past it, the first request is
    taken for lost (its process died) and a retry runs again."""
    purge_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """How often, at most, each server process deletes the keys older than ``ttl_seconds``."""


class OperatorSettings(msgspec.Struct, frozen=True):
    """The platform operator's API (``/operator/...``, README "Operators")."""

    deletion_token_seconds: Annotated[float, msgspec.Meta(gt=0)] = 600.0
    """How long the confirmation token of ``DELETE /operator/tenants/{id}`` stays valid; past it, ask again."""
    plan_refresh_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """How often each process reads the stored plans again (at once, with Redis, when one is changed)."""
    audit_retention_days: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    """Audit events older than this are deleted (by the webhook dispatcher's periodic scan); 0 keeps them all."""


class BatchSettings(msgspec.Struct, frozen=True):
    """Batch inference (``/files``, ``/batches``): input files, their limits, and the workers that run jobs."""

    max_file_bytes: Annotated[int, msgspec.Meta(ge=1)] = 200 * 1024 * 1024
    """Largest file one upload may hold."""
    tenant_storage_bytes: Annotated[int, msgspec.Meta(ge=0)] = 2 * 1024 * 1024 * 1024
    """Most bytes of files (inputs and results) a tenant may keep at once; an upload past it is refused (409)."""
    file_expiry_seconds: Annotated[float, msgspec.Meta(gt=0)] = 30 * 86400.0
    """Files are deleted this long after they were made."""
    completion_window_seconds: Annotated[float, msgspec.Meta(gt=0)] = 86400.0
    """A job not finished this long after it was made is ``expired`` (``completionWindow`` may say less)."""
    chunk_lines: Annotated[int, msgspec.Meta(ge=1)] = 256
    """Lines per chunk: the unit a worker claims, checkpoints and bills."""
    workers: Annotated[int, msgspec.Meta(ge=0)] = 2
    """Chunks each server process (and ``cloudeasyml worker``) runs at once; 0: this process runs no batch work."""
    lease_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """A claimed chunk is another worker's to take once this passes without its worker finishing it (a crash)."""
    poll_interval_seconds: Annotated[float, msgspec.Meta(gt=0)] = 0.5
    """How often an idle worker looks for chunks at first: each look that finds nothing doubles the wait, up to
    ``idle_poll_max_seconds``; a job submitted or cancelled in this process, or a chunk found, starts it over."""
    idle_poll_max_seconds: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    """The longest wait of an idle worker between looks (never shorter than ``poll_interval_seconds``): a job
    submitted to another process starts within it. Every idle look is a few queries (claim a validation, claim a
    chunk, end due jobs): two workers looking every 0.5 s took ~10 % of a busy server's event loop at c=1."""
    retry_backoff_max_seconds: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    """A worker that fails (the database down or restarting) retries after the poll interval, doubled per failure in
    a row up to this; it never gives up."""
    quota_pause_seconds: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    """A job whose tenant reached a monthly cap waits this long before trying again (its status says why)."""
    price_factor: Decimal = Decimal("0.5")
    """A batch item costs this fraction of the same item sent online, each line billed as one request (OpenAI's
    batch discount is half)."""


class Settings(msgspec.Struct, frozen=True):
    """All settings."""

    database: DatabaseSettings = DatabaseSettings()
    server: ServerSettings = ServerSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    plugins: PluginSettings = PluginSettings()
    redis: RedisSettings = RedisSettings()
    quota: QuotaSettings = QuotaSettings()
    v2: OpenInferenceSettings = OpenInferenceSettings()
    metering: MeteringSettings = MeteringSettings()
    limits: LimitsSettings = LimitsSettings()
    webhooks: WebhookSettings = WebhookSettings()
    usage_export: UsageExportSettings = UsageExportSettings()
    outcomes: OutcomeSettings = OutcomeSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    batch: BatchSettings = BatchSettings()
    operator: OperatorSettings = OperatorSettings()
    home: str = ""
    """Data directory for the embedded defaults. Empty means ``~/.cloudeasyml``."""

    @property
    def home_dir(self) -> Path:
        """The data directory, created on demand by whoever writes to it."""
        return Path(self.home) if self.home else _data_dir()

    @property
    def database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data directory."""
        return self.database.url or f"sqlite+aiosqlite:///{self.home_dir / 'cloudeasyml.db'}"

    @property
    def journal_path(self) -> Path:
        """The usage journal's directory."""
        return Path(self.metering.journal_dir) if self.metering.journal_dir else self.home_dir / "journal"

    @property
    def artifact_path(self) -> Path:
        """The artifact store's root directory."""
        return Path(self.runtime.artifact_dir) if self.runtime.artifact_dir else self.home_dir / "artifacts"


# Short aliases users expect from the README and twelve-factor habits.
_ALIASES = {"CLOUDEASYML_DATABASE_URL": "CLOUDEASYML_DATABASE__URL"}

_LIST_FIELDS = {"blocked", "allowed_networks"}
"""Settings whose environment value is a comma-separated list."""

_JSON_FIELDS = {("limits", "plans")}
"""Settings whose environment value is a JSON document rather than a scalar."""


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``CLOUDEASYML_<SECTION>__<FIELD>`` variables (and ``CLOUDEASYML_DATABASE_URL``,
    ``CLOUDEASYML_HOME``). Unknown variables are ignored; bad values raise ``msgspec.ValidationError``.
    """
    environ = os.environ if environ is None else environ
    tree: dict[str, object] = {}
    for raw_key, value in environ.items():
        key = _ALIASES.get(raw_key, raw_key)
        if not key.startswith(PREFIX):
            continue
        path = key[len(PREFIX) :].lower().split("__")
        if path == ["home"]:
            tree["home"] = value
        elif len(path) == 2 and path[0] in Settings.__struct_fields__:
            section = tree.setdefault(path[0], {})
            assert isinstance(section, dict)
            section[path[1]] = _parse(path[0], path[1], value)
    return msgspec.convert(tree, Settings, strict=False)


def _parse(section: str, field: str, value: str) -> object:
    if field in _LIST_FIELDS:
        return [part.strip() for part in value.split(",") if part.strip()]
    if (section, field) in _JSON_FIELDS:
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError as exc:
            raise msgspec.ValidationError(f"{PREFIX}{section.upper()}__{field.upper()} is not JSON: {exc}") from exc
    return value
