"""The long-lived objects of one running app, built from settings and a plugin manager."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cloudeasyml.core.pricing import Pricing
from cloudeasyml.db.engine import create_engine, session_factory
from cloudeasyml.db.readiness import not_ready_reason
from cloudeasyml.domain.audit_retention import AuditRetention
from cloudeasyml.domain.authenticator import ApiKeyAuthenticator
from cloudeasyml.domain.batch.lines import Describe, describe_plain
from cloudeasyml.domain.batch.runner import ChunkRunner
from cloudeasyml.domain.batch.storage import FileStorage
from cloudeasyml.domain.batch.worker import BatchWorker
from cloudeasyml.domain.broadcast import (
    CHANGED_DEPLOYMENTS,
    CHANGED_PLANS,
    DELETED_DEPLOYMENTS,
    REVOKED_KEYS,
    Broadcast,
)
from cloudeasyml.domain.deployment_directory import DeploymentDirectory
from cloudeasyml.domain.deployment_status import LoadOutcomes
from cloudeasyml.domain.eager_warmup import EagerWarmup
from cloudeasyml.domain.idempotency import IdempotencyStore
from cloudeasyml.domain.inference import InferenceService
from cloudeasyml.domain.invoices import plan_prices
from cloudeasyml.domain.month_close import MonthCloser
from cloudeasyml.domain.plans import LiveLimits, PlanBook
from cloudeasyml.domain.quota import QuotaGuard
from cloudeasyml.domain.rate_limit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from cloudeasyml.domain.rollout import Rollout
from cloudeasyml.domain.webhooks.dispatcher import WebhookDispatcher
from cloudeasyml.domain.webhooks.notices import Notices
from cloudeasyml.errors import NotFoundError, RolloutFailedError
from cloudeasyml.metering.meter import Meter
from cloudeasyml.metering.metrics import Metrics
from cloudeasyml.metering.outcomes import OutcomeRecorder
from cloudeasyml.metering.pricing_book import PricingBook
from cloudeasyml.plugins.catalog import ModelCatalog, build_catalog
from cloudeasyml.plugins.manager import PluginManager, get_plugin_manager
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.machine import memory_limit_bytes
from cloudeasyml.runtime.registry import DeploymentSpec, ServingRegistry
from cloudeasyml.runtime.resolver import ArtifactResolver
from cloudeasyml.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from cloudeasyml.domain.tenant_admin import DeletedTenant

__all__ = ("Services", "build_catalog_from_settings", "build_services", "memory_budget_bytes")

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request handler may need, wired once per app."""

    settings: Settings
    plugin_manager: PluginManager
    catalog: ModelCatalog
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    authenticator: ApiKeyAuthenticator
    resolver: ArtifactResolver
    registry: ServingRegistry
    directory: DeploymentDirectory
    meter: Meter
    metrics: Metrics
    rate_limiter: RateLimiter
    quota: QuotaGuard
    inference: InferenceService
    webhooks: WebhookDispatcher
    """Delivers webhook events (its ``guard`` checks endpoint URLs)."""
    notices: Notices
    """Writes the webhook events of model loads and quota crossings."""
    rollout: Rollout
    """Moves serving from a deployment's revision to the next (warm, switch, drain)."""
    outcomes: OutcomeRecorder
    """What each version of a split answered (the experiment report's material), written behind the answers."""
    idempotency: IdempotencyStore
    """Requests sent with an ``Idempotency-Key`` and their answers."""
    pricing: PricingBook
    """Each plan's prices (the data plane's, and the unit prices of invoices)."""
    files: FileStorage
    """Batch input and output files (the artifact store's ``files/``)."""
    batches: BatchWorker
    """This process's batch workers."""
    eager: EagerWarmup
    """Loads the ``eagerLoad`` deployments when the process starts (``/health/ready`` waits for it)."""
    plans: PlanBook
    """The stored plans (``/plans``), this process's copy."""
    limits: LiveLimits
    """``settings.limits`` with the stored plans' limits laid over: what every limit by plan is read from."""
    redis: Redis | None = None
    """Shared state across processes (``CLOUDEASYML_REDIS__URL``); None: each process on its own."""
    broadcast: Broadcast | None = None
    """Revocations, deletions and changes told to every process through Redis; None without Redis."""

    async def start(self) -> None:
        """Start background work (the meter: replay of journals left by stopped processes, then its writer; the
        Redis subscriber; the webhook dispatcher; the batch workers; the loading of ``eagerLoad`` deployments).
        """
        await self.plans.start()
        await self.meter.start()
        await self.outcomes.start()
        if self.broadcast is not None:
            await self.broadcast.start()
        self.metrics.start(self.refresh_gauges)
        if self.settings.webhooks.enabled:
            self.webhooks.start()
        self.batches.start()
        await self.eager.start()

    async def stop(self) -> None:
        """Stop delivering webhooks, cancel shadow copies, drain deployments, write outstanding usage and events, close
        the database and Redis.
        """
        await self.eager.stop()
        await self.webhooks.stop()
        await self.batches.stop()
        await self.plans.stop()
        await self.inference.shadows.close()
        await self.registry.close()
        await self.notices.close()
        await self.metrics.close()
        await self.quota.close()
        await self.meter.stop()
        await self.outcomes.stop()
        if self.broadcast is not None:
            await self.broadcast.stop()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()

    async def not_ready_reason(self) -> str | None:
        """Why this process should get no traffic yet (``/health/ready``, ``/v2/health/ready``): the database does
        not answer or its schema is not this release's, or the ``eagerLoad`` deployments are still loading; None
        when ready.
        """
        reason = await not_ready_reason(self.sessions)
        eager = self.eager
        if reason is None and eager.pending:
            reason = f"loading eagerLoad deployments: {eager.loaded + eager.failed} of {eager.total or '?'} done"
        return reason

    def refresh_gauges(self) -> None:
        """Set the metrics' gauges from this process's state (loaded deployments, queues, unwritten usage)."""
        queued: dict[str, int] = {}
        for loaded in self.registry.loaded():
            model = loaded.spec.model_name  # by model only: /metrics names no tenant and no tenant's deployment
            queued[model] = queued.get(model, 0) + loaded.batcher.queued_items
        self.metrics.set_gauges(
            deployments_loaded=len(self.registry),
            sessions_loaded=self.registry.session_count,
            session_bytes=self.registry.session_bytes,
            queued_by_model=queued,
            usage_pending=self.meter.pending,
            models_installed=len(self.catalog),
        )

    async def keys_revoked(self, key_ids: Sequence[str]) -> None:
        """Drop revoked keys (a key and the keys it created) from this process's cache at once, then from every
        other process's through Redis (one message per key).
        """
        for key_id in key_ids:
            self.authenticator.forget(key_id)
        if self.broadcast is not None:
            for key_id in key_ids:
                await self.broadcast.publish(REVOKED_KEYS, key_id)

    async def plans_changed(self) -> None:
        """A stored plan changed (committed): read the plans again here at once, and in every other process
        through Redis (without it, within ``operator.plan_refresh_seconds``).
        """
        await self.plans.refresh()
        if self.broadcast is not None:
            await self.broadcast.publish(CHANGED_PLANS, "plans")

    async def tenant_changed(self, key_ids: Sequence[str]) -> None:
        """A tenant's suspension, resumption or plan changed (committed): every process reads its keys again at
        once (the key-revocation broadcast: the key cache holds the tenant's state with each key).
        """
        await self.keys_revoked(key_ids)

    async def tenant_deleted(self, deleted: DeletedTenant) -> None:
        """A deleted tenant (committed): its keys forgotten and its deployments unloaded in every process, its
        batch files removed from the artifact store.
        """
        await self.keys_revoked(deleted.key_ids)
        for spec in deleted.deployments:
            await self.deployment_deleted(spec)
        self.files.remove_tenant(deleted.tenant_id)

    async def deployment_deleted(self, spec: DeploymentSpec) -> None:
        """Stop serving a deleted deployment: here (its in-flight requests drain first), and in every other
        process through Redis.
        """
        self.directory.forget(spec.tenant_id, spec.id, spec.name)
        if self.broadcast is not None:
            await self.broadcast.publish(DELETED_DEPLOYMENTS, f"{spec.tenant_id} {spec.id} {spec.name}")
        await self.registry.unload(spec.id, deleted=True)

    async def deployment_changed(self, spec: DeploymentSpec, *, plan: str) -> None:
        """Serve a deployment's new revision (``spec``, stored and committed; its units warmed by
        ``rollout.prepare``): here at once, the old units draining, and in every other process through Redis, each
        warming the new units it needs first (``plan``: the tenant's, for its cap of loaded units).
        """
        await self.rollout.switch(spec)
        if self.broadcast is not None:
            await self.broadcast.publish(CHANGED_DEPLOYMENTS, f"{spec.tenant_id} {spec.id} {plan} {spec.name}")


