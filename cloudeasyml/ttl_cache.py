"""The platform's one in-process cache: entries expire after a time to live and at most ``max_entries`` are held,
the least recently used going first. Verified API keys, unknown key ids, deployments and tenants' quota caps each live
in one, so the caches the request path fills are bounded the same way (the local rate limiter's buckets follow the
same policy, inlined: see ``cloudeasyml.domain.rate_limit``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ("TTLCache",)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """``key → value`` for ``ttl_seconds`` after ``put``, at most ``max_entries`` of them (``max_entries`` 0 holds
    nothing).

    A hit costs a dictionary lookup, a clock read and a move to the recent end of the order. An expired entry is
    not returned by ``get`` but stays until it is replaced, discarded, evicted, or pruned: a ``put`` of a new key
    drops the expired entries at the least recently used end and, past ``max_entries``, the least recently used
    (only a new key grows the cache). ``stale`` returns a held entry whatever its age (to serve on when a refresh
    fails).

    Not thread-safe: made for one event loop.
    """

    __slots__ = ("_clock", "_entries", "_max_entries", "_ttl")

    def __init__(self, *, ttl_seconds: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._max_entries = max(0, max_entries)
        self._clock = clock
        # key -> (value, expiry on the clock). Ordered least to most recently used.
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value put under ``key`` less than ``ttl_seconds`` ago (it becomes the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is None or self._clock() > entry[1]:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def __contains__(self, key: K) -> bool:
        """Whether ``get(key)`` would return a value (it counts as a use)."""
        return self.get(key) is not None

    def stale(self, key: K) -> V | None:
        """The value held under ``key`` whatever its age (not counted as a use), or None."""
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: K, value: V, *, at: float | None = None) -> None:
        """Hold ``value`` under ``key`` as the most recently used, fresh for ``ttl_seconds`` from ``at`` (the clock's
        reading when the value was read at its source; default: now). A new key first drops the expired entries at
        the least recently used end and, past ``max_entries``, the least recently used.
        """
        if self._max_entries == 0:
            return
        entries = self._entries
        held = len(entries)
        start = self._clock() if at is None else at
        entries[key] = (value, start + self._ttl)
        entries.move_to_end(key)
        if len(entries) > held:  # only a new key grows the cache: only then is there anything to prune
            self._prune(start)

    def _prune(self, now: float) -> None:
        entries = self._entries
        # Amortised O(1): an entry is pruned at most once, and the loop stops at the first live one. ``now`` may be a
        # reading from before the put (``at``): pruning on it only keeps an entry a little longer.
        while len(entries) > self._max_entries or now > next(iter(entries.values()))[1]:
            entries.popitem(last=False)
            if not entries:
                return

    def discard(self, key: K) -> None:
        """Forget ``key`` if held."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()

    def __len__(self) -> int:
        """Entries held, expired ones not yet pruned included."""
        return len(self._entries)
