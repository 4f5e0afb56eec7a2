"""Where the CPU goes while one deployment is under load: ``python -m bench.cpu_split [--model M] ...``.

Starts the platform like the bench does (``cloudeasyml serve --workers 1``, fresh SQLite database, API key and
metering on), creates one deployment, loads it with wrk at one concurrency, and prints, per request, the CPU
time of the server's event-loop thread and of every other thread that worked (onnxruntime's threads and the
batch workers), plus the machine's idle CPU, read from ``/proc`` (Linux only). This is how the MiniLM analysis
in ``bench/RESULTS.md`` splits a request's cost between HTTP, the model and idle time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from bench.load import LoadSpec, ensure_wrk, run_load
from bench.run import default_artifact_dir
from bench.servers import PlatformServer

__all__ = ("main",)

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _thread_seconds(pid: int) -> dict[int, tuple[float, float]]:
    """User and system CPU seconds of each thread of ``pid``."""
    seconds = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        seconds[int(tid)] = (int(fields[11]) / _TICKS, int(fields[12]) / _TICKS)
    return seconds


def _machine_seconds() -> tuple[float, float]:
    """All CPU seconds of the machine so far, and the idle ones among them."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(values) / _TICKS, (values[3] + values[4]) / _TICKS


def main(argv: list[str] | None = None) -> int:
    """Run one measurement and print its table."""
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_split", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="Model to deploy (default minilm).")
    parser.add_argument("--config", default='{"maxBatchSize": 64}', help="Deployment config as JSON.")
    parser.add_argument("--concurrency", type=int, default=64, help="wrk connections (default 64).")
    parser.add_argument("--duration", type=float, default=6.0, help="Measured seconds (default 6).")
    args = parser.parse_args(argv)
    if not Path("/proc/stat").exists():
        print("bench.cpu_split reads /proc: Linux only", file=sys.stderr)
        return 2
    ensure_wrk()
    with (
        tempfile.TemporaryDirectory(prefix="cloudeasyml-cpu-") as tmp,
        PlatformServer(Path(tmp), default_artifact_dir()) as server,
    ):
        example = server.model(args.model)["exampleInput"]
        deployment = server.deploy(args.model, "cpu-split", json.loads(args.config))
        body = json.dumps({"deploymentId": deployment["id"], "inputs": [example]}).encode()
        url = f"{server.base}/predict"
        pid = server.pid
        assert pid is not None
        run_load(LoadSpec(url, body, server.token, args.concurrency, 2.0, 0.0))  # warm up
        threads_before, machine_before = _thread_seconds(pid), _machine_seconds()
        load = run_load(LoadSpec(url, body, server.token, args.concurrency, args.duration, 0.0))
        threads_after, machine_after = _thread_seconds(pid), _machine_seconds()
    requests = max(load.requests, 1)
    total = machine_after[0] - machine_before[0]
    idle = machine_after[1] - machine_before[1]
    print(f"{args.model} {args.config} at c={args.concurrency}: {load.requests_per_s:,.0f} req/s, "
          f"p50 {load.p50_ms:.1f} ms; machine idle {idle / total:.0%} of {total:.1f} CPU-s")  # fmt: skip
    print(f"{'thread':>14}  {'user ms/req':>11}  {'sys ms/req':>10}")
    rows = []
    for tid, (user, system) in threads_after.items():
        before = threads_before.get(tid, (0.0, 0.0))
        used = (user - before[0], system - before[1])
        if sum(used) > 0.01:
            rows.append(("event loop" if tid == pid else f"thread {tid}", used))
    for name, (user, system) in sorted(rows, key=lambda r: -sum(r[1])):
        print(f"{name:>14}  {user / requests * 1000:11.3f}  {system / requests * 1000:10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
