"""Collapse concurrent identical loads into one: a cache entry expiring under load costs one read, and a model
asked for by many requests at once loads once (the deployment caches, the quota guard, the serving registry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ("SingleFlight",)

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """``await flight.run(key, load)``: while a load for ``key`` is in flight, later callers share its result;
    ``flight.start(key, load)`` starts one (or finds the one in flight) without waiting for it.
    """

    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Future[T]] = {}

    async def run(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        """The result of ``load()``, run once for all concurrent callers with the same ``key``."""
        # shield: one caller's cancellation (a client gone) must not cancel the others' load.
        return await asyncio.shield(self.start(key, load))

    def start(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """The load in flight for ``key``, starting ``load()`` if there is none (a refresh nobody waits for)."""
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(load())
            self._flights[key] = flight
            flight.add_done_callback(lambda _f: self._flights.pop(key, None))
        return flight

    def in_flight(self, key: Hashable) -> asyncio.Future[T] | None:
        """The load in flight for ``key``, or None; awaiting it (shielded) waits for its end without starting one."""
        return self._flights.get(key)

    def keys(self) -> list[Hashable]:
        """The keys of the loads in flight."""
        return list(self._flights)

    def __contains__(self, key: Hashable) -> bool:
        """Whether a load for ``key`` is in flight."""
        return key in self._flights
