"""Route picking: by weight at random, sticky by routing key (stable, moving the fewest keys when weights change),
and a single-version deployment never routed."""

from __future__ import annotations

import random
import uuid
from collections import Counter

import msgspec

from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.core.traffic import TrafficRoute, single_route
from cloudeasyml.domain.routing import RoutePlan, Router, needs_routing, sticky_bucket
from cloudeasyml.runtime.registry import DeploymentSpec

DEPLOYMENT = uuid.UUID("00000000-0000-4000-8000-000000000001")


def spec_of(*weights: tuple[str, int], shadow: tuple[str, int] | None = None) -> DeploymentSpec:
    routes = [TrafficRoute(model_version=version, weight=weight) for version, weight in weights]
    if shadow is not None:
        routes.append(TrafficRoute(model_version=shadow[0], weight=shadow[1], mode="shadow"))
    return DeploymentSpec(
        id=DEPLOYMENT,
        tenant_id=uuid.uuid4(),
        name="d",
        model_name="tiny",
        model_version=weights[0][0],
        config=ServingConfig(),
        traffic=tuple(routes),
    )


def test_a_single_version_deployment_is_not_routed() -> None:
    one = spec_of(("1.0.0", 100))
    assert not needs_routing(one) and not needs_routing(msgspec.structs.replace(one, traffic=()))
    assert one.traffic == single_route("1.0.0")
    int8 = msgspec.structs.replace(one, traffic=(TrafficRoute(model_version="1.0.0", weight=100, variant="int8"),))
    assert needs_routing(int8) and RoutePlan(int8).pick(None).config.variant == "int8"


def test_random_picks_follow_the_weights() -> None:
    random.seed(11)
    plan = RoutePlan(spec_of(("a", 70), ("b", 20), ("c", 10)))
    counts = Counter(plan.pick(None).model_version for _ in range(20_000))
    # Binomial standard deviations at n=20000: about 65, 57 and 42; 5 of them either side.
    assert abs(counts["a"] - 14_000) < 330 and abs(counts["b"] - 4_000) < 290 and abs(counts["c"] - 2_000) < 210


def test_a_routing_key_keeps_one_version_and_a_weight_change_moves_the_fewest_keys() -> None:
    before, after = RoutePlan(spec_of(("a", 90), ("b", 10))), RoutePlan(spec_of(("a", 80), ("b", 20)))
    keys = [f"user-{i}" for i in range(5000)]
    first = {key: before.pick(key).model_version for key in keys}
    assert all(before.pick(key).model_version == first[key] for key in keys[:500])  # stable
    moved = [key for key in keys if after.pick(key).model_version != first[key]]
    assert all(first[key] == "a" for key in moved)  # only a's keys move, to b
    assert 0.08 < len(moved) / len(keys) < 0.12  # one key in ten, no more
    # Keyed by the deployment: one key lands independently in another deployment.
    other = msgspec.structs.replace(before.spec, id=uuid.uuid4())
    assert sum(sticky_bucket(other, k) != sticky_bucket(before.spec, k) for k in keys[:100]) > 90


def test_shadow_copies_take_their_share_and_are_never_live() -> None:
    random.seed(5)
    plan = RoutePlan(spec_of(("a", 100), shadow=("s", 25)))
    assert {plan.pick(None).model_version for _ in range(200)} == {"a"}
    copies = sum(len(plan.copies()) for _ in range(8000))
    assert abs(copies - 2000) < 200  # sd about 39
    assert all(spec.traffic[0].mode == "shadow" for spec, _ in plan.shadows)


def test_plans_are_made_once_per_spec_object() -> None:
    router = Router()
    spec = spec_of(("a", 50), ("b", 50))
    assert router.plan(spec) is router.plan(spec)
    assert router.plan(spec_of(("a", 50), ("b", 50))) is not router.plan(spec)
