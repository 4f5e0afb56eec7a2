"""Who is calling: the value the authenticator (or a plugin's ``cloudeasyml_authenticate``) produces."""

from __future__ import annotations

import uuid

import msgspec

__all__ = ("Principal",)


class Principal(msgspec.Struct, frozen=True):
    """An authenticated caller: one tenant, one key, a set of scopes."""

    tenant_id: uuid.UUID
    key_id: str
    scopes: frozenset[str]
    user_id: uuid.UUID | None = None
    plan: str = "default"
    """The tenant's price plan (pricing hooks may bill plans differently)."""
    rate_limit_per_minute: int | None = None
    """Requests per minute this key may make (None: unlimited)."""

    def has_scope(self, scope: str) -> bool:
        """Whether this caller holds ``scope`` directly or through ``admin`` / the matching ``:write``.

        ``operator`` (the platform operator's scope, above every tenant's ``admin``) is held only directly: a
        tenant's ``admin`` does not grant it, and it grants no tenant scope.
        """
        if scope == "operator":
            return scope in self.scopes
        if "admin" in self.scopes or scope in self.scopes:
            return True
        return scope.endswith(":read") and scope.replace(":read", ":write") in self.scopes
