"""Two (or more) builds of the platform under the same load, taking turns: ``python -m bench.ab``.

This VM's speed drifts by 10-30 % from one minute to the next (other work shares its two cores), so figures of
two bench runs minutes apart compare two machines. This tool starts one ``cloudeasyml serve --workers 1`` per
*tree* (a source checkout: ``new=.``, ``old=/path/to/an/older/worktree``), each on a fresh SQLite database and
the same artifact store, plus the bare Litestar endpoint, and then runs every cell on every server in turn,
round after round (the order alternates between rounds), so that drift lands on all of them alike. It reports
per cell and server the median over the rounds of req/s, p50 and p99, and the CPU milliseconds per request of
the server's event-loop thread and of the whole server process (read from ``/proc``, Linux), and each tree's
req/s as a ratio of the first tree's and of the bare endpoint's.

Cells (``--cells``): ``housing:on`` / ``housing:off`` (``POST /predict``, ``maxBatchSize`` 64 or 1),
``housing:v2`` (``POST /v2/models/{name}/infer`` with the same MLP's input as a JSON tensor, on the batching-on
deployment), the same for ``minilm``, and ``bare``.

A tree is ``NAME=PATH`` with optional ``,VAR=VALUE`` environment settings and ``,serve=granian`` (serve the
same app with Granian instead of ``cloudeasyml serve``; Granian must be importable, e.g. from a ``pip install
--target`` directory named in the tree's ``PYTHONPATH+=DIR``)::

    python -m bench.ab --trees new=. old=/work/wt/old --cells housing:on housing:off minilm:on --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.load import LoadResult, LoadSpec, ensure_wrk, run_load
from bench.run import default_artifact_dir
from bench.servers import HOST, BareServer, PlatformServer, http_json

__all__ = ("main",)

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PLUGINS = ("cloudeasyml-housing", "cloudeasyml-minilm", "cloudeasyml-sentiment")


@dataclass
class Tree:
    """One build under test: its sources, extra environment, and server."""

    name: str
    path: Path
    env: dict[str, str] = field(default_factory=dict)
    extra_path: list[str] = field(default_factory=list)
    server: str = "cloudeasyml"

    @classmethod
    def parse(cls, text: str) -> Tree:
        """``NAME=PATH[,VAR=VALUE][,PYTHONPATH+=DIR][,serve=granian]``."""
        head, *options = text.split(",")
        name, _, path = head.partition("=")
        tree = cls(name, Path(path or ".").resolve())
        for option in options:
            key, _, value = option.partition("=")
            if key == "serve":
                tree.server = value
            elif key == "PYTHONPATH+":
                tree.extra_path.append(value)
            else:
                tree.env[key] = value
        return tree

    def pythonpath(self) -> str:
        """The tree's sources and bundled plugins first, as ``.wtenv`` sets them."""
        paths = [str(self.path), *(str(self.path / "plugin_packages" / p / "src") for p in PLUGINS)]
        return os.pathsep.join([*paths, *self.extra_path])


class TreeServer(PlatformServer):
    """``PlatformServer`` on a tree's sources (and, with ``serve=granian``, under Granian)."""

    def __init__(self, workdir: Path, artifact_dir: Path, tree: Tree) -> None:
        self.tree = tree
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir, artifact_dir)

    def _start(self, command: list[str], env: dict[str, str]) -> None:
        env = {**env, **self.tree.env, "PYTHONPATH": self.tree.pythonpath()}
        self.env = env
        if self.tree.server == "granian":
            command = [
                sys.executable, "-P", "-m", "granian", "--interface", "asgi", "--factory", "--host", HOST,
                "--port", str(self.port), "--workers", "1", "--loop", "uvloop", "--no-ws",
                "--log-level", "warning", "cloudeasyml.app:create_app",
            ]  # fmt: skip
        super()._start(command, env)

    def _cli(self, *args: str) -> str:
        self.env = {**self.env, **self.tree.env, "PYTHONPATH": self.tree.pythonpath()}
        return super()._cli(*args)


