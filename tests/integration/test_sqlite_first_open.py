"""Many connections opening a fresh SQLite file at once, as a server's workers, meter, webhook dispatcher and batch
workers do on first start (and as every test does on its copy of the template database, which is in rollback-journal
mode). The first connection switches the file to WAL, which takes an exclusive lock that SQLite's busy handler does
not wait for; before the switch was retried, about one connection in 500 failed at once with "database is locked".
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import text

from cloudeasyml.db.engine import create_engine

PROCESSES = 3
CONNECTIONS_PER_PROCESS = 4
ROUNDS = 60


async def _write_once(url: str) -> str:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
            await connection.execute(text("INSERT INTO t VALUES (1)"))
        return ""
    except Exception as error:
        return str(error).splitlines()[0]
    finally:
        await engine.dispose()


async def _open_together(url: str) -> list[str]:
    return list(await asyncio.gather(*(_write_once(url) for _ in range(CONNECTIONS_PER_PROCESS))))


def _process(directory: str, barrier: Any, results: Any) -> None:
    """Every round, wait for the other processes, then open that round's fresh file together with them."""
    errors: list[str] = []
    for round_ in range(ROUNDS):
        barrier.wait(timeout=60)
        errors += asyncio.run(_open_together(f"sqlite+aiosqlite:///{directory}/{round_}.db"))
    results.put([error for error in errors if error])


def test_connections_opening_a_fresh_file_together_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    processes = [context.Process(target=_process, args=(str(tmp_path), barrier, results)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    errors = [error for _ in processes for error in results.get(timeout=120)]
    for process in processes:
        process.join(timeout=60)
    assert errors == []
    for round_ in range(ROUNDS):
        with sqlite3.connect(tmp_path / f"{round_}.db") as check:
            assert check.execute("SELECT count(*) FROM t").fetchone()[0] == PROCESSES * CONNECTIONS_PER_PROCESS
            assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        check.close()