def memory_budget_bytes(settings: Settings, memory_limit: int | None) -> int:
    """The serving registry's memory budget: ``runtime.memory_budget_mb`` when set, else
    ``runtime.memory_budget_fraction`` of ``memory_limit`` (what the process may use, from
    ``cloudeasyml.runtime.machine.memory_limit_bytes``) shared by the server's workers; 0 (none) when the fraction is
    0 or the limit unknown.
    """
    runtime = settings.runtime
    if runtime.memory_budget_mb:
        return int(runtime.memory_budget_mb * 2**20)
    if not runtime.memory_budget_fraction or not memory_limit:
        return 0
    return int(memory_limit * runtime.memory_budget_fraction / max(1, settings.server.workers))


def build_catalog_from_settings(settings: Settings) -> ModelCatalog:
    """The validated models of the installed plugins, minus blocked ones (the CLI's view of the catalog)."""
    return build_catalog(get_plugin_manager(blocked=settings.plugins.blocked))


def build_services(
    settings: Settings, plugin_manager: PluginManager | None = None, *, describe_error: Describe | None = None
) -> Services:
    """Wire the app's objects. Nothing here touches the database or loads a model yet.

    ``describe_error`` writes a failed batch line's problem details (the app passes the HTTP edge's, with the
    status an online request would have got).
    """
    pm = plugin_manager if plugin_manager is not None else get_plugin_manager(blocked=settings.plugins.blocked)
    catalog = build_catalog(pm)
    engine = create_engine(
        settings.database_url,
        echo=settings.database.echo,
        pool_size=settings.database.pool_size,
        connect_timeout=settings.database.connect_timeout_seconds,
    )
    sessions = session_factory(engine)
    resolver = ArtifactResolver(ArtifactStore(settings.artifact_path), export_on_load=settings.runtime.export_on_load)
    budget = memory_budget_bytes(settings, memory_limit_bytes())
    log.debug("memory budget of loaded models: %.0f MiB (0: none)", budget / 2**20)
    metrics = Metrics()
    notices = Notices(sessions, retry_window_seconds=settings.webhooks.retry_window_seconds)
    load_status = LoadOutcomes(sessions)

    async def on_load(spec: DeploymentSpec, error: Exception | None) -> None:
        """A load's outcome: stored in the deployment's row (its status), then told to webhooks."""
        await load_status(spec, error)
        notices.deployment_loaded(spec, error)

    registry = ServingRegistry(resolver, memory_budget_bytes=budget, observer_for=metrics.model, on_load=on_load)
    cache_seconds = settings.server.key_cache_seconds
    cache_entries = settings.server.cache_entries
    directory = DeploymentDirectory(sessions, catalog, resolver, cache_seconds=cache_seconds, max_entries=cache_entries)
    metering = settings.metering
    meter = Meter(
        sessions,
        settings.journal_path,
        flush_interval=metering.flush_interval_seconds,
        batch_size=metering.batch_size,
        segment_bytes=metering.segment_bytes,
        flush_timeout=metering.flush_timeout_seconds,
        export=settings.usage_export,
    )
    authenticator = ApiKeyAuthenticator(
        sessions,
        cache_seconds=cache_seconds,
        key_cache_entries=cache_entries,
        unknown_cache_entries=settings.server.unknown_key_cache_entries,
        external=lambda token: pm.hook.cloudeasyml_authenticate(token=token),
        external_cache_entries=settings.server.unknown_key_cache_entries,
    )
    redis = _redis(settings)
    outcomes = OutcomeRecorder(sessions, settings.outcomes)
    quota = QuotaGuard(
        sessions,
        meter,
        refresh_seconds=settings.quota.refresh_seconds,
        redis=redis,
        reservation_seconds=settings.quota.reservation_seconds,
        max_tenants=cache_entries,
        on_crossing=notices.quota_crossed,
    )
    plans = PlanBook(sessions, refresh_seconds=settings.operator.plan_refresh_seconds)
    limits = LiveLimits.over(settings.limits, plans)

    def stored_price(plan: str, model: str) -> Pricing | None:
        stored = plans.get(plan)
        return stored.prices.get(model) if stored is not None else None

    pricing = PricingBook(pm, batch_factor=settings.batch.price_factor, stored=stored_price)
    plans.on_change(pricing.clear)
    rollout = Rollout(registry, directory, catalog, limits)
    directory.watch(_changed_unseen(rollout))
    inference = InferenceService(
        catalog,
        directory,
        registry,
        meter,
        pricing=pricing,
        metrics=metrics,
        quota=quota,
        limits=limits,
        outcomes=outcomes,
    )
    files = FileStorage(settings.artifact_path)
    runner = ChunkRunner(inference, directory, files, describe_error or describe_plain)
    batches = BatchWorker(
        sessions, runner, files, settings.batch, retry_window_seconds=settings.webhooks.retry_window_seconds
    )
    return Services(
        settings=settings,
        plugin_manager=pm,
        catalog=catalog,
        engine=engine,
        sessions=sessions,
        authenticator=authenticator,
        resolver=resolver,
        registry=registry,
        directory=directory,
        meter=meter,
        metrics=metrics,
        rate_limiter=RedisRateLimiter(redis) if redis is not None else LocalRateLimiter(max_buckets=cache_entries),
        quota=quota,
        inference=inference,
        webhooks=WebhookDispatcher(
            sessions,
            settings.webhooks,
            chores=(
                MonthCloser(sessions, meter, plan_prices(catalog, pricing)),
                AuditRetention(sessions, settings.operator.audit_retention_days),
            ),
            export=settings.usage_export,
        ),
        notices=notices,
        rollout=rollout,
        outcomes=outcomes,
        idempotency=IdempotencyStore(sessions, settings.idempotency),
        pricing=pricing,
        files=files,
        batches=batches,
        eager=EagerWarmup(sessions, rollout, catalog, enabled=settings.runtime.eager_load_on_start),
        plans=plans,
        limits=limits,
        redis=redis,
        broadcast=_broadcast(redis, authenticator, directory, registry, rollout, plans) if redis is not None else None,
    )


