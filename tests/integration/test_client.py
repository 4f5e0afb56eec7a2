"""The Python client (``cloudeasyml.client``) against the real app over real HTTP: every method of both clients, and
every error family raised with the server's problem details."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from cloudeasyml.client import (
    ApiKeyCreated,
    AsyncClient,
    AuthError,
    Client,
    CloudEasyMLError,
    ConflictError,
    Deployment,
    InvalidInputError,
    Model,
    NotFoundError,
    PaymentRequiredError,
    Prediction,
    RateLimitedError,
    RetryPolicy,
)
from cloudeasyml.domain.tenants import NewTenant, set_caps
from tests.conftest import db_session
from tests.support import tiny_model
from tests.support.live_server import serve_in_thread

POINT = {"x": 1.0, "y": 2.0}
OTHER = {"x": -3.0, "y": 0.5}
# Generous: the first prediction loads the model on a machine shared with other test runs.
TIMEOUT = 60.0


def _expected(*points: dict[str, float]) -> list[float]:
    weights = tiny_model.TinyModel().load_weights()
    array = np.array([[p["x"], p["y"]] for p in points], dtype=np.float32)
    return [float(v) for v in tiny_model.numpy_forward(weights, array)]


def test_every_method_of_the_client(app, tenant: NewTenant) -> None:
    with serve_in_thread(app) as address, Client(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
        models = client.models.list()
        assert [m.name for m in models] == sorted(m.name for m in models) and "tiny" in {m.name for m in models}
        tiny = client.models.get("tiny")
        assert isinstance(tiny, Model) and tiny.version == tiny.versions[0]
        assert isinstance(tiny.pricing.per_request, Decimal) and tiny.limits.max_items_per_request >= 2
        assert tiny.serving.max_batch_size >= 1 and tiny.input_schema and tiny.example_input

        deployment = client.deployments.create("tiny", name="scores", config={"maxBatchSize": 8})
        assert isinstance(deployment, Deployment) and deployment.config.max_batch_size == 8
        assert [d.id for d in client.deployments.list()] == [deployment.id]
        assert client.deployments.get(deployment.id) == client.deployments.get(str(deployment.id))

        answer = client.predict(deployment, [POINT])
        assert isinstance(answer, Prediction) and answer.deployment_id == deployment.id
        assert answer.predictions[0]["score"] == pytest.approx(_expected(POINT)[0], abs=1e-5)
        in_path = client.deployments.predict(deployment.id, [POINT, OTHER])
        assert [p["score"] for p in in_path.predictions] == pytest.approx(_expected(POINT, OTHER), abs=1e-5)
        assert answer.request_id != in_path.request_id

        created = client.keys.create("reader", scopes=["usage:read"], rate_limit_per_minute=100)
        assert isinstance(created, ApiKeyCreated) and created.key.startswith("sk_")
        assert created.scopes == ["usage:read"] and created.rate_limit_per_minute == 100
        listed = {k.key_id: k for k in client.keys.list()}
        assert created.key_id in listed and listed[created.key_id].revoked_at is None
        with Client(f"http://{address}", created.key) as reader:
            assert reader.quota.get().request_cap is None  # the new key works
        client.keys.revoke(created)
        assert {k.key_id: k for k in client.keys.list()}[created.key_id].revoked_at is not None

        usage = client.usage.get()
        assert (usage.total_requests, usage.total_items) == (2, 3)
        assert usage.by_model["tiny"].requests == 2 and usage.total_cost == usage.by_model["tiny"].cost > 0
        long_ago = client.usage.get(start=datetime(2001, 1, 1, tzinfo=UTC), end=datetime(2001, 2, 1))
        assert long_ago.total_requests == 0 and long_ago.end == datetime(2001, 2, 1, tzinfo=UTC)
        quota = client.quota.get()
        assert quota.spend_cap is None and quota.requests == 2 and quota.spent == usage.total_cost

        client.deployments.delete(deployment)
        assert client.deployments.list() == []
        with pytest.raises(NotFoundError):
            client.deployments.get(deployment)


async def test_every_method_of_the_async_client(app, tenant: NewTenant) -> None:
    with serve_in_thread(app) as address:
        async with AsyncClient(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
            assert "tiny" in {m.name for m in await client.models.list()}
            assert (await client.models.get("tiny")).name == "tiny"
            deployment = await client.deployments.create("tiny")
            assert [d.id for d in await client.deployments.list()] == [deployment.id]
            assert (await client.deployments.get(deployment)).name == deployment.name

            answer = await client.predict(deployment.id, [POINT])
            assert answer.predictions[0]["score"] == pytest.approx(_expected(POINT)[0], abs=1e-5)
            in_path = await client.deployments.predict(deployment, [OTHER])
            assert in_path.predictions[0]["score"] == pytest.approx(_expected(OTHER)[0], abs=1e-5)

            created = await client.keys.create("predictor")
            assert created.scopes == ["predict"]
            assert created.key_id in {k.key_id for k in await client.keys.list()}
            await client.keys.revoke(created.key_id)
            await client.keys.revoke(created.key_id)  # revoking a revoked key is no error

            assert (await client.usage.get()).total_requests == 2
            assert (await client.quota.get()).requests == 2
            await client.deployments.delete(deployment.id)
            with pytest.raises(NotFoundError) as missing:
                await client.deployments.delete(deployment.id)
    assert missing.value.status == 404 and str(deployment.id) in missing.value.detail


def test_the_readme_tour_runs(app, tenant: NewTenant, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Python client\n", 1)[1]
    tour = section.split("```python\n", 1)[1].split("```", 1)[0]
    # The tour deploys the housing model; the tests serve the tiny one (its graph needs no export).
    tour = tour.replace('"housing"', '"tiny"').replace("http://127.0.0.1:8000", "{URL}")
    with serve_in_thread(app) as address:
        exec(tour.replace("{URL}", f"http://{address}"), {"KEY": tenant.key})  # our own README, run as written
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("{'score':") and printed[1].startswith("1 ")


def _problem_of(error: CloudEasyMLError, status: int) -> None:
    """The exception carries the server's problem details as sent."""
    assert error.status == status == error.problem["status"]
    assert error.title == error.problem["title"] and error.type == error.problem["type"] == "about:blank"
    assert error.detail == error.problem["detail"] and error.detail
    assert error.request_id  # the answer's X-Request-ID


