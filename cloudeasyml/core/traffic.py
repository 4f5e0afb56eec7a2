"""A deployment's traffic: which model versions (and variants) serve it, with what share, live or in shadow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec

__all__ = ("MAX_ROUTES", "RouteMode", "TrafficRoute", "check_traffic", "single_route")

RouteMode = Literal["live", "shadow"]

MAX_ROUTES = 8
"""Most routes of one deployment: each one may hold a loaded session (memory, see docs/security.md)."""


class TrafficRoute(msgspec.Struct, frozen=True, rename="camel", forbid_unknown_fields=True, kw_only=True):
    """One version (and variant) of a deployment's model with its share of the deployment's requests.

    ``live`` routes answer requests: each request goes to one of them, chosen by ``weight`` (the live weights sum to
    100). ``shadow`` routes never answer: ``weight`` percent of the requests are copied to them after the live answer
    is sent, for comparison.
    """

    model_version: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    weight: Annotated[int, msgspec.Meta(ge=0, le=100)]
    """Live: percent of the deployment's requests; shadow: percent of the requests copied."""
    variant: Literal["float", "optimized", "int8"] | None = None
    """The graph that serves this route; null: the deployment's ``config.variant``."""
    mode: RouteMode = "live"


def single_route(model_version: str) -> tuple[TrafficRoute, ...]:
    """The traffic of a deployment that serves one version: all of it, live."""
    return (TrafficRoute(model_version=model_version, weight=100),)


def check_traffic(routes: Sequence[TrafficRoute]) -> None:
    """Refuse a split that cannot serve; raises ``ValueError`` with a message naming the rule broken.

    Rules: 1 to ``MAX_ROUTES`` routes; at least one live route; the live weights sum to exactly 100; a shadow route's
    weight is 1 to 100; no two routes share a version and variant.
    """
    if not 1 <= len(routes) <= MAX_ROUTES:
        raise ValueError(f"`traffic` holds {len(routes)} routes; a deployment takes 1 to {MAX_ROUTES}")
    live = [route for route in routes if route.mode == "live"]
    if not live:
        raise ValueError("`traffic` needs at least one live route")
    total = sum(route.weight for route in live)
    if total != 100:
        raise ValueError(f"the live routes' weights sum to {total}; they must sum to 100")
    for route in routes:
        if route.mode == "shadow" and route.weight < 1:
            raise ValueError(f"shadow route {route.model_version!r} copies {route.weight} % of requests; 1 to 100")
    seen: set[tuple[str, str | None]] = set()
    for route in routes:
        key = (route.model_version, route.variant)
        if key in seen:
            raise ValueError(f"`traffic` names version {route.model_version!r} (variant {route.variant}) twice")
        seen.add(key)
