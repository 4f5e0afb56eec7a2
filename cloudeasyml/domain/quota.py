"""Tenant quotas: a spend cap and a request cap per calendar month (UTC), held by reservations.

A request *reserves* its place under its tenant's caps before it runs (``QuotaGuard.reserve``) and either
*commits* the reservation with its cost when it succeeded or *releases* it when it failed (any exception, a
deadline, a cancelled task). In-flight reservations count against the caps, so:

- **Request cap: exact.** ``requests billed + requests in flight < cap`` admits; 40 concurrent requests against a
  cap of 5 give 5 answers and 35 refusals.
- **Spend cap.** A request's cost is known only after it ran. Each reservation holds the model's minimum cost (its
  ``per_request`` price for the caller's plan). A request is refused when the month's spend has reached the cap,
  or when ``spent + holds in flight + its own hold`` would pass it: nothing starts whose fixed price cannot be
  paid. The time-based part of a cost is not known in advance, so the spend may pass the cap by the time-based
  part of the requests in flight when it is crossed (one request's, for a client that does not overlap
  requests); after that every request is refused until the month ends.

Where the counters live:

- With Redis (``services.redis``) they live there, per tenant and month (``cloudeasyml:quota:{<tenant>:<YYYY-MM>}:*``,
  expiring a day after the month), updated by one atomic script per reservation, commit and release, so every
  process using that Redis shares exact caps. A missing month is seeded from the database's month-to-date usage.
  A reservation left by a process that died is dropped after ``quota.reservation_seconds``. If Redis cannot be
  reached, the process falls back to its own counts (below) and says so in the log.
- Without Redis each process counts on its own, seeded from the database: one process is exact; N processes may
  together admit up to N times what is left (each sees the others' usage only at its next refresh).

Caps (and, for the per-process counts, the database's month-to-date usage) are read again when older than
``quota.refresh_seconds``: in the background once half of it has passed while the tenant is busy, and before the
request otherwise, so a changed cap, raised or lowered, applies to the first request after that interval even for
an idle tenant; no refusal is ever given on caps older than the interval. A tenant without caps costs a
dictionary lookup per request and one small read per refresh interval. At most ``max_tenants`` tenants' caps are
held per process (least recently used forgotten first, read again on their next request); a tenant's counts live as
long as its caps are held or one of its requests is in flight.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.core.clock import utc_now
from cloudeasyml.core.pricing import COST_SCALE
from cloudeasyml.db.models import Tenant, UsageRecord
from cloudeasyml.errors import NotFoundError, RequestCapReachedError, SpendCapReachedError
from cloudeasyml.metering.meter import Meter
from cloudeasyml.single_flight import SingleFlight
from cloudeasyml.ttl_cache import TTLCache

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript
    from redis.typing import EncodableT

__all__ = (
    "QuotaGuard",
    "QuotaReport",
    "Reservation",
    "TenantCaps",
    "month_bounds",
    "quota_report",
    "tenant_caps",
    "usage_since",
)

log = logging.getLogger(__name__)

_UNITS = Decimal(1).scaleb(COST_SCALE)
"""Costs are counted in Redis as integers of 1e-10 (``COST_SCALE`` places), exact like the database's sums."""


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) that ``now`` falls in: its first instant and the next month's."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start, end


@dataclass(frozen=True, slots=True)
class TenantCaps:
    """One tenant's caps for one month, as read from the database at ``fetched_at``."""

    month_start: datetime
    month_end: datetime
    spend_cap: Decimal | None
    request_cap: int | None
    fetched_at: float
    """The guard's clock (``time.monotonic()`` unless injected) at the read."""

    @property
    def capped(self) -> bool:
        """Whether any cap is set."""
        return self.spend_cap is not None or self.request_cap is not None


@dataclass(slots=True, weakref_slot=True)
class _Counts:
    """This process's count of one tenant's month: billed (seeded from the database) and in flight."""

    month_start: datetime
    requests: int = 0
    spent: Decimal = Decimal(0)
    in_flight: int = 0
    held: Decimal = Decimal(0)
    """Sum of the in-flight reservations' holds."""


