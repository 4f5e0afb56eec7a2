"""Per-key request rate limits: a token bucket per key (``rateLimitPerMinute`` tokens, refilled at that rate).

``LocalRateLimiter`` keeps the buckets in this process: N processes allow up to N times the rate. A bucket left
alone for a minute is full again, the same as no bucket, so it is dropped; at most ``max_buckets`` are kept.
``RedisRateLimiter`` keeps them in Redis, updated by one atomic script per request on Redis's own clock, so every
process using that Redis shares one limit. If Redis cannot be reached, requests pass (with a warning in the
log): a rate limiter must not take the API down with it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from cloudeasyml.errors import RateLimitedError

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ("LocalRateLimiter", "RateLimiter", "RedisRateLimiter")

log = logging.getLogger(__name__)


class RateLimiter(Protocol):
    """Takes one token from a key's bucket per request."""

    async def check(self, key_id: str, per_minute: int) -> None:
        """Take a token, or raise ``RateLimitedError`` with the seconds until one is back."""


def _refused(per_minute: int, wait_seconds: float) -> RateLimitedError:
    return RateLimitedError(
        f"rate limit of {per_minute} requests per minute exceeded", retry_after=max(1, math.ceil(wait_seconds))
    )


_REFILL_SECONDS = 60.0
"""A bucket holds ``per_minute`` tokens and gains ``per_minute`` a minute: untouched this long, any bucket is full."""


class LocalRateLimiter:
    """Buckets in this process, bounded: a bucket untouched for a minute is full, the same as a missing one, and is
    dropped; past ``max_buckets`` keys used within a minute the least recently used bucket is dropped too (that key
    starts again from a full bucket: more keys than that active at once loosen the limit of the least active).
    """

    def __init__(self, *, max_buckets: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_buckets = max(1, max_buckets)
        self._clock = clock
        # key id -> (tokens, when counted), least recently used first: the policy of ``cloudeasyml.ttl_cache``
        # inlined, because every check writes its bucket and a TTLCache get + put would double the check's cost.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def check(self, key_id: str, per_minute: int) -> None:
        """Take one token from the key's bucket, or raise ``RateLimitedError``."""
        now = self._clock()
        buckets = self._buckets
        held = len(buckets)
        tokens, last = buckets.get(key_id) or (float(per_minute), now)
        tokens = min(float(per_minute), tokens + (now - last) * per_minute / 60)
        refused = tokens < 1
        buckets[key_id] = (tokens if refused else tokens - 1, now)
        buckets.move_to_end(key_id)
        if len(buckets) > held:  # a new bucket: drop those full again, and the least recently used past the bound
            while len(buckets) > self._max_buckets or now - next(iter(buckets.values()))[1] >= _REFILL_SECONDS:
                buckets.popitem(last=False)
        if refused:
            raise _refused(per_minute, (1 - tokens) * 60 / per_minute)

    def __len__(self) -> int:
        """Buckets held (those full again included until a new bucket prunes them)."""
        return len(self._buckets)


_TOKEN_BUCKET = """
local capacity = tonumber(ARGV[1])
local per_ms = capacity / 60000
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * per_ms)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], 61000)
return wait
"""
"""One bucket update, atomic in Redis: returns 0 when a token was taken, else the milliseconds until one is."""


class RedisRateLimiter:
    """Buckets in Redis (``cloudeasyml:rate:<key id>``), shared by every process that uses it."""

    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_TOKEN_BUCKET)
        self._warned_at = -math.inf

    async def check(self, key_id: str, per_minute: int) -> None:
        """Take one token from the key's shared bucket, or raise ``RateLimitedError``."""
        try:
            wait_ms = int(await self._script(keys=[f"cloudeasyml:rate:{key_id}"], args=[per_minute]))
        except Exception as exc:  # noqa: BLE001 - Redis down: let the request through, say so now and then
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("rate limits are not enforced: Redis is unreachable (%s)", exc)
            return
        if wait_ms:
            raise _refused(per_minute, wait_ms / 1000)
