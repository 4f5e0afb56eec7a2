"""Price plans as data (``/plans``), and the per-process copy the hot path reads.

A plan is either the code's (a name in ``CLOUDEASYML_LIMITS__PLANS``, or ``default``: the settings' limits and the
models' own prices) or stored in the ``plan`` table, which then overrides the code's for that name: prices per model,
a per-key rate limit, the default monthly caps of tenants created on it, and deployment limits. ``PATCH`` on a plan
only the code defines stores it first, seeded from the code's values.

No request reads the table: each process keeps all stored plans in a ``PlanBook`` (they are few), read at start,
again every ``operator.plan_refresh_seconds``, and at once when a process that changed one says so through Redis
(``cloudeasyml:changed-plans``). ``LiveLimits`` is ``LimitsSettings`` with the stored plans' limits laid over.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.background import cancel_and_wait
from cloudeasyml.core.clock import utc_now
from cloudeasyml.core.pricing import COST_SCALE, Pricing
from cloudeasyml.db.models import Plan
from cloudeasyml.domain.tenants import MAX_SPEND_CAP
from cloudeasyml.errors import ConflictError, InvalidInputError, NotFoundError
from cloudeasyml.settings import LimitsSettings, PlanLimits, TenantLimits

__all__ = ("UNCHANGED", "LiveLimits", "PlanBook", "PlanChange", "PlanRecord", "PlanService")

log = logging.getLogger(__name__)

UNCHANGED: Any = msgspec.UNSET
"""``PlanChange``: leave this field as it is."""


class PlanRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A plan as the processes use it."""

    name: str
    description: str = ""
    prices: dict[str, Pricing] = {}
    rate_limit_per_minute: int | None = None
    spend_cap: Decimal | None = None
    request_cap: int | None = None
    limits: PlanLimits = PlanLimits()
    stored: bool = False
    """Whether it is in the ``plan`` table (False: the code's)."""
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def of(cls, row: Plan) -> PlanRecord:
        """A stored plan."""
        return cls(
            name=row.name,
            description=row.description,
            prices={model: msgspec.convert(price, Pricing) for model, price in row.prices.items()},
            rate_limit_per_minute=row.rate_limit_per_minute,
            spend_cap=row.spend_cap,
            request_cap=row.request_cap,
            limits=PlanLimits(
                max_deployments=row.max_deployments,
                max_loaded_deployments=row.max_loaded_deployments,
                bill_shadow=row.bill_shadow,
            ),
            stored=True,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class PlanChange(msgspec.Struct, frozen=True, kw_only=True):
    """What to set on a plan (``UNCHANGED``: keep; None: remove, for the optional fields)."""

    description: Any = UNCHANGED
    prices: Any = UNCHANGED
    """A whole new ``{model: Pricing}`` (replaces the stored one)."""
    rate_limit_per_minute: Any = UNCHANGED
    spend_cap: Any = UNCHANGED
    request_cap: Any = UNCHANGED
    max_deployments: Any = UNCHANGED
    max_loaded_deployments: Any = UNCHANGED
    bill_shadow: Any = UNCHANGED


class PlanBook:
    """This process's copy of the stored plans: read by the hot path (a dict lookup), refreshed in the background."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, refresh_seconds: float) -> None:
        self._sessions = sessions
        self._refresh_seconds = refresh_seconds
        self._plans: dict[str, PlanRecord] = {}
        self._listeners: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def get(self, name: str) -> PlanRecord | None:
        """The stored plan ``name`` (None: not stored; the code's applies)."""
        return self._plans.get(name)

    def rate_limit(self, name: str) -> int | None:
        """The per-key rate limit of plan ``name`` (None: none)."""
        plan = self._plans.get(name)
        return plan.rate_limit_per_minute if plan is not None else None

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after each refresh that changed something (caches built from plans drop themselves)."""
        self._listeners.append(listener)

    async def refresh(self) -> None:
        """Read every stored plan. A database that cannot be read (down, or before this release's migration) keeps
        the copy as it was: the code's plans apply meanwhile.
        """
        try:
            async with self._sessions() as session:
                rows = list(await session.scalars(select(Plan)))
        except Exception as exc:  # noqa: BLE001 - the plans stay as they were; the next refresh tries again
            log.warning("could not read the stored plans (%s); keeping the previous copy", type(exc).__name__)
            return
        plans = {row.name: PlanRecord.of(row) for row in rows}
        if plans != self._plans:
            self._plans = plans
            for listener in self._listeners:
                listener()

    def refresh_soon(self, _message: str = "") -> None:
        """Refresh in the background (a change told through Redis)."""
        task = asyncio.get_running_loop().create_task(self.refresh())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def start(self) -> None:
        """Read the plans, then again every ``refresh_seconds``."""
        await self.refresh()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._every())

    async def stop(self) -> None:
        """Stop refreshing."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        for task in list(self._pending):
            await cancel_and_wait(task)

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            await self.refresh()


class LiveLimits(LimitsSettings, frozen=True):
    """``LimitsSettings`` whose ``for_plan`` lays a stored plan's limits over the code's."""

    book: PlanBook | None = None

    @classmethod
    def over(cls, limits: LimitsSettings, book: PlanBook) -> LiveLimits:
        """``limits`` with ``book``'s plans laid over."""
        return cls(**msgspec.structs.asdict(limits), book=book)

    def for_plan(self, plan: str) -> TenantLimits:
        """The stored plan's limits where it sets them, else the code's (``LimitsSettings.for_plan``)."""
        base = super().for_plan(plan)
        stored = self.book.get(plan) if self.book is not None else None
        if stored is None:
            return base
        override = stored.limits
        return msgspec.structs.replace(
            base,
            max_deployments=base.max_deployments if override.max_deployments is None else override.max_deployments,
            max_loaded_deployments=base.max_loaded_deployments
            if override.max_loaded_deployments is None
            else override.max_loaded_deployments,
            bill_shadow=base.bill_shadow if override.bill_shadow is None else override.bill_shadow,
        )


class PlanService:
    """Reads and writes plans (the operator writes; reading is for any admin)."""

    def __init__(self, session: AsyncSession, code_limits: LimitsSettings) -> None:
        self._session = session
        self._code = code_limits

    def _code_plan(self, name: str) -> PlanRecord | None:
        if name != "default" and name not in self._code.plans:
            return None
        return PlanRecord(name=name, limits=self._code.plans.get(name, PlanLimits()))

    async def list(self) -> builtins.list[PlanRecord]:
        """Every plan by name: the stored ones, and the code's not stored."""
        stored = {row.name: PlanRecord.of(row) for row in await self._session.scalars(select(Plan))}
        code = {name: plan for name in ("default", *self._code.plans) if (plan := self._code_plan(name)) is not None}
        return [plans[name] for plans in [{**code, **stored}] for name in sorted(plans)]

    async def get(self, name: str) -> PlanRecord:
        """One plan, stored or the code's (``NotFoundError`` if neither)."""
        row = await self._session.get(Plan, name)
        if row is not None:
            return PlanRecord.of(row)
        plan = self._code_plan(name)
        if plan is None:
            raise NotFoundError(f"no plan named {name!r}")
        return plan

    async def create(self, name: str, change: PlanChange) -> PlanRecord:
        """Store a new plan (``ConflictError`` if one of that name is stored already)."""
        if await self._session.get(Plan, name) is not None:
            raise ConflictError(f"a plan named {name!r} exists already; PATCH it")
        return await self._store(name, change)

    async def update(self, name: str, change: PlanChange) -> tuple[PlanRecord, PlanRecord]:
        """Change a plan: ``(before, after)``. A plan only the code defines is stored first, seeded from it."""
        before = await self.get(name)
        return before, await self._store(name, change)

    async def _store(self, name: str, change: PlanChange) -> PlanRecord:
        row = await self._session.get(Plan, name)
        if row is None:
            seed = self._code_plan(name) or PlanRecord(name=name)
            now = utc_now()
            row = Plan(
                name=name,
                description="",
                prices={},
                max_deployments=seed.limits.max_deployments,
                max_loaded_deployments=seed.limits.max_loaded_deployments,
                bill_shadow=seed.limits.bill_shadow,
                created_at=now,
                updated_at=now,
            )
            self._session.add(row)
        if change.description is not UNCHANGED:
            row.description = change.description or ""
        if change.prices is not UNCHANGED:
            row.prices = {
                model: msgspec.to_builtins(_checked_price(model, p)) for model, p in (change.prices or {}).items()
            }
        if change.spend_cap is not UNCHANGED:
            row.spend_cap = _checked_cap(change.spend_cap)
        for field in (
            "rate_limit_per_minute",
            "request_cap",
            "max_deployments",
            "max_loaded_deployments",
            "bill_shadow",
        ):
            value = getattr(change, field)
            if value is not UNCHANGED:
                setattr(row, field, value)
        row.updated_at = utc_now()
        await self._session.flush()
        return PlanRecord.of(row)


def _checked_price(model: str, pricing: Pricing) -> Pricing:
    for field in ("per_request", "per_second", "per_gpu_hour"):
        value: Decimal = getattr(pricing, field)
        if not value.is_finite() or value < 0 or value > MAX_SPEND_CAP:
            raise InvalidInputError(f"prices of {model!r}: {field} must be a non-negative amount - at `$.prices`")
        if value.as_tuple().exponent < -COST_SCALE:  # type: ignore[operator]
            raise InvalidInputError(f"prices of {model!r}: at most {COST_SCALE} decimal places - at `$.prices`")
    return pricing


def _checked_cap(value: Decimal | None) -> Decimal | None:
    if value is None:
        return None
    if not value.is_finite() or value < 0 or value > MAX_SPEND_CAP:
        raise InvalidInputError("spendCap must be a non-negative amount up to 100000000 - at `$.spendCap`")
    if value.as_tuple().exponent < -COST_SCALE:  # type: ignore[operator]
        raise InvalidInputError(f"spendCap carries at most {COST_SCALE} decimal places - at `$.spendCap`")
    return value
