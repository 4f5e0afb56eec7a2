"""The client's retry decisions (``cloudeasyml.client.retry.Attempts``), on a clock of the test's own."""

from __future__ import annotations

import httpx
import pytest

from cloudeasyml.client.retry import Attempts, RetryPolicy, Safety

POLICY = RetryPolicy(max_attempts=3, backoff_seconds=0.5, jitter=False)


def _attempts(safety: Safety) -> Attempts:
    return Attempts(POLICY, safety, clock=lambda: 0.0)


@pytest.mark.parametrize("safety", list(Safety))
def test_429_and_503_are_retried_for_every_call(safety: Safety) -> None:
    assert _attempts(safety).after_answer(503, 2.0) == 2.0
    assert _attempts(safety).after_answer(429, None) == 0.5


def test_a_409_with_retry_after_is_retried_only_for_a_keyed_call() -> None:
    keyed = Safety.KEYED  # predictions and the other calls that carry an Idempotency-Key
    # The server's "this Idempotency-Key's first request still runs" conflict: a keyed call comes back for its answer.
    assert _attempts(keyed).after_answer(409, 1.0) == 1.0
    assert _attempts(Safety.UNSAFE).after_answer(409, 1.0) is None
    assert _attempts(Safety.IDEMPOTENT).after_answer(409, 1.0) is None
    # A 409 without Retry-After (the key reused for another body, a name taken) is final.
    assert _attempts(keyed).after_answer(409, None) is None


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 422, 500, 504])
def test_other_statuses_are_final(status: int) -> None:
    assert _attempts(Safety.KEYED).after_answer(status, 1.0) is None


def test_a_connection_broken_after_sending_is_retried_for_keyed_calls_and_reads_not_other_posts() -> None:
    broken = httpx.ReadError("connection reset")
    assert _attempts(Safety.KEYED).after_error(broken) == 0.5
    assert _attempts(Safety.IDEMPOTENT).after_error(broken) == 0.5
    assert _attempts(Safety.UNSAFE).after_error(broken) is None
    assert _attempts(Safety.UNSAFE).after_error(httpx.ConnectError("refused")) == 0.5  # never sent: safe


def test_attempts_stop_at_the_policys_count() -> None:
    attempts = _attempts(Safety.KEYED)
    waits = []
    while (wait := attempts.after_answer(503, None)) is not None:
        waits.append(wait)
    assert waits == [0.5, 1.0]
