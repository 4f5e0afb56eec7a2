"""A throwaway PostgreSQL server of a test's own, made with the Debian binaries the way scripts/start_postgres.sh
makes one (``initdb`` as the ``postgres`` user when run as root: initdb refuses root), that the test can stop and
start again on the same port and data directory: a real restart of the database, not only dropped connections.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ("OwnPostgres", "own_postgres", "postgres_bin")


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: [int(x) for x in p.parent.name.split(".")])
    return found[-1] if found else None


class OwnPostgres:
    """One server in a temporary directory; ``url`` names its ``app`` database."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self._bin = bin_dir
        self._root = root
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/app"

    def _run(self, *argv: str) -> None:
        command = [str(self._bin / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        """Make the cluster and its ``app`` database, and start the server."""
        if os.geteuid() == 0:
            shutil.chown(self._root, "postgres", "postgres")
        self._run("initdb", "-D", str(self._root / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "app")

    def start(self) -> None:
        """Start the server (waits until it accepts connections)."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self._root} -c fsync=off -c max_connections=200"
        log = str(self._root / "server.log")
        self._run("pg_ctl", "-D", str(self._root / "data"), "-l", log, "-w", "-t", "60", "-o", options, "start")

    def stop(self) -> None:
        """Stop the server: ``-m fast`` ends every session and shuts down cleanly (what a restart of the database
        does to the clients: their connections are closed and new ones are refused until it is back)."""
        self._run("pg_ctl", "-D", str(self._root / "data"), "-w", "-t", "60", "-m", "fast", "stop")


@contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """A started server, stopped and removed when the block ends; the test is skipped without the binaries (or,
    not being root, without the right to run them as this user)."""
    import pytest  # here: the module is test support, imported by tests only

    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries in /usr/lib/postgresql (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="cloudeasyml-pg-"))
    server = OwnPostgres(bin_dir, root)
    try:
        server.init()
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot run a PostgreSQL server here: {exc.stderr.decode(errors='replace')[-300:]}")
    try:
        yield server
    finally:
        try:
            server.stop()
        except subprocess.CalledProcessError:
            pass  # stopped already
        shutil.rmtree(root, ignore_errors=True)
