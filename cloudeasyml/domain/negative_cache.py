"""A bounded, expiring set of keys recently found not to exist (API key ids nobody issued)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ("NegativeCache",)


class NegativeCache:
    """Remembers a key for ``ttl_seconds`` after ``add``, and at most ``max_entries`` keys: past that the least
    recently used is forgotten, so a flood of distinct keys costs bounded memory (each entry is a short string and
    a float in an ordered dict, about 200 bytes). ``max_entries`` 0 remembers nothing.
    """

    def __init__(self, *, max_entries: int, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_entries = max(0, max_entries)
        self._ttl = ttl_seconds
        self._clock = clock
        self._added: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        """Whether ``key`` was added less than ``ttl_seconds`` ago (and not evicted or discarded since)."""
        added = self._added.get(key)
        if added is None:
            return False
        if self._clock() - added > self._ttl:
            del self._added[key]
            return False
        self._added.move_to_end(key)
        return True

    def __len__(self) -> int:
        """Entries held (expired ones included until they are looked up or evicted)."""
        return len(self._added)

    def add(self, key: str) -> None:
        """Remember ``key`` from now, evicting the least recently used entries past ``max_entries``."""
        if self._max_entries == 0:
            return
        self._added[key] = self._clock()
        self._added.move_to_end(key)
        while len(self._added) > self._max_entries:
            self._added.popitem(last=False)

    def discard(self, key: str) -> None:
        """Forget ``key`` if held."""
        self._added.pop(key, None)