def test_each_error_family_raises_its_exception_with_the_problem_detail(app, tenant: NewTenant) -> None:
    with serve_in_thread(app) as address, Client(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
        deployment = client.deployments.create("tiny", name="taken")
        reader = client.keys.create("reader", scopes=["usage:read"])
        limited = client.keys.create("limited", scopes=["predict"], rate_limit_per_minute=1)

        with Client(f"http://{address}", "sk_notakey.nosecret") as stranger, pytest.raises(AuthError) as unknown:
            stranger.models.list()
        _problem_of(unknown.value, 401)
        with Client(f"http://{address}", reader.key) as weak, pytest.raises(AuthError) as denied:
            weak.deployments.create("tiny")
        _problem_of(denied.value, 403)
        assert "deployments:write" in denied.value.detail

        with pytest.raises(NotFoundError) as missing:
            client.models.get("no-such-model")
        _problem_of(missing.value, 404)
        with pytest.raises(NotFoundError):
            client.deployments.get(uuid.uuid4())

        with pytest.raises(ConflictError) as taken:
            client.deployments.create("tiny", name="taken")
        _problem_of(taken.value, 409)

        with pytest.raises(InvalidInputError) as invalid:
            client.predict(deployment, [{"x": "one", "y": 2.0}])
        _problem_of(invalid.value, 422)
        assert "$.inputs[0].x" in invalid.value.detail
        with pytest.raises(InvalidInputError) as bad_config:
            client.deployments.create("tiny", config={"maxBatchSize": 0})
        _problem_of(bad_config.value, 422)

        # A rate limit of one a minute: the second prediction is refused until the minute ends, which is past what
        # this client may wait in total, so it raises at once with the server's Retry-After.
        budget = RetryPolicy(max_total_seconds=5)
        with Client(f"http://{address}", limited.key, retry=budget, timeout=TIMEOUT) as once:
            once.predict(deployment, [POINT])
            with pytest.raises(RateLimitedError) as refused:
                once.predict(deployment, [POINT])
        _problem_of(refused.value, 429)
        assert refused.value.retry_after is not None and refused.value.retry_after > 5

        assert client.usage.get().total_requests == 1  # no error was billed


async def test_a_spend_cap_reached_raises_payment_required(app, tenant: NewTenant, migrated_url: str) -> None:
    async with db_session(migrated_url) as session:
        await set_caps(session, tenant.tenant.name, spend_cap=Decimal(0))
    with serve_in_thread(app) as address:
        async with AsyncClient(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
            deployment = await client.deployments.create("tiny")
            with pytest.raises(PaymentRequiredError) as refused:
                await client.predict(deployment, [POINT])
    _problem_of(refused.value, 402)
    assert refused.value.retry_after is not None
