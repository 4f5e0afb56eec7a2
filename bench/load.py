"""Load from a separate process: ``wrk`` on loopback with a Lua script for the POST body, key and percentiles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ("LoadResult", "LoadSpec", "ensure_wrk", "run_load")

LUA_SCRIPT = Path(__file__).with_name("wrk_post.lua")
MARKER = "BENCH_JSON "
MAX_CONNECTIONS = 256
"""Upper bound on concurrency: the bench measures a server, it does not flood a machine."""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One load cell: where to send what, how hard and for how long."""

    url: str
    body: bytes
    token: str
    connections: int
    duration_s: float
    warmup_s: float
    threads: int = 1
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What wrk measured in the timed run (the warm-up is discarded)."""

    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    """Non-2xx/3xx answers, timeouts and socket errors together."""


class WrkMissingError(RuntimeError):
    """wrk is not installed and could not be installed."""


def ensure_wrk() -> str:
    """The path of ``wrk``, installing Debian's package first when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing it with apt-get (Debian package 'wrk') ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "wrk"],
            env=env,
            check=False,
            stdout=subprocess.DEVNULL,
        )
        found = shutil.which("wrk")
        if found:
            return found
    raise WrkMissingError(
        "the load generator wrk is not installed: run `sudo apt-get install -y wrk` (Debian/Ubuntu) or "
        "`brew install wrk` (macOS), then run the bench again"
    )


def _check_loopback(url: str) -> None:
    """Refuse any target but 127.0.0.1: the bench never loads another machine."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load is only sent to http://127.0.0.1, not {url}")


def _wrk_command(spec: LoadSpec, duration_s: float) -> list[str]:
    threads = max(1, min(spec.threads, spec.connections))
    return [
        "wrk",
        f"-t{threads}",
        f"-c{spec.connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={spec.timeout_s:g}s",
        "-s",
        str(LUA_SCRIPT),
        spec.url,
    ]


def _parse(stdout: str) -> LoadResult:
    line = next((ln for ln in stdout.splitlines() if ln.startswith(MARKER)), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{stdout[-2000:]}")
    raw = json.loads(line[len(MARKER) :])
    duration_s = raw["durationUs"] / 1e6
    errors = sum(raw[k] for k in ("connectErrors", "readErrors", "writeErrors", "statusErrors", "timeouts"))
    return LoadResult(
        requests=int(raw["requests"]),
        duration_s=duration_s,
        requests_per_s=raw["requests"] / duration_s if duration_s else 0.0,
        p50_ms=raw["p50Us"] / 1000,
        p90_ms=raw["p90Us"] / 1000,
        p99_ms=raw["p99Us"] / 1000,
        max_ms=raw["maxUs"] / 1000,
        errors=int(errors),
    )


def _wrk(spec: LoadSpec, duration_s: float, body_file: Path) -> LoadResult:
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file), "BENCH_TOKEN": spec.token}
    completed = subprocess.run(
        _wrk_command(spec, duration_s),
        env=env,
        capture_output=True,
        text=True,
        timeout=duration_s + spec.timeout_s + 30,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip() or completed.stdout}")
    return _parse(completed.stdout)


def run_load(spec: LoadSpec) -> LoadResult:
    """Warm up for ``warmup_s`` (discarded), then measure for ``duration_s`` at ``connections`` concurrency."""
    _check_loopback(spec.url)
    if not 1 <= spec.connections <= MAX_CONNECTIONS:
        raise ValueError(f"connections must be within 1..{MAX_CONNECTIONS}")
    with tempfile.NamedTemporaryFile(prefix="bench-body-", suffix=".json") as handle:
        handle.write(spec.body)
        handle.flush()
        body_file = Path(handle.name)
        if spec.warmup_s > 0:
            _wrk(spec, spec.warmup_s, body_file)
        return _wrk(spec, spec.duration_s, body_file)
