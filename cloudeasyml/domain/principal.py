"""Who is calling, and what they may do."""

from __future__ import annotations

import uuid
from typing import Final

# Principal lives at the bottom (plugins' authenticate hook returns one); re-exported here because
# docs/plugins.md has named this path to plugin authors.
from cloudeasyml.core.principal import Principal

__all__ = (
    "ALL_SCOPES",
    "DEFAULT_KEY_SCOPES",
    "OPERATOR_SCOPE",
    "OPERATOR_TENANT_ID",
    "Principal",
    "validate_scopes",
)

ALL_SCOPES: Final = (
    "predict",
    "deployments:read",
    "deployments:write",
    "keys:read",
    "keys:write",
    "usage:read",
    "feedback:write",
    "webhooks:read",
    "webhooks:write",
    "admin",
)
"""``admin`` grants every scope; ``X:write`` grants ``X:read``. ``POST /feedback`` takes ``feedback:write`` or
``predict`` (a client that predicts may report the truth of its answers; ``feedback:write`` alone suits a labelling
job that must not predict)."""

DEFAULT_KEY_SCOPES: Final = ("predict",)

OPERATOR_SCOPE: Final = "operator"
"""The platform operator's scope (``/operator/...``, ``POST /plans``): held only by keys of ``cloudeasyml operators
create``, never by a tenant's key (it is not in ``ALL_SCOPES``, so no tenant key can be given it)."""

OPERATOR_TENANT_ID: Final = uuid.UUID(int=0)
"""The ``tenant_id`` of an operator's principal: no tenant has it, so every tenant-scoped query finds nothing."""


def validate_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Sorted, de-duplicated scopes; raises ValueError naming any unknown one."""
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(ALL_SCOPES)}")
    return tuple(sorted(set(scopes)))
