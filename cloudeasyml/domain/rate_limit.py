"""Per-key request rate limits: a token bucket per key, in this process.

Each process enforces the limit on its own (N replicas allow up to N times the rate); a shared limit across
replicas needs a shared store (Redis), which is a later step.
"""

from __future__ import annotations

import math
import time

from cloudeasyml.errors import RateLimitedError

__all__ = ("RateLimiter",)


class RateLimiter:
    """``limit`` requests per minute per key, with bursts of up to ``limit`` requests."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key_id: str, per_minute: int | None) -> None:
        """Take one token from the key's bucket, or raise ``RateLimitedError`` with the seconds until one is back."""
        if not per_minute:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(key_id, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - last) * per_minute / 60)
        if tokens < 1:
            self._buckets[key_id] = (tokens, now)
            wait = math.ceil((1 - tokens) * 60 / per_minute)
            raise RateLimitedError(f"rate limit of {per_minute} requests per minute exceeded", retry_after=wait)
        self._buckets[key_id] = (tokens - 1, now)