_Held = tuple[TenantCaps, _Counts | None]
"""A tenant's caps and, when it has any, this process's counts of its month."""

_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local holds = redis.call('ZRANGE', KEYS[2], 0, -1)
local held = 0
for _, member in ipairs(holds) do held = held + tonumber(string.match(member, ':(%d+)$')) end
local requests = tonumber(redis.call('HGET', KEYS[1], 'requests') or '0') + #holds
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local hold = tonumber(ARGV[2])
local request_cap = tonumber(ARGV[3])
local spend_cap = tonumber(ARGV[4])
if request_cap >= 0 and requests >= request_cap then return 1 end
if spend_cap >= 0 and (spent >= spend_cap or spent + held + hold > spend_cap) then return 2 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[1])
redis.call('PEXPIREAT', KEYS[2], ARGV[6])
return 0
"""
"""Reserve atomically (KEYS: counts hash, holds sorted set; ARGV: member ``<id>:<hold units>``, hold units, request
cap, spend cap units (-1: none), lease ms, expiry ms): 0 reserved, 1 request cap reached, 2 spend cap reached,
-1 the month is not seeded. In-flight reservations are the members of the holds set, dropped when their lease
ends (a process that died), so they count until committed, released or expired."""

_COMMIT = """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'requests', tonumber(ARGV[3] or '1'))
  redis.call('HINCRBY', KEYS[1], 'spent', ARGV[2])
end
return 0
"""
"""A reservation becomes a billed request of ``ARGV[2]`` cost units (an unseeded month will count it from the
database when it is seeded). ``ARGV[3]`` (default 1): the requests it counts; 0 for billed shadow compute, which
is spend but no request (``QuotaGuard.add_spend``, no member to remove)."""

_RELEASE = """
return redis.call('ZREM', KEYS[2], ARGV[1])
"""

_SEED = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'requests', ARGV[1], 'spent', ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
  return 1
end
return 0
"""
"""The month's billed count and spend from the database, unless another process seeded it first."""

_KEEP_AFTER_MONTH = timedelta(days=1)


def _units(amount: Decimal) -> int:
    return math.floor(amount * _UNITS)


class Reservation:
    """A request's place under its tenant's caps: ``commit(cost)`` once it succeeded, ``release()`` if it did not.
    The first of the two counts; later calls do nothing.
    """

    __slots__ = ("_counts", "_done", "_guard", "_hold", "_shared")

    def __init__(self, guard: QuotaGuard, counts: _Counts, hold: Decimal, shared: tuple[list[str], str] | None) -> None:
        self._guard = guard
        self._counts = counts
        self._hold = hold
        self._shared = shared
        self._done = False
        counts.in_flight += 1
        counts.held += hold

    async def commit(self, cost: Decimal) -> None:
        """Count the request as billed at ``cost``."""
        if self._settle():
            self._counts.requests += 1
            self._counts.spent += cost
            if self._shared is not None:
                keys, member = self._shared
                await self._guard._update_shared(self._guard._commit_script, keys, [member, _units(cost)])

    async def release(self) -> None:
        """Give the place back: the request failed and is not billed."""
        if self._settle() and self._shared is not None:
            keys, member = self._shared
            await self._guard._update_shared(self._guard._release_script, keys, [member])

    def _settle(self) -> bool:
        if self._done:
            return False
        self._done = True
        self._counts.in_flight -= 1
        self._counts.held -= self._hold
        return True


