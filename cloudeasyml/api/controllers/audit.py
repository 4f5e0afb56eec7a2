"""``GET /audit``: the audit log, for a tenant's admins (their tenant's only) and for the operator (every tenant's)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from litestar import Controller, get
from litestar.params import QueryParameter

from cloudeasyml.api.auth import requires_any_scope
from cloudeasyml.api.deps import MANAGEMENT, Injected
from cloudeasyml.api.operator_schemas import AuditEventRead, AuditList
from cloudeasyml.domain.audit import AuditLog
from cloudeasyml.domain.principal import OPERATOR_SCOPE
from cloudeasyml.errors import PermissionDeniedError

__all__ = ("AuditController",)

MAX_PAGE = 200


class AuditController(Controller):
    """Who changed what, when and from where (``audit_log`` is the caller's tenant's, or the operator's: see
    ``api.deps``).
    """

    path = "/audit"
    tags = ["Audit"]
    dependencies = MANAGEMENT

    @get("/", summary="Read the audit log", guards=[requires_any_scope("admin", OPERATOR_SCOPE)])
    async def list_audit_events(
        self,
        audit_log: Injected[AuditLog],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=40)] = None,
        since: Annotated[datetime | None, QueryParameter()] = None,
        until: Annotated[datetime | None, QueryParameter()] = None,
        action: Annotated[str | None, QueryParameter(max_length=64)] = None,
        resource_type: Annotated[str | None, QueryParameter(name="resourceType", max_length=32)] = None,
        resource_id: Annotated[str | None, QueryParameter(name="resourceId", max_length=64)] = None,
        tenant: Annotated[uuid.UUID | None, QueryParameter()] = None,
    ) -> AuditList:
        """Changes to tenants, plans, keys, deployments and webhooks, newest first: ``action`` (e.g.
        ``key.created``), the resource, the key that made the change (``actorKeyId``), the client's address and
        what changed (``{field: {"from", "to"}}``, never a secret). Filters: ``since`` / ``until`` (``[since,
        until)``), ``action``, ``resourceType``, ``resourceId``, and for the operator ``tenant``. ``cursor`` (from
        ``nextCursor``) continues. A tenant's ``admin`` key reads its tenant's events only.
        """
        if tenant is not None and not audit_log.all_tenants:
            raise PermissionDeniedError("only an operator key filters the audit log by tenant")
        page = await audit_log.page(
            limit=limit,
            cursor=cursor,
            since=since,
            until=until,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            tenant=tenant,
        )
        return AuditList(items=[AuditEventRead.of(row) for row in page.items], next_cursor=page.next_cursor)
