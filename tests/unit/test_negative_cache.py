"""The authenticator's cache of unknown key ids: expiring, bounded, least recently used forgotten first."""

from __future__ import annotations

import secrets
import tracemalloc

from cloudeasyml.domain.negative_cache import NegativeCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lasts_its_ttl_and_no_longer() -> None:
    clock = Clock()
    cache = NegativeCache(max_entries=10, ttl_seconds=5.0, clock=clock)
    assert "sk_a" not in cache
    cache.add("sk_a")
    clock.now += 5.0
    assert "sk_a" in cache
    clock.now += 0.01
    assert "sk_a" not in cache
    assert len(cache) == 0  # an expired entry found on lookup is dropped


def test_discard_forgets_at_once() -> None:
    cache = NegativeCache(max_entries=10, ttl_seconds=5.0, clock=Clock())
    cache.add("sk_a")
    cache.discard("sk_a")
    cache.discard("sk_never")
    assert "sk_a" not in cache


def test_the_least_recently_used_entry_goes_first() -> None:
    cache = NegativeCache(max_entries=3, ttl_seconds=5.0, clock=Clock())
    for key in ("a", "b", "c"):
        cache.add(key)
    assert "a" in cache  # used: now the most recent
    cache.add("d")
    assert len(cache) == 3
    assert "b" not in cache
    assert {"a", "c", "d"} == {key for key in ("a", "b", "c", "d") if key in cache}


def test_a_flood_of_random_ids_stays_within_the_bound() -> None:
    clock = Clock()
    cache = NegativeCache(max_entries=1000, ttl_seconds=5.0, clock=clock)
    tracemalloc.start()
    try:
        for _ in range(20_000):
            cache.add("sk_" + secrets.token_hex(8))
            clock.now += 0.0001  # every entry is still fresh: only the bound evicts
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(cache) == 1000
    assert held < 1000 * 400  # about 200 bytes an entry; the other 19,000 ids are gone


def test_zero_entries_remembers_nothing() -> None:
    cache = NegativeCache(max_entries=0, ttl_seconds=5.0, clock=Clock())
    cache.add("sk_a")
    assert "sk_a" not in cache and len(cache) == 0
