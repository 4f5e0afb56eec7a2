"""One app object served twice, one server after the other (each on its own event loop), as a test harness or an
embedded server restarted in the same process does: the second server's background work (the usage writer, the
batch workers) runs as the first one's did, and both shut down cleanly.

It once did not: asyncio's events and locks bind to the first loop that waits on them, and the services made them
once, so the second server's batch workers died at their first idle wait and its usage writer at its first."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from sqlalchemy import func, select

from cloudeasyml.app import create_app
from cloudeasyml.client import Client
from cloudeasyml.db.models import UsageRecord
from cloudeasyml.domain.tenants import NewTenant
from cloudeasyml.settings import BatchSettings, Settings
from tests.conftest import db_session
from tests.support.live_server import serve_in_thread

POINT = {"x": 1.0, "y": 2.0}
TIMEOUT = 60.0


@pytest.fixture(name="working_app")
def fx_working_app(settings: Settings, plugin_manager):  # type: ignore[no-untyped-def]
    """The app with one batch worker of its own that looks for work often."""
    batch = BatchSettings(chunk_lines=2, workers=1, poll_interval_seconds=0.05, idle_poll_max_seconds=0.2)
    return create_app(msgspec.structs.replace(settings, batch=batch), plugin_manager)


async def _online_usage_rows(url: str) -> int:
    async with db_session(url) as session:
        return int((await session.execute(select(func.count()).where(UsageRecord.kind == "online"))).scalar_one())


def _wait_for_usage(url: str, rows: int, within: float = 15.0) -> int:
    """The online usage rows in the database once there are ``rows`` of them, or after ``within`` seconds; nothing here
    reads usage through the app, which would flush it: only the meter's background writer puts it there."""
    deadline = time.monotonic() + within
    while (seen := asyncio.run(_online_usage_rows(url))) < rows and time.monotonic() < deadline:
        time.sleep(0.1)
    return seen


def test_the_second_server_of_one_app_meters_and_runs_batches(
    working_app, tenant: NewTenant, migrated_url: str
) -> None:
    for serving in (1, 2):
        with (
            serve_in_thread(working_app) as address,
            Client(f"http://{address}", tenant.key, timeout=TIMEOUT) as client,
        ):
            deployment = client.deployments.create("tiny", name=f"served-{serving}")
            assert len(client.predict(deployment, [POINT]).predictions) == 1
            assert _wait_for_usage(migrated_url, serving) == serving  # the writer runs on this server's loop

            rows = [{"input": {"x": float(i), "y": 1.0}, "customId": f"row-{i}"} for i in range(5)]
            job = client.batches.create(deployment, client.files.upload(rows))
            done = client.batches.wait(job, poll=0.1, timeout=60)  # the worker runs on this server's loop
            assert done.status == "completed" and done.counts.completed == 5
        # Leaving the block checked that this server's lifespan shut down without an error.
