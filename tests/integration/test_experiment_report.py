"""``GET /deployments/{id}/experiment`` over outcomes, feedback and usage written to the real database: the figures
and the verdicts are the ones the rows imply."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest

from cloudeasyml.core.clock import utc_now
from cloudeasyml.db.models import Feedback, Outcome, UsageRecord
from cloudeasyml.domain.tenants import NewTenant
from tests.conftest import bearer, db_session

SPLIT = [
    {"modelVersion": "1.0.0", "variant": "float", "weight": 50},
    {"modelVersion": "1.0.0", "variant": "int8", "weight": 50},
    {"modelVersion": "1.0.0", "variant": "optimized", "mode": "shadow", "weight": 100},
]
N = 120


def _outcome(tenant: NewTenant, deployment_id: uuid.UUID, request_id: str, variant: str, **fields: object) -> Outcome:
    values: dict[str, object] = {
        "request_id": request_id,
        "tenant_id": tenant.tenant.id,
        "deployment_id": deployment_id,
        "model_version": "1.0.0",
        "variant": variant,
        "mode": "live",
        "shadow_of": None,
        "items": 1,
        "outputs": None,
        "latency_ms": 1.0,
        "error": None,
        "created_at": utc_now() - timedelta(minutes=5),
    }
    values.update(fields)
    return Outcome(**values)


def _error(i: int, size: float) -> float:
    """A signed error of about ``size``, varying with ``i`` (so that the arms' errors have a variance)."""
    return (size + (i % 5) * 0.1) * (1 if i % 2 else -1)


async def _seed(url: str, tenant: NewTenant, other: NewTenant, deployment_id: uuid.UUID) -> None:
    rows: list[object] = []
    for i in range(N):
        truth = float(i % 10)
        control_score = truth + _error(i, 2.0)
        rows += [
            _outcome(tenant, deployment_id, f"c-{i}", "float", outputs=[{"score": control_score}], latency_ms=float(i)),
            _outcome(tenant, deployment_id, f"k-{i}", "int8", outputs=[{"score": truth + _error(i, 0.5)}]),
            _outcome(
                tenant, deployment_id, f"s-{i}", "optimized", mode="shadow", shadow_of=f"c-{i}",
                outputs=[{"score": control_score + 0.25}],
            ),
            Feedback(request_id=f"c-{i}", tenant_id=tenant.tenant.id, value=truth, created_at=utc_now()),
            Feedback(request_id=f"k-{i}", tenant_id=tenant.tenant.id, value=truth, created_at=utc_now()),
            UsageRecord(
                request_id=f"c-{i}", tenant_id=tenant.tenant.id, api_key_id=None, deployment_id=deployment_id,
                deployment_name="d", model_name="tiny", model_version="1.0.0", items=1, processing_ms=1.0,
                cost=Decimal("0.001"), created_at=utc_now(),
            ),
        ]  # fmt: skip
    # Three failed control runs, one run before the period asked for, and another tenant's row: none is a sample.
    rows += [_outcome(tenant, deployment_id, f"e-{i}", "float", error="DeadlineExceededError") for i in range(3)]
    rows.append(_outcome(tenant, deployment_id, "old", "float", created_at=utc_now() - timedelta(days=2)))
    rows.append(_outcome(other, deployment_id, "foreign", "float"))
    async with db_session(url) as session:
        session.add_all(rows)


async def test_the_report_compares_each_arm_with_the_control(
    client, tenant: NewTenant, other_tenant: NewTenant, migrated_url: str
) -> None:
    headers = bearer(tenant.key)
    created = await client.post("/deployments", json={"modelName": "tiny", "traffic": SPLIT}, headers=headers)
    assert created.status_code == 201, created.text
    deployment_id = uuid.UUID(created.json()["id"])
    await _seed(migrated_url, tenant, other_tenant, deployment_id)
    since = (utc_now() - timedelta(days=1)).isoformat()
    response = await client.get(f"/deployments/{deployment_id}/experiment", params={"since": since}, headers=headers)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["qualityMetric"]["kind"] == "regression" and report["sampled"] is False
    arms = {(arm["variant"], arm["mode"]): arm for arm in report["arms"]}
    assert list(arms) == [("float", "live"), ("int8", "live"), ("optimized", "shadow")]

    control = arms[("float", "live")]
    assert control["control"] is True and control["weight"] == 50
    assert (control["requests"], control["errors"]) == (N + 3, 3) and control["errorRate"] == pytest.approx(
        3 / 123, abs=1e-6
    )
    latencies = [float(i) for i in range(N)] + [1.0] * 3
    assert control["latencyMs"]["p50"] == pytest.approx(np.percentile(latencies, 50), abs=1e-3)
    assert control["latencyMs"]["p99"] == pytest.approx(np.percentile(latencies, 99), abs=1e-3)
    assert Decimal(control["costPer1000Items"]) == Decimal("1")
    errors = np.array([_error(i, 2.0) for i in range(N)])
    quality = control["quality"]
    assert quality["samples"] == N and quality["mae"]["value"] == pytest.approx(np.abs(errors).mean())
    assert quality["rmse"]["value"] == pytest.approx(np.sqrt((errors**2).mean()))
    assert quality["mae"]["low"] < quality["mae"]["value"] < quality["mae"]["high"]

    candidate = arms[("int8", "live")]
    assert candidate["control"] is False and candidate["costPer1000Items"] is None  # no usage records for it
    versus = {(c["variant"], c["mode"]): c["comparison"] for c in report["comparisons"]}
    assert set(versus) == {("int8", "live"), ("optimized", "shadow")}
    win = versus[("int8", "live")]
    assert win["test"] == "Welch's t-test" and win["metric"] == "mae" and win["verdict"] == "candidate better"
    assert win["effect"] == pytest.approx(-1.5) and win["pValue"] < 1e-10
    assert win["controlSamples"] == win["candidateSamples"] == N and 2 <= win["samplesNeeded"] < N

    shadow = arms[("optimized", "shadow")]
    assert shadow["agreement"]["pairs"] == N
    assert shadow["agreement"]["meanAbsoluteDifference"] == pytest.approx(0.25)
    assert shadow["quality"]["samples"] == N  # scored through the feedback of the live request it copies

    # Another tenant cannot read it; a period that ends before it starts is refused.
    assert (
        await client.get(f"/deployments/{deployment_id}/experiment", headers=bearer(other_tenant.key))
    ).status_code == 404
    bad = await client.get(
        f"/deployments/{deployment_id}/experiment", params={"since": since, "until": since}, headers=headers
    )
    assert bad.status_code == 422


async def test_a_split_without_outcomes_reports_its_routes_and_no_verdict(client, tenant: NewTenant) -> None:
    headers = bearer(tenant.key)
    created = await client.post("/deployments", json={"modelName": "tiny", "traffic": SPLIT[:2]}, headers=headers)
    report = (await client.get(f"/deployments/{created.json()['id']}/experiment", headers=headers)).json()
    assert [(arm["variant"], arm["requests"], arm["quality"]) for arm in report["arms"]] == [
        ("float", 0, None),
        ("int8", 0, None),
    ]
    assert report["comparisons"] == []
