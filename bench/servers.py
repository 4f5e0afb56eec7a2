"""The servers under load, each in its own process on 127.0.0.1: the platform and the bare Litestar app.

The platform runs exactly as an operator would run it: ``cloudeasyml db upgrade``, ``cloudeasyml tenants
create``, ``cloudeasyml serve --workers 1``, with ``CLOUDEASYML_HOME`` set to a throw-away directory (so the
SQLite database is fresh) and the artifact directory pointed at an existing store (so models are not exported
again on every run).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ("BareServer", "PlatformServer", "cloudeasyml_cli", "free_port", "http_json")

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def cloudeasyml_cli() -> list[str]:
    """The ``cloudeasyml`` command of the running interpreter's environment."""
    script = Path(sys.executable).with_name("cloudeasyml")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cloudeasyml.cli.main import cli; cli()"]


def clean_environment(home: Path, artifact_dir: Path) -> dict[str, str]:
    """The environment of a bench server: no inherited database or server settings, a private home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDEASYML_")}
    env["CLOUDEASYML_HOME"] = str(home)
    env["CLOUDEASYML_RUNTIME__ARTIFACT_DIR"] = str(artifact_dir)
    env["CLOUDEASYML_RUNTIME__EXPORT_ON_LOAD"] = "false"
    return env


def http_json(method: str, url: str, *, token: str | None = None, body: Any = None, timeout: float = 120.0) -> Any:
    """One JSON request with the standard library; raises ``RuntimeError`` with the problem detail on >= 400."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        raise RuntimeError(f"{method} {url} -> {exc.code}: {detail}") from None


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"server did not answer {url} within {START_TIMEOUT_S:.0f} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class _ServerProcess:
    """A server in a child process, stopped gracefully (SIGINT, then SIGKILL) on exit."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.log = workdir / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def _start(self, command: list[str], env: dict[str, str]) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait_healthy(f"{self.base}/health", self._process, self.log)

    def log_tail(self, lines: int = 15) -> str:
        """The end of the server's log (stdout and stderr)."""
        return _tail(self.log, lines)

    @property
    def pid(self) -> int | None:
        """The server's process id (for profilers)."""
        return self._process.pid if self._process else None

    def stop(self) -> None:
        """Ask the server to shut down (draining its work), and kill it if it does not."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> _ServerProcess:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class BareServer(_ServerProcess):
    """``bench/bare_app.py`` under uvicorn, one worker (uvloop and httptools, as ``cloudeasyml serve``)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, "bare")
        command = [
            sys.executable, "-m", "uvicorn", "bench.bare_app:app",
            "--host", HOST, "--port", str(self.port), "--workers", "1",
            "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip
        self._start(command, {k: v for k, v in os.environ.items() if not k.startswith("CLOUDEASYML_")})


class PlatformServer(_ServerProcess):
    """``cloudeasyml serve --workers 1`` on a fresh SQLite database, with one tenant and its admin key."""

    def __init__(self, workdir: Path, artifact_dir: Path) -> None:
        super().__init__(workdir, "cloudeasyml")
        home = workdir / "home"
        home.mkdir(exist_ok=True)
        self.env = clean_environment(home, artifact_dir)
        self._cli("db", "upgrade")
        created = json.loads(self._cli("tenants", "create", "bench", "--owner", "bench@example.com", "--json"))
        self.token: str = created["key"]
        serve = [*cloudeasyml_cli(), "serve", "--host", HOST, "--port", str(self.port), "--workers", "1"]
        self._start(serve, self.env)

    def _cli(self, *args: str) -> str:
        completed = subprocess.run(
            [*cloudeasyml_cli(), *args], cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, check=False
        )
        if completed.returncode != 0:
            raise RuntimeError(f"cloudeasyml {' '.join(args)} failed:\n{completed.stderr or completed.stdout}")
        return completed.stdout

    def model(self, name: str) -> dict[str, Any]:
        """``GET /models/{name}``: metadata, including ``exampleInput``."""
        return http_json("GET", f"{self.base}/models/{name}", token=self.token)

    def deploy(self, model: str, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Create a deployment (loaded and warmed up before this returns); returns it as the API does."""
        body = {"modelName": model, "name": name, "config": {**config, "eagerLoad": True}}
        return http_json("POST", f"{self.base}/deployments", token=self.token, body=body)
