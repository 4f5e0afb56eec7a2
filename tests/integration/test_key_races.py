"""A key made while its parent is being revoked is either refused or revoked with it, whichever transaction
starts first, on SQLite and PostgreSQL: two real transactions on one database, interleaved by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cloudeasyml.db.engine import create_engine, session_factory
from cloudeasyml.db.models import ApiKey
from cloudeasyml.domain.api_keys import ApiKeyService, KeyRequest
from cloudeasyml.domain.principal import Principal
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.errors import AuthenticationError

BLOCKED = 0.5
"""How long the second transaction is given to reach the point where it waits for the first."""


@pytest.fixture(name="engine")
async def fx_engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_url)
    yield engine
    await engine.dispose()


async def _parent(sessions: async_sessionmaker[AsyncSession], tenant: NewTenant) -> Principal:
    """A keys:write key made by the owner key, as the principal that will issue its children."""
    owner = Principal(tenant_id=tenant.tenant.id, key_id=tenant.key_id, scopes=frozenset({"admin"}))
    async with sessions.begin() as session:
        issued = await ApiKeyService(session, tenant.tenant.id).issue(
            KeyRequest(name="parent", scopes=("keys:write", "predict")), issuer=owner, user_id=None
        )
    return Principal(tenant_id=tenant.tenant.id, key_id=issued.row.id, scopes=frozenset(issued.row.scopes))


async def _unrevoked_children(sessions: async_sessionmaker[AsyncSession], parent_id: str) -> list[str]:
    async with sessions() as session:
        rows = await session.scalars(
            select(ApiKey.id).where(ApiKey.created_by_key_id == parent_id, ApiKey.revoked_at.is_(None))
        )
        return list(rows)


async def test_a_revocation_waits_for_a_child_being_made_and_revokes_it(engine: AsyncEngine, tenant: NewTenant) -> None:
    sessions = session_factory(engine)
    parent = await _parent(sessions, tenant)
    async with sessions.begin() as issuing:
        await ApiKeyService(issuing, tenant.tenant.id).issue(KeyRequest(name="child"), issuer=parent, user_id=None)

        async def revoke() -> list[str]:
            async with sessions.begin() as revoking:
                return await ApiKeyService(revoking, tenant.tenant.id).revoke(parent.key_id, actor=None)

        revocation = asyncio.create_task(revoke())
        await asyncio.sleep(BLOCKED)  # the revocation now waits for this transaction's locks
    revoked = await revocation
    assert len(revoked) == 2
    assert await _unrevoked_children(sessions, parent.key_id) == []


async def test_a_child_made_while_its_parent_is_being_revoked_is_refused(
    engine: AsyncEngine, tenant: NewTenant
) -> None:
    sessions = session_factory(engine)
    parent = await _parent(sessions, tenant)
    async with sessions.begin() as revoking:
        await ApiKeyService(revoking, tenant.tenant.id).revoke(parent.key_id, actor=None)

        async def make_child() -> None:
            async with sessions.begin() as issuing:
                await ApiKeyService(issuing, tenant.tenant.id).issue(
                    KeyRequest(name="child"), issuer=parent, user_id=None
                )

        making = asyncio.create_task(make_child())
        await asyncio.sleep(BLOCKED)  # the child's transaction now waits for the revocation's locks
    with pytest.raises(AuthenticationError, match="revoked"):
        await making
    assert await _unrevoked_children(sessions, parent.key_id) == []