def _broadcast(
    redis: Redis,
    authenticator: ApiKeyAuthenticator,
    directory: DeploymentDirectory,
    registry: ServingRegistry,
    rollout: Rollout,
    plans: PlanBook,
) -> Broadcast:
    return Broadcast(
        redis,
        {
            REVOKED_KEYS: authenticator.forget,
            DELETED_DEPLOYMENTS: _deleted_elsewhere(directory, registry),
            CHANGED_DEPLOYMENTS: _changed_elsewhere(directory, rollout),
            CHANGED_PLANS: plans.refresh_soon,
        },
    )


def _changed_unseen(rollout: Rollout) -> Callable[[DeploymentSpec], None]:
    """Applies a change a lookup found on its own (made by another process, not told through Redis): drain and
    unload, in the background, the units the new revision does not use (its own load on the next request).
    """
    retiring: set[asyncio.Task[None]] = set()

    def apply(spec: DeploymentSpec) -> None:
        task = asyncio.get_running_loop().create_task(rollout.retire_unused(spec))
        retiring.add(task)
        task.add_done_callback(retiring.discard)

    return apply


def _changed_elsewhere(directory: DeploymentDirectory, rollout: Rollout) -> Callable[[str], None]:
    """Applies a change told through Redis, in the background: read the deployment's new revision, warm its units
    if the deployment is loaded here, then serve it and drain the old units. Idempotent: the process that made the
    change hears it too, and finds everything done already.
    """
    switching: set[asyncio.Task[None]] = set()

    async def switch(tenant_id: uuid.UUID, deployment_id: uuid.UUID, plan: str) -> None:
        try:
            spec = await directory.read(tenant_id, deployment_id)
        except NotFoundError:
            return  # deleted meanwhile: the deletion's own message unloads it
        try:
            await rollout.prepare(spec, plan=plan)
        except RolloutFailedError as exc:  # stored already: serve it anyway, loading on the first request
            log.warning("%s", exc.detail)
        await rollout.switch(spec)

    def apply(message: str) -> None:
        tenant_id, deployment_id, plan, _name = message.split(" ", 3)
        task = asyncio.get_running_loop().create_task(switch(uuid.UUID(tenant_id), uuid.UUID(deployment_id), plan))
        switching.add(task)
        task.add_done_callback(switching.discard)

    return apply


def _deleted_elsewhere(directory: DeploymentDirectory, registry: ServingRegistry) -> Callable[[str], None]:
    """Applies a deletion told through Redis: forget the deployment, and drain and unload it in the background."""
    unloading: set[asyncio.Task[None]] = set()

    def apply(message: str) -> None:
        tenant_id, deployment_id, name = message.split(" ", 2)
        directory.forget(uuid.UUID(tenant_id), uuid.UUID(deployment_id), name)
        task = asyncio.get_running_loop().create_task(registry.unload(uuid.UUID(deployment_id), deleted=True))
        unloading.add(task)
        task.add_done_callback(unloading.discard)

    return apply


def _redis(settings: Settings) -> Redis | None:
    """A client for ``CLOUDEASYML_REDIS__URL`` (connecting on first use), or None without one."""
    if not settings.redis.url:
        return None
    from redis.asyncio import Redis

    return Redis.from_url(settings.redis.url, socket_connect_timeout=2, socket_timeout=2)
