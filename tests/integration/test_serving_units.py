"""The serving registry by serving unit: a deployment with a split holds one loaded unit per route (version and
serving config, variant included), deleting it unloads them all, and the tenant's cap and eviction count units."""

from __future__ import annotations

import uuid
from pathlib import Path

import msgspec
import pytest

from cloudeasyml.core.serving import ServingConfig
from cloudeasyml.core.traffic import TrafficRoute
from cloudeasyml.errors import NotFoundError
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.registry import DeploymentSpec, ServingRegistry
from cloudeasyml.runtime.resolver import ArtifactResolver
from tests.support.tiny_model import Point, TinyModel

FLOAT = TrafficRoute(model_version="1.0.0", weight=50)
INT8 = TrafficRoute(model_version="1.0.0", weight=50, variant="int8")
SHADOW = TrafficRoute(model_version="1.0.0", weight=10, variant="optimized", mode="shadow")


@pytest.fixture(name="registry")
def fx_registry(artifact_dir: Path) -> ServingRegistry:
    return ServingRegistry(ArtifactResolver(ArtifactStore(artifact_dir)))


def split_spec(tenant_id: uuid.UUID | None = None) -> DeploymentSpec:
    return DeploymentSpec(
        id=uuid.uuid4(),
        tenant_id=tenant_id or uuid.uuid4(),
        name="tiny-split",
        model_name="tiny",
        model_version="1.0.0",
        config=ServingConfig(),
        traffic=(FLOAT, INT8, SHADOW),
    )


def test_a_route_spec_serves_the_routes_version_and_variant() -> None:
    spec = split_spec()
    int8 = spec.for_route(INT8)
    assert (int8.model_version, int8.config.variant, int8.traffic) == ("1.0.0", "int8", (INT8,))
    assert int8.config.max_batch_size == spec.config.max_batch_size  # the rest of the config is the deployment's
    assert int8.unit != spec.unit and spec.for_route(SHADOW).unit not in (spec.unit, int8.unit)
    # The route of the deployment's own version and variant is the deployment's own unit: one load serves both.
    assert spec.for_route(FLOAT).unit == spec.unit
    other = msgspec.structs.replace(spec, model_version="2.0.0")
    assert other.for_route(TrafficRoute(model_version="1.0.0", weight=100)).unit == spec.unit


async def test_one_deployment_holds_a_unit_per_route_and_deleting_it_unloads_them_all(registry) -> None:
    model = TinyModel()
    spec = split_spec()
    float_unit = await registry.load(spec.for_route(FLOAT), model)
    int8_unit = await registry.load(spec.for_route(INT8), model)
    assert len(registry) == 2 and registry.session_count == 2  # two graphs, two sessions
    assert float_unit.spec.config.variant == "float" and int8_unit.spec.config.variant == "int8"
    assert int8_unit.variant_report is not None and float_unit.variant_report is None
    # By spec, by unit key, by deployment id (its first unit).
    assert registry.get_loaded(spec) is float_unit and registry.get_loaded(spec.for_route(INT8)) is int8_unit
    assert registry.get_loaded(int8_unit.unit) is int8_unit and registry.get_loaded(spec.id) is float_unit
    assert registry.get_loaded(spec.for_route(SHADOW)) is None
    outputs = (await int8_unit.predict([Point(x=1.0, y=2.0)])).outputs
    assert len(outputs) == 1
    # A second deployment's unit of the same graph shares the session (SessionKey), not the unit.
    other = await registry.load(split_spec().for_route(INT8), model)
    assert other is not int8_unit and other.session is int8_unit.session and registry.session_count == 2
    await registry.unload(spec.id, deleted=True)
    assert registry.units_of(spec.id) == [] and registry.loaded() == [other] and registry.session_count == 1
    with pytest.raises(NotFoundError):
        await registry.load(spec.for_route(SHADOW), model)  # a deleted deployment loads no route again


async def test_the_tenant_cap_counts_units(registry) -> None:
    model = TinyModel()
    tenant_id = uuid.uuid4()
    spec = split_spec(tenant_id)
    first = await registry.load(spec.for_route(FLOAT), model, tenant_cap=2)
    await registry.load(spec.for_route(INT8), model, tenant_cap=2)
    first.last_used = 0.0  # the least recently used
    await registry.load(spec.for_route(SHADOW), model, tenant_cap=2)
    assert len(registry) == 2 and registry.get_loaded(spec) is None  # the third unit unloaded the oldest
    # Another tenant's units are not counted against this one.
    await registry.load(split_spec().for_route(FLOAT), model, tenant_cap=2)
    assert len(registry) == 3


async def test_eviction_over_the_memory_budget_unloads_units(artifact_dir) -> None:
    model = TinyModel()
    registry = ServingRegistry(ArtifactResolver(ArtifactStore(artifact_dir)), memory_budget_bytes=1)
    spec = split_spec()
    await registry.load(spec.for_route(FLOAT), model)
    int8 = await registry.load(spec.for_route(INT8), model)
    # Over a budget of one byte only the newest session stays: the float unit was unloaded, the int8 one serves.
    assert registry.loaded() == [int8] and registry.session_count == 1
    await registry.close()
    assert len(registry) == 0 and registry.session_count == 0