def _thread_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of the event-loop thread (the main thread) and of the whole process."""
    loop = total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / _TICKS
        total += seconds
        if int(tid) == pid:
            loop = seconds
    return loop, total


@dataclass
class Sample:
    """One cell on one server in one round."""

    load: LoadResult
    loop_ms: float
    process_ms: float


def _v2_body(server: PlatformServer, name: str) -> bytes:
    """A V2 JSON infer body: one row of each input tensor (the metadata's shape, batch 1), values 0.5."""
    meta = http_json("GET", f"{server.base}/v2/models/{name}", token=server.token)
    inputs = []
    for tensor in meta["inputs"]:
        shape = [1 if d < 0 else d for d in tensor["shape"]]
        count = 1
        for d in shape:
            count *= d
        value: Any = 0.5 if tensor["datatype"].startswith("FP") else 1
        inputs.append({"name": tensor["name"], "shape": shape, "datatype": tensor["datatype"], "data": [value] * count})
    return json.dumps({"inputs": inputs}).encode()


def _targets(server: PlatformServer, cells: list[str], batch_size: int) -> dict[str, tuple[str, bytes]]:
    """Per cell: the URL and body to load this server with (deployments created as needed)."""
    deployed: dict[tuple[str, str], dict[str, Any]] = {}
    targets = {}
    for cell in cells:
        if cell == "bare":
            continue
        model, _, kind = cell.partition(":")
        mode = "off" if kind == "off" else "on"
        if (model, mode) not in deployed:
            config = {"maxBatchSize": 1 if mode == "off" else batch_size, "eagerLoad": True}
            body = {"modelName": model, "name": f"ab-{model}-{mode}", "config": config}
            deployed[model, mode] = http_json("POST", f"{server.base}/deployments", token=server.token, body=body)
        deployment = deployed[model, mode]
        if kind == "v2":
            targets[cell] = (
                f"{server.base}/v2/models/{deployment['name']}/infer",
                _v2_body(server, deployment["name"]),
            )
        else:
            example = server.model(model)["exampleInput"]
            payload = {"deploymentId": deployment["id"], "inputs": [example]}
            targets[cell] = (f"{server.base}/predict", json.dumps(payload).encode())
        url, body = targets[cell]
        http_json("POST", url, token=server.token, body=json.loads(body))  # fails loudly before any load
    return targets


def _measure(pid: int, spec: LoadSpec) -> Sample:
    before = _thread_cpu(pid)
    load = run_load(spec)
    after = _thread_cpu(pid)
    requests = max(load.requests, 1)
    return Sample(load, (after[0] - before[0]) / requests * 1000, (after[1] - before[1]) / requests * 1000)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    """Start the servers, run the rounds, print the table (and write JSON with ``--json``)."""
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=["new=."], help="NAME=PATH[,VAR=VALUE][,serve=granian] ...")
    parser.add_argument("--cells", nargs="+", default=["bare", "housing:on", "housing:off"], help="Cells to load.")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--rounds", type=int, default=3, help="Rounds (every server once per cell per round).")
    parser.add_argument("--duration", type=float, default=3.0, help="Timed seconds per cell.")
    parser.add_argument("--warmup", type=float, default=1.0, help="Warm-up seconds per cell.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--artifact-dir", type=Path, help="Artifact store (exported models).")
    parser.add_argument("--json", type=Path, help="Write every sample here.")
    args = parser.parse_args(argv)
    ensure_wrk()
    trees = [Tree.parse(t) for t in args.trees]
    artifact_dir = args.artifact_dir or default_artifact_dir()
    samples: dict[tuple[str, int, str], list[Sample]] = {}
    with tempfile.TemporaryDirectory(prefix="cloudeasyml-ab-") as tmp, ExitStack() as stack:
        servers: dict[str, tuple[int, dict[str, tuple[str, bytes]], str]] = {}
        for tree in trees:
            print(f"starting {tree.name} ({tree.path}, {tree.server})", file=sys.stderr, flush=True)
            server = stack.enter_context(TreeServer(Path(tmp) / tree.name, artifact_dir, tree))
            assert server.pid is not None
            servers[tree.name] = (server.pid, _targets(server, args.cells, args.batch_size), server.token)
        if "bare" in args.cells:
            bare = stack.enter_context(BareServer(Path(tmp)))
            assert bare.pid is not None
            body = next(iter(servers.values()))[1]
            first = next((b for u, b in body.values() if u.endswith("/predict")), b'{"inputs": [1]}')
            servers["bare"] = (bare.pid, {"bare": (f"{bare.base}/predict", first)}, "sk_bare.not-checked")
        for round_ in range(args.rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for cell in args.cells:
                for concurrency in args.concurrency:
                    for name in order:
                        pid, targets, token = servers[name]
                        if cell not in targets:
                            continue
                        url, body = targets[cell]
                        spec = LoadSpec(url, body, token, concurrency, args.duration, args.warmup)
                        sample = _measure(pid, spec)
                        samples.setdefault((cell, concurrency, name), []).append(sample)
                        print(f"  round {round_ + 1} {cell} c={concurrency} {name}: "
                              f"{sample.load.requests_per_s:,.0f} req/s p50 {sample.load.p50_ms:.2f} "
                              f"p99 {sample.load.p99_ms:.2f} ms, loop {sample.loop_ms:.3f} ms/req"
                              f"{', ERRORS ' + str(sample.load.errors) if sample.load.errors else ''}",
                              file=sys.stderr, flush=True)  # fmt: skip
    _report(samples, [t.name for t in trees], args)
    if args.json:
        raw = {f"{c}|{n}|{name}": [asdict(s) for s in ss] for (c, n, name), ss in samples.items()}
        args.json.write_text(json.dumps(raw, indent=1) + "\n")
    return 0


def _report(samples: dict[tuple[str, int, str], list[Sample]], trees: list[str], args: argparse.Namespace) -> None:
    print(f"\nbench.ab: {args.rounds} rounds, {args.duration:g} s cells, servers taking turns; medians over rounds")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at end\n")
    header = f"{'cell':<12} {'c':>3} {'server':<10} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} " \
             f"{'loop ms/req':>11} {'proc ms/req':>11} {'x ' + trees[0]:>8} {'x bare':>7}  rounds req/s"  # fmt: skip
    print(header)
    print("-" * len(header))
    for cell in args.cells:
        for concurrency in args.concurrency:
            base = samples.get((cell, concurrency, trees[0]))
            bare = samples.get(("bare", concurrency, "bare"))
            for name in [*trees, "bare"]:
                found = samples.get((cell, concurrency, name))
                if not found:
                    continue
                rps = _median([s.load.requests_per_s for s in found])
                ratio = rps / _median([s.load.requests_per_s for s in base]) if base else float("nan")
                x_bare = rps / _median([s.load.requests_per_s for s in bare]) if bare else float("nan")
                rounds = " ".join(f"{s.load.requests_per_s:,.0f}" for s in found)
                errors = sum(s.load.errors for s in found)
                p50, p99 = _median([s.load.p50_ms for s in found]), _median([s.load.p99_ms for s in found])
                loop_ms, process_ms = _median([s.loop_ms for s in found]), _median([s.process_ms for s in found])
                print(f"{cell:<12} {concurrency:>3} {name:<10} {rps:>7,.0f} {p50:>7.2f} {p99:>7.2f} "
                      f"{loop_ms:>11.3f} {process_ms:>11.3f} "
                      f"{ratio:>8.2f} {x_bare:>7.2f}  {rounds}{f'  ERRORS {errors}' if errors else ''}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
