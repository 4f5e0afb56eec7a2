"""The deployment directory keeps the newest revision it has seen of a deployment: a lookup that read the database
before a change was stored, and ends after the new revision was cached, does not put the old one back."""

from __future__ import annotations

import uuid

import msgspec

from cloudeasyml.core.principal import Principal
from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.core.traffic import single_route
from cloudeasyml.domain.deployment_directory import DeploymentDirectory
from cloudeasyml.runtime.registry import DeploymentSpec


async def test_an_older_revision_never_replaces_a_newer_one_in_the_cache() -> None:
    tenant = uuid.uuid4()
    caller = Principal(tenant_id=tenant, key_id="sk_x", scopes=frozenset({"predict"}))
    first = DeploymentSpec(
        id=uuid.uuid4(),
        tenant_id=tenant,
        name="scorer",
        model_name="tiny",
        model_version="1.0.0",
        config=ServingConfig(),
        traffic=single_route("1.0.0"),
        revision=1,
    )
    second = msgspec.structs.replace(first, model_version="1.1.0", traffic=single_route("1.1.0"), revision=2)
    # No database: every lookup below is answered by the cache.
    directory = DeploymentDirectory(None, None, None)  # type: ignore[arg-type]
    directory.remember(second)
    directory._remember(first)  # the late read of a lookup that began before the change
    assert (await directory.by_id(caller, first.id)).revision == 2
    assert (await directory.by_name(caller, "scorer")).model_version == "1.1.0"
    third = msgspec.structs.replace(second, model_version="1.0.0", traffic=single_route("1.0.0"), revision=3)
    directory.remember(third)  # a rollback is a newer revision: it replaces
    assert (await directory.by_id(caller, first.id)).model_version == "1.0.0"
