"""Revoked API keys, told to every server process through Redis publish/subscribe.

Each process caches verified keys for ``server.key_cache_seconds``. Revoking a key drops it from the revoking
process's cache at once; with Redis, the key id is also published on ``cloudeasyml:revoked-keys`` and every
subscribed process drops it too, so the key stops working everywhere within milliseconds rather than seconds.
A lost connection is retried every second; meanwhile the cache's expiry still bounds how long a revoked key
works.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from cloudeasyml.background import cancel_and_wait

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ("CHANNEL", "RevocationBroadcast")

log = logging.getLogger(__name__)

CHANNEL = "cloudeasyml:revoked-keys"
RETRY_SECONDS = 1.0


class RevocationBroadcast:
    """Publishes revoked key ids, and calls ``on_revoked`` for every one published by any process."""

    def __init__(self, redis: Redis, on_revoked: Callable[[str], None]) -> None:
        self._redis = redis
        self._on_revoked = on_revoked
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Subscribe in the background; returns once subscribed (or after a second if Redis does not answer)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen())
            try:
                await asyncio.wait_for(self._subscribed.wait(), timeout=RETRY_SECONDS)
            except TimeoutError:
                log.warning("not yet subscribed to key revocations in Redis; retrying in the background")

    async def stop(self) -> None:
        """Unsubscribe."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def publish(self, key_id: str) -> None:
        """Tell every process that ``key_id`` is revoked (this one has dropped it already)."""
        try:
            await self._redis.publish(CHANNEL, key_id)
        except Exception as exc:  # noqa: BLE001 - the revocation itself is stored; the caches expire anyway
            log.warning("could not publish the revocation of key %s: %s", key_id, exc)

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            data = message["data"]
                            self._on_revoked(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep listening through a Redis restart
                self._subscribed.clear()
                log.warning("key revocations from Redis interrupted (%s); retrying", exc)
                await asyncio.sleep(RETRY_SECONDS)