class QuotaGuard:
    """Reserves places under tenants' caps (see the module's docstring for what holds, and where)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        meter: Meter,
        *,
        refresh_seconds: float = 5.0,
        redis: Redis | None = None,
        reservation_seconds: float = 900.0,
        max_tenants: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._meter = meter
        self._refresh = refresh_seconds
        self._clock = clock
        self._lease_ms = int(reservation_seconds * 1000)
        # tenant -> its caps and, for a capped tenant, its counts; fresh for the refresh interval from the read.
        self._caps: TTLCache[uuid.UUID, _Held] = TTLCache(
            ttl_seconds=refresh_seconds, max_entries=max_tenants, clock=clock
        )
        # The counts held by a cache entry or by a reservation in flight: an entry evicted while its tenant has
        # requests in flight must not lose them (the cache holds them strongly, reservations too; nothing else).
        self._counts: weakref.WeakValueDictionary[uuid.UUID, _Counts] = weakref.WeakValueDictionary()
        self._loads: SingleFlight[_Held] = SingleFlight()
        self._updates: set[asyncio.Future[object]] = set()
        self._redis = redis
        self._warned_at = -math.inf
        if redis is not None:
            self._reserve_script = redis.register_script(_RESERVE)
            self._commit_script = redis.register_script(_COMMIT)
            self._release_script = redis.register_script(_RELEASE)
            self._seed_script = redis.register_script(_SEED)

    async def reserve(self, tenant_id: uuid.UUID, hold: Decimal = Decimal(0)) -> Reservation | None:
        """Reserve a place for one request of the tenant, holding ``hold`` (its minimum cost) of the spend cap.

        Returns:
            The reservation to commit or release; None for a tenant without caps (nothing to settle).

        Raises:
            RequestCapReachedError: The request cap (429), counting requests in flight, is reached this month.
            SpendCapReachedError: The spend cap (402) is reached, or ``hold`` would pass it.
            Both carry ``Retry-After`` until the month ends.
        """
        caps, counts = await self._held(tenant_id)
        if counts is None:  # no caps
            return None
        if self._redis is not None:
            shared = await self._reserve_shared(tenant_id, caps, hold)
            if shared is not None:
                return Reservation(self, counts, hold, shared)
        if caps.request_cap is not None and counts.requests + counts.in_flight >= caps.request_cap:
            raise _request_cap_reached(caps)
        if caps.spend_cap is not None and (
            counts.spent >= caps.spend_cap or counts.spent + counts.held + hold > caps.spend_cap
        ):
            raise _spend_cap_reached(caps)
        return Reservation(self, counts, hold, None)

    async def shadow_allowed(self, tenant_id: uuid.UUID) -> bool:
        """Whether billed shadow compute may run for the tenant: false once its spend cap is reached (this process's
        count, spend in flight included). Shadow copies never count against the request cap.
        """
        caps, counts = await self._held(tenant_id)
        if counts is None or caps.spend_cap is None:
            return True
        return counts.spent + counts.held < caps.spend_cap

    async def add_spend(self, tenant_id: uuid.UUID, cost: Decimal) -> None:
        """Count ``cost`` in the tenant's spend this month without counting a request (billed shadow compute)."""
        caps, counts = await self._held(tenant_id)
        if counts is None or not cost:
            return
        counts.spent += cost
        if self._redis is not None:
            month = f"{caps.month_start:%Y-%m}"
            keys = [
                f"cloudeasyml:quota:{{{tenant_id}:{month}}}:counts",
                f"cloudeasyml:quota:{{{tenant_id}:{month}}}:holds",
            ]
            await self._update_shared(self._commit_script, keys, ["", _units(cost), 0])

    async def caps(self, tenant_id: uuid.UUID) -> TenantCaps:
        """The tenant's caps, never older than the refresh interval (read again before the request if they are;
        in the background, without waiting, once half the interval has passed).
        """
        return (await self._held(tenant_id))[0]

    async def _held(self, tenant_id: uuid.UUID) -> _Held:
        held = self._caps.get(tenant_id)  # None once older than the refresh interval
        if held is not None and utc_now() < held[0].month_end:
            if self._clock() - held[0].fetched_at > self._refresh / 2 and tenant_id not in self._loads:
                self._refresh_in_background(tenant_id)
            return held
        try:
            return await self._loads.run(tenant_id, lambda: self._load(tenant_id))
        except Exception as exc:
            held = self._caps.stale(tenant_id)
            if held is None or held[0].month_end <= utc_now():
                raise
            # The database is unreachable: the caps read last are all there is (a refusal on them is then
            # possible; the alternative, failing every request, is worse).
            log.warning("reading the quota of tenant %s failed, using caps read before: %s", tenant_id, exc)
            return held

    async def close(self) -> None:
        """Wait for the commits and releases still on their way to Redis."""
        if self._updates:
            await asyncio.gather(*self._updates, return_exceptions=True)

    async def _reserve_shared(
        self, tenant_id: uuid.UUID, caps: TenantCaps, hold: Decimal
    ) -> tuple[list[str], str] | None:
        """Reserve in Redis; None if Redis failed (the caller falls back to this process's counts)."""
        month = f"{caps.month_start:%Y-%m}"
        keys = [f"cloudeasyml:quota:{{{tenant_id}:{month}}}:counts", f"cloudeasyml:quota:{{{tenant_id}:{month}}}:holds"]
        member = f"{uuid.uuid4().hex}:{_units(hold)}"
        expire_ms = int((caps.month_end + _KEEP_AFTER_MONTH).timestamp() * 1000)
        args: list[EncodableT] = [
            member,
            _units(hold),
            -1 if caps.request_cap is None else caps.request_cap,
            -1 if caps.spend_cap is None else _units(caps.spend_cap),
            self._lease_ms,
            expire_ms,
        ]
        # Shielded: a request cancelled while its reservation is on its way to Redis gives the place back.
        attempt = asyncio.ensure_future(self._run_reserve(tenant_id, caps, keys, args, expire_ms))
        try:
            status = await asyncio.shield(attempt)
        except asyncio.CancelledError:
            attempt.add_done_callback(lambda done: self._release_if_reserved(done, keys, member))
            raise
        except Exception as exc:  # noqa: BLE001 - Redis down: fall back to this process's counts, say so now and then
            if self._clock() - self._warned_at > 60:
                self._warned_at = self._clock()
                log.warning("quotas are counted per process: Redis is unreachable (%s)", exc)
            return None
        if status == 1:
            raise _request_cap_reached(caps)
        if status == 2:
            raise _spend_cap_reached(caps)
        return keys, member

    async def _run_reserve(
        self, tenant_id: uuid.UUID, caps: TenantCaps, keys: list[str], args: list[EncodableT], expire_ms: int
    ) -> int:
        status = int(await self._reserve_script(keys=keys, args=args))
        if status == -1:  # a new month, or Redis lost it: start from what the database holds
            await self._meter.flush()
            async with self._sessions() as session:
                spent, requests = await usage_since(session, tenant_id, caps.month_start)
            await self._seed_script(keys=keys, args=[requests, _units(spent), expire_ms])
            status = int(await self._reserve_script(keys=keys, args=args))
        return status

    def _release_if_reserved(self, attempt: asyncio.Future[int], keys: list[str], member: str) -> None:
        if not attempt.cancelled() and attempt.exception() is None and attempt.result() == 0:
            self._track(self._release_script(keys=keys, args=[member]))

    async def _update_shared(self, script: AsyncScript, keys: list[str], args: list[EncodableT]) -> None:
        """Run a commit or release in Redis; it completes even if the request is cancelled meanwhile."""
        update = self._track(script(keys=keys, args=args))
        try:
            await asyncio.shield(update)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the reservation expires after its lease
            log.warning("updating a quota reservation in Redis failed: %s", exc)

    def _track(self, coroutine: Awaitable[object]) -> asyncio.Future[object]:
        update = asyncio.ensure_future(coroutine)
        self._updates.add(update)
        update.add_done_callback(self._updates.discard)
        update.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved: logged above
        return update

    def _refresh_in_background(self, tenant_id: uuid.UUID) -> None:
        def done(finished: asyncio.Future[_Held]) -> None:
            if not finished.cancelled() and (error := finished.exception()) is not None:
                # A background refresh that failed keeps what this process has; the next request retries.
                log.warning("reading the quota of tenant %s failed: %s", tenant_id, error)

        self._loads.start(tenant_id, lambda: self._load(tenant_id)).add_done_callback(done)

    async def _load(self, tenant_id: uuid.UUID) -> _Held:
        fetched_at = self._clock()
        start, end = month_bounds(utc_now())
        async with self._sessions() as session:
            spend_cap, request_cap = await tenant_caps(session, tenant_id)
        caps = TenantCaps(start, end, spend_cap, request_cap, fetched_at)
        counts = None
        if caps.capped:
            await self._meter.flush()  # this process's buffered records count too (before reading: SQLite locks)
            async with self._sessions() as session:
                spent, requests = await usage_since(session, tenant_id, start)
            counts = self._counts.get(tenant_id)
            if counts is None or counts.month_start != start:
                counts = _Counts(start)
                self._counts[tenant_id] = counts
            # The database lags this process's own requests (written behind) and may miss records billed during
            # the read; the larger of the two is exact for one process and the best lower bound for several.
            counts.requests = max(counts.requests, requests)
            counts.spent = max(counts.spent, spent)
        held = (caps, counts)
        self._caps.put(tenant_id, held, at=fetched_at)
        return held


