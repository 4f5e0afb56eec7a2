"""What ``Idempotency-Key`` costs a prediction: the same ``POST /predict`` in-process over ASGI, one at a time,
without a key, with a new key each time (a claim and a stored answer: two small transactions), and replayed (one
read). Modes take turns in blocks, so that a busy machine slows them alike; medians in milliseconds.

    python -m bench.idempotency_cost                      # SQLite in a temporary directory
    python -m bench.idempotency_cost --database postgresql+asyncpg://user@host/bench --requests 300  # scratch DB
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from litestar.testing import AsyncTestClient

from cloudeasyml.app import create_app
from cloudeasyml.cli.db import upgrade_database
from cloudeasyml.db.engine import one_transaction
from cloudeasyml.domain.tenants import create_tenant
from cloudeasyml.plugins.manager import get_plugin_manager
from cloudeasyml.settings import DatabaseSettings, Settings


async def main(url: str, requests: int, blocks: int) -> None:
    """Time the three modes, ``requests`` each, in ``blocks`` turns."""
    async with one_transaction(url) as session:
        tenant = await create_tenant(session, f"bench-{uuid.uuid4().hex[:8]}", "bench@example.com")
    auth = {"Authorization": f"Bearer {tenant.key}"}
    app = create_app(Settings(database=DatabaseSettings(url=url), home=tempfile.mkdtemp()), get_plugin_manager())
    async with AsyncTestClient(app=app) as client:
        created = await client.post("/deployments", json={"modelName": "housing"}, headers=auth)
        assert created.status_code == 201, created.text
        example = (await client.get("/models/housing", headers=auth)).json()["exampleInput"]
        payload = {"deploymentId": created.json()["id"], "inputs": [example]}
        for _ in range(20):  # warm: the model loaded, caches filled
            assert (await client.post("/predict", json=payload, headers=auth)).status_code == 200
        replayed = {**auth, "Idempotency-Key": "replayed"}
        await client.post("/predict", json=payload, headers=replayed)
        times: dict[str, list[float]] = {"no key": [], "a new key each time": [], "replayed": []}
        for _ in range(blocks):
            for mode, samples in times.items():
                for _ in range(requests // blocks):
                    headers = {
                        "no key": auth,
                        "a new key each time": {**auth, "Idempotency-Key": uuid.uuid4().hex},
                        "replayed": replayed,
                    }[mode]
                    started = time.perf_counter()
                    response = await client.post("/predict", json=payload, headers=headers)
                    samples.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, response.text
    print(f"POST /predict (housing), {url.split('://')[0]}, {requests} each; ms (median, p90):")
    for mode, samples in times.items():
        deciles = statistics.quantiles(samples, n=10)
        print(f"  {mode:22} {statistics.median(samples):7.2f} {deciles[8]:7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", default="", help="a database URL (default: a new SQLite file)")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--blocks", type=int, default=6)
    args = parser.parse_args()
    database = args.database or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    upgrade_database(database)
    asyncio.run(main(database, args.requests, args.blocks))
