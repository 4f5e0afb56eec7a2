"""What routing costs per request: the data plane's routing step (``InferenceService.execute``) timed alone.

Run from the repository root: ``python -m bench.routing [requests]`` (default 200,000 of each case). Prints
microseconds of CPU per request, best of five rounds (the VM drifts; the least is the code's own cost):

- ``single``: a single-version deployment, the branch every existing deployment takes (``needs_routing`` is
  false: the spec serves as it is), with the context fields the step sets;
- ``split, random``: a 90/10 split with a shadow route at 10 %, picked at random, the shadow dice thrown;
- ``split, sticky``: the same split with an ``X-Routing-Key`` (blake2b of the key, bucket, bisect);
- ``unit lookup``: the registry's lookup of the served unit by spec (``get_loaded``), which every request pays.
"""

from __future__ import annotations

import sys
import time
import timeit
import uuid
from pathlib import Path

from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.core.traffic import TrafficRoute, single_route
from cloudeasyml.domain.request_context import RequestContext
from cloudeasyml.domain.routing import Router, needs_routing
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.registry import DeploymentSpec, ServingRegistry
from cloudeasyml.runtime.resolver import ArtifactResolver


def _spec(traffic: tuple[TrafficRoute, ...]) -> DeploymentSpec:
    return DeploymentSpec(
        id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        name="bench",
        model_name="housing",
        model_version="1.0.0",
        config=ServingConfig(),
        traffic=traffic,
    )


def _step(router: Router, spec: DeploymentSpec, context: RequestContext) -> object:
    """The routing step as ``InferenceService.execute`` runs it (kept in step with it)."""
    copies = None
    if context.mode == "live" and needs_routing(spec):
        plan = router.plan(spec)
        spec = plan.pick(context.routing_key)
        copies = plan.copies() if plan.shadows else None
    context.model_version = spec.model_version
    context.variant = spec.config.variant
    return copies


def main(requests: int) -> None:
    """Time each case and print microseconds per request."""
    router = Router()
    single = _spec(single_route("1.0.0"))
    split = _spec(
        (
            TrafficRoute(model_version="1.0.0", weight=90),
            TrafficRoute(model_version="1.1.0", weight=10),
            TrafficRoute(model_version="1.1.0", weight=10, variant="int8", mode="shadow"),
        )
    )
    plain, keyed = RequestContext(), RequestContext()
    keyed.routing_key = "end-user-4711"
    registry = ServingRegistry(ArtifactResolver(ArtifactStore(Path("."))))
    cases = {
        "single": lambda: _step(router, single, plain),
        "split, random": lambda: _step(router, split, plain),
        "split, sticky": lambda: _step(router, split, keyed),
        "unit lookup": lambda: registry.get_loaded(single),
        "(empty call)": lambda: None,
    }
    print(f"routing step, best of 5 rounds of {requests:,} requests (µs per request, the empty call included)")
    for name, case in cases.items():
        # CPU time of this process, not wall time: on a shared VM the wall clock counts other processes' turns.
        best = min(timeit.repeat(case, number=requests, repeat=5, timer=time.process_time)) / requests * 1e6
        print(f"  {name:<14} {best:6.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
