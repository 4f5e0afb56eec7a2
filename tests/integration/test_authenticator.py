"""The authenticator against a real database: unknown key ids are cached negatively (bounded, expiring), and an
unknown id does the same work as a known id with a wrong secret, so neither the database nor the response time
tells which ids exist."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import event

from cloudeasyml.db.engine import create_engine, session_factory
from cloudeasyml.domain import authenticator as authenticator_module
from cloudeasyml.domain.authenticator import ApiKeyAuthenticator
from cloudeasyml.domain.key_format import generate_key
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.errors import AuthenticationError
from tests.conftest import new_tenant


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counted:
    """An authenticator on its own engine, counting the SQL statements it sends."""

    def __init__(self, url: str, *, unknown_cache_entries: int = 10_000, key_cache_entries: int = 100_000) -> None:
        self.engine = create_engine(url)
        self.statements = 0
        event.listen(self.engine.sync_engine, "before_cursor_execute", self._count)
        self.clock = Clock()
        self.authenticator = ApiKeyAuthenticator(
            session_factory(self.engine),
            cache_seconds=5.0,
            unknown_cache_entries=unknown_cache_entries,
            key_cache_entries=key_cache_entries,
            clock=self.clock,
        )

    def _count(self, *_args: object) -> None:
        self.statements += 1

    async def refused(self, token: str) -> str:
        with pytest.raises(AuthenticationError) as refused:
            await self.authenticator.authenticate(token)
        return refused.value.detail


@pytest.fixture(name="counted")
async def fx_counted(migrated_url: str) -> AsyncIterator[Counted]:
    counted = Counted(migrated_url)
    yield counted
    await counted.engine.dispose()


def unknown_token() -> str:
    key_id, secret = generate_key()
    return f"{key_id}.{secret}"


async def test_an_unknown_key_id_reads_the_database_once_per_cache_period(counted: Counted) -> None:
    token = unknown_token()
    for _ in range(20):
        assert await counted.refused(token) == "invalid API key"
    assert counted.statements == 1
    counted.clock.now += 5.01  # the negative entry expires as a positive one would
    assert await counted.refused(token) == "invalid API key"
    assert counted.statements == 2


async def test_a_key_id_cached_as_unknown_is_forgotten_on_request(counted: Counted) -> None:
    token = unknown_token()
    await counted.refused(token)
    counted.authenticator.forget(token.split(".")[0])
    await counted.refused(token)
    assert counted.statements == 2


async def test_a_flood_of_unknown_ids_evicts_the_oldest(migrated_url: str) -> None:
    counted = Counted(migrated_url, unknown_cache_entries=50)
    try:
        tokens = [unknown_token() for _ in range(120)]
        for token in tokens:
            await counted.refused(token)
        assert counted.statements == 120
        await counted.refused(tokens[-1])  # among the 50 kept
        assert counted.statements == 120
        await counted.refused(tokens[0])  # evicted: read again
        assert counted.statements == 121
    finally:
        await counted.engine.dispose()


async def test_an_unknown_id_and_a_wrong_secret_do_the_same_comparison(
    counted: Counted, tenant: NewTenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Structural, not timed: every refusal of a well-formed key runs the one constant-time comparison, against
    a hash of the same length, whether the id exists or not, cached or not."""
    compared: list[tuple[str, str]] = []
    real = authenticator_module.secret_matches

    def recording(secret: str, stored_hash: str) -> bool:
        compared.append((secret, stored_hash))
        return real(secret, stored_hash)

    monkeypatch.setattr(authenticator_module, "secret_matches", recording)
    wrong_secret = f"{tenant.key_id}.{'x' * 43}"
    unknown = unknown_token()
    cases = {
        "wrong secret, read from the database": wrong_secret,
        "wrong secret, cached": wrong_secret,
        "unknown id, read from the database": unknown,
        "unknown id, cached as unknown": unknown,
    }
    for case, token in cases.items():
        compared.clear()
        assert await counted.refused(token) == "invalid API key", case
        assert len(compared) == 1, case
        secret, stored_hash = compared[0]
        assert secret == token.split(".", 1)[1], case
        assert len(stored_hash) == 64, case
    compared.clear()
    await counted.authenticator.authenticate(tenant.key)
    assert len(compared) == 1  # and the right key, once


async def test_verified_keys_are_cached_for_their_period_and_within_the_bound(migrated_url: str) -> None:
    counted = Counted(migrated_url, key_cache_entries=2)
    try:
        first, second, third = [await new_tenant(migrated_url) for _ in range(3)]
        for tenant in (first, second):
            await counted.authenticator.authenticate(tenant.key)
        assert counted.statements == 2
        await counted.authenticator.authenticate(first.key)  # cached, and now the most recently used
        assert counted.statements == 2
        await counted.authenticator.authenticate(third.key)  # room for it: the least recently used (second) goes
        await counted.authenticator.authenticate(first.key)
        assert counted.statements == 3
        await counted.authenticator.authenticate(second.key)
        assert counted.statements == 4
        counted.clock.now += 5.01  # past the cache period every key is read again
        await counted.authenticator.authenticate(second.key)
        assert counted.statements == 5
    finally:
        await counted.engine.dispose()


async def test_plugin_answers_are_asked_again_after_the_cache_period_and_bounded(migrated_url: str) -> None:
    """The ``cloudeasyml_authenticate`` hook, through pluggy, behind the authenticator's cache."""
    from cloudeasyml.plugins.manager import get_plugin_manager
    from tests.integration.test_hooks import CountingJwtAuth

    plugin = CountingJwtAuth()
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(plugin, name="counting-jwt-auth")
    clock = Clock()
    engine = create_engine(migrated_url)
    authenticator = ApiKeyAuthenticator(
        session_factory(engine),
        cache_seconds=5.0,
        external=lambda token: pm.hook.cloudeasyml_authenticate(token=token),
        external_cache_entries=2,
        clock=clock,
    )
    try:
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                await authenticator.authenticate("opaque-token")
        assert plugin.asked == ["opaque-token"]
        clock.now += 5.01
        with pytest.raises(AuthenticationError):
            await authenticator.authenticate("opaque-token")
        assert plugin.asked == ["opaque-token"] * 2
        for token in ("other-1", "other-2"):  # two more tokens push the first out of a cache of two
            with pytest.raises(AuthenticationError):
                await authenticator.authenticate(token)
        with pytest.raises(AuthenticationError):
            await authenticator.authenticate("opaque-token")
        assert plugin.asked.count("opaque-token") == 3
    finally:
        await engine.dispose()
