"""``cloudeasyml tenants``: operator actions on tenants."""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal, InvalidOperation

import click
import msgspec
from sqlalchemy import select

from cloudeasyml.db.engine import one_transaction
from cloudeasyml.db.models import Tenant
from cloudeasyml.domain.api_keys import IssuedKey
from cloudeasyml.domain.audit import Actor, AuditTrail, created, diff
from cloudeasyml.domain.tenants import UNCHANGED, NewTenant, create_tenant, issue_admin_key, set_caps
from cloudeasyml.errors import CloudEasyMLError
from cloudeasyml.settings import load_settings

__all__ = ("create_tenant_now", "tenants")


_CLI = Actor(key_id=None)
"""Changes made from the CLI: no key, no address."""


def _caps(tenant: Tenant) -> dict[str, object]:
    return {"plan": tenant.plan, "spendCap": tenant.spend_cap, "requestCap": tenant.request_cap}


async def _create(url: str, name: str, owner: str, plan: str) -> NewTenant:
    async with one_transaction(url) as session:
        new = await create_tenant(session, name, owner, plan=plan)
        changes = created({"name": name, **_caps(new.tenant), "ownerEmail": owner, "ownerKeyId": new.key_id})
        AuditTrail(session, _CLI, new.tenant.id).record("tenant.created", "tenant", new.tenant.id, changes)
        return new


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


async def _issue_admin_key(url: str, name: str) -> IssuedKey:
    async with one_transaction(url) as session:
        issued = await issue_admin_key(session, name)
        changes = created({"name": issued.row.name, "scopes": issued.row.scopes})
        AuditTrail(session, _CLI, issued.row.tenant_id).record("key.created", "key", issued.row.id, changes)
        return issued


@tenants.command("issue-admin-key")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (keyId, key, scopes).")
def issue_admin_key_command(name: str, as_json: bool) -> None:
    """Make a new admin key for tenant NAME, created by no other key, and print it (shown only this once).

    The tenant cannot revoke its owner key through the API (every key it makes descends from it, and its last
    admin key is kept); with this second root key it can.
    """
    try:
        issued = asyncio.run(_issue_admin_key(load_settings().database_url, name))
    except CloudEasyMLError as exc:
        raise click.ClickException(exc.detail) from exc
    if as_json:
        payload = {"keyId": issued.row.id, "key": issued.key, "scopes": ["admin"]}
        sys.stdout.write(msgspec.json.encode(payload).decode() + "\n")
        return
    click.echo(f"key     {issued.key}")
    click.echo("Store the key now: it is not shown again (only its hash is kept).")


def _cap(parse: type[int] | type[Decimal]) -> object:
    """A click callback: ``none`` removes the cap, absent leaves it, anything else is parsed."""

    def convert(_ctx: click.Context, param: click.Parameter, value: str | None) -> object:
        if value is None:
            return UNCHANGED
        if value.lower() == "none":
            return None
        try:
            return parse(value)
        except (ValueError, InvalidOperation):
            raise click.BadParameter(f"{value!r} is not a number (or 'none')", param=param) from None

    return convert


async def _set_caps(url: str, name: str, spend_cap: object, request_cap: object) -> Tenant:
    async with one_transaction(url) as session:
        tenant = await session.scalar(select(Tenant).where(Tenant.name == name))
        before = _caps(tenant) if tenant is not None else {}
        tenant = await set_caps(session, name, spend_cap=spend_cap, request_cap=request_cap)
        changes = diff(before, _caps(tenant))
        if changes:
            AuditTrail(session, _CLI, tenant.id).record("tenant.updated", "tenant", tenant.id, changes)
        return tenant


@tenants.command("set-caps")
@click.argument("name")
@click.option("--spend-cap", callback=_cap(Decimal), help="Most tenant NAME may spend per month (UTC); 'none': no cap.")
@click.option("--request-cap", callback=_cap(int), help="Most requests per month (UTC); 'none': no cap.")
def set_caps_command(name: str, spend_cap: object, request_cap: object) -> None:
    """Set the monthly spend and request caps of tenant NAME. Past a cap, predictions answer 402 (spend) or
    429 (requests) with Retry-After until the month ends; servers apply changes within a few seconds.
    """
    try:
        tenant = asyncio.run(_set_caps(load_settings().database_url, name, spend_cap, request_cap))
    except CloudEasyMLError as exc:
        raise click.ClickException(exc.detail) from exc
    spend = "none" if tenant.spend_cap is None else f"{tenant.spend_cap.normalize():f}"
    requests = "none" if tenant.request_cap is None else str(tenant.request_cap)
    click.echo(f"tenant {tenant.name}: spend cap {spend} per month, request cap {requests} per month")
