"""The CloudEasyML benchmark, one command: ``python -m bench`` from the repository root (see bench/README.md).

1. onnxruntime in process, per model, at batch 1 and ``--batch-size`` (the ceiling; a child process);
2. the platform (``cloudeasyml serve --workers 1``, API key, metering on) under wrk at each concurrency, with
   batching off (``maxBatchSize`` 1) and on (``maxBatchSize`` ``--batch-size``);
3. a bare Litestar endpoint under the same load (the HTTP ceiling);
then one table per part and the issue's target checks (figures, not tests: the exit status is 0 either way).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.ceiling import CeilingResult
from bench.load import MAX_CONNECTIONS, LoadResult, LoadSpec, WrkMissingError, ensure_wrk, run_load
from bench.report import (
    BARE,
    TARGET_CONCURRENCY,
    HttpRow,
    ceiling_table,
    http_table,
    target_checks,
    targets_table,
)
from bench.servers import REPO_ROOT, BareServer, PlatformServer, cloudeasyml_cli, http_json

__all__ = ("main",)

DEFAULT_MODELS = ("housing", "minilm")
RESULTS_DIR = Path(__file__).with_name("results")
MAX_SECONDS = 120.0
DRAIN_MAX_S = 5.0
ADJACENT_CEILING_S = 2.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Options; ``--quick`` changes the defaults of the others."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", default=list(DEFAULT_MODELS), help="Models to bench (default: housing minilm)."
    )
    parser.add_argument("--quick", action="store_true", help="Concurrency 1 and 64 only, 3 s cells, 1 s warm-ups.")
    parser.add_argument("--concurrency", nargs="+", type=int, help="Connections per cell (default 1 16 64).")
    parser.add_argument("--duration", type=float, help="Timed seconds per cell (default 6).")
    parser.add_argument("--warmup", type=float, help="Warm-up seconds before each cell, not counted (default 2).")
    parser.add_argument("--batch-size", type=int, default=64, help="maxBatchSize with batching on (default 64).")
    parser.add_argument("--items", type=int, default=1, help="Inputs per request (default 1).")
    parser.add_argument(
        "--instances", type=int, help="instances of the batching-on deployments (default: each model's own)."
    )
    parser.add_argument("--artifact-dir", type=Path, help="Artifact store (default: CLOUDEASYML settings').")
    parser.add_argument("--json", type=Path, help="Write raw results here (default bench/results/<time>.json).")
    parser.add_argument("--skip-ceiling", action="store_true", help="Skip the in-process onnxruntime part.")
    parser.add_argument("--skip-bare", action="store_true", help="Skip the bare Litestar part.")
    args = parser.parse_args(argv)
    quick = args.quick
    args.concurrency = args.concurrency or ([1, 64] if quick else [1, 16, 64])
    args.duration = args.duration or (3.0 if quick else 6.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    _check_bounds(parser, args)
    return args


def _check_bounds(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Keep the load bounded: the bench measures a server, it does not stress-test a machine."""
    if not all(1 <= c <= MAX_CONNECTIONS for c in args.concurrency):
        parser.error(f"--concurrency values must be within 1..{MAX_CONNECTIONS}")
    if not (1 <= args.duration <= MAX_SECONDS and 0 <= args.warmup <= MAX_SECONDS):
        parser.error(f"--duration must be within 1..{MAX_SECONDS} s and --warmup within 0..{MAX_SECONDS} s")
    if not (1 <= args.batch_size <= 4096 and 1 <= args.items <= 4096):
        parser.error("--batch-size and --items must be within 1..4096")
    if args.instances is not None and not 1 <= args.instances <= 16:
        parser.error("--instances must be within 1..16")


def say(message: str) -> None:
    """Progress on stderr, so stdout carries only the tables."""
    print(message, file=sys.stderr, flush=True)


def default_artifact_dir() -> Path:
    """The artifact store the user's settings point at (``CLOUDEASYML_HOME/artifacts`` by default)."""
    from cloudeasyml.settings import load_settings

    return load_settings().artifact_path


def installed_models() -> set[str]:
    """Models that ``cloudeasyml plugins list`` reports."""
    out = subprocess.run([*cloudeasyml_cli(), "plugins", "list", "--json"], capture_output=True, text=True, check=True)
    return {m["model"] for m in json.loads(out.stdout)["models"]}


