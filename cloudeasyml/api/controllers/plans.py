"""``/plans``: price plans as data. Any admin or the operator reads them; only the operator writes."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, get, patch, post
from litestar.params import Body, FromPath
from sqlalchemy.ext.asyncio import AsyncSession

from cloudeasyml.api.auth import requires_any_scope, requires_scope
from cloudeasyml.api.deps import MANAGEMENT, WRITES, Injected
from cloudeasyml.api.operator_schemas import PlanCreate, PlanRead, PlanUpdate
from cloudeasyml.domain.audit import AuditTrail, created, diff
from cloudeasyml.domain.plans import PlanChange, PlanService
from cloudeasyml.domain.principal import OPERATOR_SCOPE
from cloudeasyml.services import Services

__all__ = ("PlanController",)

_READ = [requires_any_scope("admin", OPERATOR_SCOPE)]
_WRITE = [requires_scope(OPERATOR_SCOPE)]


def _change(data: PlanUpdate) -> PlanChange:
    fields = {field: getattr(data, field) for field in PlanChange.__struct_fields__}
    return PlanChange(**{field: value for field, value in fields.items() if value is not msgspec.UNSET})


def _audited(plan: PlanRead) -> dict[str, object]:
    """What the audit log keeps of a plan: all of it (a plan holds no secret)."""
    return {k: v for k, v in msgspec.to_builtins(plan).items() if k not in ("createdAt", "updatedAt", "source")}


class PlanController(Controller):
    """List, read, create and change plans (``plans`` reads and writes the ``plan`` table over the code's)."""

    path = "/plans"
    tags = ["Plans"]
    dependencies = MANAGEMENT

    @get("/", summary="List plans", guards=_READ)
    async def list_plans(self, plans: Injected[PlanService]) -> list[PlanRead]:
        """Every plan by name: the stored ones, and the code's (``CLOUDEASYML_LIMITS__PLANS`` and ``default``)."""
        return [PlanRead.of(plan) for plan in await plans.list()]

    @get("/{name:str}", summary="Read a plan", guards=_READ)
    async def get_plan(self, plans: Injected[PlanService], name: FromPath[str]) -> PlanRead:
        """One plan, stored or the code's."""
        return PlanRead.of(await plans.get(name))

    @post("/", summary="Create a plan", guards=_WRITE, dependencies=WRITES)
    async def create_plan(
        self,
        plans: Injected[PlanService],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        data: Annotated[PlanCreate, Body()],
    ) -> PlanRead:
        """Store a plan; tenants put on it (``/operator/tenants``) pay its prices and get its limits on every
        process at once (with Redis; else within ``CLOUDEASYML_OPERATOR__PLAN_REFRESH_SECONDS``).
        """
        read = PlanRead.of(await plans.create(data.name, _change(data)))
        audit.record("plan.created", "plan", data.name, created(_audited(read)))
        await db_session.commit()
        await services.plans_changed()
        return read

    @patch("/{name:str}", summary="Change a plan", guards=_WRITE, dependencies=WRITES)
    async def update_plan(
        self,
        plans: Injected[PlanService],
        db_session: Injected[AsyncSession],
        services: Injected[Services],
        audit: Injected[AuditTrail],
        name: FromPath[str],
        data: Annotated[PlanUpdate, Body()],
    ) -> PlanRead:
        """Change a plan (a plan only the code defines is stored first, seeded from it); ``prices`` replaces the
        whole list. Applies to the next request on every process as ``POST`` does.
        """
        before, after = await plans.update(name, _change(data))
        read = PlanRead.of(after)
        changes = diff(_audited(PlanRead.of(before)), _audited(read))
        if changes:
            audit.record("plan.updated", "plan", name, changes)
        await db_session.commit()
        await services.plans_changed()
        return read
