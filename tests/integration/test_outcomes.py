"""Outcomes are recorded in the data plane for deployments with several routes only, written behind the answers,
and purged past the retention period with their feedback."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.engine import create_engine, session_factory
from cloudeasyml.db.models import Feedback, Outcome
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.metering.outcomes import OutcomeRecorder
from cloudeasyml.settings import OutcomeSettings
from tests.conftest import bearer, db_session

SPLIT = [{"modelVersion": "1.0.0", "weight": 100}, {"modelVersion": "1.0.0", "variant": "int8", "weight": 0}]


async def _outcomes(url: str, deployment_id: str) -> list[Outcome]:
    async with db_session(url) as session:
        rows = await session.scalars(select(Outcome).where(Outcome.deployment_id == uuid.UUID(deployment_id)))
        return list(rows)


async def test_a_single_version_deployment_records_nothing_and_a_split_records_each_answer(
    client, tenant: NewTenant, migrated_url: str
) -> None:
    headers = bearer(tenant.key)
    single = (await client.post("/deployments", json={"modelName": "tiny"}, headers=headers)).json()
    split = (await client.post("/deployments", json={"modelName": "tiny", "traffic": SPLIT}, headers=headers)).json()
    inputs = {"inputs": [{"x": 1.0, "y": 2.0}, {"x": -1.0, "y": 0.5}]}
    for deployment in (single, split):
        for _ in range(3):
            answer = await client.post(f"/deployments/{deployment['id']}/predict", json=inputs, headers=headers)
            assert answer.status_code == 200, answer.text
    # The report writes what the recorder holds first (the app's pool lives on the client's loop: ask through it).
    assert (await client.get(f"/deployments/{split['id']}/experiment", headers=headers)).status_code == 200
    assert await _outcomes(migrated_url, single["id"]) == []
    rows = await _outcomes(migrated_url, split["id"])
    assert len(rows) == 3
    row = rows[0]
    assert (row.model_version, row.variant, row.mode, row.shadow_of, row.items, row.error) == (
        "1.0.0", "float", "live", None, 2, None,
    )  # fmt: skip
    assert [set(item) for item in row.outputs or []] == [{"score"}, {"score"}] and row.latency_ms > 0
    assert row.tenant_id == tenant.tenant.id


async def test_outcomes_and_feedback_past_retention_are_purged(tenant: NewTenant, migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    recorder = OutcomeRecorder(session_factory(engine), OutcomeSettings(retention_days=7))
    deployment_id = uuid.uuid4()
    now = utc_now()
    old, recent = now - timedelta(days=recorder.settings.retention_days + 1), now - timedelta(days=1)
    async with db_session(migrated_url) as session:
        for request_id, when in (("old", old), ("recent", recent)):
            session.add(
                Outcome(
                    request_id=request_id, tenant_id=tenant.tenant.id, deployment_id=deployment_id,
                    model_version="1.0.0", variant="float", mode="live", shadow_of=None, items=1, outputs=[1],
                    latency_ms=1.0, error=None, created_at=when,
                )
            )  # fmt: skip
            session.add(Feedback(request_id=request_id, tenant_id=tenant.tenant.id, value=1.0, created_at=when))
    try:
        assert await recorder.purge() == 1
    finally:
        await engine.dispose()
    async with db_session(migrated_url) as session:
        assert list(await session.scalars(select(Outcome.request_id))) == ["recent"]
        assert list(await session.scalars(select(Feedback.request_id))) == ["recent"]
        assert await session.scalar(select(func.count()).select_from(Outcome)) == 1


async def test_shadow_copies_are_recorded_against_the_live_answer_they_copy(client, tenant: NewTenant) -> None:
    headers = bearer(tenant.key)
    traffic = [
        {"modelVersion": "1.0.0", "weight": 100},
        {"modelVersion": "1.0.0", "variant": "optimized", "mode": "shadow", "weight": 100},
    ]
    created = await client.post("/deployments", json={"modelName": "tiny", "traffic": traffic}, headers=headers)
    assert created.status_code == 201, created.text
    deployment_id = created.json()["id"]
    for i in range(6):
        inputs = {"inputs": [{"x": float(i), "y": 1.0}, {"x": -1.0, "y": float(i)}]}
        answer = await client.post(f"/deployments/{deployment_id}/predict", json=inputs, headers=headers)
        assert answer.status_code == 200, answer.text
    deadline = asyncio.get_running_loop().time() + 30
    while True:  # copies run after the answers: wait for them
        report = (await client.get(f"/deployments/{deployment_id}/experiment", headers=headers)).json()
        shadow = next(arm for arm in report["arms"] if arm["mode"] == "shadow")
        if shadow["requests"] == 6 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert (shadow["variant"], shadow["weight"], shadow["requests"], shadow["errors"]) == ("optimized", 100, 6, 0)
    agreement = shadow["agreement"]
    assert agreement["pairs"] == 12 and agreement["meanAbsoluteDifference"] < 1e-4  # the same network, optimised
    live = next(arm for arm in report["arms"] if arm["mode"] == "live")
    assert live["control"] and live["requests"] == 6 and live["agreement"] is None


async def test_v2_answers_are_recorded_per_item_like_any_protocols(
    client, tenant: NewTenant, migrated_url: str
) -> None:
    headers = bearer(tenant.key)
    body = {"modelName": "tiny", "name": "scorer", "traffic": SPLIT}
    deployment = (await client.post("/deployments", json=body, headers=headers)).json()
    tensor = {"name": "points", "shape": [3, 2], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}
    answer = await client.post("/v2/models/scorer/infer", json={"inputs": [tensor]}, headers=headers)
    assert answer.status_code == 200, answer.text
    scores = answer.json()["outputs"][0]["data"]
    assert (await client.get(f"/deployments/{deployment['id']}/experiment", headers=headers)).status_code == 200
    (row,) = await _outcomes(migrated_url, deployment["id"])
    assert row.items == 3 and row.outputs == [{"score": [pytest.approx(score)]} for score in scores]
