"""The platform's one cache (API keys, unknown key ids, deployments, quota caps, rate-limit buckets): expiring,
bounded, least recently used forgotten first; and the local rate limiter's buckets, dropped once full again."""

from __future__ import annotations

import secrets
import tracemalloc

import pytest

from cloudeasyml.domain.rate_limit import LocalRateLimiter
from cloudeasyml.errors import RateLimitedError
from cloudeasyml.ttl_cache import TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lasts_its_ttl_and_no_longer() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(max_entries=10, ttl_seconds=5.0, clock=clock)
    assert cache.get("sk_a") is None and "sk_a" not in cache
    cache.put("sk_a", 1)
    clock.now += 5.0
    assert cache.get("sk_a") == 1 and "sk_a" in cache
    clock.now += 0.01
    assert cache.get("sk_a") is None and "sk_a" not in cache
    assert cache.stale("sk_a") == 1  # held until replaced or pruned: served on when a refresh fails
    cache.put("sk_b", 2)  # a put prunes the expired entries at the least recently used end
    assert len(cache) == 1 and cache.stale("sk_a") is None


def test_freshness_counts_from_the_read_not_from_the_put() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(max_entries=10, ttl_seconds=5.0, clock=clock)
    read_at = clock.now
    clock.now += 2.0  # a read that took 2 s
    cache.put("t", 1, at=read_at)
    clock.now += 3.0
    assert cache.get("t") == 1
    clock.now += 0.01
    assert cache.get("t") is None


def test_a_put_replaces_and_refreshes() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(max_entries=10, ttl_seconds=5.0, clock=clock)
    cache.put("k", 1)
    clock.now += 4.0
    cache.put("k", 2)
    clock.now += 4.0
    assert cache.get("k") == 2 and len(cache) == 1


def test_discard_and_clear_forget_at_once() -> None:
    cache: TTLCache[str, int] = TTLCache(max_entries=10, ttl_seconds=5.0, clock=Clock())
    cache.put("sk_a", 1)
    cache.put("sk_b", 2)
    cache.discard("sk_a")
    cache.discard("sk_never")
    assert cache.get("sk_a") is None and cache.stale("sk_a") is None and cache.get("sk_b") == 2
    cache.clear()
    assert len(cache) == 0


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: TTLCache[str, bool] = TTLCache(max_entries=3, ttl_seconds=5.0, clock=Clock())
    for key in ("a", "b", "c"):
        cache.put(key, True)
    assert "a" in cache  # used: now the most recent
    cache.put("d", True)
    assert len(cache) == 3
    assert "b" not in cache
    assert {"a", "c", "d"} == {key for key in ("a", "b", "c", "d") if key in cache}


def test_a_stale_look_is_not_a_use() -> None:
    cache: TTLCache[str, bool] = TTLCache(max_entries=2, ttl_seconds=5.0, clock=Clock())
    cache.put("a", True)
    cache.put("b", True)
    assert cache.stale("a")
    cache.put("c", True)
    assert cache.stale("a") is None and cache.stale("b")


def test_a_flood_of_random_ids_stays_within_the_bound() -> None:
    clock = Clock()
    cache: TTLCache[str, bool] = TTLCache(max_entries=1000, ttl_seconds=5.0, clock=clock)
    tracemalloc.start()
    try:
        for _ in range(20_000):
            cache.put("sk_" + secrets.token_hex(8), True)
            clock.now += 0.0001  # every entry is still fresh: only the bound evicts
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(cache) == 1000
    assert held < 1000 * 400  # about 200 bytes an entry; the other 19,000 ids are gone


def test_expired_entries_are_pruned_without_reaching_the_bound() -> None:
    clock = Clock()
    cache: TTLCache[int, int] = TTLCache(max_entries=1000, ttl_seconds=5.0, clock=clock)
    for i in range(100):
        cache.put(i, i)
    clock.now += 6.0
    cache.put(-1, -1)
    assert len(cache) == 1


def test_zero_entries_remembers_nothing() -> None:
    cache: TTLCache[str, bool] = TTLCache(max_entries=0, ttl_seconds=5.0, clock=Clock())
    cache.put("sk_a", True)
    assert "sk_a" not in cache and len(cache) == 0


async def test_the_token_bucket_refills_at_the_limit_rate() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(clock=clock)
    for _ in range(60):
        await limiter.check("k", 60)
    with pytest.raises(RateLimitedError) as refused:
        await limiter.check("k", 60)
    assert refused.value.retry_after == 1
    clock.now += 1.0  # one second at 60/min brings one token back
    await limiter.check("k", 60)
    with pytest.raises(RateLimitedError):
        await limiter.check("k", 60)


async def test_idle_rate_limit_buckets_are_dropped_once_full_again() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(clock=clock)
    for i in range(500):
        await limiter.check(f"sk_{i}", 10)
    assert len(limiter) == 500
    clock.now += 59.0  # not yet full: a bucket that took one of 10 tokens refills in 6 s, but an emptied one in 60
    for _ in range(10):
        await limiter.check("sk_busy", 10)
    assert len(limiter) == 501
    clock.now += 1.01  # the 500 are full again: the next use of any bucket drops them
    await limiter.check("sk_new", 10)
    assert len(limiter) == 2  # sk_busy (still refilling) and sk_new
    with pytest.raises(RateLimitedError):
        await limiter.check("sk_busy", 10)  # its bucket was kept: still empty


async def test_past_max_buckets_the_least_recently_used_is_dropped() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(max_buckets=100, clock=clock)
    await limiter.check("sk_first", 1)
    with pytest.raises(RateLimitedError):
        await limiter.check("sk_first", 1)
    for i in range(1000):
        await limiter.check(f"sk_{i}", 5)
        clock.now += 0.001
    assert len(limiter) == 100
    await limiter.check("sk_first", 1)  # evicted: it starts again from a full bucket, as documented
