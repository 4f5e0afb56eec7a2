"""Litestar dependencies of the management endpoints: the services a handler works with, built for the caller.

Tenancy is applied here and nowhere else in ``api``: each ``provide_*_service`` reads the tenant off the caller's
``Principal`` (put in the scope by ``ApiKeyMiddleware``), so a handler takes a service already scoped to its
caller's tenant and has no tenant id to choose. A test reads the controllers' source and refuses any that reads
``tenant_id`` or builds a tenant-scoped service itself.

Sessions: ``db_session`` is a session for the request, closed once the response is built. A handler that writes
gets ``db_session`` from ``provide_transaction`` instead (``WRITES``): its work is one transaction, committed when
the handler returns and rolled back when it raises. A handler whose later steps must follow the commit (telling
other processes of a revocation, loading a new deployment) commits first itself, ``await db_session.commit()``;
the commit at the end then has nothing left to do.

Types in these signatures are imported at run time: Litestar reads them to resolve the dependencies.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, TypeAlias, TypeVar

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.domain.api_keys import ApiKeyService
from cloudeasyml.domain.audit import Actor, AuditLog, AuditTrail
from cloudeasyml.domain.batch.files import FileService
from cloudeasyml.domain.batch.jobs import BatchService
from cloudeasyml.domain.deployments import DeploymentService
from cloudeasyml.domain.experiment import ExperimentService
from cloudeasyml.domain.feedback import FeedbackService
from cloudeasyml.domain.invoices import InvoiceService, plan_prices
from cloudeasyml.domain.plans import PlanService
from cloudeasyml.domain.principal import OPERATOR_SCOPE, Principal
from cloudeasyml.domain.revisions import RevisionService
from cloudeasyml.domain.tenant_admin import TenantAdminService
from cloudeasyml.domain.usage import UsageService
from cloudeasyml.domain.webhooks.endpoints import WebhookEndpointService
from cloudeasyml.services import Services

__all__ = (
    "MANAGEMENT",
    "WRITES",
    "Injected",
    "provide_api_key_service",
    "provide_audit_log",
    "provide_audit_trail",
    "provide_batch_service",
    "provide_caller",
    "provide_db_session",
    "provide_deployment_service",
    "provide_plan_service",
    "provide_revision_service",
    "provide_experiment_service",
    "provide_feedback_service",
    "provide_file_service",
    "provide_services",
    "provide_tenant_admin_service",
    "provide_transaction",
    "provide_usage_service",
    "provide_webhook_service",
)

T = TypeVar("T")

Injected: TypeAlias = NamedDependency[SkipValidation[T]]
"""A parameter filled by the dependency of its name (``NamedDependency``), passed as provided: Litestar does not
convert or validate it (``SkipValidation``; a ``Services`` or a session is no wire value)."""


def provide_services(state: State) -> Services:
    """The app's services (``app.state.services``)."""
    return state.services


def provide_caller(request: Request[Principal, Any, Any]) -> Principal:
    """The authenticated caller."""
    return request.user


async def provide_db_session(services: Injected[Services]) -> AsyncGenerator[AsyncSession, None]:
    """A session for a handler that reads; closed (rolled back) after the response is built."""
    async with services.sessions() as session:
        yield session


async def provide_transaction(services: Injected[Services]) -> AsyncGenerator[AsyncSession, None]:
    """A session whose work is one transaction: committed when the handler returns, unless the handler committed
    already; rolled back when it raises (the error then answers as any other, and nothing is written).
    """
    async with services.sessions() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        if session.in_transaction():
            # A failed commit raises here, before the response is sent: the client gets the error, as it did when
            # handlers committed inline.
            await session.commit()


def provide_api_key_service(db_session: Injected[AsyncSession], caller: Injected[Principal]) -> ApiKeyService:
    """The caller's tenant's API keys."""
    return ApiKeyService(db_session, caller.tenant_id)


def provide_deployment_service(
    db_session: Injected[AsyncSession], caller: Injected[Principal], services: Injected[Services]
) -> DeploymentService:
    """The caller's tenant's deployments."""
    return DeploymentService(db_session, caller.tenant_id, services.catalog, services.resolver, limits=services.limits)


def provide_revision_service(
    db_session: Injected[AsyncSession], caller: Injected[Principal], deployments: Injected[DeploymentService]
) -> RevisionService:
    """The caller's tenant's deployment revisions."""
    return RevisionService(db_session, caller.tenant_id, deployments)


def provide_usage_service(
    db_session: Injected[AsyncSession], caller: Injected[Principal], services: Injected[Services]
) -> UsageService:
    """The caller's tenant's usage and quota reports."""
    return UsageService(db_session, caller.tenant_id, services.meter)


