"""When the client tries a call again, and how long it waits first: one policy for both clients.

- **429 and 503** are retried for every call: the server refused the request before doing its work (a rate limit,
  a full queue, a model still loading, a database that did not answer), so trying again cannot do it twice. The
  wait is the answer's ``Retry-After`` (seconds, or an HTTP date) when it has one, else exponential backoff with
  jitter. A ``Retry-After`` that would end past the call's time budget (a monthly cap that resets in days) is not
  waited for: the error is raised at once, ``retry_after`` on it. No other status is retried (402, 504 and every
  other 4xx included), except a keyed call's 409 with ``Retry-After``: its ``Idempotency-Key``'s first attempt (one
  that timed out here) still runs on the server, and once it has answered a retry gets its answer replayed.
- **Connection errors.** One where the request was never sent (the connection could not be made, or no pooled
  connection came free) is retried for every call. One where it may have reached the server (a connection
  broken mid-answer, a read timeout) is retried only for idempotent calls (GET, DELETE, PATCH) and for keyed calls
  (predictions, uploads, batch jobs, rollbacks), which carry an ``Idempotency-Key``
  (``RETRY_PREDICTIONS_AFTER_CONNECTION_ERRORS``); never for other POSTs.
- Every call stops after ``RetryPolicy.max_attempts`` attempts or when its next wait would pass
  ``RetryPolicy.max_total_seconds`` since it started, whichever comes first.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import msgspec

__all__ = (
    "RETRY_PREDICTIONS_AFTER_CONNECTION_ERRORS",
    "Attempts",
    "RetryPolicy",
    "Safety",
    "parse_retry_after",
)

RETRY_PREDICTIONS_AFTER_CONNECTION_ERRORS = True
"""The one switch for retrying a prediction (or another keyed call: ``Safety.KEYED``) whose request may have reached
the server.

Every prediction carries an ``Idempotency-Key`` header, the same on each attempt, and the server honours it
(``docs/billing.md``, Idempotency): a repeated request with the same key and body within 24 hours is answered with
the first one's result and not billed again, and one that arrives while the first still runs waits for it. So a
prediction whose connection broke, or whose answer timed out, is tried again without running or billing twice
(tests/integration/test_client_retries.py). Set it False against a server older than that."""

RETRIED_STATUSES = frozenset({429, 503})

_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport errors raised before any byte of the request left: retrying cannot repeat its effect."""
_NEVER_BETTER = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)
"""Transport errors of the client's own making (a URL without http or https, a request it cannot send): the same
every time."""


class Safety(enum.Enum):
    """What repeating a call may do, which decides whether a connection error is retried."""

    IDEMPOTENT = "idempotent"
    """GET, DELETE, and a deployment's PATCH (its body states the result: a repeat changes nothing, and makes no
    revision): doing it twice leaves the same state as once."""
    KEYED = "keyed"
    """A POST that carries an ``Idempotency-Key``, made once per call (a prediction, an upload, a batch job, a
    rollback, promote or abort): the server runs and bills it once however often it is sent and replays its answer
    (see the switch above)."""
    UNSAFE = "unsafe"
    """Any other POST (creating a deployment or a key): never repeated once it may have been received."""


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How hard a client tries. ``RetryPolicy(max_attempts=1)`` turns retries off."""

    max_attempts: int = 4
    """Attempts per call, the first included."""
    backoff_seconds: float = 0.5
    """The first wait without ``Retry-After``; each later one doubles, up to ``max_backoff_seconds``."""
    max_backoff_seconds: float = 8.0
    """The longest wait without ``Retry-After``."""
    max_total_seconds: float = 60.0
    """No wait starts that would end later than this after the call began (the attempts' own time included)."""
    jitter: bool = True
    """Wait a random 50-100 % of the backoff, so that many clients refused together do not return together."""


def parse_retry_after(value: str | None, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


class Attempts:
    """One call's attempts: after each failure, how long to wait before the next, or None to give up."""

    def __init__(self, policy: RetryPolicy, safety: Safety, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._safety = safety
        self._clock = clock
        self._started = clock()
        self.count = 1
        """Attempts made so far (the one running included)."""

    def after_answer(self, status: int, retry_after: float | None) -> float | None:
        """The wait before the next attempt after an error answer, or None: raise it."""
        if status == 409 and retry_after is not None and self._safety is Safety.KEYED:
            return self._next(retry_after)  # its key's first attempt still runs: its answer is replayed once done
        if status not in RETRIED_STATUSES:
            return None
        return self._next(retry_after)

    def after_error(self, error: httpx.TransportError) -> float | None:
        """The wait before the next attempt after a connection error, or None: raise it."""
        if not self._may_repeat(error):
            return None
        return self._next(None)

    def _may_repeat(self, error: httpx.TransportError) -> bool:
        if isinstance(error, _NEVER_BETTER):
            return False
        if isinstance(error, _NOT_SENT) or self._safety is Safety.IDEMPOTENT:
            return True
        return self._safety is Safety.KEYED and RETRY_PREDICTIONS_AFTER_CONNECTION_ERRORS

    def _next(self, retry_after: float | None) -> float | None:
        policy = self._policy
        if self.count >= policy.max_attempts:
            return None
        if retry_after is not None:
            delay = retry_after
        else:
            delay = min(policy.max_backoff_seconds, policy.backoff_seconds * 2 ** (self.count - 1))
            if policy.jitter:
                delay *= random.uniform(0.5, 1.0)  # spreads retries; not a secret
        if self._clock() - self._started + delay > policy.max_total_seconds:
            return None
        self.count += 1
        return delay
