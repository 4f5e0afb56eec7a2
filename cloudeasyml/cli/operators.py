"""``cloudeasyml operators``: the platform operator's API keys (scope ``operator``), written to the database
directly, as ``tenants`` is: no key can make an operator key over HTTP.
"""

from __future__ import annotations

import asyncio
import sys

import click
import msgspec

from cloudeasyml.db.engine import one_transaction
from cloudeasyml.db.models import OperatorKey
from cloudeasyml.domain.operators import (
    IssuedOperatorKey,
    issue_operator_key,
    list_operator_keys,
    revoke_operator_key,
)
from cloudeasyml.domain.principal import OPERATOR_SCOPE
from cloudeasyml.errors import CloudEasyMLError
from cloudeasyml.settings import load_settings

__all__ = ("operators",)


@click.group()
def operators() -> None:
    """Manage the platform operator's API keys (they manage tenants over /operator/...)."""


async def _create(url: str, name: str) -> IssuedOperatorKey:
    async with one_transaction(url) as session:
        return await issue_operator_key(session, name)


@operators.command("create")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (keyId, key, scopes).")
def create(name: str, as_json: bool) -> None:
    """Make an operator key called NAME and print it (shown only this once)."""
    issued = asyncio.run(_create(load_settings().database_url, name))
    if as_json:
        payload = {"keyId": issued.row.id, "name": name, "key": issued.key, "scopes": [OPERATOR_SCOPE]}
        sys.stdout.write(msgspec.json.encode(payload).decode() + "\n")
        return
    click.echo(f"operator key  {issued.key}")
    click.echo("Store the key now: it is not shown again (only its hash is kept).")


async def _list(url: str) -> list[OperatorKey]:
    async with one_transaction(url) as session:
        return await list_operator_keys(session)


@operators.command("list")
def list_command() -> None:
    """List operator keys (ids and names, never secrets)."""
    for row in asyncio.run(_list(load_settings().database_url)):
        state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at is not None else "active"
        click.echo(f"{row.id}  {row.created_at:%Y-%m-%d %H:%M}  {state:<24}  {row.name}")


async def _revoke(url: str, key_id: str) -> OperatorKey:
    async with one_transaction(url) as session:
        return await revoke_operator_key(session, key_id)


@operators.command("revoke")
@click.argument("key_id")
def revoke(key_id: str) -> None:
    """Revoke operator key KEY_ID (servers refuse it within CLOUDEASYML_SERVER__KEY_CACHE_SECONDS)."""
    try:
        asyncio.run(_revoke(load_settings().database_url, key_id))
    except CloudEasyMLError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(f"revoked {key_id}")