def provide_invoice_service(
    db_session: Injected[AsyncSession], caller: Injected[Principal], services: Injected[Services]
) -> InvoiceService:
    """The caller's tenant's invoices, priced by its plan."""
    return InvoiceService(db_session, caller.tenant_id, services.meter, plan_prices(services.catalog, services.pricing))


def provide_webhook_service(
    db_session: Injected[AsyncSession], caller: Injected[Principal], services: Injected[Services]
) -> WebhookEndpointService:
    """The caller's tenant's webhook endpoints and their delivery logs."""
    return WebhookEndpointService(db_session, caller.tenant_id, services.webhooks.guard, services.settings.webhooks)


def provide_feedback_service(
    db_session: Injected[AsyncSession], caller: Injected[Principal], services: Injected[Services]
) -> FeedbackService:
    """The caller's tenant's feedback, written under the caller's key."""
    return FeedbackService(
        db_session, caller.tenant_id, services.meter, services.settings.outcomes, key_id=caller.key_id
    )


def provide_experiment_service(
    db_session: Injected[AsyncSession], caller: Injected[Principal], services: Injected[Services]
) -> ExperimentService:
    """The experiment reports of the caller's tenant's deployments."""
    return ExperimentService(
        db_session, caller.tenant_id, services.catalog, meter=services.meter, outcomes=services.outcomes
    )


def provide_file_service(
    db_session: Injected[AsyncSession], caller: Injected[Principal], services: Injected[Services]
) -> FileService:
    """The caller's tenant's batch files."""
    return FileService(db_session, caller.tenant_id, services.files, services.settings.batch)


def provide_batch_service(
    db_session: Injected[AsyncSession], caller: Injected[Principal], services: Injected[Services]
) -> BatchService:
    """The caller's tenant's batch jobs."""
    return BatchService(
        db_session, caller.tenant_id, services.files, services.settings.batch, notify=services.batches.notify
    )


def provide_audit_trail(
    request: Request[Principal, Any, Any], db_session: Injected[AsyncSession], caller: Injected[Principal]
) -> AuditTrail:
    """Records the handler's changes in its transaction, as the caller's key from the client's address, about the
    caller's tenant (the operator's changes name their tenant themselves).
    """
    client = request.client
    actor = Actor(key_id=caller.key_id, client_ip=client.host if client is not None else None)
    return AuditTrail(db_session, actor, None if caller.has_scope(OPERATOR_SCOPE) else caller.tenant_id)


def provide_audit_log(db_session: Injected[AsyncSession], caller: Injected[Principal]) -> AuditLog:
    """The audit log the caller may read: its tenant's, or every tenant's for the operator."""
    return AuditLog(db_session, None if caller.has_scope(OPERATOR_SCOPE) else caller.tenant_id)


def provide_plan_service(db_session: Injected[AsyncSession], services: Injected[Services]) -> PlanService:
    """The plans, stored and the code's (not tenant-scoped: plans are the platform's)."""
    return PlanService(db_session, services.settings.limits)


def provide_tenant_admin_service(db_session: Injected[AsyncSession]) -> TenantAdminService:
    """Every tenant, for the platform operator (only ``/operator/...`` routes, guarded by ``operator``, name it)."""
    return TenantAdminService(db_session)


def _sync(provider: Any) -> Provide:
    # Cheap, non-blocking builders: run them on the event loop rather than in a worker thread.
    return Provide(provider, sync_to_thread=False)


MANAGEMENT: dict[str, Provide] = {
    "services": _sync(provide_services),
    "caller": _sync(provide_caller),
    "db_session": Provide(provide_db_session),
    "api_keys": _sync(provide_api_key_service),
    "deployments": _sync(provide_deployment_service),
    "revisions": _sync(provide_revision_service),
    "usage": _sync(provide_usage_service),
    "invoices": _sync(provide_invoice_service),
    "webhooks": _sync(provide_webhook_service),
    "feedback": _sync(provide_feedback_service),
    "experiment": _sync(provide_experiment_service),
    "files": _sync(provide_file_service),
    "batches": _sync(provide_batch_service),
    "tenant_admin": _sync(provide_tenant_admin_service),
    "audit": _sync(provide_audit_trail),
    "audit_log": _sync(provide_audit_log),
    "plans": _sync(provide_plan_service),
}
"""The dependencies of the management controllers (set on each; Litestar resolves only those a handler names)."""

WRITES: dict[str, Provide] = {"db_session": Provide(provide_transaction)}
"""Handler-level dependencies of a handler that writes: its ``db_session`` is a transaction."""
