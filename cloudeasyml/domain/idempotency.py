"""Idempotency keys, Stripe's rules: a request's first answer, kept per tenant and key for a day.

``IdempotencyStore.claim`` either hands the caller a ``Claim`` (run the request, then ``complete`` or ``release``
it) or the first request's ``StoredAnswer`` to replay. A key whose first request is still running, or that was
used for another request, is a conflict (409). The edge layer that uses it is ``cloudeasyml.api.idempotency``.

Stored answers are encrypted with a key derived from the caller's API key secret, which the database never holds:
an answer may carry a secret shown once (``POST /api-keys``) or a tenant's predictions, and only a caller holding
the same API key can have it replayed (the request hash covers the API key id).
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from datetime import timedelta

import msgspec
from sqlalchemy import delete, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import IdempotencyRecord
from cloudeasyml.errors import IdempotencyKeyInUseError, IdempotencyKeyReusedError
from cloudeasyml.settings import IdempotencySettings

__all__ = ("Claim", "IdempotencyStore", "StoredAnswer", "request_hash", "request_hasher")

log = logging.getLogger(__name__)

RUNNING = "running"
DONE = "done"

Headers = list[tuple[bytes, bytes]]


class StoredAnswer(msgspec.Struct, frozen=True):
    """The first request's answer, to send again."""

    status: int
    headers: Headers
    body: bytes


class Claim(msgspec.Struct, frozen=True):
    """The right to run the request of a key, held until ``complete`` or ``release`` (or ``lock_seconds``)."""

    tenant_id: uuid.UUID
    key: str
    lock_id: str
    secret: bytes


def request_hash(api_key_id: str, method: str, path: str, query: bytes, body: bytes) -> str:
    """What makes two requests the same one: the API key, method, path, query string and body (SHA-256, hex)."""
    digest = request_hasher(api_key_id, method, path, query)
    digest.update(body)
    return digest.hexdigest()


def request_hasher(api_key_id: str, method: str, path: str, query: bytes) -> hashlib._Hash:
    """``request_hash`` before its body: ``update`` it with the body's bytes as they arrive, then take its
    ``hexdigest`` (the same as ``request_hash`` of the whole body).
    """
    digest = hashlib.sha256()
    for part in (api_key_id.encode(), method.encode(), path.encode(), query):
        digest.update(len(part).to_bytes(8, "big") + part)  # length-prefixed: no two splits hash alike
    return digest


def _keystream_xor(secret: bytes, nonce: str, data: bytes) -> bytes:
    """``data`` XOR a SHAKE-256 keystream of (secret, nonce): encrypts and decrypts. The nonce (the claim's lock id,
    random) is never reused with one secret.
    """
    if not data:
        return data
    stream = hashlib.shake_256(b"cloudeasyml-idempotency\0" + secret + b"\0" + nonce.encode()).digest(len(data))
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


class IdempotencyStore:
    """Claims, completes and releases idempotency keys in the ``idempotency_record`` table; purges expired ones."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: IdempotencySettings) -> None:
        self._sessions = sessions
        self._ttl = timedelta(seconds=settings.ttl_seconds)
        self._lock = timedelta(seconds=settings.lock_seconds)
        self._purge_every = settings.purge_interval_seconds
        self._purged_at = float("-inf")

    async def claim(self, tenant_id: uuid.UUID, key: str, fingerprint: str, secret: bytes) -> Claim | StoredAnswer:
        """Take ``key`` of ``tenant_id`` for the request hashed ``fingerprint``, or return its stored answer.

        A key older than the window is free again; so is one whose first request has been running longer than
        ``lock_seconds`` (its process is taken for dead).

        Raises:
            IdempotencyKeyReusedError: The key was used for another request within the window.
            IdempotencyKeyInUseError: The key's first request is still running (or another retry won the race).
        """
        now = utc_now()
        await self._purge_now_and_then()
        claim = Claim(tenant_id=tenant_id, key=key, lock_id=uuid.uuid4().hex, secret=secret)
        async with self._sessions() as session:
            row = await session.get(IdempotencyRecord, (tenant_id, key))
            if row is None:
                session.add(
                    IdempotencyRecord(
                        tenant_id=tenant_id,
                        key=key,
                        request_hash=fingerprint,
                        state=RUNNING,
                        lock_id=claim.lock_id,
                        created_at=now,
                    )
                )
                try:
                    await session.commit()
                except sa_exc.IntegrityError:  # another retry inserted it first
                    raise IdempotencyKeyInUseError(_IN_USE) from None
                return claim
            expired = row.created_at <= now - self._ttl
            if not expired and row.request_hash != fingerprint:
                raise IdempotencyKeyReusedError(
                    "this Idempotency-Key was used for a different request (another body, path or API key) in the "
                    "last 24 hours; use a new key for a new request"
                )
            if expired or (row.state == RUNNING and row.created_at <= now - self._lock):
                # Take it over only if nobody else has since: the lock id we read must still be there.
                taken = await session.execute(
                    update(IdempotencyRecord)
                    .where(
                        IdempotencyRecord.tenant_id == tenant_id,
                        IdempotencyRecord.key == key,
                        IdempotencyRecord.lock_id == row.lock_id,
                    )
                    .values(
                        request_hash=fingerprint,
                        state=RUNNING,
                        lock_id=claim.lock_id,
                        status=None,
                        headers=None,
                        body=None,
                        created_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
                await session.commit()
                if taken.rowcount != 1:  # type: ignore[attr-defined]
                    raise IdempotencyKeyInUseError(_IN_USE)
                return claim
            if row.state == RUNNING or row.status is None:
                raise IdempotencyKeyInUseError(_IN_USE)
            headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in row.headers or ()]
            return StoredAnswer(
                status=row.status, headers=headers, body=_keystream_xor(secret, row.lock_id, row.body or b"")
            )

    async def complete(self, claim: Claim, status: int, headers: Headers, body: bytes) -> None:
        """Store the answer of a claimed request: retries within the window get it."""
        async with self._sessions() as session:
            await session.execute(
                update(IdempotencyRecord)
                .where(*self._held(claim))
                .values(
                    state=DONE,
                    status=status,
                    headers=[[name.decode("latin-1"), value.decode("latin-1")] for name, value in headers],
                    body=_keystream_xor(claim.secret, claim.lock_id, body),
                )
                .execution_options(synchronize_session=False)
            )
            await session.commit()

    async def release(self, claim: Claim) -> None:
        """Give the key up (the request failed with a 5xx or no answer): a retry runs again."""
        async with self._sessions() as session:
            await session.execute(delete(IdempotencyRecord).where(*self._held(claim)))
            await session.commit()

    async def purge(self) -> int:
        """Delete keys older than the window; returns how many."""
        async with self._sessions() as session:
            result = await session.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.created_at <= utc_now() - self._ttl)
            )
            await session.commit()
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def _purge_now_and_then(self) -> None:
        if time.monotonic() - self._purged_at < self._purge_every:
            return
        self._purged_at = time.monotonic()
        try:
            await self.purge()
        except Exception:  # noqa: BLE001 - a purge that fails is retried later; the request goes on
            log.warning("could not purge expired idempotency keys", exc_info=True)

    @staticmethod
    def _held(claim: Claim) -> tuple[ColumnElement[bool], ...]:
        return (
            IdempotencyRecord.tenant_id == claim.tenant_id,
            IdempotencyRecord.key == claim.key,
            IdempotencyRecord.lock_id == claim.lock_id,
        )


_IN_USE = (
    "a request with this Idempotency-Key is still being processed; retry once it has answered (its answer is "
    "then replayed)"
)