def _retry_after(caps: TenantCaps) -> int:
    return max(1, int((caps.month_end - utc_now()).total_seconds()))


def _request_cap_reached(caps: TenantCaps) -> RequestCapReachedError:
    return RequestCapReachedError(
        f"this tenant's request cap ({caps.request_cap} per month) is reached; it resets at "
        f"{caps.month_end.isoformat()}",
        retry_after=_retry_after(caps),
    )


def _spend_cap_reached(caps: TenantCaps) -> SpendCapReachedError:
    assert caps.spend_cap is not None
    return SpendCapReachedError(
        f"this tenant's spend cap ({caps.spend_cap.normalize():f} per month) is reached, counting the requests in "
        f"flight and this request's minimum price; it resets at "
        f"{caps.month_end.isoformat()}",
        retry_after=_retry_after(caps),
    )


async def tenant_caps(session: AsyncSession, tenant_id: uuid.UUID) -> tuple[Decimal | None, int | None]:
    """The tenant's monthly spend and request caps (None: no cap)."""
    caps = (await session.execute(select(Tenant.spend_cap, Tenant.request_cap).where(Tenant.id == tenant_id))).first()
    if caps is None:
        raise NotFoundError("tenant not found")
    return caps[0], caps[1]


async def usage_since(session: AsyncSession, tenant_id: uuid.UUID, start: datetime) -> tuple[Decimal, int]:
    """The tenant's billed spend and request count since ``start``, summed in the database. Shadow usage is spend,
    not requests.
    """
    requests, total = (
        await session.execute(
            select(
                func.coalesce(func.sum(case((UsageRecord.kind == "shadow", 0), else_=1)), 0),
                func.sum(UsageRecord.cost),
            ).where(UsageRecord.tenant_id == tenant_id, UsageRecord.created_at >= start)
        )
    ).one()
    return total or Decimal(0), int(requests)


class QuotaReport(msgspec.Struct, rename="camel"):
    """A tenant's caps for the current month and what it has used of them (``GET /usage/quota``)."""

    month_start: datetime
    resets_at: datetime
    """When the caps start over: the first instant of next month, UTC."""
    spend_cap: Decimal | None
    request_cap: int | None
    spent: Decimal
    requests: int
    remaining_spend: Decimal | None
    """``spend_cap - spent``, at least 0; None without a spend cap."""
    remaining_requests: int | None
    """``request_cap - requests``, at least 0; None without a request cap."""


async def quota_report(session: AsyncSession, tenant_id: uuid.UUID) -> QuotaReport:
    """The tenant's caps and this month's usage, from the database (flush the meter first)."""
    start, end = month_bounds(utc_now())
    spend_cap, request_cap = await tenant_caps(session, tenant_id)
    spent, requests = await usage_since(session, tenant_id, start)
    return QuotaReport(
        month_start=start,
        resets_at=end,
        spend_cap=spend_cap,
        request_cap=request_cap,
        spent=spent,
        requests=requests,
        remaining_spend=None if spend_cap is None else max(Decimal(0), spend_cap - spent),
        remaining_requests=None if request_cap is None else max(0, request_cap - requests),
    )
