"""Traffic routing, a step of the data plane: which route of a deployment's split serves one request, and which
shadow routes get a copy of it.

A live route is picked by weight: at random, or, when the client sends a routing key (``X-Routing-Key``), by a
stable hash of the deployment id and the key into one of ``BUCKETS`` buckets laid against the routes' cumulative
weights. So one end user keeps one version while the weights stay, and a change of weights moves only the buckets
whose range changed owner (90/10 to 80/20 moves one key in ten, from the first route to the second).

A single-version deployment never gets here: ``InferenceService.execute`` checks ``needs_routing`` (a length and
an attribute) and serves the spec as it is. For a split, the route specs are made once per deployment spec (the
directory caches specs, so one object serves many requests) and kept in a small table keyed by the spec's identity.
"""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_right

from cloudeasyml.runtime.registry import DeploymentSpec

__all__ = ("BUCKETS", "RoutePlan", "Router", "needs_routing", "sticky_bucket")

BUCKETS = 10_000
"""Routing resolution: a weight of 1 % is 100 buckets."""

_PLANS = 4096
"""Route plans kept (one per deployment spec object seen recently); the table starts over when full."""


def needs_routing(spec: DeploymentSpec) -> bool:
    """Whether ``spec`` has more than its own version to serve (several routes, or one route with its own variant)."""
    traffic = spec.traffic
    return len(traffic) > 1 or (len(traffic) == 1 and traffic[0].variant is not None)


def sticky_bucket(spec: DeploymentSpec, routing_key: str) -> int:
    """The bucket (0 to ``BUCKETS - 1``) of ``routing_key`` in ``spec``'s deployment: blake2b keyed by the
    deployment id, so one key lands independently in different deployments.
    """
    digest = hashlib.blake2b(routing_key.encode("utf-8", "surrogateescape"), digest_size=8, key=spec.id.bytes)
    return int.from_bytes(digest.digest(), "big") % BUCKETS


class RoutePlan:
    """One deployment spec's routes, ready to pick from."""

    __slots__ = ("_bounds", "_single", "live", "shadows", "spec")

    def __init__(self, spec: DeploymentSpec) -> None:
        self.spec = spec
        live = [route for route in spec.traffic if route.mode == "live" and route.weight > 0]
        self.live = tuple(spec.for_route(route) for route in live)
        """The live routes' specs, in the split's order."""
        bounds, total = [], 0
        for route in live:
            total += route.weight * (BUCKETS // 100)
            bounds.append(total)
        self._bounds = bounds
        self._single = self.live[0] if len(self.live) == 1 else None
        self.shadows = tuple(
            (spec.for_route(route), route.weight * (BUCKETS // 100)) for route in spec.traffic if route.mode == "shadow"
        )
        """(spec, buckets out of ``BUCKETS`` copied) of each shadow route."""

    def pick(self, routing_key: str | None) -> DeploymentSpec:
        """The live route's spec that serves a request: by ``routing_key``'s bucket if given, else at random."""
        if self._single is not None:
            return self._single
        bucket = sticky_bucket(self.spec, routing_key) if routing_key is not None else random.randrange(BUCKETS)
        return self.live[bisect_right(self._bounds, bucket)]

    def copies(self) -> list[DeploymentSpec]:
        """The shadow routes that get a copy of this request (each with its own probability)."""
        return [spec for spec, share in self.shadows if random.randrange(BUCKETS) < share]


class Router:
    """The route plans of the deployment specs seen recently."""

    def __init__(self) -> None:
        self._plans: dict[int, RoutePlan] = {}

    def plan(self, spec: DeploymentSpec) -> RoutePlan:
        """``spec``'s plan, made once per spec object (a spec read again, e.g. after a change, gets a new one)."""
        plan = self._plans.get(id(spec))
        if plan is None or plan.spec is not spec:
            if len(self._plans) >= _PLANS:
                self._plans.clear()
            plan = self._plans[id(spec)] = RoutePlan(spec)
        return plan
