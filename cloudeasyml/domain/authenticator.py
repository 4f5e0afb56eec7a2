"""Bearer API key → Principal, with a short-lived cache so the hot path does not touch the database."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from datetime import datetime

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import ApiKey, OperatorKey, Tenant
from cloudeasyml.domain.key_format import OPERATOR_KEY_PREFIX, hash_secret, parse_key, secret_matches
from cloudeasyml.domain.principal import OPERATOR_SCOPE, OPERATOR_TENANT_ID, Principal
from cloudeasyml.errors import AuthenticationError, TenantSuspendedError
from cloudeasyml.single_flight import SingleFlight
from cloudeasyml.ttl_cache import TTLCache

__all__ = ("ApiKeyAuthenticator", "suspension_detail")

_BAD_KEY = "invalid API key"

_NO_SUCH_KEY_HASH = hash_secret(secrets.token_urlsafe(32))
"""Compared against when the key id is unknown, so that an unknown id costs the work of a wrong secret: the
response time does not tell an attacker which key ids exist. No presented secret matches it (its secret is
thrown away)."""


class _CachedKey(msgspec.Struct):
    secret_hash: str
    principal: Principal
    expires_at: datetime | None
    revoked: bool
    suspended: str | None = None
    """The refusal's detail when the key's tenant is suspended (None: it is not)."""


class _ExternalAnswer(msgspec.Struct, frozen=True):
    """What the ``cloudeasyml_authenticate`` plugins answered for a token: a principal, or a refusal's detail."""

    principal: Principal | None
    refusal: str | None = None


