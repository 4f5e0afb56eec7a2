"""Background tasks of a running app."""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ("cancel_and_wait",)


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has stopped (its ``finally`` blocks have run)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
