"""A real ``cloudeasyml serve`` process on a SQLite file and the session's artifact store, with tenants to call it
as: for measurements that must not share a process (memory) or an interpreter lock (latency) with the client."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cloudeasyml.db.engine import one_transaction
from cloudeasyml.domain.tenants import create_tenant
from cloudeasyml.plugins.model import ModelPlugin
from cloudeasyml.runtime.artifacts import ArtifactStore
from cloudeasyml.runtime.resolver import ArtifactResolver
from tests.support.template_db import TEMPLATES

__all__ = ("ServerProcess", "export_models", "serve_process", "stop_server", "wait_until_healthy")


@dataclass(frozen=True)
class ServerProcess:
    """A running server: its address, process id and one admin key per tenant created for the test."""

    base_url: str
    pid: int
    keys: tuple[str, ...]
    database_url: str = ""


def export_models(artifact_dir: Path, *models: ModelPlugin) -> None:
    """Export the models into the store here (once per store), so that the server never imports torch."""
    resolver = ArtifactResolver(ArtifactStore(artifact_dir))
    for model in models:
        resolver.ensure(model, model.version)


async def _tenants(url: str, count: int) -> tuple[str, ...]:
    keys = []
    for index in range(count):
        async with one_transaction(url) as session:
            keys.append((await create_tenant(session, f"tenant-{index}", "owner@example.com")).key)
    return tuple(keys)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(
    server: subprocess.Popen[Any], base: str, log: Path | None = None, timeout: float = 60.0
) -> None:
    """Wait until ``base``'s ``/health`` answers 200; fail, with the server's log when given, if the process exits or
    ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, log.read_text() if log is not None else "the server exited"
        assert time.monotonic() < deadline, "the server did not start"
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)


def stop_server(server: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if the server has not exited within 30 seconds."""
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


@contextmanager
def serve_process(
    artifact_dir: Path,
    tmp_path: Path,
    *,
    tenants: int = 1,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[ServerProcess]:
    """Migrate a SQLite database, create ``tenants`` tenants, and serve until the block ends (one worker; models
    must be exported already: export on load is off, so the server never imports torch).

    ``database_url``: serve this database (already migrated, its tenants made by an earlier run) instead; the
    server's ``keys`` are then empty. ``env``: more ``CLOUDEASYML_*`` settings.
    """
    if database_url is None:
        url = TEMPLATES.sqlite(tmp_path / "served.db")
        keys = asyncio.run(_tenants(url, tenants))
    else:
        url, keys = database_url, ()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDEASYML_")}
    environment.update(
        CLOUDEASYML_HOME=str(tmp_path / "home"),
        CLOUDEASYML_DATABASE_URL=url,
        CLOUDEASYML_RUNTIME__ARTIFACT_DIR=str(artifact_dir),
        CLOUDEASYML_RUNTIME__EXPORT_ON_LOAD="false",
        **(env or {}),
    )
    port = _free_port()
    log = (tmp_path / "server.log").open("a")
    server = subprocess.Popen(
        [sys.executable, "-m", "cloudeasyml.cli", "serve", "--port", str(port)],
        env=environment,
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(server, base, tmp_path / "server.log")
        yield ServerProcess(base, server.pid, keys, url)
    finally:
        stop_server(server)
        log.close()