class ApiKeyAuthenticator:
    """Verifies API keys.

    This is the only cross-tenant read in the platform: a key id is looked up before its tenant is known.
    The stored hash, scopes and expiry are cached for ``cache_seconds``; ``forget`` drops a key at once
    (revocation through this process), other processes see a revocation within ``cache_seconds``. At most
    ``key_cache_entries`` keys are held (least recently used forgotten first). Key ids that do not exist are cached
    too, for as long, at most ``unknown_cache_entries`` of them: a client repeating an unknown id does not reach the
    database each time, and random ids cannot grow memory without bound.

    Tokens not shaped like API keys go to ``external`` (the ``cloudeasyml_authenticate`` hook), whose answers, an
    accepted principal, "not mine" (None) or a refusal (``AuthenticationError``), are cached for ``cache_seconds``
    too, at most ``external_cache_entries`` of them, keyed by the token's SHA-256 (the token itself is never held):
    a client sending its token on every request costs the hook one call per ``cache_seconds``. So a token a plugin
    accepted stays accepted for up to ``cache_seconds`` after it expires or is revoked at its issuer.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        cache_seconds: float = 5.0,
        key_cache_entries: int = 100_000,
        unknown_cache_entries: int = 10_000,
        external: Callable[[str], Principal | None] | None = None,
        external_cache_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._external = external
        self._cache: TTLCache[str, _CachedKey] = TTLCache(
            ttl_seconds=cache_seconds, max_entries=key_cache_entries, clock=clock
        )
        self._unknown: TTLCache[str, bool] = TTLCache(
            ttl_seconds=cache_seconds, max_entries=unknown_cache_entries, clock=clock
        )
        self._external_answers: TTLCache[bytes, _ExternalAnswer] = TTLCache(
            ttl_seconds=cache_seconds, max_entries=external_cache_entries, clock=clock
        )
        self._loads: SingleFlight[_CachedKey | None] = SingleFlight()

    async def authenticate(self, token: str) -> Principal:
        """The principal of a full key, or ``AuthenticationError`` (same message for every failure, so a
        caller cannot tell an unknown key from a wrong secret). Tokens not shaped like API keys go to the
        ``cloudeasyml_authenticate`` plugins, if any.
        """
        parsed = parse_key(token)
        if parsed is None:
            return self._authenticate_external(token)
        key_id, secret = parsed
        cached = self._cache.get(key_id)
        if cached is None:
            cached = None if key_id in self._unknown else await self._loads.run(key_id, lambda: self._load(key_id))
        # The same comparison whether or not the id exists (see _NO_SUCH_KEY_HASH).
        matches = secret_matches(secret, cached.secret_hash if cached is not None else _NO_SUCH_KEY_HASH)
        if cached is None or not matches:
            raise AuthenticationError(_BAD_KEY)
        if cached.revoked:
            raise AuthenticationError("API key has been revoked")
        if cached.expires_at is not None and cached.expires_at <= utc_now():
            raise AuthenticationError("API key has expired")
        if cached.suspended is not None:
            raise TenantSuspendedError(cached.suspended)
        return cached.principal

    def _authenticate_external(self, token: str) -> Principal:
        """The plugins' principal for ``token``, asking them at most once per ``cache_seconds``."""
        if self._external is None:
            raise AuthenticationError(_BAD_KEY)
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        answer = self._external_answers.get(digest)
        if answer is None:
            try:
                answer = _ExternalAnswer(principal=self._external(token))
            except AuthenticationError as exc:
                answer = _ExternalAnswer(principal=None, refusal=exc.detail)
            self._external_answers.put(digest, answer)
        if answer.principal is not None:
            return answer.principal
        raise AuthenticationError(answer.refusal if answer.refusal is not None else _BAD_KEY)

    def forget(self, key_id: str) -> None:
        """Drop a key from the caches so its next use reads the database (after revocation)."""
        self._cache.discard(key_id)
        self._unknown.discard(key_id)

    async def _load(self, key_id: str) -> _CachedKey | None:
        """Read a key (one statement: its id says which table): a tenant's key with its tenant's plan and
        suspension, or an operator's key.
        """
        async with self._sessions() as session:
            if key_id.startswith(OPERATOR_KEY_PREFIX):
                operator = await session.scalar(select(OperatorKey).where(OperatorKey.id == key_id))
                cached = _operator_entry(operator) if operator is not None else None
            else:
                found = (
                    await session.execute(
                        select(ApiKey, Tenant.plan, Tenant.name, Tenant.suspended_at, Tenant.suspended_reason)
                        .join(Tenant, Tenant.id == ApiKey.tenant_id)
                        .where(ApiKey.id == key_id)
                    )
                ).first()
                cached = _tenant_entry(*found) if found is not None else None
        if cached is None:
            self._cache.discard(key_id)
            self._unknown.put(key_id, True)
            return None
        self._cache.put(key_id, cached)
        return cached


def suspension_detail(tenant_name: str, reason: str | None) -> str:
    """The detail of the 403 every key of a suspended tenant gets."""
    why = f": {reason}" if reason else ""
    return (
        f"tenant {tenant_name!r} is suspended by the platform operator{why}; its API keys are refused until it is "
        "resumed"
    )


def _tenant_entry(
    row: ApiKey, plan: str, tenant_name: str, suspended_at: datetime | None, reason: str | None
) -> _CachedKey:
    return _CachedKey(
        secret_hash=row.secret_hash,
        principal=Principal(
            tenant_id=row.tenant_id,
            key_id=row.id,
            scopes=frozenset(row.scopes),
            user_id=row.user_id,
            plan=plan,
            rate_limit_per_minute=row.rate_limit_per_minute,
        ),
        expires_at=row.expires_at,
        revoked=row.revoked_at is not None,
        suspended=suspension_detail(tenant_name, reason) if suspended_at is not None else None,
    )


def _operator_entry(row: OperatorKey) -> _CachedKey:
    """An operator's key: scope ``operator`` only, in no tenant (``OPERATOR_TENANT_ID``), never rate-limited."""
    return _CachedKey(
        secret_hash=row.secret_hash,
        principal=Principal(tenant_id=OPERATOR_TENANT_ID, key_id=row.id, scopes=frozenset({OPERATOR_SCOPE})),
        expires_at=None,
        revoked=row.revoked_at is not None,
    )
