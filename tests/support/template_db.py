"""Migrated databases without running Alembic for each test: the migrations run once per test run into a template,
and every test gets a copy of it (a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on PostgreSQL).

tests/integration/test_migrations.py (and the readiness test that downgrades) still run Alembic for real; the
template is built with the very code they check (``upgrade_database``), so a copy is what ``cloudeasyml db upgrade``
would have made.
"""

from __future__ import annotations

import asyncio
import atexit
import queue
import shutil
import sqlite3
import tempfile
import threading
import uuid
from pathlib import Path

import asyncpg

from cloudeasyml.cli.db import upgrade_database

__all__ = ("TEMPLATES", "TemplateDatabases", "plain_dsn")


def plain_dsn(url: str) -> str:
    """A SQLAlchemy ``postgresql+asyncpg://`` URL as asyncpg takes it."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _admin(url: str, *statements: str) -> None:
    connection = await asyncpg.connect(plain_dsn(url))
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


class TemplateDatabases:
    """The run's migrated templates, each built on first use; ``close()`` removes them (also at exit)."""

    def __init__(self, spares: int = 2) -> None:
        self._lock = threading.Lock()
        self._sqlite: Path | None = None
        self._postgres: tuple[str, str] | None = None  # (server URL to administer from, template name)
        # PostgreSQL copies of the template made ahead of need by one thread: the server's copy (about half a
        # second) then overlaps the test before instead of delaying the next one.
        self._spares: queue.Queue[str] = queue.Queue(maxsize=spares)
        self._copier: threading.Thread | None = None
        self._closing = threading.Event()
        atexit.register(self.close)

    def sqlite(self, path: Path) -> str:
        """Copy the migrated SQLite template to ``path``; returns the URL of the copy."""
        shutil.copyfile(self._sqlite_template(), path)
        return f"sqlite+aiosqlite:///{path}"

    def postgres(self, server_url: str) -> str:
        """A new database on ``server_url``'s server, a copy of the migrated template; returns its URL (the caller
        drops it)."""
        self._postgres_template(server_url)
        while True:
            try:
                return _database_url(server_url, self._spares.get(timeout=1))
            except queue.Empty:
                assert self._copier is not None and self._copier.is_alive(), "the template copier stopped"

    def close(self) -> None:
        """Remove the templates and the unused copies (idempotent)."""
        self._closing.set()
        if self._copier is not None:
            self._copier.join(timeout=60)
        with self._lock:
            if self._sqlite is not None:
                shutil.rmtree(self._sqlite.parent, ignore_errors=True)
                self._sqlite = None
            if self._postgres is not None:
                server_url, template = self._postgres
                self._postgres = None
                unused = []
                while not self._spares.empty():
                    unused.append(self._spares.get_nowait())
                drops = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in (*unused, template)]
                asyncio.run(_admin(server_url, *drops))

    def _copy_ahead(self, server_url: str, template: str) -> None:
        """Keep the queue of spare copies full until ``close()``."""
        while not self._closing.is_set():
            name = f"test_{uuid.uuid4().hex[:12]}"
            asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
            while True:
                try:
                    self._spares.put(name, timeout=0.5)
                    break
                except queue.Full:
                    if self._closing.is_set():
                        asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                        return

    def _sqlite_template(self) -> Path:
        with self._lock:
            if self._sqlite is None:
                path = Path(tempfile.mkdtemp(prefix="cloudeasyml-template-")) / "template.db"
                upgrade_database(f"sqlite+aiosqlite:///{path}")
                # The engine leaves the file in WAL mode; back to a rollback journal, so that the one file holds
                # everything and a plain copy is a whole database (the app's engine turns WAL on again).
                with sqlite3.connect(path) as connection:
                    connection.execute("PRAGMA journal_mode=DELETE")
                connection.close()
                self._sqlite = path
            return self._sqlite

    def _postgres_template(self, server_url: str) -> str:
        with self._lock:
            if self._postgres is None:
                # A name of this run's own: other runs may share the server, and a template cannot be copied while
                # anyone is connected to it.
                template = f"template_{uuid.uuid4().hex[:12]}"
                asyncio.run(_admin(server_url, f'CREATE DATABASE "{template}"'))
                try:
                    upgrade_database(_database_url(server_url, template))
                except BaseException:
                    asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
                    raise
                self._postgres = (server_url, template)
                self._copier = threading.Thread(
                    target=self._copy_ahead, args=(server_url, template), name="template-copier", daemon=True
                )
                self._copier.start()
            assert self._postgres[0] == server_url, "one PostgreSQL server per test run"
            return self._postgres[1]


def _database_url(server_url: str, name: str) -> str:
    return server_url.rsplit("/", 1)[0] + f"/{name}"


TEMPLATES = TemplateDatabases()
"""The test process's templates: one set per process, so each xdist worker builds its own (under names of its own)
and no worker copies a template while another is connected to it."""
