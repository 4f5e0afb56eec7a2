"""``cloudeasyml tenants``: operator actions on tenants."""

from __future__ import annotations

import asyncio
import sys

import click
import msgspec

from cloudeasyml.db.engine import create_engine, session_factory
from cloudeasyml.domain.tenants import NewTenant, create_tenant
from cloudeasyml.errors import CloudEasyMLError
from cloudeasyml.settings import load_settings

__all__ = ("create_tenant_now", "tenants")


async def _create(url: str, name: str, owner: str, plan: str) -> NewTenant:
    engine = create_engine(url)
    try:
        async with session_factory(engine).begin() as session:
            return await create_tenant(session, name, owner, plan=plan)
    finally:
        await engine.dispose()


def create_tenant_now(url: str, name: str, owner: str, plan: str = "default") -> NewTenant:
    """Create a tenant, its owner and an admin key (synchronously, for the CLI)."""
    return asyncio.run(_create(url, name, owner, plan))


@click.group()
def tenants() -> None:
    """Manage tenants."""


@tenants.command("create")
@click.argument("name")
@click.option("--owner", required=True, help="E-mail of the tenant's first user (role owner).")
@click.option("--plan", default="default", show_default=True, help="Price plan name.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (tenantId, userId, keyId, key).")
def create(name: str, owner: str, plan: str, as_json: bool) -> None:
    """Create tenant NAME with its owner, and print the owner's API key (shown only this once)."""
    try:
        new = create_tenant_now(load_settings().database_url, name, owner, plan)
    except CloudEasyMLError as exc:
        raise click.ClickException(exc.detail) from exc
    if as_json:
        payload = {
            "tenantId": str(new.tenant.id),
            "tenantName": new.tenant.name,
            "userId": str(new.owner.id),
            "keyId": new.key_id,
            "key": new.key,
            "scopes": ["admin"],
        }
        sys.stdout.write(msgspec.json.encode(payload).decode() + "\n")
        return
    click.echo(f"tenant  {new.tenant.name} ({new.tenant.id})")
    click.echo(f"owner   {new.owner.email}")
    click.echo(f"key     {new.key}")
    click.echo("Store the key now: it is not shown again (only its hash is kept).")
