"""How long a refused request takes: a known key id with a wrong secret, an unknown id repeated, and a new unknown
id every time. Run from the repository root: ``python -m bench.key_lookup [requests]`` (default 1500 of each).

The real app over ASGI on a throw-away SQLite file. The first two kinds are interleaved, so background load on
the machine affects them alike; new unknown ids are measured afterwards, on their own, because the request that
follows a database query is slowed by its clean-up and interleaving would bias whichever kind comes next.
Medians in milliseconds. Without the negative cache, a repeated unknown id cost one database query per request,
which made it slower than a known id and so told which ids exist.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from litestar.testing import AsyncTestClient

from cloudeasyml.app import create_app
from cloudeasyml.cli.db import upgrade_database
from cloudeasyml.db.engine import one_transaction
from cloudeasyml.domain.key_format import generate_key
from cloudeasyml.domain.tenants import create_tenant
from cloudeasyml.plugins.manager import get_plugin_manager
from cloudeasyml.settings import DatabaseSettings, RuntimeSettings, Settings


def _new_token() -> str:
    key_id, secret = generate_key()
    return f"{key_id}.{secret}"


async def _measure(directory: Path, url: str, requests: int) -> dict[str, float]:
    async with one_transaction(url) as session:
        tenant = await create_tenant(session, "bench", "owner@example.com")
    settings = Settings(
        database=DatabaseSettings(url=url),
        runtime=RuntimeSettings(artifact_dir=str(directory / "artifacts")),
        home=str(directory / "home"),
    )
    unknown = _new_token()
    phases: list[dict[str, Callable[[], str]]] = [
        {"known id, wrong secret": lambda: f"{tenant.key_id}.{'x' * 43}", "unknown id, repeated": lambda: unknown},
        {"unknown id, new each time": _new_token},
    ]
    times: dict[str, list[float]] = {kind: [] for kinds in phases for kind in kinds}
    async with AsyncTestClient(app=create_app(settings, get_plugin_manager(load_entrypoints=False))) as client:
        for kinds in phases:
            for _ in range(requests):
                for kind, token in kinds.items():
                    headers = {"Authorization": f"Bearer {token()}"}
                    started = time.perf_counter()
                    response = await client.get("/models", headers=headers)
                    times[kind].append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 401, response.text
    return {kind: statistics.median(values) for kind, values in times.items()}


def main(argv: list[str]) -> int:
    """Print the median time of each kind of refusal."""
    requests = int(argv[0]) if argv else 1500
    directory = Path(tempfile.mkdtemp(prefix="key-lookup-"))
    url = f"sqlite+aiosqlite:///{directory / 'bench.db'}"
    upgrade_database(url)  # before the event loop: Alembic's env runs its own
    for kind, median in asyncio.run(_measure(directory, url, requests)).items():
        print(f"{kind:<28} median {median:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