def export_models(models: list[str], artifact_dir: Path) -> list[str]:
    """``cloudeasyml export`` each model into the store (a no-op when up to date); returns those that are ready."""
    env = {**os.environ, "CLOUDEASYML_RUNTIME__ARTIFACT_DIR": str(artifact_dir)}
    ready = []
    for model in models:
        say(f"export {model} -> {artifact_dir} (skipped when up to date)")
        done = subprocess.run(
            [*cloudeasyml_cli(), "export", model], env=env, capture_output=True, text=True, check=False
        )
        if done.returncode == 0:
            ready.append(model)
        else:
            say(f"SKIP {model}: export failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return ready


def measure_ceiling(
    models: list[str], artifact_dir: Path, batches: list[int], seconds: float, instances: int = 1
) -> list[CeilingResult]:
    """Part 1 (and the ceilings measured beside a cell), in a child process of its own."""
    say(f"onnxruntime in process: {', '.join(models)} at batch {', '.join(map(str, batches))}, {instances} at once")
    command = [
        sys.executable, "-m", "bench.ceiling", "--artifact-dir", str(artifact_dir),
        "--models", *models, "--batches", *map(str, batches), "--seconds", str(seconds),
        "--instances", str(instances),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        say(f"ceiling failed: {done.stderr.strip()[-1000:]}")
        return []
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for name, why in report["skipped"].items():
        say(f"SKIP ceiling of {name}: {why}")
    return [CeilingResult(**r) for r in report["results"]]


def _cell(args: argparse.Namespace, label: str, url: str, body: bytes, token: str, concurrency: int) -> LoadResult:
    """One load cell, with a progress line."""
    spec = LoadSpec(url=url, body=body, token=token, connections=concurrency, duration_s=args.duration,
                    warmup_s=args.warmup)  # fmt: skip
    result = run_load(spec)
    # Requests still queued when wrk hangs up are run anyway: let them finish before the next cell starts.
    time.sleep(min(result.p99_ms / 1000, DRAIN_MAX_S))
    errors = f", {result.errors} ERRORS" if result.errors else ""
    say(f"  {label} c={concurrency}: {result.requests_per_s:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
        f"p99 {result.p99_ms:.2f} ms{errors}")  # fmt: skip
    return result


def _request_body(deployment_id: str, example: Any, items: int) -> bytes:
    return json.dumps({"deploymentId": deployment_id, "inputs": [example] * items}).encode()


def _check_once(server: PlatformServer, body: bytes, items: int) -> None:
    """One request by hand before loading: a 4xx/5xx here would otherwise show up only as wrk 'errors'."""
    answer = http_json("POST", f"{server.base}/predict", token=server.token, body=json.loads(body))
    if len(answer["predictions"]) != items:
        raise RuntimeError(f"expected {items} predictions, got {len(answer['predictions'])}")


def _adjacent_ceiling(args: argparse.Namespace, model: str, instances: int) -> float | None:
    """The in-process ceiling at the cell's batch size and instances, measured now (the server is idle)."""
    found = measure_ceiling([model], args.artifact_dir, [args.batch_size], ADJACENT_CEILING_S, instances)
    return found[0].ort_items_per_s if found else None


def bench_model(args: argparse.Namespace, server: PlatformServer, model: str) -> tuple[list[HttpRow], bytes | None]:
    """Part 2 for one model: both batching modes at every concurrency. Returns the rows and a request body.

    The batching-on cell at the target concurrency is framed by two in-process ceilings measured just before
    and just after it, with the deployment's instances: this machine's speed drifts by 10 % and more between
    minutes, so a ceiling from the start of the run would compare the cell with a different machine.
    """
    try:
        example = server.model(model)["exampleInput"]
    except RuntimeError as exc:
        say(f"SKIP {model}: {exc}")
        return [], None
    rows, body = [], None
    for batching, config in (("off", {"maxBatchSize": 1}), ("on", _on_config(args))):
        name = f"bench-{model}-{batching}"
        deployment = server.deploy(model, name, config)
        instances = deployment["config"]["instances"]
        body = _request_body(deployment["id"], example, args.items)
        _check_once(server, body, args.items)
        for concurrency in args.concurrency:
            framed = batching == "on" and concurrency == TARGET_CONCURRENCY
            before = _adjacent_ceiling(args, model, instances) if framed else None
            load = _cell(
                args, f"{model} batching {batching}", f"{server.base}/predict", body, server.token, concurrency
            )
            after = _adjacent_ceiling(args, model, instances) if framed else None
            ceiling = (before + after) / 2 if before and after else None
            rows.append(
                HttpRow(model, batching, config["maxBatchSize"], instances, concurrency, args.items, load, ceiling)
            )
    return rows, body


def _on_config(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {"maxBatchSize": args.batch_size}
    if args.instances is not None:
        config["instances"] = args.instances
    return config


def bench_platform(
    args: argparse.Namespace, models: list[str], workdir: Path, artifact_dir: Path
) -> tuple[list[HttpRow], bytes | None]:
    """Part 2: one server; two deployments per model (batching off and on)."""
    say("starting cloudeasyml serve --workers 1 (fresh SQLite database in a temporary CLOUDEASYML_HOME)")
    rows: list[HttpRow] = []
    first_body = None
    with PlatformServer(workdir, artifact_dir) as server:
        for model in models:
            try:
                model_rows, body = bench_model(args, server, model)
            except RuntimeError as exc:  # one model's failure (deploy, first request, wrk) skips only that model
                say(f"SKIP {model}: {exc}\n{server.log_tail()}")
                continue
            rows.extend(model_rows)
            first_body = first_body or body
    return rows, first_body


def bench_bare(args: argparse.Namespace, workdir: Path, body: bytes) -> list[HttpRow]:
    """Part 3: the bare Litestar endpoint with the same body, key header and concurrency."""
    say("starting the bare Litestar app (uvicorn, one worker)")
    rows = []
    with BareServer(workdir) as server:
        for concurrency in args.concurrency:
            load = _cell(args, "bare", f"{server.base}/predict", body, "sk_bare.not-checked", concurrency)
            rows.append(HttpRow(BARE, "-", 0, 0, concurrency, 1, load))
    return rows


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def _version(*distributions: str) -> str:
    """The installed version of the first of ``distributions`` that is installed."""
    for name in distributions:
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return f"{distributions[0]} ?"


def machine_line() -> str:
    """What the figures were measured on."""
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
        f"{_version('onnxruntime-gpu', 'onnxruntime')}, {_version('litestar')}, {_version('uvicorn')}; "
        f"load average {load_average()} at start"
    )


def write_json(
    path: Path, ceiling: list[CeilingResult], rows: list[HttpRow], args: argparse.Namespace, machine: str
) -> None:
    """The raw figures, for RESULTS.md or a comparison between runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    payload = {"machine": machine, "options": options, "ceiling": [asdict(c) for c in ceiling],
               "http": [asdict(r) for r in rows]}  # fmt: skip
    path.write_text(json.dumps(payload, indent=2) + "\n")


def print_report(ceiling: list[CeilingResult], rows: list[HttpRow], batch: int, machine: str) -> None:
    """The three tables."""
    print(f"\nCloudEasyML bench — {machine}")
    if ceiling:
        print("\n1. onnxruntime in process (example input repeated; 'full' adds to_arrays and from_outputs)\n")
        print(ceiling_table(ceiling))
    if rows:
        print("\n2-3. HTTP on 127.0.0.1, wrk (one thread), one uvicorn worker; API key and metering on")
        print("     'x bare' = req/s as a fraction of the bare Litestar endpoint at the same concurrency\n")
        print(http_table(rows))
        if any(r.load.errors for r in rows):
            print("\n     WARNING: cells with errors count failed answers in req/s; see the server log and rerun")
    print("\nTarget checks (figures, not tests)\n")
    print(targets_table(target_checks(rows, ceiling, batch)))


def ceiling_part(args: argparse.Namespace, models: list[str], artifact_dir: Path) -> list[CeilingResult]:
    """Part 1 unless skipped."""
    if args.skip_ceiling or not models:
        return []
    return measure_ceiling(models, artifact_dir, [1, args.batch_size], 1.0 if args.quick else 2.0)


def http_parts(args: argparse.Namespace, models: list[str], artifact_dir: Path) -> list[HttpRow]:
    """Parts 2 and 3: the bare endpoint's rows first, then the models'."""
    with tempfile.TemporaryDirectory(prefix="cloudeasyml-bench-") as tmp:
        rows, body = bench_platform(args, models, Path(tmp), artifact_dir) if models else ([], None)
        if not args.skip_bare:
            rows = bench_bare(args, Path(tmp), body or b'{"inputs": [1]}') + rows
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the bench; returns the exit status (0 whatever the figures; 2 when wrk is missing)."""
    args = parse_args(argv)
    try:
        ensure_wrk()
    except WrkMissingError as exc:
        say(str(exc))
        return 2
    started, machine = time.monotonic(), machine_line()
    installed = installed_models()
    for missing in [m for m in args.models if m not in installed]:
        say(f"SKIP {missing}: not installed (cloudeasyml plugins list); pip install its plugin_packages/ folder")
    artifact_dir = args.artifact_dir = args.artifact_dir or default_artifact_dir()
    models = export_models([m for m in args.models if m in installed], artifact_dir)
    ceiling = ceiling_part(args, models, artifact_dir)
    rows = http_parts(args, models, artifact_dir)
    machine += f", {load_average()} at end"
    print_report(ceiling, rows, args.batch_size, machine)
    path = args.json or RESULTS_DIR / time.strftime("bench-%Y%m%d-%H%M%S.json")
    write_json(path, ceiling, rows, args, machine)
    say(f"\nraw results: {path}; {time.monotonic() - started:.0f} s in all")
    return 0
