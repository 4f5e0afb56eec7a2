"""What one server process changes and every other must drop from its caches at once, told through Redis
publish/subscribe.

Each process caches verified keys and deployment lookups for ``server.key_cache_seconds``, and keeps deployments
loaded. A change made through one process takes effect there at once; with Redis it is also published, and every
subscribed process applies it within milliseconds instead of when its cache expires:

- ``cloudeasyml:revoked-keys`` carries a revoked key's id: the key is dropped from the key cache;
- ``cloudeasyml:deleted-deployments`` carries ``<tenant id> <deployment id> <name>``: the deployment is dropped
  from the lookup cache, and drained and unloaded if it was loaded (other processes would otherwise go on
  serving, and billing, a deleted deployment until their cache expired);
- ``cloudeasyml:changed-deployments`` carries ``<tenant id> <deployment id> <plan> <name>``: the deployment has a new
  revision; each process reads it, warms its units if the deployment is loaded there, serves it and drains the
  old units (``domain.rollout``);
- ``cloudeasyml:changed-plans``: a stored plan changed (``/plans``); each process reads the plans again (prices,
  rate limits and limits by plan are cached from them).

A lost connection is retried every second; meanwhile the caches' expiry still bounds how long a change takes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from cloudeasyml.background import cancel_and_wait

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ("CHANGED_DEPLOYMENTS", "CHANGED_PLANS", "DELETED_DEPLOYMENTS", "REVOKED_KEYS", "Broadcast")

log = logging.getLogger(__name__)

REVOKED_KEYS = "cloudeasyml:revoked-keys"
DELETED_DEPLOYMENTS = "cloudeasyml:deleted-deployments"
CHANGED_DEPLOYMENTS = "cloudeasyml:changed-deployments"
CHANGED_PLANS = "cloudeasyml:changed-plans"
RETRY_SECONDS = 1.0


class Broadcast:
    """Publishes messages on channels, and calls ``handlers[channel](message)`` for every message published on
    one of them by any process (this one included: handlers must be idempotent).
    """

    def __init__(self, redis: Redis, handlers: Mapping[str, Callable[[str], None]]) -> None:
        self._redis = redis
        self._handlers = dict(handlers)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Subscribe in the background; returns once subscribed (or after a second if Redis does not answer)."""
        if self._task is None:
            self._subscribed = asyncio.Event()  # a fresh one per start: an Event binds to the loop that waits on it
            self._task = asyncio.get_running_loop().create_task(self._listen())
            try:
                await asyncio.wait_for(self._subscribed.wait(), timeout=RETRY_SECONDS)
            except TimeoutError:
                log.warning("not yet subscribed to cache invalidations in Redis; retrying in the background")

    async def stop(self) -> None:
        """Unsubscribe."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def publish(self, channel: str, message: str) -> None:
        """Tell every process (this one has applied the change already)."""
        try:
            await self._redis.publish(channel, message)
        except Exception as exc:  # noqa: BLE001 - the change itself is stored; the caches expire anyway
            log.warning("could not publish %r on %s: %s", message, channel, exc)

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(*self._handlers)
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self._dispatch(_text(message["channel"]), _text(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep listening through a Redis restart
                self._subscribed.clear()
                log.warning("cache invalidations from Redis interrupted (%s); retrying", exc)
                await asyncio.sleep(RETRY_SECONDS)

    def _dispatch(self, channel: str, message: str) -> None:
        handler = self._handlers.get(channel)
        if handler is None:
            return
        try:
            handler(message)
        except Exception:  # a malformed message must not end the subscription
            log.exception("could not apply %r from %s", message, channel)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
