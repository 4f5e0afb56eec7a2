"""The dispatcher: an asyncio task in every server process that delivers the outbox.

Each round it claims due deliveries (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so processes never wait for
one another; a conditional UPDATE on both databases, so two processes never send the same attempt), moves their due
time past the attempt's longest duration (a process that dies mid-attempt leaves them to be claimed again then), and
POSTs them concurrently. A 2xx answer completes a delivery; anything else is retried with exponential backoff and
jitter until its retry window (24 h) has passed, then marked ``failed``. An endpoint whose attempts have all failed
for ``disable_after_seconds`` (5 days) is disabled, and the tenant's other endpoints get ``endpoint.disabled``.

Now and then it also scans for keys near their expiry (``key.expiring``), prunes old events and runs its
``chores`` (the month close, ``cloudeasyml.domain.month_close``). Like
``ApiKeyAuthenticator``, it reads across tenants: it is the platform's, not a tenant's, and every row it writes carries
the tenant of the row it came from.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpcore
import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.background import cancel_and_wait
from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import ApiKey, WebhookDelivery, WebhookEndpoint, WebhookEvent
from cloudeasyml.domain.webhooks.events import derived_event_id, emit, rfc3339
from cloudeasyml.domain.webhooks.exporter import UsageExporter
from cloudeasyml.domain.webhooks.signing import signed_headers
from cloudeasyml.domain.webhooks.url_guard import GuardedBackend, UnsafeAddressError, UrlGuard
from cloudeasyml.settings import UsageExportSettings, WebhookSettings

__all__ = ("ANSWER_BYTES", "WebhookDispatcher", "retry_delay")

log = logging.getLogger(__name__)

ANSWER_BYTES = 1024
"""Most bytes of an endpoint's answer read and kept; the rest is never read."""

_USER_AGENT = "CloudEasyML-Webhooks/1"


def retry_delay(attempts: int, settings: WebhookSettings, rand: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: ``retry_base_seconds`` doubled per attempt, at most
    ``retry_max_delay_seconds``, less ``retry_jitter * rand`` of it (``rand`` in [0, 1)).
    """
    delay = min(settings.retry_base_seconds * 2 ** min(attempts - 1, 62), settings.retry_max_delay_seconds)
    return delay * (1 - settings.retry_jitter * rand)


@dataclass(frozen=True, slots=True)
class _Claim:
    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: str
    payload: str
    url: str
    secrets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: int | None
    answer: str | None
    error: str | None
    latency_ms: float

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _transport(guard: UrlGuard) -> httpx.AsyncHTTPTransport:
    """The httpx transport over a pool whose connections go only to addresses the guard allows."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(  # the pool httpx builds, with the guarded network backend
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=GuardedBackend(guard),
    )
    return transport


