"""Who is calling, and what they may do."""

from __future__ import annotations

import uuid
from typing import Final

import msgspec

__all__ = ("ALL_SCOPES", "DEFAULT_KEY_SCOPES", "Principal", "validate_scopes")

ALL_SCOPES: Final = (
    "predict",
    "deployments:read",
    "deployments:write",
    "keys:read",
    "keys:write",
    "usage:read",
    "admin",
)
"""``admin`` grants every scope; ``X:write`` grants ``X:read``."""

DEFAULT_KEY_SCOPES: Final = ("predict",)


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
        """Whether this caller holds ``scope`` directly or through ``admin`` / the matching ``:write``."""
        if "admin" in self.scopes or scope in self.scopes:
            return True
        return scope.endswith(":read") and scope.replace(":read", ":write") in self.scopes


def validate_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Sorted, de-duplicated scopes; raises ValueError naming any unknown one."""
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(ALL_SCOPES)}")
    return tuple(sorted(set(scopes)))
