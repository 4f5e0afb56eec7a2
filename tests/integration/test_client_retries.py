"""The Python client's retries against real servers that fail first: the real app behind a front that answers 503 or
429 (with ``Retry-After``) before letting requests through, and behind a TCP proxy that breaks connections."""

from __future__ import annotations

import time
import uuid

import pytest

from cloudeasyml.client import (
    AsyncClient,
    Client,
    ConflictError,
    ConnectionFailedError,
    NotFoundError,
    PaymentRequiredError,
    RetryPolicy,
    UnavailableError,
)
from cloudeasyml.client import retry as client_retry
from cloudeasyml.domain.tenants import NewTenant
from tests.support.flaky_front import DroppingProxy, RefusingFront
from tests.support.live_server import serve_in_thread

POINT = {"x": 1.0, "y": 2.0}
TIMEOUT = 60.0


def _predictions(method: str, path: str) -> bool:
    return method == "POST" and path.endswith("/predict")


def test_a_prediction_refused_with_503_is_retried_after_retry_after_with_one_idempotency_key(
    app, tenant: NewTenant
) -> None:
    front = RefusingFront(app, status=503, times=2, retry_after="1", matches=_predictions)
    with serve_in_thread(front) as address, Client(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
        deployment = client.deployments.create("tiny")
        started = time.monotonic()
        answer = client.predict(deployment, [POINT])
        waited = time.monotonic() - started
        assert len(answer.predictions) == 1
        assert client.usage.get().total_requests == 1  # refused attempts are not billed
    attempts = front.matching()
    assert len(attempts) == 3
    assert waited >= 2.0  # Retry-After: 1, twice
    keys = {a.headers["idempotency-key"] for a in attempts}
    assert len(keys) == 1 and len(keys.pop()) == 32
    # One kept-alive connection served every request (retries included).
    assert len({s.client_port for s in front.seen if s.path != "/health"}) == 1


async def test_the_async_client_retries_429_then_succeeds(app, tenant: NewTenant) -> None:
    front = RefusingFront(app, status=429, times=2, retry_after="0", matches=lambda m, p: p == "/models")
    with serve_in_thread(front) as address:
        async with AsyncClient(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
            assert "tiny" in {m.name for m in await client.models.list()}
    assert len(front.matching()) == 3


def test_retries_stop_after_max_attempts_and_raise_the_last_answer(app, tenant: NewTenant) -> None:
    front = RefusingFront(app, status=503, times=10, retry_after="0", matches=lambda m, p: p == "/models")
    policy = RetryPolicy(max_attempts=3)
    with serve_in_thread(front) as address, Client(f"http://{address}", tenant.key, retry=policy) as client:
        with pytest.raises(UnavailableError) as refused:
            client.models.list()
    assert len(front.matching()) == 3
    assert refused.value.status == 503 and refused.value.detail == "refused on purpose"


def test_without_retry_after_the_client_backs_off_exponentially(app, tenant: NewTenant) -> None:
    front = RefusingFront(app, status=503, times=3, retry_after=None, matches=lambda m, p: p == "/models")
    policy = RetryPolicy(backoff_seconds=0.2, jitter=False)
    with serve_in_thread(front) as address, Client(f"http://{address}", tenant.key, retry=policy) as client:
        started = time.monotonic()
        client.models.list()
        waited = time.monotonic() - started
    assert len(front.matching()) == 4
    assert waited >= 0.2 + 0.4 + 0.8


async def test_a_retry_after_past_the_time_budget_is_raised_at_once(app, tenant: NewTenant) -> None:
    front = RefusingFront(app, status=503, times=1, retry_after="3600", matches=lambda m, p: p == "/models")
    with serve_in_thread(front) as address:
        async with AsyncClient(f"http://{address}", tenant.key) as client:
            started = time.monotonic()
            with pytest.raises(UnavailableError) as refused:
                await client.models.list()
            assert time.monotonic() - started < 10  # not an hour
    assert refused.value.retry_after == 3600 and len(front.matching()) == 1


@pytest.mark.parametrize(
    ("status", "error"), [(402, PaymentRequiredError), (409, ConflictError), (504, UnavailableError)]
)
def test_no_status_but_429_and_503_is_retried(app, tenant: NewTenant, status: int, error: type[Exception]) -> None:
    front = RefusingFront(app, status=status, times=5, retry_after="0", matches=lambda m, p: p == "/models")
    with serve_in_thread(front) as address, Client(f"http://{address}", tenant.key) as client:
        with pytest.raises(error):
            client.models.list()
    assert len(front.matching()) == 1


def test_the_real_apps_4xx_answers_are_not_retried(app, tenant: NewTenant) -> None:
    front = RefusingFront(app, times=0)
    with serve_in_thread(front) as address, Client(f"http://{address}", tenant.key, timeout=TIMEOUT) as client:
        before = len(front.seen)
        with pytest.raises(NotFoundError):
            client.deployments.get(uuid.uuid4())
        client.deployments.create("tiny", name="once")
        with pytest.raises(ConflictError):
            client.deployments.create("tiny", name="once")
    assert [s.method for s in front.seen[before:]] == ["GET", "POST", "POST"]


def test_a_broken_connection_is_retried_for_reads_deletes_and_predictions_never_billed_twice(
    app, tenant: NewTenant
) -> None:
    assert client_retry.RETRY_PREDICTIONS_AFTER_CONNECTION_ERRORS is True  # the server honours Idempotency-Key
    with serve_in_thread(app) as address:
        with Client(f"http://{address}", tenant.key, timeout=TIMEOUT) as direct:
            deployment = direct.deployments.create("tiny")
            doomed = direct.deployments.create("tiny")
        proxy = DroppingProxy(address, drops=1)
        # A connection per request: the proxy drops connections, and each request should get its turn.
        one_each = {"Connection": "close"}
        with (
            proxy.running() as proxied,
            Client(f"http://{proxied}", tenant.key, timeout=TIMEOUT, headers=one_each) as client,
        ):
            assert client.deployments.get(deployment).id == deployment.id  # GET: dropped once, then answered
            assert proxy.dropped[0].startswith(b"GET /deployments/")

            proxy.drops = 1
            assert len(client.predict(deployment, [POINT]).predictions) == 1  # dropped once, then answered
            assert len(proxy.dropped) == 2 and proxy.dropped[1].startswith(b"POST /predict")
            assert client.usage.get().total_requests == 1

            proxy.drops = 1
            client.deployments.delete(doomed)  # DELETE: dropped once, then done
            assert proxy.dropped[2].startswith(b"DELETE /deployments/")
            assert [d.id for d in client.deployments.list()] == [deployment.id]

            proxy.drops = 1
            with pytest.raises(ConnectionFailedError) as broken:  # any other POST: never sent twice
                client.keys.create("once")
            assert broken.value.status is None
            assert proxy.dropped[3].startswith(b"POST /api-keys")


def test_a_timed_out_prediction_is_retried_with_its_key_and_billed_once(app, tenant: NewTenant) -> None:
    with serve_in_thread(app) as address, Client(f"http://{address}", tenant.key, timeout=TIMEOUT) as setup:
        deployment = setup.deployments.create("tiny", config={"eagerLoad": True})
    front = RefusingFront(app, times=1, stall_seconds=1.5, matches=lambda m, p: p in ("/models", "/predict"))
    with serve_in_thread(front) as address, Client(f"http://{address}", tenant.key, timeout=0.5) as client:
        assert "tiny" in {m.name for m in client.models.list()}  # the first GET timed out; the retry was answered
        assert [s.path for s in front.matching()] == ["/models", "/models"]

        # One prediction first, without a timeout to speak of: the server may still be loading the model (eagerLoad
        # loads it in the background at start), and the retry below must not time out on a load as well (seen in CI
        # before loads at start: a 0.8 s load on the first prediction, three attempts).
        with Client(f"http://{address}", tenant.key, timeout=TIMEOUT) as warming:
            warming.predict(deployment, [POINT])
        warmed = len(front.matching())
        front.times = 1
        answer = client.predict(deployment, [POINT], timeout=0.5)  # the first attempt timed out; the retry answered
        assert len(answer.predictions) == 1
        time.sleep(2.0)  # the server gets the attempt the client gave up on: its key's answer is replayed
        attempts = [s for s in front.matching()[warmed:] if s.path == "/predict"]
        # Two attempts, or more on a machine slow enough that a retry times out too (a retry that finds the first
        # still running gets 409 with Retry-After and tries again): every one with the same key, billed once.
        assert len(attempts) >= 2
        assert len({s.headers["idempotency-key"] for s in attempts}) == 1
        assert client.usage.get().total_requests == 2  # the warming prediction, and this one once


def test_a_connection_never_made_is_retried_for_every_call() -> None:
    # Nothing listens on the port: each attempt fails before sending, so even a POST is tried max_attempts times.
    policy = RetryPolicy(max_attempts=3, backoff_seconds=0.1, jitter=False)
    with DroppingProxy("127.0.0.1:9", drops=0).running() as address:
        pass  # a port that was just free and is now closed
    with Client(f"http://{address}", "sk_unused.key", retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(ConnectionFailedError) as refused:
            client.deployments.create("tiny")
        waited = time.monotonic() - started
    assert "ConnectError" in str(refused.value)
    assert waited >= 0.1 + 0.2  # two waits: three attempts