class WebhookDispatcher:
    """Delivers due deliveries and runs the periodic scans (see the module's docstring).

    ``clock`` (the scheduling clock: due times, retry windows, the disable window) and ``rand`` (the jitter) are
    injectable for tests; the signed ``webhook-timestamp`` is always the real time, as receivers check it.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: WebhookSettings,
        *,
        clock: Callable[[], datetime] = utc_now,
        rand: Callable[[], float] = random.random,
        transport: httpx.AsyncBaseTransport | None = None,
        chores: Sequence[Callable[[], Awaitable[object]]] = (),
        export: UsageExportSettings | None = None,
    ) -> None:
        self._sessions = sessions
        self._chores = tuple(chores)
        """Periodic work run after each scan (the month close); each is claim-safe across processes itself."""
        self._settings = settings
        self._clock = clock
        self._rand = rand
        self.guard = UrlGuard(settings)
        self._client = httpx.AsyncClient(
            transport=transport or _transport(self.guard),
            timeout=httpx.Timeout(settings.timeout_seconds, connect=settings.connect_timeout_seconds),
            follow_redirects=False,
            trust_env=False,
        )
        self.exporter = (
            UsageExporter(
                sessions,
                settings,
                export,
                client=self._client,
                guard=self.guard,
                clock=clock,
                rand=rand,
                retry_delay=retry_delay,
                read_answer=_first_bytes,
            )
            if export is not None and export.enabled
            else None
        )
        """Sends the outbox's usage exports (None: no export in this process)."""
        self._export_batch = export.batch_size if export is not None else 0
        self._more = False
        """The last round claimed a full batch of webhooks or exports: more may be due at once."""
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._last_scan = -math.inf
        self._warned_at = -math.inf
        self._told: set[str] = set()
        """``key.expiring`` events this process wrote already (no need to try the insert again)."""

    def start(self) -> None:
        """Start delivering in the background (once)."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        """Stop delivering; an attempt cut short is sent again once its claim lapses."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        await self._client.aclose()

    def wake(self) -> None:
        """Look for due deliveries now rather than at the next poll (a test event was just written)."""
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        settings = self._settings
        while True:
            self._more = False
            try:
                if time.monotonic() - self._last_scan >= settings.scan_interval_seconds:
                    self._last_scan = time.monotonic()
                    await self.scan()
                await self.run_once()
            except Exception:  # noqa: BLE001 - the database may be down for a while: keep trying, say so now and then
                if time.monotonic() - self._warned_at >= 60:
                    self._warned_at = time.monotonic()
                    log.exception("delivering webhooks failed; trying again every %s s", settings.poll_interval_seconds)
            if not self._more and self._wake is not None:  # after a full batch, more may be due at once
                try:
                    await asyncio.wait_for(self._wake.wait(), settings.poll_interval_seconds)
                except TimeoutError:
                    pass
                self._wake.clear()

    async def run_once(self) -> int:
        """Claim the due deliveries (at most ``batch_size``) and a batch of due usage exports, attempt them all, record
        the outcomes; returns how many deliveries (webhooks and exported records) were attempted.
        """
        claims = await self._claim()
        work = [self._deliver(claim) for claim in claims]
        exported = 0

        async def export() -> None:
            nonlocal exported
            assert self.exporter is not None  # noqa: S101 - scheduled only with one
            exported = await self.exporter.run_once()

        if self.exporter is not None:
            work.append(export())
        if work:
            await asyncio.gather(*work)
        full_export = self.exporter is not None and exported >= self._export_batch
        self._more = len(claims) >= self._settings.batch_size or full_export
        return len(claims) + exported

    async def _claim(self) -> list[_Claim]:
        now = self._clock()
        lease = now + timedelta(seconds=self._settings.timeout_seconds + 60)
        async with self._sessions.begin() as session:
            query = (
                select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(
                    WebhookDelivery.endpoint_id.is_not(None),  # the partial index of webhooks' due deliveries
                    WebhookDelivery.status == "pending",
                    WebhookDelivery.next_attempt_at <= now,
                    WebhookEndpoint.enabled.is_(True),
                )
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(self._settings.batch_size)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(of=WebhookDelivery, skip_locked=True)
            claimed = []
            for delivery_id, due_at in (await session.execute(query)).all():
                # Conditional: on SQLite (no row locks) another process may have claimed it since the SELECT.
                result = await session.execute(
                    update(WebhookDelivery)
                    .where(
                        WebhookDelivery.id == delivery_id,
                        WebhookDelivery.next_attempt_at == due_at,
                        WebhookDelivery.status == "pending",
                    )
                    .values(next_attempt_at=lease)
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append(delivery_id)
            if not claimed:
                return []
            rows = await session.execute(
                select(
                    WebhookDelivery.id,
                    WebhookEndpoint.id,  # the delivery's endpoint (joined on it), never null
                    WebhookEvent.id,
                    WebhookEvent.payload,
                    WebhookEndpoint.url,
                    WebhookEndpoint.secret,
                    WebhookEndpoint.previous_secret,
                    WebhookEndpoint.previous_secret_expires_at,
                )
                .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .where(WebhookDelivery.id.in_(claimed))
            )
            real_now = utc_now()  # the old secret's overlap is real time, whatever the scheduling clock says
            return [
                _Claim(
                    delivery_id,
                    endpoint_id,
                    event_id,
                    payload,
                    url,
                    (secret, previous) if previous and until is not None and until > real_now else (secret,),
                )
                for delivery_id, endpoint_id, event_id, payload, url, secret, previous, until in rows.all()
            ]

    async def _deliver(self, claim: _Claim) -> None:
        body = claim.payload.encode()
        headers = signed_headers(claim.secrets, claim.event_id, int(time.time()), body)
        headers["user-agent"] = _USER_AGENT
        started = time.perf_counter()
        status: int | None = None
        answer: str | None = None
        error: str | None = None
        try:
            self.guard.check_form(claim.url)  # the settings may have changed since the URL was accepted
            async with asyncio.timeout(self._settings.timeout_seconds):
                async with self._client.stream("POST", claim.url, content=body, headers=headers) as response:
                    status = response.status_code
                    answer = await _first_bytes(response)
        except TimeoutError:
            error = f"no answer within {self._settings.timeout_seconds:g} s"
        except UnsafeAddressError as exc:
            error = str(exc).removesuffix(" - at `$.url`")
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        except Exception as exc:  # noqa: BLE001 - whatever went wrong is the attempt's outcome, not the loop's
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        outcome = _Outcome(status, answer, error, (time.perf_counter() - started) * 1000)
        try:
            await self._record(claim, outcome)
        except Exception:  # noqa: BLE001 - the claim lapses and the attempt is made again
            log.exception("recording the webhook attempt of delivery %s failed", claim.delivery_id)

    async def _record(self, claim: _Claim, outcome: _Outcome) -> None:
        now = self._clock()
        async with self._sessions.begin() as session:
            delivery = await session.get(WebhookDelivery, claim.delivery_id)
            endpoint = await session.get(WebhookEndpoint, claim.endpoint_id)
            if delivery is None or endpoint is None:
                return  # the endpoint was deleted meanwhile
            delivery.attempts += 1
            delivery.last_attempt_at = now
            delivery.response_status = outcome.status
            delivery.response_body = outcome.answer
            delivery.error = outcome.error[:500] if outcome.error else None
            delivery.latency_ms = round(outcome.latency_ms, 3)
            if outcome.succeeded:
                delivery.status = "succeeded"
                endpoint.failing_since = None
                return
            next_at = now + timedelta(seconds=retry_delay(delivery.attempts, self._settings, self._rand()))
            if next_at > delivery.retry_until:
                delivery.status = "failed"
            else:
                delivery.next_attempt_at = next_at
            if endpoint.failing_since is None:
                endpoint.failing_since = now
            elif endpoint.enabled and now - endpoint.failing_since >= timedelta(
                seconds=self._settings.disable_after_seconds
            ):
                await self._disable(session, endpoint)

    async def _disable(self, session: AsyncSession, endpoint: WebhookEndpoint) -> None:
        since = endpoint.failing_since
        assert since is not None
        endpoint.enabled = False
        endpoint.disabled_reason = f"every delivery attempt failed since {rfc3339(since)}"
        endpoint.updated_at = utc_now()
        await emit(
            session,
            endpoint.tenant_id,
            "endpoint.disabled",
            {
                "endpointId": str(endpoint.id),
                "url": endpoint.url,
                "reason": endpoint.disabled_reason,
                "failingSince": rfc3339(since),
            },
            exclude_endpoint=endpoint.id,
            retry_window=timedelta(seconds=self._settings.retry_window_seconds),
        )
        log.warning("disabled webhook endpoint %s of tenant %s: %s", endpoint.id, endpoint.tenant_id, endpoint.url)

    async def scan(self) -> None:
        """Write ``key.expiring`` for unrevoked keys that expire within ``key_expiring_days`` (once per key and
        expiry: derived event ids), delete events older than ``retention_days`` with their deliveries, then run the
        ``chores`` (the month close).
        """
        settings = self._settings
        now = self._clock()
        horizon = now + timedelta(days=settings.key_expiring_days)
        written: list[str] = []
        async with self._sessions.begin() as session:
            keys = await session.execute(
                select(ApiKey.id, ApiKey.tenant_id, ApiKey.name, ApiKey.expires_at).where(
                    ApiKey.revoked_at.is_(None), ApiKey.expires_at > now, ApiKey.expires_at <= horizon
                )
            )
            for key_id, tenant_id, name, expires_at in keys.all():
                assert expires_at is not None  # the query's range excludes None
                event_id = derived_event_id("key.expiring", key_id, rfc3339(expires_at))
                if event_id in self._told:
                    continue
                data = {"keyId": key_id, "name": name, "expiresAt": rfc3339(expires_at)}
                window = timedelta(seconds=settings.retry_window_seconds)
                await emit(session, tenant_id, "key.expiring", data, event_id=event_id, retry_window=window)
                written.append(event_id)
            await session.execute(
                delete(WebhookEvent).where(WebhookEvent.created_at < now - timedelta(days=settings.retention_days))
            )
        if len(self._told) > 100_000:  # a bound; forgetting only costs an insert that finds the event there
            self._told.clear()
        self._told.update(written)
        for chore in self._chores:
            try:
                await chore()
            except Exception:  # noqa: BLE001 - one chore failing must not stop the scan's others or the deliveries
                log.exception("a periodic webhook chore failed; it runs again at the next scan")


async def _first_bytes(response: httpx.Response) -> str:
    """The first ``ANSWER_BYTES`` of the answer, read no further, as text (NULs replaced: PostgreSQL text has none)."""
    received = bytearray()
    async for chunk in response.aiter_bytes():
        received += chunk
        if len(received) >= ANSWER_BYTES:
            break
    return bytes(received[:ANSWER_BYTES]).decode("utf-8", "replace").replace("\x00", "\ufffd")
